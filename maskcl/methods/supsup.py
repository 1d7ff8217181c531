"""SupSup, Supermasks in Superposition (Wortsman et al., NeurIPS 2020): a network of fixed random weights
and, for each task, a learned supermask over them; the task of an input can be found from the gradient of
the output's entropy with respect to the masks' superposition.

    supsup = create_method("supsup", target, density=0.5)   # target: a task-aware model without gates
    net = supsup.model                                       # the SupSupNet to train and evaluate

Each masked weight ``W`` (every weight of two or more dimensions outside the per-task heads and norms) is
drawn once as a signed constant, ``W = sigma * sign(u)``, ``sigma = sqrt(2 / fan_in) / sqrt(c)`` (the
"signed Kaiming constant" of edge-popup, Ramanujan et al., CVPR 2020, that SupSup uses, scaled by the kept
fraction ``c``) and never trained; the layers' biases are zero and fixed. Task ``t`` computes with
``W * m_t``, ``m_t = 1_c(s_t)`` the top ``c``-fraction of its own scores ``s_t`` per tensor, learned from a
fresh draw through the straight-through estimator (Sec. 3.1) and stored as bits once the task is learned.
The per-task heads and per-task BatchNorm rows are trained as for every method here (the paper's
output layer is a masked fixed one as well) and kept bit-for-bit once their task is learned. Nothing
shared ever changes, so BWT is exactly 0.

One-shot task inference (Sec. 3.3, eq. 4): with the learned tasks' masks in superposition,
``W_alpha = W * sum_t alpha_t m_t`` with ``alpha_t = 1 / T``, the task is ``argmin_t dH/d alpha_t``, ``H``
the entropy of the softmax over every learned task's head (:meth:`SupSupNet.superposition_gradient`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from maskcl.core.layers import TaskBatchNorm, TaskHeads
from maskcl.errors import MaskclError
from maskcl.methods.base import register_method
from maskcl.methods.wsn import WSN, WSNConfig, WSNNet

__all__ = ["SupSup", "SupSupConfig", "SupSupNet"]


def _head(heads: TaskHeads, task: int, h: torch.Tensor) -> torch.Tensor:
    """Task ``task``'s head on the features ``h``."""
    rows = slice(heads.offsets[task], heads.offsets[task + 1])
    return F.linear(h, heads.weight[rows], heads.bias[rows])


