"""HyperMask (Książek & Spurek, arXiv 2310.00113): a hypernetwork gives each task a semi-binary mask over
one shared target network's weights, so each task computes with its own weighted subnetwork.

    hm = HyperMask(target)   # target: a task-aware model (per-task heads), code unchanged
    net = hm.model           # the HyperMaskNet to train and evaluate
    for task ...:
        hm.start_task(task, optimizer, steps_per_epoch)
        ... loss = F.cross_entropy(net(x), y) + hm.regularizer() ...
        hm.end_task()

The target's parameters are replaced per task through ``torch.func.functional_call``: ``W_t = W * m_t``
with ``m_t = |tanh(h_t)|`` for the hypernetwork's scores ``h_t``, the lowest ``sparsity`` % of each tensor's
entries set to 0. Not masked: the heads' biases (the output layer's bias, as in the method's code) and
task-indexed BatchNorm rows, which are each task's own already.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from maskcl.core.masking import MaskedNet
from maskcl.core.protection import owned_entries
from maskcl.errors import MaskclError
from maskcl.methods.base import Method, MethodConfig, register_method
from maskcl.methods.hypermask.hypernetwork import DEFAULT_SIZE, HyperNetwork

__all__ = ["HyperMask", "HyperMaskConfig", "HyperMaskNet", "semi_binary_mask"]


def semi_binary_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """HyperMask's mask of one tensor: ``m = |tanh(h)|``, its lowest ``sparsity`` % of entries set to 0."""
    mask = torch.tanh(scores).abs()
    k = int(sparsity / 100 * mask.numel())
    if k == 0:
        return mask
    threshold = mask.detach().flatten().kthvalue(k).values
    return mask * (mask > threshold)


