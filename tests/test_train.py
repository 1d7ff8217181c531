"""Whole runs on real Split Fashion-MNIST: HAT forgets nothing under any optimizer, finetune forgets."""

import dataclasses
import re

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from maskcl import RunConfig, run
from maskcl.cli import main
from maskcl.core import owned_entries

FAST = {"epochs": 1, "hidden": (100, 100), "num_tasks": 3}


def frozen_snapshot(model, task):
    return [(t, m.expand_as(t), t.detach()[m.expand_as(t)].clone()) for t, m in owned_entries(model, [task])]


@pytest.mark.parametrize(
    "optimizer",
    [
        {"optimizer": "sgd", "weight_decay": 0.01},
        {"optimizer": "sgd", "momentum": 0.9, "lr": 0.01, "weight_decay": 0.01},
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01},
    ],
    ids=["sgd-wd", "sgd-momentum-wd", "adamw-wd"],
)
def test_hat_run_has_zero_bwt_and_bit_identical_protected_weights(fashion_mnist, optimizer):
    snapshots = []

    def check(model, task):
        for earlier in snapshots:
            for tensor, mask, values in earlier:
                assert torch.equal(tensor.detach()[mask], values)
        snapshots.append(frozen_snapshot(model, task))

    results = run(RunConfig(method="hat", **FAST, **optimizer), log=lambda _: None, on_task_end=check)
    assert len(snapshots) == 3
    assert results["bwt"] == 0.0 and results["forgetting"] == 0.0
    R = results["acc_matrix"]
    assert all(R[i][j] == R[j][j] for i in range(3) for j in range(i))
    assert results["acc"] > 0.85


def test_finetune_forgets_on_the_same_settings(fashion_mnist):
    results = run(RunConfig(method="finetune", **FAST, weight_decay=0.01), log=lambda _: None)
    assert results["bwt"] < -0.01


def test_joint_trains_all_tasks_seen_so_far(fashion_mnist):
    results = run(RunConfig(method="joint", **FAST), log=lambda _: None)
    R = results["acc_matrix"]
    assert min(R[2]) > 0.85  # every task learned by the end
    assert R[0][1] < 0.8  # task 1 not yet seen after task 0


def test_same_seed_same_results(fashion_mnist):
    a = run(RunConfig(method="hat", **FAST, seed=3), log=lambda _: None)
    b = run(RunConfig(method="hat", **FAST, seed=3), log=lambda _: None)
    assert a["acc_matrix"] == b["acc_matrix"]


@pytest.mark.parametrize("arch", ["resnet20", "timm:resnet18"])
def test_joint_trains_batch_norm_networks(data, arch):
    """``joint`` trains every task so far in one batch: per-task BatchNorm normalises each task's part of
    it with that task's statistics, so BatchNorm networks (maskcl's and converted timm ones) train too."""
    config = RunConfig(method="joint", data=data, num_tasks=2, epochs=2, batch_size=16, arch=arch, lr=0.05)
    results = run(config, log=lambda _: None)
    R = results["acc_matrix"]
    assert min(R[1]) > 0.6, R  # both tasks learned together (chance: 0.5)


def test_the_learning_rate_factors_by_hand():
    from maskcl.train import lr_factor

    assert lr_factor("constant", 7, 10, 3, 2, 0.1) == 1.0
    assert [lr_factor("cosine", done, 4, 0, 2, 0.1) for done in range(4)] == pytest.approx(
        [1.0, (1 + 2**-0.5) / 2, 0.5, (1 - 2**-0.5) / 2]
    )
    assert [lr_factor("step", 0, 1, epoch, 2, 0.1) for epoch in range(5)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01]
    )