class SupSupNet(WSNNet):
    """A task-aware target of fixed signed-constant weights, each task computing with its own supermask.

    ``scores.<i>`` are the scores of the task in training (redrawn when a task starts,
    :meth:`new_scores`); a learned task computes with its stored mask (``task_masks.<t>``, bits). The
    masked weights and the masked layers' biases are fixed (``requires_grad`` False).

    Args:
        target: a task-aware network without gates.
        density: ``c``, the fraction of each masked tensor's weights a supermask keeps, in (0, 1).
        score_gain: the factor on the scores' straight-through gradient, > 0.
    """

    def __init__(self, target: nn.Module, *, density: float = 0.5, score_gain: float = 100.0) -> None:
        super().__init__(target, density=density, score_gain=score_gain)
        modules = dict(target.named_modules())
        with torch.no_grad():
            for name, p in self.masked:
                fan_in = p[0].numel()
                sigma = math.sqrt(2.0 / fan_in) / math.sqrt(density)
                p.copy_(sigma * torch.randn_like(p).sign())
                p.requires_grad_(False)
                module = modules[name.rpartition(".")[0]]
                bias = getattr(module, "bias", None)
                if isinstance(bias, nn.Parameter):
                    bias.zero_()
                    bias.requires_grad_(False)

    @torch.no_grad()
    def new_scores(self) -> None:
        """Draw fresh scores for a new task's supermask (as :class:`WSNNet` draws its first ones)."""
        for score in self.scores:
            nn.init.kaiming_uniform_(score, a=math.sqrt(5))

    def superposition_gradient(self, x: torch.Tensor, tasks: list[int]) -> torch.Tensor:
        """``[len(tasks), N]``: ``dH_i / d alpha_t`` at ``alpha_t = 1 / T`` for each input ``i``, ``H_i``
        the entropy of ``softmax(sum_t alpha_t z_t)``, ``z_t`` task ``t``'s head (zero-padded to the widest
        task) on the features of the network ``W * sum_t alpha_t m_t`` (Wortsman et al., 2020, eq. 4: the
        paper's output layer is masked and shared by the tasks, so its output is this sum), in evaluation
        mode.

        Per input, as the inputs of a batch do not interact in evaluation mode: for a masked layer ``l``
        with input ``h`` and output gradient ``delta``,
        ``dH/d alpha_t = sum_l <delta, f_l(h; W_l * m_{t,l})>`` (the layer's output with task ``t``'s
        masked weight), plus ``<dH/dz, z_t>`` through the heads: one backward pass and ``T`` passes of each
        masked layer.
        """
        if any(isinstance(m, TaskBatchNorm) for m in self.target.modules()):
            raise MaskclError("one-shot task inference needs a network without per-task BatchNorm")
        heads = next(m for m in self.target.modules() if isinstance(m, TaskHeads))
        masks = [[m.to(p.dtype) for m, (_, p) in zip(self.stored_masks(t), self.masked)] for t in tasks]
        modules = dict(self.target.named_modules())
        layers = [modules[name.rpartition(".")[0]] for name, _ in self.masked]
        seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        features: list[torch.Tensor] = []

        def keep(module, args, output):
            output.retain_grad()
            seen[id(module)] = (args[0].detach(), output)

        hooks = [layer.register_forward_hook(keep) for layer in layers]
        hooks.append(heads.register_forward_pre_hook(lambda _m, args: features.append(args[0])))
        previous, training = self.state.context.task, self.training
        self.eval()
        try:
            with torch.enable_grad():
                alpha = torch.full((len(tasks),), 1.0 / len(tasks), device=x.device, requires_grad=True)
                weights = {
                    name: p * sum(a * m[i] for a, m in zip(alpha, masks))
                    for i, (name, p) in enumerate(self.masked)
                }
                self.state.context.select(tasks[0])  # the heads are read below, all at once
                functional_call(self.target, weights, (x,))
                width = max(heads.classes_per_task[t] for t in tasks)
                h = features[-1]
                outputs = [F.pad(_head(heads, t, h), (0, width - heads.classes_per_task[t])) for t in tasks]
                logits = sum(a * z for a, z in zip(alpha, outputs))
                logits.retain_grad()
                entropy = torch.special.entr(logits.softmax(1)).sum()
                entropy.backward()
            for hook in hooks:
                hook.remove()
            with torch.no_grad():
                gradient = torch.stack([(logits.grad * z).sum(1) for z in outputs])  # through the heads

                for i, ((name, p), layer) in enumerate(zip(self.masked, layers)):
                    inputs, output = seen[id(layer)]
                    attribute = name.rpartition(".")[2]
                    for j, mask in enumerate(masks):
                        out = functional_call(layer, {attribute: p * mask[i]}, (inputs,))
                        gradient[j] += (output.grad * out).flatten(1).sum(1)
        finally:
            for hook in hooks:
                hook.remove()
            self.state.context.select(previous)
            self.train(training)
        return gradient


@dataclass(frozen=True)
class SupSupConfig(WSNConfig):
    """SupSup's options, WSN's: ``density`` ``c``, the fraction of each masked tensor's weights a task's
    supermask keeps (default 0.5, the best of edge-popup's fractions, Ramanujan et al., CVPR 2020,
    Fig. 3); ``score_gain``, the factor on the scores' straight-through gradient (1: the paper's
    estimator; default 100, since the gradient reaching a score is the weight's gradient times the small
    weight ``sigma``)."""


@register_method("supsup")
class SupSup(WSN):
    """Supermasks in Superposition around a task-aware target: ``.model`` is the :class:`SupSupNet`.

    Each task trains only its fresh scores (and its own head and per-task norm rows): the optimizer's
    state for the scores is cleared when a task starts, as the scores are. No regulariser.
    """

    config_class = SupSupConfig

    def prepare(self, model: nn.Module) -> SupSupNet:
        return SupSupNet(model, density=self.config.density, score_gain=self.config.score_gain)

    def start_task(self, task: int, optimizer: torch.optim.Optimizer, steps_per_epoch: int = 1) -> None:
        super().start_task(task, optimizer, steps_per_epoch)
        self.model.new_scores()
        for score in self.model.scores:
            optimizer.state.pop(score, None)