class HyperMaskNet(MaskedNet):
    """A task-aware target network whose weights a :class:`HyperNetwork` masks per task.

    ``forward(x)`` computes the task selected with :func:`maskcl.set_task` (an int, or one id per sample).
    A learned task uses its cached mask (no hypernetwork pass); the task in training asks the hypernetwork.
    Cached masks are buffers of the child ``cached_masks``, one 1-D float32 tensor per learned task
    (``cached_masks.<task>``), made when the task is cached: after ``K`` tasks the net holds ``K x W x 4``
    bytes of masks for ``W`` masked weights, and a learned task's tensor never changes again.

    Args:
        target: a task-aware network (``maskcl.create_model(..., gates=False)`` or
            ``maskcl.convert(model, classes, gates=False)``).
        sparsity: percentage of each masked tensor's entries set to 0, in [0, 100).
        hypernetwork: the :class:`HyperNetwork`'s sizes (``embedding_dim``, ``hidden``, ``chunks``,
            ``chunk_embedding_dim``, ``size``); ``hidden`` and ``chunks`` left out are sized to the target.
    """

    def __init__(
        self,
        target: nn.Module,
        *,
        sparsity: float = 0.0,
        **hypernetwork: Any,
    ) -> None:
        super().__init__(target, heads=True)
        if not 0 <= sparsity < 100:
            raise MaskclError(f"sparsity must be in [0, 100), got {sparsity}")
        self.sparsity = sparsity
        self.current_sparsity = sparsity  # lower while HyperMask ramps the first task's sparsity up
        total = sum(self.sizes)
        device = self.masked[0][1].device
        self.hypernetwork = HyperNetwork(total, self.state.num_tasks, **hypernetwork).to(device)
        self.cached_masks = nn.Module()
        self._register_load_state_dict_pre_hook(self._make_cached_masks)

    def cached_mask(self, task: int) -> torch.Tensor:
        """The flat mask cached for the learned task ``task``."""
        return self.cached_masks.get_buffer(str(task))

    def masks(self, task: int) -> list[torch.Tensor]:
        """Task ``task``'s mask of each masked tensor (cached once the task is learned)."""
        if self.state.learned[task]:
            flat = self.cached_mask(task).split(self.sizes)
            return [m.view_as(p) for m, (_, p) in zip(flat, self.masked)]
        scores = self.hypernetwork(task).split(self.sizes)
        return [
            semi_binary_mask(s, self.current_sparsity).view_as(p) for s, (_, p) in zip(scores, self.masked)
        ]

    @torch.no_grad()
    def cache(self, task: int) -> None:
        """Store task ``task``'s current mask: from now on it is used without the hypernetwork."""
        masks = [semi_binary_mask(s, self.sparsity) for s in self.hypernetwork(task).split(self.sizes)]
        self.cached_masks.register_buffer(str(task), torch.cat(masks))

    def _make_cached_masks(self, state_dict: dict, prefix: str, *_) -> None:
        """Before loading: make a fresh ``[W]`` buffer for each task that ``state_dict`` has a cached mask
        for or marks learned, and no other, so that ``strict`` loading checks them like any other (a
        learned task's mask is missing without its key, a wrong shape is reported); a state of the earlier
        layout (one ``[tasks, W]`` buffer ``cached_masks``) is read as the rows of its learned tasks."""
        learned = [
            v for k, v in state_dict.items() if k.startswith(f"{prefix}target.") and k.endswith(".learned")
        ]
        learned = learned[0] if len(learned) == 1 and learned[0].shape == (self.state.num_tasks,) else None
        old = state_dict.pop(f"{prefix}cached_masks", None)
        if old is not None:
            state_dict.update(self._rows_of_learned_tasks(old, learned, prefix))
        start = f"{prefix}cached_masks."
        names = {str(t) for t in range(self.state.num_tasks)}
        tasks = {k.removeprefix(start) for k in state_dict if k.startswith(start)} & names
        tasks |= set() if learned is None else {str(t) for t in learned.nonzero().flatten().tolist()}
        weight = self.masked[0][1]
        self.cached_masks._buffers.clear()
        for name in sorted(tasks, key=int):
            self.cached_masks.register_buffer(
                name, torch.zeros(sum(self.sizes), dtype=weight.dtype, device=weight.device)
            )

    def _rows_of_learned_tasks(self, old: torch.Tensor, learned: torch.Tensor | None, prefix: str) -> dict:
        """The earlier layout's ``[tasks, W]`` buffer as ``cached_masks.<task>``, one per learned task."""
        if old.shape != (self.state.num_tasks, sum(self.sizes)):
            raise MaskclError(
                f"cached_masks of shape {tuple(old.shape)} does not fit this net's {self.state.num_tasks} "
                f"tasks of {sum(self.sizes)} masked weights"
            )
        if learned is None:
            raise MaskclError(
                "cached_masks of the earlier layout, but no target's learned tasks to pick its rows"
            )
        tasks = learned.nonzero().flatten().tolist()
        return {f"{prefix}cached_masks.{task}": old[task].clone() for task in tasks}


