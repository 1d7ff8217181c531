"""Whole runs on real Split Fashion-MNIST: HAT forgets nothing under any optimizer, finetune forgets."""

import pytest
import torch

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
