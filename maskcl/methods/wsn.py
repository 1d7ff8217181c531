"""WSN, Winning SubNetworks (Kang et al., "Forget-free Continual Learning with Winning Subnetworks", ICML
2022): each task learns a binary mask that selects a fixed fraction of every layer's weights, and trains
only the selected weights that no earlier task selected.

    wsn = create_method("wsn", target, density=0.5)   # target: a task-aware model without gates
    net = wsn.model                                    # the WSNNet to train and evaluate
    for task ...:
        wsn.start_task(task, optimizer, steps_per_epoch)   # optimizer over net.parameters()
        ... loss = F.cross_entropy(net(x), y) ...
        wsn.end_task()

Each masked weight ``W`` (every weight of two or more dimensions outside the per-task heads and norms) has
a learned score ``s`` of its shape. Task ``t`` computes with ``W * m_t``, ``m_t = 1_c(s)``: 1 on the
``c``-fraction of largest scores of each tensor (Sec. 3, eq. 3); the scores learn through a straight-through
estimator. Once ``t`` is learned its mask is stored as bits and used from then on, whatever the scores
become. The weights of the learned tasks' masks (``M_{t-1} = m_0 OR ... OR m_{t-1}``) are kept bit-for-bit
by the exact protection (:mod:`maskcl.core.protection`) instead of the paper's gradient mask
``dL/dW * (1 - M_{t-1})`` (eq. 4), so momentum and weight decay cannot move them either; a later task's
scores may select them (reuse) but not change them. Unmasked parameters that no task owns (the biases, an
unconverted norm's affine) are trained by task 0 only and kept whole from then on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from maskcl.core.capacity import LayerCapacity
from maskcl.core.masking import MaskedNet
from maskcl.core.protection import owned_entries
from maskcl.errors import MaskclError
from maskcl.methods.base import Method, MethodConfig, register_method

__all__ = [
    "WSN",
    "WSNConfig",
    "WSNNet",
    "check_density",
    "check_score_gain",
    "pack_bits",
    "selected_count",
    "top_mask",
    "unpack_bits",
]

_BIT_VALUES = [1 << i for i in range(8)]


def selected_count(numel: int, density: float) -> int:
    """How many of a tensor's ``numel`` weights a task's mask selects: ``round(c * numel)`` (halves to
    even, as Python rounds)."""
    return round(density * numel)


class _TopMask(torch.autograd.Function):
    """Forward ``1_c(s)``: 1 on the ``k`` largest scores, else 0; backward: the identity times ``gain``
    (straight-through, Kang et al., ICML 2022, Sec. 3: the indicator's derivative is ignored, so
    ``dL/ds = gain * dL/dm``)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int, gain: float) -> torch.Tensor:
        ctx.gain = gain
        mask = torch.zeros_like(scores)
        mask.view(-1)[scores.detach().flatten().topk(k, sorted=False).indices] = 1
        return mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.gain, None, None


def top_mask(scores: torch.Tensor, density: float, gain: float = 1.0) -> torch.Tensor:
    """WSN's mask of one tensor, ``m = 1_c(s)`` (Kang et al., ICML 2022, eq. 3): 1 on the
    ``round(c * n)`` largest of its ``n`` scores, 0 elsewhere, in ``scores``' dtype; its gradient reaches
    ``s`` through the straight-through estimator times ``gain``, so with ``W * m`` in the forward pass
    ``dL/ds = gain * dL/d(W*m) * W`` (``gain`` 1: the paper's estimator).
    """
    k = selected_count(scores.numel(), density)
    if k == 0:
        raise MaskclError(f"density {density} selects none of {scores.numel()} scores")
    return _TopMask.apply(scores, k, gain)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor's entries as bits, 8 a byte (entry ``i`` is bit ``i % 8`` of byte ``i // 8``):
    ``ceil(n / 8)`` uint8."""
    flat = mask.flatten().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)])
    values = torch.tensor(_BIT_VALUES, dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8) * values).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The first ``numel`` bits of :func:`pack_bits`' bytes, as a flat boolean tensor."""
    values = torch.tensor(_BIT_VALUES, dtype=torch.uint8, device=packed.device)
    return (packed.unsqueeze(1) & values).ne(0).flatten()[:numel]