@pytest.fixture
def steps_seen():
    """Each optimizer step's learning rate and gradient norm, from a global step pre-hook."""
    seen = []

    def hook(optimizer, args, kwargs):
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        seen.append((optimizer.param_groups[0]["lr"], float(norm)))

    handle = register_optimizer_step_pre_hook(hook)
    yield seen
    handle.remove()


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_each_task_follows_the_schedule_from_its_start(data, steps_seen, schedule):
    config = RunConfig(
        data=data, num_tasks=2, epochs=3, batch_size=100, hidden=(16,), lr_schedule=schedule, lr_step_epochs=1
    )
    run(config, log=lambda _: None)
    per_epoch = len(steps_seen) // 6  # 2 tasks of 3 epochs
    from maskcl.train import lr_factor

    for task in range(2):
        lrs = [lr for lr, _ in steps_seen[task * 3 * per_epoch : (task + 1) * 3 * per_epoch]]
        expected = [
            0.05 * lr_factor(schedule, k, 3 * per_epoch, k // per_epoch, 1, 0.1) for k in range(len(lrs))
        ]
        assert lrs == pytest.approx(expected, rel=1e-12)
    assert steps_seen[3 * per_epoch][0] == 0.05  # restarted at the second task


def test_gradient_clipping_bounds_every_steps_norm(data, steps_seen):
    config = RunConfig(data=data, num_tasks=2, epochs=2, batch_size=32, hidden=(16,))
    run(config, log=lambda _: None)
    largest = max(norm for _, norm in steps_seen)
    steps_seen.clear()
    run(RunConfig(**{**config.__dict__, "grad_clip": largest / 4}), log=lambda _: None)
    assert max(norm for _, norm in steps_seen) <= largest / 4 * (1 + 1e-5)


def rows_by_task(out):
    """``{task: [(epoch, {name: value})]}`` of a run folder's metrics.csv, epochs in order."""
    import csv

    rows = {}
    for task, epoch, name, value in list(csv.reader((out / "metrics.csv").open()))[1:]:
        epochs = rows.setdefault(int(task), {})
        epochs.setdefault(int(epoch), {})[name] = float(value)
    return {task: sorted(epochs.items()) for task, epochs in rows.items()}


def expected_course(losses, lr, gamma, patience, lr_min, early_stop, epochs):
    """The learning rate of each epoch and the epochs trained, by the rule of the HAT paper's schedule
    (Serrà et al. 2018, Sec. 4) and early stopping, written out here on the run's validation losses."""
    rates, best, since_best, since_change, rate = [], None, 0, 0, lr
    for loss in losses:
        rates.append(rate)
        if best is None or loss < best:
            best, since_best, since_change = loss, 0, 0
            continue
        since_best, since_change = since_best + 1, since_change + 1
        if patience is not None and since_change == patience:
            rate, since_change = rate * gamma, 0
            if rate < lr_min:
                break
        if early_stop is not None and since_best == early_stop:
            break
    return rates, min(len(rates), epochs)


@pytest.mark.parametrize(
    "options",
    [
        {"lr_schedule": "patience", "lr_patience": 2, "lr_gamma": 0.5, "lr_min": 0.01},
        {"lr_schedule": "patience", "lr_patience": 1, "lr_gamma": 1 / 3, "lr_min": 1e-4, "early_stop": 4},
        {"early_stop": 1},
    ],
)
def test_patience_schedule_and_early_stopping_follow_the_validation_loss(tmp_path, data, capsys, options):
    from maskcl.runs import RunFolder

    config = RunConfig(data=data, num_tasks=2, epochs=30, batch_size=16, hidden=(32, 32), **options)
    run(config, log=print, folder=RunFolder(tmp_path / "run"))
    rows = rows_by_task(tmp_path / "run")
    stopped = 0
    for task, all_rows in rows.items():
        # the task-end rows (test accuracies) are at epoch 30 whenever training ended
        assert {f"test_acc_task_{j}" for j in range(task + 1)} <= set(all_rows[-1][1]) and all_rows[-1][
            0
        ] == 30
        epochs = [(epoch, values) for epoch, values in all_rows if "val_loss" in values]
        losses = [values["val_loss"] for _, values in epochs]
        rates, trained = expected_course(
            losses,
            0.05,
            config.lr_gamma,
            config.lr_patience if config.lr_schedule == "patience" else None,
            config.lr_min,
            config.early_stop,
            30,
        )
        assert [epoch for epoch, _ in epochs] == list(range(1, trained + 1))
        assert [values["lr"] for _, values in epochs] == pytest.approx(rates)
        stopped += trained < 30
    assert stopped >= 1  # the rule ended some task's training early
    assert "training ends after epoch" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"lr_schedule": "patience", "val_fraction": 0.0},
            "--lr-schedule patience watches the validation loss",
        ),
        ({"early_stop": 3, "val_fraction": 0.0}, "--early-stop watches the validation loss"),
        ({"lr_schedule": "patience", "lr_min": 0.1}, "--lr-min must be in [0, --lr 0.05), got 0.1"),
        ({"early_stop": 0}, "--early-stop must be >= 1, got 0"),
        ({"lr_patience": 0}, "--lr-patience must be >= 1, got 0"),
    ],
)
def test_bad_patience_and_early_stop_settings_are_one_line(options, message):
    from maskcl.errors import MaskclError

    with pytest.raises(MaskclError, match=re.escape(message)):
        RunConfig(**options).validate()


def test_a_constant_run_logs_no_validation_loss(tmp_path, data):
    from maskcl.runs import RunFolder

    run(
        RunConfig(data=data, num_tasks=2, epochs=2, batch_size=32, hidden=(16,)),
        folder=RunFolder(tmp_path / "r"),
    )
    names = {
        name for epochs in rows_by_task(tmp_path / "r").values() for _, values in epochs for name in values
    }
    assert "val_loss" not in names and "lr" not in names and "val_acc" in names


@pytest.mark.parametrize("method", ["hat", "joint"])
def test_augmented_runs_differ_and_workers_change_nothing(data, method):
    config = RunConfig(
        method=method, data=data, num_tasks=2, epochs=2, batch_size=16, hidden=(32, 32), dropout=0.0,
        input_dropout=0.0,
    )  # fmt: skip

    def results(**options):
        out = run(dataclasses.replace(config, **options), log=lambda _: None)
        return {k: v for k, v in out.items() if k not in ("timing", "config")}

    plain, augmented = results(), results(augment="crop-flip")
    assert augmented["acc_matrix"] != plain["acc_matrix"]
    assert method != "hat" or augmented["bwt"] == plain["bwt"] == 0.0
    assert results(augment="crop-flip", workers=2) == augmented
    assert results(workers=1) == plain


def test_augmenting_inputs_that_are_not_images_is_refused_before_anything_is_written(tmp_path, capsys):
    from test_cli import write_npz

    flat = write_npz(tmp_path / "flat.npz", n=200, shape=(36,))
    out = tmp_path / "run"
    code = main(
        ["run", "--data", str(flat), "--augment", "crop", "--epochs", "1", "--out", str(out), "--quiet"]
    )
    assert code == 2 and not out.exists()
    assert (
        capsys.readouterr().err
        == "maskcl: error: --augment crop needs images [C, H, W]; this data has samples (36,)\n"
    )
