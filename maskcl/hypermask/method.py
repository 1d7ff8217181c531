"""HyperMask (Książek & Spurek, arXiv 2310.00113): a hypernetwork gives each task a semi-binary mask over
one shared target network's weights, so each task computes with its own weighted subnetwork.

    net = HyperMaskNet(target)           # target: a task-aware model (per-task heads), code unchanged
    hm = HyperMask(net)
    for task ...:
        hm.start_task(task)
        ... loss = F.cross_entropy(net(x), y) + hm.regularizer() ...
        hm.end_task()

The target's parameters are replaced per task through ``torch.func.functional_call``: ``W_t = W * m_t``
with ``m_t = |tanh(h_t)|`` for the hypernetwork's scores ``h_t``, the lowest ``sparsity`` % of each tensor's
entries set to 0. Not masked: the heads' biases (the output layer's bias, as in the method's code) and
task-indexed BatchNorm rows, which are each task's own already.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from maskcl.context import check_task_id, task_state
from maskcl.errors import MaskclError
from maskcl.hypermask.hypernetwork import HyperNetwork
from maskcl.layers import TaskBatchNorm, TaskHeads


def semi_binary_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """HyperMask's mask of one tensor: ``m = |tanh(h)|``, its lowest ``sparsity`` % of entries set to 0."""
    mask = torch.tanh(scores).abs()
    k = int(sparsity / 100 * mask.numel())
    if k == 0:
        return mask
    threshold = mask.detach().flatten().kthvalue(k).values
    return mask * (mask > threshold)


class HyperMaskNet(nn.Module):
    """A task-aware target network whose weights a :class:`HyperNetwork` masks per task.

    ``forward(x)`` computes the task selected with :func:`maskcl.set_task` (an int, or one id per sample).
    A learned task uses its cached mask (no hypernetwork pass); the task in training asks the hypernetwork.
    Cached masks are buffers of the child ``cached_masks``, one 1-D float32 tensor per learned task
    (``cached_masks.<task>``), made when the task is cached: after ``K`` tasks the net holds ``K x W x 4``
    bytes of masks for ``W`` masked weights, and a learned task's tensor never changes again.

    Args:
        target: a task-aware network (``maskcl.create_model(..., hat=False)`` or
            ``maskcl.hat.convert(model, classes, gates=False)``).
        sparsity: percentage of each masked tensor's entries set to 0, in [0, 100).
        hypernetwork: the :class:`HyperNetwork`'s sizes (``embedding_dim``, ``hidden``, ``chunks``,
            ``chunk_embedding_dim``).
    """

    def __init__(
        self,
        target: nn.Module,
        *,
        sparsity: float = 0.0,
        **hypernetwork: Any,
    ) -> None:
        super().__init__()
        if not 0 <= sparsity < 100:
            raise MaskclError(f"sparsity must be in [0, 100), got {sparsity}")
        self.target = target
        self.state = task_state(target)
        self.sparsity = sparsity
        self.current_sparsity = sparsity  # lower while HyperMask ramps the first task's sparsity up
        own = {id(p) for m in target.modules() if isinstance(m, TaskBatchNorm) for p in m.parameters()}
        own |= {id(m.bias) for m in target.modules() if isinstance(m, TaskHeads)}
        self.masked = [(n, p) for n, p in target.named_parameters() if id(p) not in own]
        if not self.masked:
            raise MaskclError(f"{type(target).__name__} has no maskable weights")
        self.sizes = [p.numel() for _, p in self.masked]
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        task = self.state.context.task
        if isinstance(task, int):
            return self._forward_task(x, task)
        outputs = {t: self._forward_task(x[task == t], t) for t in task.unique().tolist()}
        width = max(o.shape[1] for o in outputs.values())
        out = x.new_full((x.shape[0], width), float("-inf"))
        for t, o in outputs.items():
            out[task == t, : o.shape[1]] = o
        self.state.context.select(task)
        return out

    def _forward_task(self, x: torch.Tensor, task: int) -> torch.Tensor:
        self.state.context.select(task)
        weights = {name: p * m for (name, p), m in zip(self.masked, self.masks(task))}
        return functional_call(self.target, weights, (x,))

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


