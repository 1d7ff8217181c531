"""The task state shared by every task-aware module of one model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from maskcl.errors import MaskclError

__all__ = ["TaskContext", "TaskId", "TaskState", "check_task_id", "set_task", "task_rows", "task_state"]

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


class TaskState(nn.Module):
    """The task bookkeeping of one task-aware model, held as a submodule (built-in or converted).

    It holds the shared :class:`TaskContext`, the buffer ``learned`` (which tasks are finished, saved with
    the model's weights) and, for converted models, the :class:`~maskcl.core.gate.GateLink` s that say which
    gate sits after which layer.
    """

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise MaskclError(f"a task-aware model needs at least one task, got {num_tasks}")
        self.context = TaskContext(num_tasks)
        self.register_buffer("learned", torch.zeros(num_tasks, dtype=torch.bool))
        self.links: list = []

    @property
    def num_tasks(self) -> int:
        return self.context.num_tasks

    def learned_tasks(self) -> list[int]:
        """The finished tasks, in order."""
        return self.learned.nonzero().flatten().tolist()

    def gate_links(self) -> list:
        return self.links

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, learned={self.learned_tasks()}"


def task_state(model: nn.Module) -> TaskState:
    """The :class:`TaskState` of a task-aware model, or a one-line error for a plain one."""
    for module in model.modules():
        if isinstance(module, TaskState):
            return module
    raise MaskclError(
        f"{type(model).__name__} is not task-aware: build it with maskcl.create_model or convert it with "
        "maskcl.core.convert"
    )


def set_task(model: nn.Module, task: TaskId) -> nn.Module:
    """Select the task that ``model`` computes (an int, or one id per sample); returns ``model``.

    Works for maskcl's own models and converted ones; the forward signature stays the model's own.
    """
    task_state(model).context.select(task)
    return model