@dataclass(frozen=True)
class HyperMaskConfig(MethodConfig):
    """HyperMask's options; the regulariser's defaults are the method's published ones.

    ``sparsity``: % of each masked tensor set to 0. ``sparsity_ramp``: over the first task's first that
    many optimizer steps the sparsity rises linearly from 0 (0: no ramp), as the method's code optionally
    does. ``beta``, ``lam``: weights of the two penalties (see :class:`HyperMask`); ``l1_masked`` weighs the
    L1 term by the earlier tasks' masks. ``embedding_dim``, ``hyper_hidden``, ``chunks`` (0: unchunked,
    the original design), ``chunk_embedding_dim``: the hypernetwork's sizes (:class:`HyperNetwork`).

    How big the hypernetwork is: ``hyper_hidden`` and ``chunks`` left at None are sized so that the
    hypernetwork's parameters (task and chunk embeddings included) come within ``hyper_size`` x ``W`` and
    close to it, ``W`` being the target's masked weights (its parameters but the heads' biases and the
    per-task BatchNorm rows): two hidden layers as wide as fits, at most the published 100 and at least 16,
    then the fewest chunks that fit (:func:`~maskcl.methods.hypermask.hypernetwork.auto_size`). With the
    default 0.2 a target of over about 286,000 weights gets hidden (100, 100) and 500-700 chunks; below
    about 38,000 weights (0.2) nothing fits and the floor is used, the smallest hypernetwork of width 16
    (about ``928 + 24 T + 8 sqrt(17 W)`` parameters for ``T`` tasks). Given values are used as they are,
    the other one fitted to them (unchunked, ``chunks`` 0: hidden (100, 100), no budget); both given
    (e.g. the earlier defaults, ``chunks`` 1024 and ``hyper_hidden`` (100, 100)) build exactly that network.
    """

    sparsity: float = field(default=0.0, metadata={"help": "%% of each mask set to 0"})
    sparsity_ramp: int = field(default=0, metadata={"help": "first task's sparsity ramp, in steps"})
    beta: float = field(default=0.01, metadata={"help": "hypernetwork-output regulariser"})
    lam: float = field(default=0.001, metadata={"help": "lambda, L1 change of the target's weights"})
    l1_masked: bool = field(default=False, metadata={"help": "L1 change weighted by earlier masks"})
    embedding_dim: int = field(default=24, metadata={"help": "task embedding size"})
    hyper_size: float = field(
        default=DEFAULT_SIZE,
        metadata={"help": "hypernetwork size, a fraction of the target's masked weights (sizes left unset)"},
    )
    hyper_hidden: tuple[int, ...] | None = field(
        default=None, metadata={"help": "hypernetwork widths (default: sized by hyper_size)"}
    )
    chunks: int | None = field(
        default=None,
        metadata={"help": "hypernetwork output chunks; 0: unchunked (default: sized by hyper_size)"},
    )
    chunk_embedding_dim: int = field(default=16, metadata={"help": "chunk embedding size"})

    def validate(self) -> None:
        super().validate()
        hidden = self.hyper_hidden
        checks = [
            ("sparsity", 0 <= self.sparsity < 100, "in [0, 100)"),
            ("sparsity_ramp", self.sparsity_ramp >= 0, ">= 0 steps"),
            ("beta", self.beta >= 0, ">= 0"),
            ("lam", self.lam >= 0, ">= 0"),
            ("embedding_dim", self.embedding_dim >= 1, ">= 1"),
            ("hyper_size", self.hyper_size > 0 and math.isfinite(self.hyper_size), "a fraction > 0"),
            ("hyper_hidden", hidden is None or (len(hidden) >= 1 and min(hidden) >= 1), "positive widths"),
            ("chunks", self.chunks is None or self.chunks >= 0, ">= 0 (0: unchunked)"),
            ("chunk_embedding_dim", self.chunk_embedding_dim >= 1, ">= 1"),
        ]
        self.require(checks)


