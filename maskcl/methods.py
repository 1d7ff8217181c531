"""The continual-learning methods the trainer runs: ``hat`` and the reference baselines.

A method decides three things about each task: whether the network carries HAT gates, which tasks'
data it trains on, and what happens around the task (start, extra loss term, end).

- ``hat``: Hard Attention to the Task (:class:`maskcl.hat.HAT`); learned tasks are protected exactly.
- ``finetune``: the same network without gates, trained on each task in turn with no protection; the
  lower reference, it shows how much plain sequential training forgets.
- ``joint``: the same network without gates, trained after task ``t`` on all tasks ``0..t`` together
  (one batch of each per step), continuing from the previous model; the upper reference.
- ``hypermask``: HyperMask (:mod:`maskcl.hypermask`): the same network without gates as the target of
  a hypernetwork that masks its weights per task.

Each method names in ``options`` the :class:`~maskcl.train.RunConfig` fields it takes; ``model`` is the
network to train and evaluate (a method may wrap the one it is given).
"""

from __future__ import annotations

import torch
from torch import nn

from maskcl.context import task_state
from maskcl.errors import MaskclError
from maskcl.hat import HAT
from maskcl.hypermask import HyperMask, HyperMaskNet


class Method:
    """Plain sequential training (``finetune``); subclasses add protection or replay."""

    name = "finetune"
    gated = False
    options: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, **options) -> None:
        self.model = model

    def training_tasks(self, task: int) -> list[int]:
        """The tasks whose training data are used while learning ``task``."""
        return [task]

    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        """Called before the first step of ``task``."""

    def penalty(self) -> torch.Tensor | float:
        """Added to the cross-entropy at every step."""
        return 0.0

    def end_task(self, task: int) -> None:
        """Called after the last step of ``task``."""
        task_state(self.model).learned[task] = True

    def state_dict(self) -> dict:
        """The method's own state inside a task, beyond the model's and the optimizer's (for checkpoints)."""
        return {}

    def extra_memory(self) -> int:
        """Bytes the method keeps over the run beyond the model's parameters and buffers, at least (what
        :func:`maskcl.train.check_memory` adds before allocating; the model may be on the meta device)."""
        return 0

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` after ``start_task`` of the same task (resuming a checkpoint)."""


class Joint(Method):
    name = "joint"

    def training_tasks(self, task: int) -> list[int]:
        return list(range(task + 1))


class HATMethod(Method):
    name = "hat"
    gated = True
    options = ("s_max", "c", "scale_schedule", "mask_init", "per_layer", "quota", "compensation")

    def __init__(self, model: nn.Module, **options) -> None:
        super().__init__(model)
        self.hat = HAT(model, **options)

    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        self.hat.start_task(task, optimizer, steps_per_epoch)

    def penalty(self) -> torch.Tensor:
        return self.hat.regularizer()

    def end_task(self, task: int) -> None:
        self.hat.end_task()

    def state_dict(self) -> dict:
        return self.hat.state_dict()

    def extra_memory(self) -> int:
        """The exact protection's two integer copies (kept bits, frozen bits) of the protected tensors."""
        return 2 * sum(p.numel() * p.element_size() for p in self.model.parameters())

    def load_state_dict(self, state: dict) -> None:
        self.hat.load_state_dict(state)


class HyperMaskMethod(Method):
    name = "hypermask"
    options = (
        "sparsity",
        "sparsity_ramp",
        "beta",
        "lam",
        "l1_masked",
        "embedding_dim",
        "hyper_hidden",
        "chunks",
    )

    def __init__(self, model: nn.Module, **options) -> None:
        net_options = {k: options[k] for k in ("sparsity", "embedding_dim", "chunks")}
        net = HyperMaskNet(model, hidden=options["hyper_hidden"], **net_options)
        super().__init__(net)
        regulariser = {k: options[k] for k in ("beta", "lam", "l1_masked", "sparsity_ramp")}
        self.hypermask = HyperMask(net, **regulariser)

    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> None:
        self.hypermask.start_task(task, optimizer)

    def penalty(self) -> torch.Tensor:
        return self.hypermask.regularizer()

    def end_task(self, task: int) -> None:
        self.hypermask.end_task()

    def state_dict(self) -> dict:
        return self.hypermask.state_dict()

    def extra_memory(self) -> int:
        """One cached mask per task and the task's snapshot of the target's weights (and, with
        ``l1_masked``, their weighting): ``(T + 2) x W`` floats for ``W`` masked weights."""
        weights = sum(self.model.sizes)
        return (self.model.state.num_tasks + 2) * weights * 4

    def load_state_dict(self, state: dict) -> None:
        self.hypermask.load_state_dict(state)


METHODS: dict[str, type[Method]] = {m.name: m for m in (HATMethod, HyperMaskMethod, Method, Joint)}


def method_class(name: str) -> type[Method]:
    """The method called ``name``, or a one-line error listing the known ones."""
    if name not in METHODS:
        raise MaskclError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]
