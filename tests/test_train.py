"""Whole runs on real Split Fashion-MNIST: HAT forgets nothing under any optimizer, finetune forgets."""

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from maskcl import RunConfig, run
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