@register_method("hypermask")
class HyperMask(Method):
    """HyperMask around a task-aware target: ``.model`` is the :class:`HyperMaskNet` that masks it.

    ``regularizer() = beta * mean_{t' < t} ||H(e_t') - H*(e_t')||^2 + lambda * sum |W - W*|``: the change of
    the hypernetwork's scores for earlier tasks' embeddings against a snapshot ``H*`` taken when task ``t``
    started, and the L1 change of the target's masked weights since then (with ``l1_masked`` each weight's
    change is weighted by ``max_{t' < t} m_t'``, the most any earlier task uses it, so weights no earlier
    task uses move freely). Both keep earlier tasks, so both are 0 while the first task trains. What each
    task owns outright (its head's rows, its per-task BatchNorm rows, its task embedding) is kept exactly
    (:meth:`protected`); the shared weights and the hypernetwork move, held back by the regulariser.

    Args:
        target: a task-aware network without gates.
        **options: the fields of :class:`HyperMaskConfig`.
    """

    config_class = HyperMaskConfig

    def prepare(self, model: nn.Module) -> HyperMaskNet:
        config = self.config
        return HyperMaskNet(
            model,
            sparsity=config.sparsity,
            embedding_dim=config.embedding_dim,
            hidden=config.hyper_hidden,
            chunks=config.chunks,
            chunk_embedding_dim=config.chunk_embedding_dim,
            size=config.hyper_size,
        )

    def protected(self, tasks: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The learned tasks' own entries: head rows, per-task BatchNorm rows and task embeddings."""
        return owned_entries(self.model, tasks, shared=False)

    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int = 1) -> None:
        """Begin ``task``: snapshot the hypernetwork's scores of learned tasks and the target's weights.
        The sparsity ramp of the first task counts the steps of ``optimizer``."""
        learned = self.state.learned_tasks()
        super().start_task(task, optimizer, steps_per_epoch)
        net, config = self.model, self.config
        self._ramp = config.sparsity_ramp > 0 and not learned
        net.current_sparsity = 0.0 if self._ramp else net.sparsity
        self._steps = 0  # optimizer steps of the sparsity ramp
        self._previous = torch.tensor(learned, dtype=torch.long)
        with torch.no_grad():
            hyper = net.hypernetwork
            self._embeddings = hyper.task_embeddings[self._previous].clone()
            self._anchors = hyper.scores(self._embeddings) if len(self._previous) else None
            self._weights = [p.detach().clone() for _, p in net.masked]
            self._importance = self._earlier_use() if config.l1_masked else [1.0] * len(self._weights)

    def regularizer(self) -> torch.Tensor:
        """The method's two penalties for the task in training (see the class)."""
        if self.task is None:
            raise MaskclError("regularizer() needs a task in training: call start_task() first")
        hyper, config = self.model.hypernetwork, self.config
        total = hyper.task_embeddings.new_zeros(())
        if self._anchors is not None and config.beta > 0:
            change = hyper.scores(self._embeddings) - self._anchors
            total = total + config.beta * change.pow(2).sum(1).mean()
        if config.lam > 0 and len(self._previous):  # no previous task: nothing to keep
            pairs = zip(self.model.masked, self._weights, self._importance)
            moved = [((p - w).abs() * m).sum() for (_, p), w, m in pairs]
            total = total + config.lam * torch.stack(moved).sum()
        return total

    def after_step(self) -> None:
        """Advance the first task's sparsity ramp."""
        if self._ramp:
            self._steps += 1
            ramp = self.config.sparsity_ramp
            self.model.current_sparsity = self.model.sparsity * min(1.0, self._steps / ramp)

    def _earlier_use(self) -> list[torch.Tensor]:
        """Per masked tensor, the largest mask value any learned task gives each entry."""
        learned = self.state.learned_tasks()
        if not learned:
            return [torch.zeros_like(w) for w in self._weights]
        used = self.model.cached_mask(learned[0]).clone()
        for task in learned[1:]:
            torch.maximum(used, self.model.cached_mask(task), out=used)
        return [u.view_as(w) for u, w in zip(used.split(self.model.sizes), self._weights)]

    def state_dict(self) -> dict:
        """The task's snapshots (taken by :meth:`start_task`) and the sparsity ramp's progress."""
        return {
            "embeddings": self._embeddings,
            "anchors": self._anchors,
            "weights": self._weights,
            "ramp_steps": self._steps,
            "current_sparsity": self.model.current_sparsity,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue a task (after :meth:`start_task`) from :meth:`state_dict`."""
        device = self._embeddings.device
        self._embeddings = state["embeddings"].to(device)
        self._anchors = None if state["anchors"] is None else state["anchors"].to(device)
        self._weights = [w.to(device) for w in state["weights"]]
        self._steps = state["ramp_steps"]
        self.model.current_sparsity = state["current_sparsity"]

    def end_task(self) -> None:
        """Finish the task: cache its mask and mark it learned."""
        self.model.current_sparsity = self.model.sparsity
        if self.task is not None:
            self.model.cache(self.task)
        super().end_task()

    def summary(self) -> dict:
        """``hypernetwork``: the sizes it was built with (``chunks`` 0: unchunked), its parameter count and
        that count's share of the target's masked weights."""
        hyper = self.model.hypernetwork
        count = sum(p.numel() for p in hyper.parameters())
        sizes = {"hidden": list(hyper.hidden), "chunks": hyper.chunks, "parameters": count}
        return {"hypernetwork": {**sizes, "share_of_target": count / hyper.total}}

    def extra_memory(self) -> int:
        """One cached mask per task and the task's snapshot of the target's weights (and, with
        ``l1_masked``, their weighting): ``(T + 2) x W`` floats for ``W`` masked weights."""
        return (self.state.num_tasks + 2) * sum(self.model.sizes) * 4
