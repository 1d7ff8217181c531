"""The reference baselines: ``finetune`` (the lower reference) and ``joint`` (the upper one).

- ``finetune``: the network without gates, trained on each task in turn with no protection; it shows how
  much plain sequential training forgets.
- ``joint``: the network without gates, trained after task ``t`` on all tasks ``0..t`` together (a batch
  of each per step, with per-sample task ids; a per-task BatchNorm normalises each task's part of the
  batch with that task's statistics), continuing from the previous model.
"""

from __future__ import annotations

from maskcl.methods.base import Method, register_method

__all__ = ["Finetune", "Joint"]


@register_method("finetune")
class Finetune(Method):
    """Sequential training with nothing kept: each task starts from the last one's network."""


@register_method("joint")
class Joint(Method):
    """Every task so far trained together (multi-task learning), the usual upper reference."""

    def training_tasks(self, task: int) -> list[int]:
        return list(range(task + 1))
