"""The base class of every maskcl network: shared features, one head per task, a selectable task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from maskcl.core.context import TaskContext, TaskId, TaskState
from maskcl.core.gate import GateLink, TaskGate
from maskcl.core.layers import TaskHeads
from maskcl.errors import MaskclError


class TaskModel(nn.Module):
    """A network for task-incremental learning: ``forward(x)`` computes the selected task.

    Subclasses build their layers in ``__init__`` (giving their :class:`TaskGate`s and task-indexed layers
    ``self.context``) and implement :meth:`forward_features`; the per-task heads are built here.

    Args:
        input_shape: shape of one sample, e.g. ``(1, 28, 28)``.
        classes_per_task: number of classes of each task, e.g. ``[2, 2, 2, 2, 2]``.
    """

    def __init__(self, input_shape: Sequence[int], classes_per_task: Sequence[int]) -> None:
        super().__init__()
        if not classes_per_task or min(classes_per_task) < 1:
            raise MaskclError(
                f"classes_per_task must list at least one class per task, got {classes_per_task}"
            )
        self.input_shape = tuple(int(d) for d in input_shape)
        self.classes_per_task = [int(k) for k in classes_per_task]
        self.task_state = TaskState(len(self.classes_per_task))

    @property
    def context(self) -> TaskContext:
        return self.task_state.context

    @property
    def learned(self) -> torch.Tensor:
        """Boolean ``[num_tasks]``: which tasks are finished (a buffer of :attr:`task_state`)."""
        return self.task_state.learned

    @property
    def num_tasks(self) -> int:
        return self.context.num_tasks

    def build_heads(self, num_features: int) -> None:
        """Create the per-task heads on top of ``num_features`` shared features."""
        self.heads = TaskHeads(num_features, self.classes_per_task, self.context)

    def set_task(self, task: TaskId) -> TaskModel:
        """Select the task that ``forward`` computes: an int, or one id per sample. Returns ``self``."""
        self.context.select(task)
        return self

    @property
    def task(self) -> TaskId:
        return self.context.task

    def learned_tasks(self) -> list[int]:
        """The tasks learned so far (their entries are protected by HAT)."""
        return self.task_state.learned_tasks()

    def task_gates(self) -> list[TaskGate]:
        return [m for m in self.modules() if isinstance(m, TaskGate)]

    def gate_links(self) -> list[GateLink]:
        """How gates surround the layers; empty for an ungated network."""
        return []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise MaskclError(
                f"input of shape {tuple(x.shape)} does not fit the model, which takes [batch, "
                f"{', '.join(map(str, self.input_shape))}]"
            )
        return self.heads(self.forward_features(x))
