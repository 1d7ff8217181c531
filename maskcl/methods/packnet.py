"""PackNet (Mallya & Lazebnik, CVPR 2018): tasks packed into one network by iterative magnitude pruning.

Each task ``t`` trains the weights no earlier task owns (the *free* ones) together with the earlier tasks'
weights, which stay fixed; then, in every masked layer, the fraction ``prune`` of the weights it trained
with the smallest ``|w|`` is pruned (set to 0 and released to later tasks), and the rest is retrained for
the task's last ``retrain_epochs`` epochs. The kept weights become the task's own and are frozen from then
on. Task ``t`` computes with the weights owned by tasks ``<= t``, so ``W_t = W * [owner(W) <= t]``
(Sec. 3 of the paper)::

    packnet = create_method("packnet", model)   # model: task-aware, without gates
    net = packnet.model                          # the PackNetNet to train and evaluate
    packnet.check_epochs(epochs)
    for task ...:
        packnet.start_task(task, optimizer, steps_per_epoch)
        for epoch in range(1, epochs + 1):
            ... loss = F.cross_entropy(net(x), y) ...
            packnet.end_epoch(epoch, epochs)    # prunes after epoch ``epochs - retrain_epochs``
        packnet.end_task()

The weights of at least two dimensions (convolutions and linear layers) are pruned; the heads and the
per-task BatchNorm rows belong to their task already. The other parameters (the biases) have no owner
per entry: they are trained by the first task only and kept from then on. The frozen
entries are kept bit-for-bit (:mod:`maskcl.core.protection`), so learned tasks' outputs never change.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from maskcl.core.capacity import LayerCapacity
from maskcl.core.context import check_task_id
from maskcl.core.masking import MaskedNet
from maskcl.core.protection import owned_entries
from maskcl.errors import MaskclError, MaskclWarning
from maskcl.methods.base import Method, MethodConfig, register_method

__all__ = ["FEW_FREE", "PackNet", "PackNetConfig", "PackNetNet", "prune_count", "smallest_magnitudes"]

FEW_FREE = 0.01
"""A task starting with fewer than this fraction of some masked layer's weights free gets a warning."""


def prune_count(trained: int, task: int, num_tasks: int, prune: float | None) -> int:
    """How many of the ``trained`` weights of one layer task ``task`` prunes (Mallya & Lazebnik, Sec. 3).

    ``round(prune * trained)`` (Python's ``round``: ties to even); with ``prune`` None, equal shares: the
    task keeps ``round(trained / (T - t))`` of them, so each of the ``T`` tasks gets about the same part of
    the layer. The last task prunes nothing: no task follows to use the weights it would release.
    """
    if task == num_tasks - 1:
        return 0
    if prune is None:
        return trained - round(trained / (num_tasks - task))
    return round(prune * trained)


