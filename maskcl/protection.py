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

_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's memory seen as integers of the same width (a view: writes go to the tensor)."""
    return tensor.detach().view(_SAME_SIZE_INT[tensor.element_size()])


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
