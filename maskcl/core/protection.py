"""Exact protection: entries owned by learned tasks stay bit-for-bit unchanged under any optimizer.

Zeroing a gradient does not stop an optimizer from moving a weight: momentum carried over from an
earlier task, Adam's moment estimates and weight decay (coupled or decoupled) all update entries whose
gradient is zero. :class:`Protector` therefore writes the frozen entries back after every
``optimizer.step()`` (HAT does it from ``torch.optim.Optimizer.register_step_post_hook``), on the bits:

    bits(p) <- (bits(p) AND keep) OR frozen_bits     (keep = all ones on free entries, 0 on frozen ones)

Two vectorised integer passes per tensor restore every frozen entry to exactly its stored bit pattern,
whatever the optimizer wrote there (a signed zero, an infinity, a NaN after a diverging step), so a
later task that goes wrong cannot damage a learned one. This subsumes HAT's gradient restriction
(Serrà et al., ICML 2018) with binary cumulative masks: a frozen entry ends every step where it started,
and the free entries' updates do not depend on the frozen entries' gradients (except through a global
gradient-norm clip, which then also counts the frozen entries' gradients). Buffers (batch-norm running
statistics) are restored the same way.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Protector", "owned_entries"]

_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's memory seen as integers of the same width (a view: writes go to the tensor)."""
    return tensor.detach().view(_SAME_SIZE_INT[tensor.element_size()])


def owned_entries(
    model: nn.Module, tasks: list[int], *, links: bool = True, shared: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The parameter and buffer entries of ``model`` that ``tasks`` own, as ``(tensor, mask)`` pairs.

    The ownership walk: every submodule with ``owned_entries(tasks)`` (gates, heads, task-indexed norms,
    per-task weight masks) maps the names of its tensors (dotted names reach into its children) to boolean
    masks of the entries that ``tasks`` own; the :class:`~maskcl.core.gate.GateLink` s returned by any
    submodule's ``gate_links()`` do the same for gated layers.

    Args:
        links: include the gated layers' entries (False: the method handles them itself, as AdaHAT does;
            they are then not ``shared`` either).
        shared: every other parameter and floating-point buffer is shared by all tasks with no way of
            telling which entries a task uses, so it is frozen whole once any task is learned (e.g.
            LayerNorm affine, class tokens, an unconverted norm's running statistics). False leaves them
            free (HyperMask, whose regulariser keeps the shared weights).
    """
    if not tasks:
        return []
    gate_links = [link for m in model.modules() if hasattr(m, "gate_links") for link in m.gate_links()]
    owners = [(m, True) for m in model.modules() if hasattr(m, "owned_entries")]
    owners += [(link, links) for link in gate_links]
    pairs, covered = [], set()
    for owner, frozen in owners:
        module = getattr(owner, "module", owner)
        for name, mask in owner.owned_entries(tasks).items():
            tensor = _tensor(module, name)
            covered.add(id(tensor))
            if frozen:
                pairs.append((tensor, mask))
    if shared:
        rest = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
        for tensor in rest:
            if id(tensor) not in covered:
                pairs.append((tensor, torch.ones((), dtype=torch.bool, device=tensor.device)))
    return pairs


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    """``module``'s parameter or buffer ``name`` (dotted: in a child)."""
    path, _, leaf = name.rpartition(".")
    return getattr(module.get_submodule(path), leaf)


class Protector:
    """Freezes the masked entries of parameters and buffers: :meth:`restore` writes them back.

    Args:
        frozen: ``(tensor, mask)`` pairs; ``mask`` is boolean, broadcastable to the tensor's shape, True
            where the entry must not change. Pairs whose mask is all False are ignored.

    Call :meth:`restore` after every optimizer step, e.g. from
    ``optimizer.register_step_post_hook(lambda *_: protector.restore())``.
    """

    def __init__(self, frozen: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        kept = [(t, m.expand_as(t)) for t, m in frozen if bool(m.any())]
        self.bits = [_bits(t) for t, _ in kept]
        self.keep = [torch.where(m, 0, -1).to(b.dtype) for (_, m), b in zip(kept, self.bits)]
        self.frozen_bits = [b & ~k for b, k in zip(self.bits, self.keep)]
        self.num_frozen = sum(int(m.sum()) for _, m in kept)

    @torch.no_grad()
    def restore(self) -> None:
        """Write every frozen entry back to its exact bits at the time the protection started."""
        for bits, keep, frozen in zip(self.bits, self.keep, self.frozen_bits):
            bits.bitwise_and_(keep).bitwise_or_(frozen)