def smallest_magnitudes(weight: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask of the ``count`` entries of ``weight`` with the smallest ``|w|`` among ``candidates``
    (a boolean mask of its shape): those below the ``count``-th smallest magnitude, then ties at it, the
    first in memory order."""
    mask = torch.zeros(candidates.numel(), dtype=torch.bool, device=candidates.device)
    if count > 0:
        index = candidates.flatten().nonzero().squeeze(1)
        magnitude = weight.detach().flatten()[index].abs()
        threshold = magnitude.kthvalue(count).values
        below = magnitude < threshold
        ties = (magnitude == threshold).nonzero().squeeze(1)[: count - int(below.sum())]
        mask[index[below]] = True
        mask[index[ties]] = True
    return mask.view(candidates.shape)


def _owner_dtype(num_tasks: int) -> torch.dtype:
    """The smallest integer type holding every task id and a larger ``free`` value."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if num_tasks <= torch.iinfo(dtype).max:
            return dtype
    raise MaskclError(f"PackNet supports at most {torch.iinfo(torch.int32).max} tasks, got {num_tasks}")


class PackNetNet(MaskedNet):
    """A task-aware target whose masked weights each belong to one task, or are free.

    Ownership is one integer buffer per masked tensor (``owners.<i>`` for the ``i``-th of :attr:`masked`,
    its shape): the owning task's id, or :attr:`free` (the dtype's largest value, so ``owner <= t`` is
    exactly "owned by task ``t`` or an earlier one"). A task in training owns every weight it trains (the
    free ones, claimed when it starts) until pruning releases some. ``uint8`` up to 255 tasks.

    Args:
        target: a task-aware network without gates (``maskcl.create_model(..., gates=False)`` or
            ``maskcl.convert(model, classes, gates=False)``).
    """

    def __init__(self, target: nn.Module) -> None:
        super().__init__(target, min_dim=2)
        dtype = _owner_dtype(self.state.num_tasks)
        self.free = torch.iinfo(dtype).max
        self.owners = nn.Module()
        for i, (_, p) in enumerate(self.masked):
            self.owners.register_buffer(str(i), torch.full(p.shape, self.free, dtype=dtype, device=p.device))

    def owner(self, i: int) -> torch.Tensor:
        """The owner buffer of the ``i``-th masked tensor."""
        return self.owners.get_buffer(str(i))

    def masks(self, task: int) -> list[torch.Tensor]:
        """Task ``task``'s boolean masks: the weights owned by ``task`` or an earlier task."""
        return [self.owner(i) <= task for i in range(len(self.masked))]

    def task_weights(self, task: int) -> dict[str, torch.Tensor]:
        """Each masked ``W`` as ``where(owner <= task, W, 0)`` (a selection, not ``W * m``: a non-finite
        weight of a later task cannot reach a learned one as ``0 * inf``)."""
        return {name: torch.where(m, p, 0.0) for (name, p), m in zip(self.masked, self.masks(task))}

    def owned_entries(self, tasks: list[int]) -> dict[str, torch.Tensor]:
        """The masked weights' entries that ``tasks`` own, for the ownership walk
        (:func:`~maskcl.core.protection.owned_entries`)."""
        entries = {}
        for i, (name, _) in enumerate(self.masked):
            owner = self.owner(i)
            entries[f"target.{name}"] = torch.isin(owner, owner.new_tensor(tasks))
        return entries

    def free_for(self, task: int) -> list[int]:
        """Per masked tensor, how many weights ``task`` can train: the free ones and its own."""
        return [int(((o == self.free) | (o == task)).sum()) for o in self.owners.buffers()]

    @torch.no_grad()
    def claim(self, task: int) -> None:
        """Give every free weight to ``task``, which starts training."""
        for owner in self.owners.buffers():
            owner.masked_fill_(owner == self.free, task)

    @torch.no_grad()
    def prune(self, task: int, prune: float | None) -> None:
        """Release, per masked tensor, :func:`prune_count` of ``task``'s weights with the smallest ``|w|``
        (Mallya & Lazebnik, Sec. 3): they become free and 0."""
        for i, (_, p) in enumerate(self.masked):
            owner = self.owner(i)
            own = owner == task
            count = prune_count(int(own.sum()), task, self.state.num_tasks, prune)
            if count:
                pruned = smallest_magnitudes(p, own, count)
                owner.masked_fill_(pruned, self.free)
                p.masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def zero_free(self) -> None:
        """Set the free weights to 0 (where the optimizer moved them since pruning), for the next task."""
        for i, (_, p) in enumerate(self.masked):
            p.masked_fill_(self.owner(i) == self.free, 0.0)

    def capacity(self, tasks: list[int]) -> list[LayerCapacity]:
        """Per masked tensor: the fraction each of ``tasks`` uses (its own weights and those of the earlier
        ones), the fraction none uses and the fraction two or more use."""
        layers = []
        for i, (name, p) in enumerate(self.masked):
            owner = self.owner(i)
            mine = torch.isin(owner, owner.new_tensor(tasks))
            users = torch.zeros(owner.shape, dtype=torch.int64, device=owner.device)
            used = {}
            for task in tasks:
                uses = mine & (owner <= task)
                used[task] = int(uses.sum()) / p.numel()
                users += uses
            free, shared = int((users == 0).sum()) / p.numel(), int((users >= 2).sum()) / p.numel()
            layers.append(LayerCapacity(name=name, units=p.numel(), used=used, free=free, shared=shared))
        return layers


@dataclass(frozen=True)
class PackNetConfig(MethodConfig):
    """PackNet's options (Mallya & Lazebnik, CVPR 2018).

    ``prune``: the fraction of the weights a task trained that it prunes, per masked layer, in (0, 1);
    None (default): equal shares, task ``t`` of ``T`` keeps ``1 / (T - t)`` of them, so that every task
    gets about the same capacity whatever ``T`` is.
    ``retrain_epochs``: the task's last that many epochs retrain the kept weights after pruning.
    """

    prune: float | None = field(
        default=None,
        metadata={"help": "fraction of a task's weights pruned per layer (default: equal shares)"},
    )
    retrain_epochs: int = field(default=1, metadata={"help": "epochs a task retrains after pruning"})

    def validate(self) -> None:
        super().validate()
        if self.prune is not None and not 0 < self.prune < 1:
            raise MaskclError(f"prune must be in (0, 1) or None for equal shares, got {self.prune}")
        if self.retrain_epochs < 1:
            raise MaskclError(f"retrain_epochs must be >= 1, got {self.retrain_epochs}")


@register_method("packnet")
class PackNet(Method):
    """PackNet around a task-aware target: ``.model`` is the :class:`PackNetNet` that masks it.

    Tasks are learned in order (task ``t`` after tasks ``0..t-1``). Task ``t`` trains its free weights and
    uses the earlier tasks' frozen ones; after epoch ``epochs - retrain_epochs`` (:meth:`end_epoch`) it is
    pruned, and retrains only the weights it keeps. The last task is not pruned (nothing follows it). A
    task ended before its pruning epoch (a loop without :meth:`end_epoch`) is pruned by :meth:`end_task`,
    with a warning, and not retrained. Everything learned tasks own is kept bit-for-bit (:meth:`protected`).

    Args:
        model: a task-aware network without gates.
        **options: the fields of :class:`PackNetConfig`.
    """

    config_class = PackNetConfig
    gates = False
    exact = True

    def __init__(self, model: nn.Module, **options: Any) -> None:
        super().__init__(model, **options)
        self.pruned = False  # whether the task in training is pruned yet

    def prepare(self, model: nn.Module) -> PackNetNet:
        return PackNetNet(model)

    def protected(self, tasks: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The learned tasks' weights, heads and norm rows, and every parameter without an owner per entry
        (the biases, trained by the first task only)."""
        return owned_entries(self.model, tasks)

    def check_epochs(self, epochs: int) -> None:
        """Refuse ``epochs`` a task that leave no epoch to train before pruning."""
        if self.config.retrain_epochs >= epochs:
            raise MaskclError(
                f"retrain_epochs {self.config.retrain_epochs} must be fewer than the {epochs} epochs a task: "
                "PackNet trains, prunes, then retrains"
            )

    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int = 1) -> None:
        """Begin ``task``: it takes every free weight. A one-line error when a task before it is not learned
        or one after it is, or when no masked layer has a free weight; a warning when some layer has fewer
        than :data:`FEW_FREE` of its weights free."""
        if self.task is None and not self.state.learned[check_task_id(task, self.state.num_tasks)]:
            self._check_can_learn(task)
        super().start_task(task, optimizer, steps_per_epoch)
        self.model.claim(self.task)
        self.pruned = False

    def end_epoch(self, epoch: int, epochs: int) -> None:
        """Prune the task after epoch ``epochs - retrain_epochs``."""
        if self.task is None:
            raise MaskclError("end_epoch() without a task in training: call start_task() first")
        self.check_epochs(epochs)
        if epoch == epochs - self.config.retrain_epochs and not self.pruned:
            self._prune()

    def end_task(self) -> None:
        """Finish the task (pruned now if :meth:`end_epoch` did not): its kept weights are frozen from now
        on and the free ones set to 0."""
        if self.task is not None and not self.pruned and self.task < self.state.num_tasks - 1:
            warnings.warn(
                f"PackNet: task {self.task} ended before its pruning epoch (end_epoch() was not called): "
                "it is pruned now, without retraining",
                MaskclWarning,
                stacklevel=2,
            )
            self._prune()
        super().end_task()
        self.model.zero_free()

    def state_dict(self) -> dict:
        """Whether the task in training is pruned yet (the owners are model buffers)."""
        return {"pruned": self.pruned}

    def load_state_dict(self, state: dict) -> None:
        """Continue a task (after :meth:`start_task`) from :meth:`state_dict`."""
        self.pruned = state["pruned"]

    def summary(self) -> dict:
        """``capacity``: per masked tensor, the weights each learned task uses, free and shared."""
        layers = self.model.capacity(self.state.learned_tasks())
        return {"capacity": [dataclasses.asdict(layer) for layer in layers]}

    def extra_memory(self) -> int:
        """The exact protection's two integer copies (kept bits, frozen bits) of the protected tensors
        (parameters and floating-point buffers), and the forward pass's masked copy of every masked weight
        with its boolean mask. The owner buffers are the model's own buffers."""
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        buffers = sum(b.numel() * b.element_size() for b in self.model.buffers() if b.is_floating_point())
        masked = sum(p.numel() * (p.element_size() + 1) for _, p in self.model.masked)
        return 2 * (params + buffers) + masked

    def _check_can_learn(self, task: int) -> None:
        learned = self.state.learned
        if not bool(learned[:task].all()) or bool(learned[task + 1 :].any()):
            raise MaskclError(
                f"PackNet learns tasks in order (0, 1, ...): task {task} cannot start with tasks "
                f"{self.state.learned_tasks()} learned"
            )
        free = self.model.free_for(task)
        if sum(free) == 0:
            raise MaskclError(
                f"no free weight is left in any masked layer for task {task}: the earlier tasks pruned none "
                f"(prune={self.config.prune})"
            )
        few = [
            name
            for (name, _), n, size in zip(self.model.masked, free, self.model.sizes)
            if n < FEW_FREE * size
        ]
        if few:
            warnings.warn(
                f"PackNet: task {task} has fewer than {FEW_FREE:.0%} of the weights free in {len(few)} of "
                f"{len(free)} masked layers ({few[0]}, ...); it mostly reuses earlier tasks' weights there",
                MaskclWarning,
                stacklevel=3,
            )

    def _prune(self) -> None:
        self.model.prune(self.task, self.config.prune)
        self.pruned = True
