"""AdaHAT, Adaptive Hard Attention to the Task (Wang et al., ECML PKDD 2024), as a variant of HAT.

HAT blocks every update of a gated layer's entry that an earlier task uses (Serrà et al., ICML 2018, eq. 2:
``g'_{l,ij} = (1 - min(a^{<t}_{l,i}, a^{<t}_{l-1,j})) g_{l,ij}``). AdaHAT lets those entries move a little
(Wang et al., 2024, §3.1, eqs. 7-9)::

    g'_{l,ij} = a_{l,ij} g_{l,ij}                                               (eq. 8)
    a_{l,ij}  = r_l / (I_{l,ij} + r_l),   r_l = alpha / (epsilon + R_l)           (eq. 9)
    I_{l,ij}  = min(m^{<t,sum}_{l,i}, m^{<t,sum}_{l-1,j}),  m^{<t,sum} = sum_{tau<t} m^tau   (eq. 7)

``I`` is the entry's importance: how many earlier tasks use it (the summative mask over earlier tasks'
hard masks, combined over the output and input unit like HAT's cumulative mask; the output unit alone where
the layer's input is not gated). ``R_l`` is layer ``l``'s network sparsity: HAT's mask sparsity term on that
layer's units, ``sum_i a^t_{l,i} (1 - a^{<t}_{l,i}) / sum_i (1 - a^{<t}_{l,i})`` (0 when no unit is free),
on the gates of the step's training forward pass, without HAT's weight ``c``. An entry no earlier task uses
has ``I = 0``, ``a = 1``: it moves freely, exactly as under HAT. The more tasks use an entry, and the more
of the free units the task takes (``R_l``), the less the entry moves.

The adjustment is applied to the optimizer's update, not its gradient: the gated layers' parameters are
copied in an optimizer step pre-hook, and after the step each entry earlier tasks use is set to
``w = w_before + a * (w_after - w_before)``. Under plain SGD (no momentum, no weight decay) this is the
paper's eq. 8 exactly, ``w_after - w_before = -lr * g``. Under any other optimizer the promise is the same
in terms of what the optimizer does: each step moves the entry by the fraction ``a`` of what the optimizer
would have moved it, weight decay and momentum included (scaling the gradient instead would be undone by
Adam's normalisation); the optimizer's own state still sees the unscaled gradient. Everything else that
learned tasks own (their gate embeddings, head rows, per-task norm rows) and the shared parameters with no
owner stay bit-for-bit frozen, as under HAT (:func:`~maskcl.core.protection.owned_entries` with
``links=False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from maskcl.core.gate import GateLink, TaskGate
from maskcl.core.protection import owned_entries
from maskcl.errors import MaskclError
from maskcl.methods.base import register_method
from maskcl.methods.hat.method import HAT, HATConfig

__all__ = ["AdaHAT", "AdaHATConfig", "parameter_importance"]


@dataclass(frozen=True)
class AdaHATConfig(HATConfig):
    """HAT's options (:class:`~maskcl.methods.hat.HATConfig`) and AdaHAT's two (Wang et al., 2024, eq. 9).

    ``alpha``: the adjustment intensity ``alpha`` (the paper takes it > 0; 0 gives HAT's hard block, and a
    large one lets the entries move almost freely). ``epsilon``: added to the network sparsity ``R_l`` so
    that ``r_l`` stays finite when the task takes no free unit.
    """

    alpha: float = field(default=0.01, metadata={"help": "AdaHAT's adjustment intensity"})
    epsilon: float = field(default=0.1, metadata={"help": "AdaHAT's epsilon added to the network sparsity"})

    def validate(self) -> None:
        super().validate()
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise MaskclError(f"alpha must be finite and >= 0, got {self.alpha}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise MaskclError(f"epsilon must be finite and > 0, got {self.epsilon}")


@dataclass
class _UsedAtLeast:
    """Stands in for a gate in a :class:`GateLink`: the units that at least ``times`` of the tasks use."""

    gate: TaskGate
    times: int

    def used_units(self, tasks: list[int]) -> torch.Tensor:
        return self.gate.hard_mask(tasks).sum(dim=0) >= self.times


def parameter_importance(link: GateLink, tasks: list[int]) -> dict[str, torch.Tensor]:
    """Per parameter of ``link.module``, ``I_{l,ij} = min(m^{sum}_{l,i}, m^{sum}_{l-1,j})`` with ``m^{sum}``
    the number of ``tasks`` that use each unit (Wang et al., 2024, eqs. 7 and 9), as integer tensors
    broadcastable to the parameters; empty when ``tasks`` is.

    The entries follow :meth:`GateLink.owned_entries` exactly (groups, repeated inputs, biases), through
    ``min(m, n) = sum_{k >= 1} [m >= k] [n >= k]``: the sum over ``k`` of the entries that the units used by
    at least ``k`` tasks own.
    """
    total: dict[str, torch.Tensor] = {}
    for times in range(1, len(tasks) + 1):
        in_gate = None if link.in_gate is None else _UsedAtLeast(link.in_gate, times)
        at_least = GateLink(link.module, _UsedAtLeast(link.out_gate, times), in_gate, link.in_repeat)
        for name, mask in at_least.owned_entries(tasks).items():
            total[name] = total[name] + mask if name in total else mask.long()
    return total


@register_method("adahat")
class AdaHAT(HAT):
    """HAT whose gated layers' entries used by earlier tasks are adjusted (eqs. 7-9), not frozen.

    Args:
        model: a task-aware model with gates and :class:`~maskcl.core.gate.GateLink` s (built by
            :func:`maskcl.create_model` or converted by :func:`maskcl.convert`).
        **options: the fields of :class:`AdaHATConfig`.
    """

    config_class = AdaHATConfig
    exact = False

    def __init__(self, model: nn.Module, **options: Any) -> None:
        super().__init__(model, **options)
        owners = [m for m in self.model.modules() if hasattr(m, "gate_links")]
        self.links = [link for owner in owners for link in owner.gate_links()]
        if not self.links:
            name = type(self.model).__name__
            raise MaskclError(f"{name} declares no GateLink: AdaHAT has no gated layer to adjust")
        # per gated layer: its output gate's bank and (parameter, importance, snapshot) for each parameter
        # some learned task uses
        self._adjusted: list[tuple[slice, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]] = []

    def protected(self, tasks: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """What ``tasks`` own outside the gated layers (gate embeddings, heads, norm rows) and the shared
        parameters with no owner, frozen exactly as under HAT; the gated layers' entries are adjusted."""
        return owned_entries(self.model, tasks, links=False)

    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int = 1) -> None:
        """Begin ``task`` as HAT does; compute the importance of the entries learned tasks use, and snapshot
        them before every step of ``optimizer``."""
        super().start_task(task, optimizer, steps_per_epoch)
        learned = self.state.learned_tasks()
        for link in self.links:
            params = dict(link.module.named_parameters(recurse=False))
            entries = [
                (params[name], importance.to(params[name].dtype), torch.empty_like(params[name]))
                for name, importance in parameter_importance(link, learned).items()
                if bool(importance.any())
            ]
            if entries:
                self._adjusted.append((link.out_gate.bank, entries))
        if self._adjusted:
            self.add_hook(optimizer.register_step_pre_hook(lambda *_: self._snapshot()))

    def after_step(self) -> None:
        """Scale the step of every entry earlier tasks use by its adjustment rate, then HAT's clamp and
        scale update."""
        if self._adjusted:
            self._adjust()
        super().after_step()

    def end_task(self) -> None:
        """Finish the task as HAT does, and drop the snapshots."""
        super().end_task()
        self._adjusted = []

    def summary(self) -> dict:
        """HAT's ``capacity``, and ``network_capacity``: for each learned task in order, the mean adjustment
        rate over the gated layers' parameters while it trained (1: unconstrained; Wang et al., 2024, §4.1),
        with its final hard mask as the current task's gates in ``R_l`` (tasks are taken to be learned in
        order)."""
        learned = self.state.learned_tasks()
        rates = [self._network_capacity(task, learned[:i]) for i, task in enumerate(learned)]
        return {**super().summary(), "network_capacity": rates}

    def extra_memory(self) -> int:
        """HAT's, plus the gated layers' snapshot before each step and their entries' importance."""
        params = [p for link in self.links for p in link.module.parameters(recurse=False)]
        return super().extra_memory() + 2 * sum(p.numel() * p.element_size() for p in params)

    # ------------------------------------------------------------------------------------------- internals
    @torch.no_grad()
    def _snapshot(self) -> None:
        for _, entries in self._adjusted:
            for param, _, before in entries:
                before.copy_(param)

    @torch.no_grad()
    def _adjust(self) -> None:
        gates = self.state.context.soft_gates
        if gates is None:
            raise MaskclError(
                f"AdaHAT: an optimizer step of task {self.task} came without a training forward pass of it "
                "first (the adjustment rate needs that pass's gates)"
            )
        for bank, entries in self._adjusted:
            free = self._free[bank]
            sparsity = (gates[bank] * free).sum() / free.sum().clamp(min=1)
            r = self.config.alpha / (self.config.epsilon + sparsity)
            for param, importance, before in entries:
                moved = torch.addcmul(before, r / (importance + r), param - before)
                param.copy_(torch.where(importance > 0, moved, param))

    def _network_capacity(self, task: int, earlier: list[int]) -> float:
        if not earlier:
            return 1.0
        total, count = 0.0, 0
        for link in self.links:
            free = ~link.out_gate.used_units(earlier)
            sparsity = (link.out_gate.hard_mask(task) & free).sum() / free.sum().clamp(min=1)
            r = self.config.alpha / (self.config.epsilon + sparsity.double())
            importance = parameter_importance(link, earlier)
            for name, param in link.module.named_parameters(recurse=False):
                used = importance[name].double()
                rate = torch.where(used > 0, r / (used + r), 1.0)
                total += float(rate.expand_as(param).sum())
                count += param.numel()
        return total / count
