"""The task state shared by every task-aware module of one model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maskcl.errors import MaskclError

TaskId = int | torch.Tensor
"""One task for the whole batch (an ``int``), or one per sample (an integer tensor of shape ``[batch]``)."""


@dataclass
class TaskContext:
    """Which task a model computes, and the gate temperature ``s`` while a HAT task trains.

    One instance is shared by all gates, heads and task-indexed norms of a model, so that selecting a
    task is one assignment and the model's ``forward(x)`` keeps its plain signature.
    """

    num_tasks: int
    task: TaskId = 0
    scale: float = 1.0
    soft_gates: torch.Tensor | None = None  # while HAT trains: every gate's value, concatenated

    def select(self, task: TaskId) -> None:
        """Select ``task`` (an int, or one id per sample), checking the range."""
        if isinstance(task, torch.Tensor):
            if task.dtype not in (torch.int32, torch.int64) or task.dim() != 1:
                raise MaskclError(
                    f"per-sample task ids must be a 1-D integer tensor, got {task.dtype} {task.dim()}-D"
                )
            if task.numel() and (int(task.min()) < 0 or int(task.max()) >= self.num_tasks):
                raise MaskclError(
                    f"task ids must lie in 0-{self.num_tasks - 1}, got {task.min()}-{task.max()}"
                )
        else:
            task = check_task_id(task, self.num_tasks)
        self.task = task


def check_task_id(task: int, num_tasks: int) -> int:
    """Return ``task`` as an int, or raise a one-line error when it is not one of ``num_tasks`` tasks."""
    if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < num_tasks:
        raise MaskclError(f"task {task!r} out of range: the model has {num_tasks} tasks (0-{num_tasks - 1})")
    return task


def task_rows(num_tasks: int, tasks: list[int], device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``[num_tasks, 1]``: True on the rows of ``tasks``, for tables with one row per task."""
    rows = torch.zeros(num_tasks, 1, dtype=torch.bool, device=device)
    rows[tasks] = True
    return rows
