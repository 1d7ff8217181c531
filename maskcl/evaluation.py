"""Evaluating a task-aware model: accuracy on a task with its id given, and with the task unknown."""

from __future__ import annotations

import torch
from torch import nn

from maskcl.core.context import set_task
from maskcl.data import Scenario, TaskData
from maskcl.distributed import SINGLE, World
from maskcl.inference import infer_task

__all__ = ["evaluate", "evaluate_task_inference"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TaskData,
    task: int,
    device: torch.device,
    batch_size: int = 1000,
    world: World = SINGLE,
) -> float:
    """Accuracy (fraction in [0, 1]) of ``model`` on ``data`` of ``task``, in evaluation mode; with
    several ranks each evaluates its shard (samples ``rank, rank + size, ...``) and the counts are summed."""
    if len(data) == 0:
        return float("nan")
    set_task(model.eval(), task)
    total = len(data)
    if world.size > 1:
        data = TaskData(*world.shard(data.x, data.y), data.permutation)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for x, y in data.batches(batch_size, device=device):
        correct += (model(x).argmax(1) == y).sum()
    return int(world.sum(correct)) / total


@torch.no_grad()
def evaluate_task_inference(model: nn.Module, scenario: Scenario, device: torch.device) -> dict:
    """Test accuracy with the task id unknown: per task, how often the task is inferred
    (:func:`maskcl.inference.infer_task`) and how often the class is right as well (class-incremental).
    """
    hits, rights, sizes = [], [], []
    for task in range(scenario.num_tasks):
        hit = right = 0
        for x, y in scenario[task].test.batches(1000, device=device):
            inferred, predicted = infer_task(model, x)
            hit += int((inferred == task).sum())
            right += int(((inferred == task) & (predicted == y)).sum())
        hits.append(hit)
        rights.append(right)
        sizes.append(max(len(scenario[task].test), 1))
    return {
        "task_accuracy": sum(hits) / sum(sizes),
        "class_incremental_acc": sum(rights) / sum(sizes),
        "per_task_task_accuracy": [h / n for h, n in zip(hits, sizes)],
        "per_task_class_incremental_acc": [r / n for r, n in zip(rights, sizes)],
    }
