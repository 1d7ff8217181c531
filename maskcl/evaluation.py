"""Evaluating a task-aware model: accuracy on a task with its id given, and with the task unknown."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskcl.core.context import set_task
from maskcl.data import Scenario, TaskData
from maskcl.distributed import SINGLE, World
from maskcl.metrics import AccuracyMatrix
from maskcl.predictors import TaskPredictor

__all__ = ["ClassIncremental", "evaluate", "evaluate_task_inference", "validate"]


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
    return _evaluate(model, data, task, device, batch_size, world, with_loss=False)[0]


def validate(
    model: nn.Module,
    data: TaskData,
    task: int,
    device: torch.device,
    batch_size: int = 1000,
    world: World = SINGLE,
) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy loss)`` of ``model`` on ``data`` of ``task`` (as :func:`evaluate`);
    the loss is what the patience schedule and early stopping watch (NaN for empty data)."""
    return _evaluate(model, data, task, device, batch_size, world, with_loss=True)


@torch.no_grad()
def _evaluate(model, data, task, device, batch_size, world, with_loss: bool) -> tuple[float, float]:
    """Accuracy and (``with_loss``) mean cross-entropy, else NaN: only validation pays for the loss."""
    if len(data) == 0:
        return float("nan"), float("nan")
    set_task(model.eval(), task)
    total = len(data)
    if world.size > 1:
        data = data.subset(slice(world.rank, None, world.size))
    correct = torch.zeros((), dtype=torch.long, device=device)
    loss = torch.zeros((), device=device)
    for x, y in data.batches(batch_size, device=device):
        logits = model(x)
        correct += (logits.argmax(1) == y).sum()
        if with_loss:
            loss += F.cross_entropy(logits.float(), y, reduction="sum")
    mean_loss = float(world.sum(loss)) / total if with_loss else float("nan")
    return int(world.sum(correct)) / total, mean_loss


@torch.no_grad()
def evaluate_task_inference(
    model: nn.Module,
    predictor: TaskPredictor,
    data: TaskData,
    task: int,
    tasks: list[int],
    device: torch.device,
    batch_size: int = 1000,
) -> tuple[float, float]:
    """With the task id unknown, on ``data`` of ``task``: the fraction of inputs whose task ``predictor``
    finds among ``tasks``, and the fraction whose class it gets right as well (class-incremental
    accuracy: a wrong task is a wrong class), predicting ``batch_size`` inputs at a time (all of one task:
    a predictor that decides per batch, as SupSup's one-shot can, sees that many)."""
    if len(data) == 0:
        return float("nan"), float("nan")
    found = right = 0
    for x, y in data.batches(batch_size, device=device):
        inferred, predicted = predictor.predict(model, x, tasks)
        hit = inferred == task
        found += int(hit.sum())
        right += int((hit & (predicted == y)).sum())
    return found / len(data), right / len(data)


class ClassIncremental:
    """The class-incremental side of a run: after each task is learned, ``predictor`` fits on its
    training data, then every learned task's test data is classified with the task unknown (among the
    tasks learned so far), giving ``found[i][j]`` (task found) and ``acc[i][j]`` (class-incremental
    accuracy) after task ``i`` on task ``j <= i``."""

    def __init__(self, predictor: TaskPredictor, num_tasks: int, batch_size: int = 1000) -> None:
        self.predictor, self.batch_size = predictor, batch_size
        self.found, self.acc = AccuracyMatrix(num_tasks), AccuracyMatrix(num_tasks)

    def after_task(self, model: nn.Module, scenario: Scenario, task: int, device: torch.device) -> None:
        self.predictor.fit_task(model, task, scenario[task].train)
        tasks = list(range(task + 1))
        for other in tasks:
            found, acc = evaluate_task_inference(
                model, self.predictor, scenario[other].test, other, tasks, device, self.batch_size
            )
            if found == found:  # an empty test split records nothing
                self.found.update(task, other, found)
                self.acc.update(task, other, acc)

    def state_dict(self) -> dict:
        return {
            "predictor": self.predictor.state_dict(),
            "found": self.found.to_list(),
            "acc": self.acc.to_list(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.found, self.acc = (
            AccuracyMatrix.from_matrix(state["found"]),
            AccuracyMatrix.from_matrix(state["acc"]),
        )
        self.predictor.load_state_dict(state["predictor"])

    def results(self, scenario: Scenario) -> dict:
        """``results.json``'s ``task_inference``: the predictor, after the last task the task-found rate
        and class-incremental accuracy (over all test inputs, and per task), and the class-incremental
        accuracy matrix with its ACC, BWT and forgetting."""
        last = scenario.num_tasks - 1
        sizes = [len(scenario[t].test) for t in range(scenario.num_tasks)]
        found, acc = self.found.row(last), self.acc.row(last)
        total = sum(n for n, f in zip(sizes, found) if f == f) or 1
        matrix = self.acc.compute()
        complete = all(v is not None for i, row in enumerate(matrix["acc_matrix"]) for v in row[: i + 1])
        if not complete:  # a run resumed from a format-3 checkpoint kept no earlier rows
            matrix = {"acc_matrix": matrix["acc_matrix"], "acc": None, "bwt": None, "forgetting": None}
        return {
            "predictor": self.predictor.name,
            "task_accuracy": sum(n * f for n, f in zip(sizes, found) if f == f) / total,
            "class_incremental_acc": sum(n * a for n, a in zip(sizes, acc) if a == a) / total,
            "per_task_task_accuracy": self.found.to_list()[last],
            "per_task_class_incremental_acc": self.acc.to_list()[last],
            "acc_matrix": matrix["acc_matrix"],
            "acc": matrix["acc"],
            "bwt": matrix["bwt"],
            "forgetting": matrix["forgetting"],
            "task_found_matrix": self.found.compute()["acc_matrix"],
            "memory_bytes": self.predictor.memory_bytes(),
        }
