"""Exact protection: entries owned by learned tasks stay bit-for-bit unchanged under any optimizer.

Zeroing a gradient does not stop an optimizer from moving a weight: momentum carried over from an
earlier task, Adam's moment estimates and weight decay (coupled or decoupled) all update entries whose
gradient is zero. :class:`Protector` therefore writes the frozen entries back after every
``optimizer.step()`` (HAT does it from ``torch.optim.Optimizer.register_step_post_hook``) as

    p <- snapshot * m + p * (1 - m)        (m = 1 on frozen entries, 0 elsewhere)

which is exact in IEEE arithmetic for finite values (``0 + p * 1 = p``, ``v + p * 0 = v``, with or
without a fused multiply-add) and costs one elementwise pass per tensor. This subsumes HAT's gradient
restriction (Serrà et al., ICML 2018) with binary cumulative masks: a frozen entry ends every
step where it started, and the free entries' updates do not depend on the frozen entries' gradients
(except through a global gradient-norm clip, which then also counts the frozen entries' gradients).
Buffers (batch-norm running statistics) are restored the same way.
"""

from __future__ import annotations

import torch


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
        self.tensors = [t for t, _ in kept]
        self.keep = [(~m).to(t.dtype) for t, m in kept]
        self.frozen_values = [t.detach() * m for t, m in kept]

    @property
    def num_frozen(self) -> int:
        """How many scalar entries are frozen."""
        return sum(int((k == 0).sum()) for k in self.keep)

    @torch.no_grad()
    def restore(self) -> None:
        """Write the frozen entries back: ``p = frozen_values + p * keep``, one fused pass per tensor."""
        for tensor, keep, values in zip(self.tensors, self.keep, self.frozen_values):
            torch.addcmul(values, tensor, keep, out=tensor)