class WSNNet(MaskedNet):
    """A task-aware target whose weights each task selects with its winning subnetwork.

    ``forward(x)`` computes the task selected with :func:`maskcl.set_task` (an int, or one id per sample)
    with ``W * m_t``: a learned task's stored mask, another task's ``1_c(s)`` of the current scores.
    ``scores.<i>`` holds the scores of ``masked[i]``, drawn as PyTorch draws the weights of a linear or
    convolutional layer (Kaiming uniform, ``a = sqrt(5)``, bound ``1 / sqrt(fan_in)``), as edge-popup
    (Ramanujan et al., CVPR 2020), whose scores WSN's follow, draws them. One set of scores is learned on
    through all tasks, so each task starts from the subnetwork of the task before. Stored masks are the
    uint8 buffers ``task_masks.<t>`` (each masked tensor's bits, :func:`pack_bits`, one after another),
    made when ``t`` is learned: ``K`` learned tasks hold ``K x sum_i ceil(n_i / 8)`` bytes for tensors of
    ``n_i`` weights.

    Args:
        target: a task-aware network (``maskcl.create_model(..., gates=False)`` or
            ``maskcl.convert(model, classes, gates=False)``).
        density: ``c``, the fraction of each masked tensor's weights a task selects, in (0, 1).
        score_gain: the factor on the scores' straight-through gradient (:class:`WSNConfig`), > 0.
    """

    def __init__(self, target: nn.Module, *, density: float = 0.5, score_gain: float = 100.0) -> None:
        super().__init__(target, heads=False, min_dim=2)
        check_density(density)
        check_score_gain(score_gain)
        self.density, self.score_gain = density, score_gain
        for name, p in self.masked:
            if selected_count(p.numel(), density) == 0:
                raise MaskclError(
                    f"{name} has {p.numel()} weights: density {density} selects none of them (raise density)"
                )
        self.packed_sizes = [math.ceil(n / 8) for n in self.sizes]
        self.scores = nn.ParameterList()
        for _, p in self.masked:
            score = torch.empty_like(p)
            nn.init.kaiming_uniform_(score, a=math.sqrt(5))
            self.scores.append(nn.Parameter(score))
        self.task_masks = nn.Module()
        state_name = next(n for n, m in target.named_modules() if m is self.state)
        self._learned_key = ".".join(filter(None, ["target", state_name, "learned"]))
        self.register_load_state_dict_pre_hook(self._make_task_masks)

    def masks(self, task: int) -> list[torch.Tensor]:
        """Task ``task``'s mask of each masked tensor: its stored one once learned, else ``1_c(s)``."""
        if self.state.learned[task]:
            return [m.to(p.dtype) for m, (_, p) in zip(self.stored_masks(task), self.masked)]
        return [top_mask(s, self.density, self.score_gain) for s in self.scores]

    def stored_masks(self, task: int) -> list[torch.Tensor]:
        """The learned task ``task``'s boolean mask of each masked tensor, unpacked from its bits."""
        if not hasattr(self.task_masks, str(task)):
            raise MaskclError(f"task {task} has no stored mask: it is not learned")
        chunks = self.task_masks.get_buffer(str(task)).split(self.packed_sizes)
        return [unpack_bits(c, n).view_as(p) for c, n, (_, p) in zip(chunks, self.sizes, self.masked)]

    @torch.no_grad()
    def store(self, task: int) -> None:
        """Store task ``task``'s current mask ``1_c(s)`` as bits: from now on it computes with this mask."""
        bits = [pack_bits(top_mask(s, self.density).bool()) for s in self.scores]
        self.task_masks.register_buffer(str(task), torch.cat(bits))

    def used(self, tasks: list[int]) -> list[torch.Tensor]:
        """Per masked tensor, the entries any of the learned ``tasks`` selects (``M = OR_t m_t``)."""
        used = [torch.zeros_like(p, dtype=torch.bool) for _, p in self.masked]
        for task in tasks:
            for u, m in zip(used, self.stored_masks(task)):
                u |= m
        return used

    def owned_entries(self, tasks: list[int]) -> dict[str, torch.Tensor]:
        """The masked weights' entries that ``tasks`` select; the scores are nobody's (never frozen: learned
        tasks compute with their stored masks)."""
        owned = {f"target.{name}": u for (name, _), u in zip(self.masked, self.used(tasks))}
        for i, s in enumerate(self.scores):
            owned[f"scores.{i}"] = torch.zeros((), dtype=torch.bool, device=s.device)
        return owned

    def _make_task_masks(self, module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
        """Before loading: a fresh ``task_masks.<t>`` for each task the state marks learned (each task the
        state has a mask for, if it has no ``learned``), and no other, so that strict loading reports a
        learned task's missing mask, a mask of a task not learned, and a wrong size."""
        learned = state_dict.get(prefix + self._learned_key)
        if isinstance(learned, torch.Tensor) and learned.shape == (self.state.num_tasks,):
            tasks = learned.nonzero().flatten().tolist()
        else:
            start = f"{prefix}task_masks."
            names = [k.removeprefix(start) for k in state_dict if k.startswith(start)]
            tasks = [int(n) for n in names if n.isdigit() and int(n) < self.state.num_tasks]
        device = self.masked[0][1].device
        self.task_masks._buffers.clear()
        for task in sorted(tasks):
            buffer = torch.zeros(sum(self.packed_sizes), dtype=torch.uint8, device=device)
            self.task_masks.register_buffer(str(task), buffer)


def check_density(density: float) -> None:
    """A one-line error unless ``0 < density < 1``."""
    if not 0 < density < 1:
        raise MaskclError(f"density must be in (0, 1), got {density}")


def check_score_gain(gain: float) -> None:
    """A one-line error unless the gain is finite and > 0."""
    if not (math.isfinite(gain) and gain > 0):
        raise MaskclError(f"score_gain must be finite and > 0, got {gain}")


@dataclass(frozen=True)
class WSNConfig(MethodConfig):
    """WSN's options.

    ``density``: ``c``, the fraction of each masked tensor's weights a task's subnetwork selects (Kang et
    al., ICML 2022, eq. 3); default 0.5 (c = 50%), the densest of the capacities the paper reports (3% to
    50%), with which it reports its best accuracies on the convolutional benchmarks.

    ``score_gain``: ``gain`` in ``dL/ds = gain * dL/d(W*m) * W``, the scores' straight-through gradient
    (gain 1 is the paper's). maskcl's addition, default 100: the STE gradient is the weight's gradient
    times the weight (about ``1/sqrt(fan_in)``), so under plain SGD with the weights' learning rate the
    scores hardly move, every task selects nearly the subnetwork of the task before, and later tasks find
    it frozen (docs/benchmarks.md: Split Fashion-MNIST with SGD 0.9873 at gain 1, 0.9897 at gain 100,
    3-seed means). Under SGD the gain is the scores' learning rate relative to the weights'; Adam-type
    optimizers divide it out up to their epsilon, so there it changes little (AdamW: 0.9928 at gain 1, 0.9917
    at gain 100).
    """

    density: float = field(default=0.5, metadata={"help": "c: fraction of each layer's weights a task uses"})
    score_gain: float = field(
        default=100.0, metadata={"help": "factor on the scores' straight-through gradient (1: the paper's)"}
    )

    def validate(self) -> None:
        super().validate()
        check_density(self.density)
        check_score_gain(self.score_gain)


@register_method("wsn")
class WSN(Method):
    """Winning SubNetworks around a task-aware target: ``.model`` is the :class:`WSNNet` that masks it.

    Each optimizer step trains the scores ``s`` and the weights: ``s <- s - lr * dL/ds`` through the
    straight-through estimator (times ``score_gain``), and the weights of the task's current mask, except
    the learned tasks' ones (``M_{t-1}``), which the protection writes back (Kang et al., ICML 2022,
    eq. 4). No regulariser.

    Args:
        target: a task-aware network without gates.
        **options: the fields of :class:`WSNConfig`.
    """

    config_class = WSNConfig
    gates = False
    exact = True

    def prepare(self, model: nn.Module) -> WSNNet:
        return WSNNet(model, density=self.config.density, score_gain=self.config.score_gain)

    def protected(self, tasks: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The weights the learned tasks' masks select, their head rows and per-task norm rows, and every
        unmasked parameter without an owner (whole)."""
        return owned_entries(self.model, tasks)

    def end_task(self) -> None:
        """Finish the task: store its mask as bits and mark it learned."""
        if self.task is not None:
            self.model.store(self.task)
        super().end_task()

    def summary(self) -> dict:
        """``capacity``: per masked tensor, the fraction of its weights each learned task selects, none
        selects and two or more select; ``mask_bytes``: each learned task's stored mask, in bytes."""
        net, tasks = self.model, self.state.learned_tasks()
        masks = {t: net.stored_masks(t) for t in tasks}
        layers = []
        for i, ((name, p), n) in enumerate(zip(net.masked, net.sizes)):
            users = torch.zeros_like(p, dtype=torch.int32)
            for t in tasks:
                users += masks[t][i]
            layer = LayerCapacity(
                name=name,
                units=n,
                used={t: float(masks[t][i].float().mean()) for t in tasks},
                free=float((users == 0).float().mean()),
                shared=float((users >= 2).float().mean()),
            )
            layers.append(dataclasses.asdict(layer))
        per_task = sum(net.packed_sizes)
        return {"capacity": layers, "mask_bytes": {t: per_task for t in tasks}}

    def extra_memory(self) -> int:
        """A stored mask per task, ``T x sum_i ceil(n_i / 8)`` bytes, and the exact protection's two integer
        copies (kept bits, frozen bits) of the protected tensors, at most twice the parameters' bytes."""
        masks = self.state.num_tasks * sum(self.model.packed_sizes)
        return masks + 2 * sum(p.numel() * p.element_size() for p in self.model.parameters())
