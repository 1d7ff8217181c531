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
(:mod:`maskcl.protection`), so that learned tasks' outputs stay bit-for-bit identical whatever the
optimizer does (momentum, Adam, weight decay, schedulers). ``end_task`` marks the task learned: its hard
mask joins the cumulative one. Pass the optimizer that updates the model's parameters.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from maskcl.context import check_task_id, task_state
from maskcl.errors import MaskclError
from maskcl.hat.gate import TaskGate
from maskcl.protection import Protector


def linear_scale(progress: float, s_max: float) -> float:
    """HAT's annealing of the gate scale (Serrà et al., ICML 2018) over the B batches of an epoch.

    ``s = 1/s_max + (s_max - 1/s_max) * progress`` with ``progress = b / (B - 1)`` for batch ``b``.
    """
    return 1 / s_max + (s_max - 1 / s_max) * progress


# Gate values below this are written as 0 in the forward pass (the gradient still follows the exact
# sigmoid). Tiny gates times activations or gradients give subnormal floats, which slow CPU matrix
# products several times over; a gate of 1e-20 is zero for any practical purpose.
FLUSH_BELOW = 1e-20


class _SoftGates(torch.autograd.Function):
    """All gates of one task in one call: forward ``sigmoid(s * e_t)`` concatenated over the embedding
    tables (flushed below ``FLUSH_BELOW``); backward with HAT's compensation, into each table's row t."""

    @staticmethod
    def forward(ctx, task: int, s: float, s_max: float, clamp: float, *tables: torch.Tensor) -> torch.Tensor:
        embedding = torch.cat([table[task] for table in tables])
        scaled = embedding * s
        gates = torch.sigmoid(scaled)
        ctx.save_for_backward(embedding, scaled, gates)
        ctx.task, ctx.s_max, ctx.clamp = task, s_max, clamp
        ctx.shapes = [table.shape for table in tables]
        return torch.threshold(gates, FLUSH_BELOW, 0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        embedding, scaled, gates = ctx.saved_tensors
        # autograd's sigmoid gradient, d/de sigmoid(s e) = s * a * (1 - a), times the compensation
        # s_max / s * (cosh(clamp(s e)) + 1) / (cosh(e) + 1); the two factors of s cancel.
        numerator = torch.cosh(scaled.clamp(-ctx.clamp, ctx.clamp)).add_(1)
        compensation = numerator.div_(torch.cosh(embedding).add_(1))
        grad_embedding = torch.addcmul(gates, gates, gates, value=-1).mul_(grad).mul_(compensation)
        grad_embedding.mul_(ctx.s_max)
        grads, offset = [], 0
        for shape in ctx.shapes:
            table_grad = grad.new_zeros(shape)
            table_grad[ctx.task] = grad_embedding[offset : offset + shape[1]]
            grads.append(table_grad)
            offset += shape[1]
        return None, None, None, None, *grads


def soft_gates(
    tables: list[torch.Tensor], task: int, s: float, s_max: float, clamp: float = 50.0
) -> torch.Tensor:
    """Training gates ``a = sigmoid(s * e_t)`` of every embedding table (``[tasks, units]``), concatenated,
    whose gradient to ``e`` gets HAT's compensation.

    Autograd's gradient of ``sigmoid(s * e)`` is multiplied, as in the paper's code, by
    ``s_max / s * (cosh(clamp(s * e, -clamp, clamp)) + 1) / (cosh(e) + 1)``, so that the embedding
    learns at a pace independent of the current scale ``s`` (Serrà et al., ICML 2018). Values
    below ``FLUSH_BELOW`` are set to 0 in the forward value only; the gradient is the exact sigmoid's.
    """
    return _SoftGates.apply(task, s, s_max, clamp, *tables)


def owned_entries(model: nn.Module, tasks: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every parameter and buffer entry of ``model`` that ``tasks`` own, as ``(tensor, mask)`` pairs.

    Layers that know their owners (gates, heads, task-indexed norms, and gated layers through the
    :class:`~maskcl.hat.gate.GateLink` s returned by any submodule's ``gate_links()``) say which entries;
    any other parameter is shared by all tasks with no way of telling which entries a task uses, so it is
    frozen whole once any task is learned.
    """
    if not tasks:
        return []
    links = [link for m in model.modules() if hasattr(m, "gate_links") for link in m.gate_links()]
    owners = [m for m in model.modules() if hasattr(m, "owned_entries")] + links
    pairs, covered = [], set()
    for owner in owners:
        module = owner.module if hasattr(owner, "module") else owner
        for name, mask in owner.owned_entries(tasks).items():
            tensor = getattr(module, name)
            pairs.append((tensor, mask))
            covered.add(id(tensor))
    for param in model.parameters():
        if id(param) not in covered:
            pairs.append((param, torch.ones((), dtype=torch.bool, device=param.device)))
    return pairs


class HAT:
    """Hard Attention to the Task around a model with :class:`~maskcl.hat.gate.TaskGate` s.

    Args:
        model: a task-aware model with gates: built by :func:`maskcl.create_model` (``hat=True``) or
            converted by :func:`maskcl.hat.convert`.
        s_max: final gate scale (paper: 400).
        c: weight of the mask regulariser (paper: 0.75).
        embedding_clamp: embeddings are clamped to ``[-clamp, clamp]`` after each step (paper: 6).
        compensation_clamp: ``s * e`` is clamped to this range inside the gradient compensation (paper: 50).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        s_max: float = 400.0,
        c: float = 0.75,
        embedding_clamp: float = 6.0,
        compensation_clamp: float = 50.0,
    ) -> None:
        if s_max <= 1:
            raise MaskclError(f"s_max must be > 1, got {s_max}")
        if c < 0:
            raise MaskclError(f"the regulariser weight c must be >= 0, got {c}")
        self.model = model
        self.state = task_state(model)
        self.gates = [m for m in model.modules() if isinstance(m, TaskGate)]
        if not self.gates:
            raise MaskclError(f"{type(model).__name__} has no HAT gates: build it with hat=True")
        self.s_max, self.c = s_max, c
        self.embedding_clamp, self.compensation_clamp = embedding_clamp, compensation_clamp
        offset = 0
        for gate in self.gates:
            gate.bank = slice(offset, offset + gate.num_units)
            offset += gate.num_units
        self.task: int | None = None
        self._protector: Protector | None = None
        self._hooks: list = []

    # ----------------------------------------------------------------------------------------------- task
    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        """Begin training ``task`` with ``optimizer``, whose epochs have ``steps_per_epoch`` steps."""
        task = check_task_id(task, self.state.num_tasks)
        if self.task is not None:
            raise MaskclError(
                f"task {self.task} is still training: call end_task() before starting task {task}"
            )
        learned = self.state.learned_tasks()
        if task in learned:
            raise MaskclError(
                f"task {task} is already learned; its units are protected and cannot be retrained"
            )
        if steps_per_epoch < 1:
            raise MaskclError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.task, self.steps_per_epoch, self.step = task, steps_per_epoch, 0
        self.state.context.select(task)
        self._set_scale()
        free = torch.cat([~gate.used_units(learned) for gate in self.gates]).float()
        self._num_free = int(free.sum())
        self._free_weights = free * (self.c / max(self._num_free, 1))
        if self._num_free == 0:
            warnings.warn(
                f"HAT: no free unit is left for task {task}; it can only reuse units of earlier tasks "
                "(the mask regulariser is 0)",
                stacklevel=2,
            )
        self._protector = Protector(owned_entries(self.model, learned))
        self._hooks = [
            optimizer.register_step_post_hook(lambda *_: self._after_step()),
            self.model.register_forward_pre_hook(lambda *_: self._compute_gates()),
        ]

    def regularizer(self) -> torch.Tensor:
        """HAT's attention regulariser (Serrà et al., ICML 2018) on the last training forward pass's gates.

        ``R = c * sum_l sum_i a_t[l, i] * (1 - a_<t[l, i]) / sum_l sum_i (1 - a_<t[l, i])``; 0 when no unit
        is free.
        """
        if self.task is None:
            raise MaskclError("regularizer() needs a task in training: call start_task() first")
        gates = self.state.context.soft_gates
        if gates is None:
            raise MaskclError("regularizer() needs a forward pass in training mode first")
        if self._num_free == 0:
            return gates.new_zeros(())
        return torch.dot(gates, self._free_weights)

    def end_task(self) -> None:
        """Finish the task: it becomes learned and its units are protected from now on."""
        if self.task is None:
            raise MaskclError("end_task() without a task in training")
        for hook in self._hooks:
            hook.remove()
        self._protector.restore()
        self.state.learned[self.task] = True
        self.state.context.soft_gates = None
        self.task, self._protector, self._hooks = None, None, []

    # ------------------------------------------------------------------------------------------- internals
    def _set_scale(self) -> None:
        progress = self.step / (self.steps_per_epoch - 1) if self.steps_per_epoch > 1 else 1.0
        self.state.context.scale = linear_scale(progress, self.s_max)

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
        tables = [gate.embedding for gate in self.gates]
        context.soft_gates = soft_gates(
            tables, context.task, context.scale, self.s_max, self.compensation_clamp
        )

    @torch.no_grad()
    def _after_step(self) -> None:
        self._protector.restore()
        for gate in self.gates:
            gate.embedding.clamp_(-self.embedding_clamp, self.embedding_clamp)
        self.step = (self.step + 1) % self.steps_per_epoch
        self._set_scale()

    # ------------------------------------------------------------------------------------------- capacity
    def used_fraction(self) -> list[float]:
        """Per gated layer, the fraction of units used by the learned tasks."""
        learned = self.state.learned_tasks()
        return [float(g.used_units(learned).float().mean()) for g in self.gates]
