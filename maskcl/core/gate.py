"""HAT's per-task unit gate (Serrà et al., ICML 2018)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from maskcl.core.context import TaskContext, task_rows

__all__ = ["GateLink", "TaskGate"]


class TaskGate(nn.Module):
    """Multiplies each unit (channel) by its task's gate: ``h' = h * a_t`` (Serrà et al., ICML 2018).

    While training, ``a_t = sigmoid(s * e_t)`` with ``e_t`` the task's learnable embedding and ``s`` the
    annealed scale held in the shared :class:`~maskcl.core.context.TaskContext` (under HAT,
    :class:`~maskcl.methods.hat.HAT`, the values of all gates are computed together, with the gradient
    compensation, see :func:`~maskcl.methods.hat.method.soft_gates`); in evaluation mode the gate is hard,
    ``a_t = 1[e_t > 0]``.
    Units sit on ``channel_dim`` of the input (1 for ``[B, C, ...]``, -1 for token sequences ``[B, N, C]``).

    Args:
        num_units: units (output features or channels) gated.
        context: the model's shared task context.
        channel_dim: the dimension of the input that holds the units.
    """

    def __init__(self, num_units: int, context: TaskContext, channel_dim: int = 1) -> None:
        super().__init__()
        self.context = context
        self.channel_dim = channel_dim
        # The paper's code initialises the embeddings like nn.Embedding: N(0, 1).
        self.embedding = nn.Parameter(torch.randn(context.num_tasks, num_units))
        self.bank: slice | None = None  # this gate's part of context.soft_gates, set by HAT

    @property
    def num_units(self) -> int:
        return self.embedding.shape[1]

    def hard_mask(self, tasks: list[int] | int) -> torch.Tensor:
        """Boolean masks ``e_t > 0`` of the given task(s): ``[num_units]`` or ``[len(tasks), num_units]``."""
        return self.embedding.detach()[tasks] > 0

    def used_units(self, tasks: list[int]) -> torch.Tensor:
        """Boolean ``[num_units]``: units any of ``tasks`` uses (HAT's cumulative mask ``a_{<=t}``)."""
        if not tasks:
            return torch.zeros(self.num_units, dtype=torch.bool, device=self.embedding.device)
        return self.hard_mask(tasks).any(dim=0)

    def owned_entries(self, tasks: list[int]) -> dict[str, torch.Tensor]:
        """The embedding rows of ``tasks``: a learned task owns its own embedding."""
        rows = task_rows(self.context.num_tasks, tasks, self.embedding.device)
        return {"embedding": rows.expand_as(self.embedding)}

    def forward(self, h: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """``h * a_t`` on the units of ``h``; ``inplace`` (only where nothing needs ``h``'s gradient and no
        one else reads ``h``) multiplies ``h`` itself, sparing a new activation tensor."""
        ctx = self.context
        if not self.training:
            gate = (self.embedding[ctx.task] > 0).to(h.dtype)
        elif self.bank is not None and ctx.soft_gates is not None:
            gate = ctx.soft_gates[self.bank]  # computed for all gates at once by HAT
        else:
            gate = torch.sigmoid(ctx.scale * self.embedding[ctx.task])
        if h.dim() != 2 or gate.dim() != 1:
            gate = gate.view(self._broadcast_shape(h, gate))
        return h.mul_(gate) if inplace and not h.requires_grad else h * gate

    def _broadcast_shape(self, h: torch.Tensor, gate: torch.Tensor) -> list[int]:
        shape = [1] * h.dim()
        if gate.dim() == 2:  # one task per sample
            shape[0] = gate.shape[0]
        shape[self.channel_dim] = self.num_units
        return shape

    def extra_repr(self) -> str:
        return (
            f"num_units={self.num_units}, num_tasks={self.context.num_tasks}, channel_dim={self.channel_dim}"
        )


@dataclass
class GateLink:
    """Tells HAT which gates sit around a layer, so it can protect exactly the entries tasks use.

    ``module``'s output units are multiplied by ``out_gate`` before anything else reads them, and its
    inputs are ``in_gate``'s units (each repeated ``in_repeat`` times, as after flattening ``[C, H, W]``),
    or ``None`` when the input is not gated (the network's input, or gating unknown). A weight entry
    ``w[j, i]`` is protected when unit ``j`` and input ``i`` are both used by a learned task, i.e. by
    ``min(a_<t[j], a_<t[i])`` (Serrà et al., ICML 2018); without ``in_gate``, by unit ``j`` alone.
    One-dimensional parameters (bias, norm affine) are protected by ``out_gate``.
    """

    module: nn.Module
    out_gate: TaskGate
    in_gate: TaskGate | None = None
    in_repeat: int = 1

    def owned_entries(self, tasks: list[int]) -> dict[str, torch.Tensor]:
        """Masks of ``module``'s parameter entries that ``tasks`` use."""
        out_used = self.out_gate.used_units(tasks)
        in_used = None
        if self.in_gate is not None:
            in_used = self.in_gate.used_units(tasks).repeat_interleave(self.in_repeat)
        masks = {}
        for name, param in self.module.named_parameters(recurse=False):
            mask = out_used.view(-1, *[1] * (param.dim() - 1))
            if param.dim() > 1 and in_used is not None:
                # weight [out, in / groups, *kernel]: output j of group g reads inputs g * in_pg + i
                out_channels, in_per_group = param.shape[:2]
                groups = getattr(self.module, "groups", 1)
                per_output = in_used.view(groups, in_per_group).repeat_interleave(out_channels // groups, 0)
                mask = mask & per_output.view(out_channels, in_per_group, *[1] * (param.dim() - 2))
            masks[name] = mask
        return masks
