"""Per-task masks over a network's weights: task ``t`` computes the network with ``W * m_t``.

:class:`MaskedNet` wraps a task-aware network (its code unchanged) and replaces the chosen weights per
task through ``torch.func.functional_call``; a subclass says what each task's masks are
(:meth:`MaskedNet.masks`: HyperMask's hypernetwork, PackNet's weight owners, WSN's learned subnetworks).
With one task id per sample, each task's samples run through their own masked network and the outputs are
padded with ``-inf`` to the widest task's classes, as :class:`~maskcl.core.layers.TaskHeads` does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from maskcl.core.context import task_state
from maskcl.core.layers import TaskBatchNorm, TaskHeads
from maskcl.errors import MaskclError

__all__ = ["MaskedNet", "maskable_weights"]


def maskable_weights(
    target: nn.Module, *, heads: bool = False, min_dim: int = 1
) -> list[tuple[str, nn.Parameter]]:
    """The parameters of ``target`` that per-task masks can select among, with their names.

    Task-indexed BatchNorm rows and the heads' biases belong to their task already and are never masked;
    the heads' weights are masked only with ``heads``; parameters of fewer than ``min_dim`` dimensions
    (``2``: biases and norm affine left out) are not masked.
    """
    own = {id(p) for m in target.modules() if isinstance(m, TaskBatchNorm) for p in m.parameters()}
    own |= {id(m.bias) for m in target.modules() if isinstance(m, TaskHeads)}
    if not heads:
        own |= {id(m.weight) for m in target.modules() if isinstance(m, TaskHeads)}
    return [(n, p) for n, p in target.named_parameters() if id(p) not in own and p.dim() >= min_dim]


class MaskedNet(nn.Module):
    """A task-aware ``target`` whose weights ``masked`` are multiplied per task by :meth:`masks`.

    ``forward(x)`` computes the task selected with :func:`maskcl.set_task` (an int, or one id per sample).

    Args:
        target: a task-aware network (``maskcl.create_model(..., gates=False)`` or
            ``maskcl.convert(model, classes, gates=False)``).
        heads: mask the heads' weights too (see :func:`maskable_weights`).
        min_dim: mask only parameters of at least this many dimensions.
    """

    def __init__(self, target: nn.Module, *, heads: bool = False, min_dim: int = 1) -> None:
        super().__init__()
        self.target = target
        self.state = task_state(target)
        self.masked = maskable_weights(target, heads=heads, min_dim=min_dim)
        if not self.masked:
            raise MaskclError(f"{type(target).__name__} has no maskable weights")
        self.sizes = [p.numel() for _, p in self.masked]

    def masks(self, task: int) -> list[torch.Tensor]:
        """Task ``task``'s mask of each tensor of :attr:`masked` (its shape, or broadcastable to it)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        task = self.state.context.task
        if isinstance(task, int):
            return self.forward_task(x, task)
        outputs = {t: self.forward_task(x[task == t], t) for t in task.unique().tolist()}
        width = max(o.shape[1] for o in outputs.values())
        out = x.new_full((x.shape[0], width), float("-inf"))
        for t, o in outputs.items():
            out[task == t, : o.shape[1]] = o
        self.state.context.select(task)
        return out

    def task_weights(self, task: int) -> dict[str, torch.Tensor]:
        """Task ``task``'s value of each masked weight, by name in :attr:`target`: ``W * m_task``."""
        return {name: p * m for (name, p), m in zip(self.masked, self.masks(task))}

    def forward_task(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """``target(x)`` for task ``task`` with each masked weight replaced by :meth:`task_weights`."""
        self.state.context.select(task)
        return functional_call(self.target, self.task_weights(task), (x,))