class HyperMask:
    """HyperMask's training around a :class:`HyperMaskNet`: the regulariser, and caching each task's mask.

    ``regularizer() = beta * mean_{t' < t} ||H(e_t') - H*(e_t')||^2 + lambda * sum |W - W*|``: the change of
    the hypernetwork's scores for earlier tasks' embeddings against a snapshot ``H*`` taken when task ``t``
    started, and the L1 change of the target's masked weights since then (with ``l1_masked`` each weight's
    change is weighted by ``max_{t' < t} m_t'``, the most any earlier task uses it, so weights no earlier
    task uses move freely). Both keep earlier tasks, so both are 0 while the first task trains. Defaults are
    the method's published ones (beta 0.01, lambda 0.001).
    ``sparsity_ramp``: over the first task's first that many optimizer steps, the sparsity rises linearly
    from 0 to the net's (0: no ramp), as the method's code optionally does.
    """

    def __init__(
        self,
        net: HyperMaskNet,
        *,
        beta: float = 0.01,
        lam: float = 0.001,
        l1_masked: bool = False,
        sparsity_ramp: int = 0,
    ) -> None:
        if beta < 0 or lam < 0:
            raise MaskclError(f"beta and lambda must be >= 0, got {beta} and {lam}")
        if sparsity_ramp < 0:
            raise MaskclError(f"sparsity_ramp must be >= 0 steps, got {sparsity_ramp}")
        self.net, self.beta, self.lam, self.l1_masked = net, beta, lam, l1_masked
        self.sparsity_ramp = sparsity_ramp
        self.task: int | None = None
        self._hook = None
        self._steps = 0  # optimizer steps of the sparsity ramp

    def start_task(self, task: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Begin ``task``: snapshot the hypernetwork's scores of learned tasks and the target's weights.
        The sparsity ramp of the first task counts the steps of ``optimizer``."""
        state = self.net.state
        task = check_task_id(task, state.num_tasks)
        if self.task is not None:
            raise MaskclError(f"task {self.task} is still training: call end_task() first")
        if state.learned[task]:
            raise MaskclError(f"task {task} is already learned")
        ramp = self.sparsity_ramp > 0 and not state.learned_tasks()
        if ramp and optimizer is None:
            raise MaskclError("the sparsity ramp counts optimizer steps: pass start_task the optimizer")
        self.task = task
        state.context.select(task)
        self.net.current_sparsity = 0.0 if ramp else self.net.sparsity
        if ramp:
            self._steps = 0
            self._hook = optimizer.register_step_post_hook(lambda *_: self._ramp())
        self._previous = torch.tensor(state.learned_tasks(), dtype=torch.long)
        with torch.no_grad():
            hyper = self.net.hypernetwork
            self._embeddings = hyper.task_embeddings[self._previous].clone()
            self._anchors = hyper.scores(self._embeddings) if len(self._previous) else None
            self._weights = [p.detach().clone() for _, p in self.net.masked]
            self._importance = self._earlier_use() if self.l1_masked else [1.0] * len(self._weights)

    def regularizer(self) -> torch.Tensor:
        """The method's two penalties for the task in training (see the class)."""
        if self.task is None:
            raise MaskclError("regularizer() needs a task in training: call start_task() first")
        hyper = self.net.hypernetwork
        total = hyper.task_embeddings.new_zeros(())
        if self._anchors is not None and self.beta > 0:
            change = hyper.scores(self._embeddings) - self._anchors
            total = total + self.beta * change.pow(2).sum(1).mean()
        if self.lam > 0 and len(self._previous):  # no previous task: nothing to keep
            pairs = zip(self.net.masked, self._weights, self._importance)
            moved = [((p - w).abs() * m).sum() for (_, p), w, m in pairs]
            total = total + self.lam * torch.stack(moved).sum()
        return total

    def _earlier_use(self) -> list[torch.Tensor]:
        """Per masked tensor, the largest mask value any learned task gives each entry."""
        learned = self.net.state.learned_tasks()
        if not learned:
            return [torch.zeros_like(w) for w in self._weights]
        used = self.net.cached_mask(learned[0]).clone()
        for task in learned[1:]:
            torch.maximum(used, self.net.cached_mask(task), out=used)
        return [u.view_as(w) for u, w in zip(used.split(self.net.sizes), self._weights)]

    def state_dict(self) -> dict:
        """The task's snapshots (taken by :meth:`start_task`) and the sparsity ramp's progress."""
        return {
            "embeddings": self._embeddings,
            "anchors": self._anchors,
            "weights": self._weights,
            "ramp_steps": self._steps,
            "current_sparsity": self.net.current_sparsity,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue a task (after :meth:`start_task`) from :meth:`state_dict`."""
        device = self._embeddings.device
        self._embeddings = state["embeddings"].to(device)
        self._anchors = None if state["anchors"] is None else state["anchors"].to(device)
        self._weights = [w.to(device) for w in state["weights"]]
        self._steps = state["ramp_steps"]
        self.net.current_sparsity = state["current_sparsity"]

    def end_task(self) -> None:
        """Finish the task: cache its mask and mark it learned."""
        if self.task is None:
            raise MaskclError("end_task() without a task in training")
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.net.current_sparsity = self.net.sparsity
        self.net.cache(self.task)
        self.net.state.learned[self.task] = True
        self.task = None

    def _ramp(self) -> None:
        self._steps += 1
        self.net.current_sparsity = self.net.sparsity * min(1.0, self._steps / self.sparsity_ramp)
