"""HAT, Hard Attention to the Task (Serrà et al., ICML 2018), as a controller around a gated model.

Three calls turn a plain PyTorch training loop into HAT, with any optimizer::

    hat = HAT(model)
    for task in range(num_tasks):
        hat.start_task(task, optimizer, steps_per_epoch=len(loader))
        for epoch ...: for x, y in loader:
            loss = F.cross_entropy(model(x), y) + hat.regularizer()
            optimizer.zero_grad(); loss.backward(); optimizer.step()
        hat.end_task()

``start_task`` selects the task and from then on, automatically: computes all gates in one call at each
training forward pass, compensates the embedding gradients, and after each optimizer step clamps the
embeddings, advances the gate scale ``s`` and writes back every entry that learned tasks own
(:mod:`maskcl.core.protection`), so that learned tasks' outputs stay bit-for-bit identical whatever the
optimizer does (momentum, Adam, weight decay, schedulers). ``end_task`` marks the task learned: its hard
mask joins the cumulative one. Pass the optimizer that updates the model's parameters.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from maskcl.core.capacity import capacity
from maskcl.core.gate import TaskGate
from maskcl.core.protection import owned_entries
from maskcl.errors import MaskclError
from maskcl.methods.base import Method, MethodConfig, register_method
from maskcl.methods.hat.scale import SCALE_SCHEDULES
from maskcl.methods.hat.scale import scale_schedule as scale_schedule_named

__all__ = ["FLUSH_BELOW", "HAT", "MASK_INITS", "HATConfig", "soft_gates"]

MASK_INITS = ("normal", "dense", "sparse")

# Gate values below this are written as 0 in the forward pass (the gradient still follows the exact
# sigmoid). Tiny gates times activations or gradients give subnormal floats, which slow CPU matrix
# products several times over; a gate of 1e-20 is zero for any practical purpose.
FLUSH_BELOW = 1e-20


class _SoftGates(torch.autograd.Function):
    """All gates of one task in one call: forward ``sigmoid(s * e_t)`` concatenated over the embedding
    tables (flushed below ``FLUSH_BELOW``); backward with HAT's compensation, into each table's row t."""

    @staticmethod
    def forward(ctx, task: int, s: float, factor: float, clamp: float, *tables: torch.Tensor) -> torch.Tensor:
        embedding = torch.cat([table[task] for table in tables])
        scaled = embedding * s
        gates = torch.sigmoid(scaled)
        ctx.save_for_backward(embedding, scaled, gates)
        ctx.task, ctx.factor, ctx.clamp = task, factor, clamp
        ctx.shapes = [table.shape for table in tables]
        return torch.threshold(gates, FLUSH_BELOW, 0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        embedding, scaled, gates = ctx.saved_tensors
        # autograd's sigmoid gradient, d/de sigmoid(s e) = s * a * (1 - a), times the compensation
        # K / s * (cosh(clamp(s e)) + 1) / (cosh(e) + 1) with K = s_max in the paper; the factors s cancel.
        numerator = torch.cosh(scaled.clamp(-ctx.clamp, ctx.clamp)).add_(1)
        compensation = numerator.div_(torch.cosh(embedding).add_(1))
        grad_embedding = torch.addcmul(gates, gates, gates, value=-1).mul_(grad).mul_(compensation)
        grad_embedding.mul_(ctx.factor)
        grads, offset = [], 0
        for shape in ctx.shapes:
            table_grad = grad.new_zeros(shape)
            table_grad[ctx.task] = grad_embedding[offset : offset + shape[1]]
            grads.append(table_grad)
            offset += shape[1]
        return None, None, None, None, *grads


def soft_gates(
    tables: list[torch.Tensor], task: int, s: float, factor: float, clamp: float = 50.0
) -> torch.Tensor:
    """Training gates ``a = sigmoid(s * e_t)`` of every embedding table (``[tasks, units]``), concatenated,
    whose gradient to ``e`` gets HAT's compensation.

    Autograd's gradient of ``sigmoid(s * e)`` is multiplied, as in the paper's code, by
    ``factor / s * (cosh(clamp(s * e, -clamp, clamp)) + 1) / (cosh(e) + 1)`` (``factor = s_max`` in the
    paper), so that the embedding learns at a pace independent of the current scale ``s`` (Serrà et al.,
    ICML 2018). Values below ``FLUSH_BELOW`` are set to 0 in the forward value only; the gradient is the
    exact sigmoid's.
    """
    return _SoftGates.apply(task, s, factor, clamp, *tables)


@dataclass(frozen=True)
class HATConfig(MethodConfig):
    """HAT's options (Serrà et al., ICML 2018), and HAT-CL's techniques (Duan, 2023), off by default.

    ``s_max``: final gate scale (paper: 400). ``c``: weight of the mask regulariser (paper: 0.75).
    ``embedding_clamp``: embeddings are clamped to ``[-clamp, clamp]`` after each step (paper: 6).
    ``compensation_clamp``: ``s * e`` is clamped to this range inside the gradient compensation (paper:
    50). ``scale_schedule``: how ``s`` moves over each epoch: ``linear`` (paper), ``cosine``,
    ``exponential``, ``constant`` (see :mod:`maskcl.methods.hat.scale`). ``mask_init``: a task's embedding
    when it starts: ``normal`` (paper: N(0, 1) from construction), ``dense`` (every unit on: ``e = +1``)
    or ``sparse`` (``ceil(n / T)`` random units of each gated layer on, ``e = +1``; the others ``e = -1``).
    ``per_layer``: the regulariser normalises each gated layer by its own free units and averages the
    layers, instead of normalising all units together (paper). ``quota``: fraction of each group's units
    (the network, or each layer with ``per_layer``) a task may take from the free pool without penalty
    (paper: 0). ``compensation``: the factor ``K`` in the gradient compensation ``K / s * (...)`` (None:
    ``s_max``, the paper's).
    """

    s_max: float = field(default=400.0, metadata={"help": "HAT's final gate scale"})
    c: float = field(default=0.75, metadata={"help": "HAT's regulariser weight"})
    embedding_clamp: float = field(default=6.0, metadata={"help": "embeddings clamped to +-this"})
    compensation_clamp: float = field(default=50.0, metadata={"help": "s*e clamp in the compensation"})
    scale_schedule: str = field(
        default="linear", metadata={"help": "gate scale over an epoch", "choices": tuple(SCALE_SCHEDULES)}
    )
    mask_init: str = field(default="normal", metadata={"help": "task embedding start", "choices": MASK_INITS})
    per_layer: bool = field(default=False, metadata={"help": "regulariser normalised per layer"})
    quota: float = field(default=0.0, metadata={"help": "fraction of units a task may take unpenalised"})
    compensation: float | None = field(
        default=None, metadata={"help": "compensation factor (default: s_max)"}
    )

    def validate(self) -> None:
        super().validate()
        checks = [
            ("s_max", self.s_max > 1, "> 1"),
            ("c", self.c >= 0, ">= 0"),
            ("embedding_clamp", self.embedding_clamp > 0, "> 0"),
            ("compensation_clamp", self.compensation_clamp > 0, "> 0"),
            ("quota", 0 <= self.quota < 1, "in [0, 1)"),
            ("compensation", self.compensation is None or self.compensation > 0, "> 0"),
        ]
        self.require(checks)


@register_method("hat")
class HAT(Method):
    """Hard Attention to the Task around a model with :class:`~maskcl.core.gate.TaskGate` s.

    Args:
        model: a task-aware model with gates: built by :func:`maskcl.create_model` (``gates=True``) or
            converted by :func:`maskcl.convert`.
        **options: the fields of :class:`HATConfig`.
    """

    config_class = HATConfig
    gates = True
    exact = True

    def __init__(self, model: nn.Module, **options: Any) -> None:
        super().__init__(model, **options)
        config = self.config
        self.schedule = scale_schedule_named(config.scale_schedule)
        self.compensation = config.s_max if config.compensation is None else config.compensation
        self.gate_modules = [m for m in self.model.modules() if isinstance(m, TaskGate)]
        if not self.gate_modules:
            raise MaskclError(f"{type(self.model).__name__} has no HAT gates: build it with gates=True")
        offset = 0
        for gate in self.gate_modules:
            gate.bank = slice(offset, offset + gate.num_units)
            offset += gate.num_units

    # ----------------------------------------------------------------------------------------------- task
    def protected(self, tasks: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Everything learned tasks own: their gate embeddings, heads and norm rows, the gated layers'
        entries their units use (HAT's cumulative mask), and whatever is shared without an owner."""
        return owned_entries(self.model, tasks)

    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int = 1) -> None:
        """Begin training ``task`` with ``optimizer``, whose epochs have ``steps_per_epoch`` steps."""
        super().start_task(task, optimizer, steps_per_epoch)
        self.step = 0
        self._set_scale()
        self._initialise_masks(self.task)
        self._prepare_regularizer(self.state.learned_tasks())
        if self._num_free == 0:
            warnings.warn(
                f"HAT: no free unit is left for task {self.task}; it can only reuse units of earlier tasks "
                "(the mask regulariser is 0)",
                stacklevel=2,
            )
        self.add_hook(self.model.register_forward_pre_hook(lambda *_: self._compute_gates()))

    def state_dict(self) -> dict:
        """The training position inside the task's epoch, on which the gate scale depends."""
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Continue a task (after :meth:`start_task`) from :meth:`state_dict`."""
        self.step = state["step"]
        self._set_scale()

    def regularizer(self) -> torch.Tensor:
        """HAT's attention regulariser (Serrà et al., ICML 2018, eq. 5) on the last training forward pass's
        gates.

        ``R = c * sum_i a_t[i] * (1 - a_<t[i]) / sum_i (1 - a_<t[i])`` over all gated units ``i``; 0 when no
        unit is free. With ``per_layer`` the sums run over each layer ``g`` and ``R`` is the mean over the
        layers with a free unit; with a ``quota`` ``q``, each group's numerator becomes
        ``relu(sum_i a_t[i] * (1 - a_<t[i]) - q * n_g)`` (``n_g``: the group's units).
        """
        if self.task is None:
            raise MaskclError("regularizer() needs a task in training: call start_task() first")
        gates = self.state.context.soft_gates
        if gates is None:
            raise MaskclError("regularizer() needs a forward pass in training mode first")
        if self._num_free == 0:
            return gates.new_zeros(())
        if self.config.quota == 0:  # every numerator is >= 0: R is linear in the gates
            return torch.dot(gates, self._unit_weights)
        new = torch.zeros_like(self._group_free).index_add_(0, self._unit_group, gates * self._free)
        return torch.dot(torch.relu(new - self.config.quota * self._group_units), self._group_weights)

    def after_step(self) -> None:
        """Clamp the embeddings and advance the gate scale."""
        with torch.no_grad():
            for gate in self.gate_modules:
                gate.embedding.clamp_(-self.config.embedding_clamp, self.config.embedding_clamp)
        self.step = (self.step + 1) % self.steps_per_epoch
        self._set_scale()

    def end_task(self) -> None:
        """Finish the task: it becomes learned and its units are protected from now on."""
        super().end_task()
        self.state.context.soft_gates = None

    def summary(self) -> dict:
        """``capacity``: per gated layer, the units each learned task uses, free and shared."""
        return {"capacity": [dataclasses.asdict(layer) for layer in capacity(self.model).layers]}

    def extra_memory(self) -> int:
        """The exact protection's two integer copies (kept bits, frozen bits) of the protected tensors."""
        return 2 * sum(p.numel() * p.element_size() for p in self.model.parameters())

    # ------------------------------------------------------------------------------------------- internals
    def _set_scale(self) -> None:
        progress = self.step / (self.steps_per_epoch - 1) if self.steps_per_epoch > 1 else 1.0
        self.state.context.scale = self.schedule(progress, self.config.s_max)

    @torch.no_grad()
    def _initialise_masks(self, task: int) -> None:
        if self.config.mask_init == "normal":
            return  # the paper's N(0, 1), drawn when the gates were built
        for gate in self.gate_modules:
            row = gate.embedding[task]
            if self.config.mask_init == "dense":
                row.fill_(1.0)
            else:
                on = torch.randperm(gate.num_units)[: -(-gate.num_units // self.state.num_tasks)]
                row.fill_(-1.0)
                row[on.to(row.device)] = 1.0

    def _prepare_regularizer(self, learned: list[int]) -> None:
        """Per-unit constants of :meth:`regularizer`: which units are free, and their groups' normalisers."""
        free = torch.cat([~gate.used_units(learned) for gate in self.gate_modules]).float()
        sizes = [gate.num_units for gate in self.gate_modules] if self.config.per_layer else [free.numel()]
        group = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(free.device)
        group_free = torch.zeros(len(sizes), device=free.device).index_add_(0, group, free)
        active = group_free > 0
        self._num_free = int(free.sum())
        self._free, self._unit_group, self._group_free = free, group, group_free
        self._group_units = torch.tensor(sizes, dtype=free.dtype, device=free.device)
        self._group_weights = torch.where(
            active, self.config.c / group_free.clamp(min=1) / max(int(active.sum()), 1), 0
        )
        self._unit_weights = free * self._group_weights[group]

    def _compute_gates(self) -> None:
        context = self.state.context
        if not self.model.training:
            context.soft_gates = None
            return
        if not isinstance(context.task, int) or context.task != self.task:
            raise MaskclError(
                f"HAT is training task {self.task}: a training-mode forward pass must use that task, "
                f"not {context.task if isinstance(context.task, int) else 'per-sample task ids'}"
            )
        tables = [gate.embedding for gate in self.gate_modules]
        context.soft_gates = soft_gates(
            tables, context.task, context.scale, self.compensation, self.config.compensation_clamp
        )
