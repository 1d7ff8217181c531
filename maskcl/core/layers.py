"""Task-indexed layers shared by every method: per-task classifier heads and per-task batch norm.

Each owns some of its entries per task and says which through ``owned_entries(tasks)``: a mapping from
its parameter and buffer names to boolean masks of the entries that belong to ``tasks``. Protection
(:mod:`maskcl.core.protection`) freezes exactly those entries once their task is learned.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from maskcl.core.context import TaskContext, task_rows
from maskcl.errors import MaskclError

__all__ = ["TaskBatchNorm", "TaskHeads"]


def _task_rows(owner: torch.Tensor, tasks: list[int]) -> torch.Tensor:
    """Boolean mask of the rows whose owning task is in ``tasks``."""
    return torch.isin(owner, torch.tensor(tasks, dtype=owner.dtype, device=owner.device))


class TaskHeads(nn.Module):
    """One linear classifier head per task (task-incremental learning), stored as one weight matrix.

    For a single task ``t`` the output is ``[B, k_t]`` (the task's own classes). With one task id per
    sample the output is ``[B, max_t k_t]``, each row holding its own task's logits and ``-inf`` padding
    where its task has fewer classes, so ``cross_entropy`` and ``argmax`` work unchanged.

    After :meth:`add_reject` each task also has a "not this task" output (one row of ``reject_weight``,
    ``reject_bias``, owned by its task), which the heads return in training mode only, as the last column
    (label :meth:`reject_label`); in evaluation mode the output is the classes' alone, as before.
    """

    def __init__(self, in_features: int, classes_per_task: Sequence[int], context: TaskContext) -> None:
        super().__init__()
        if len(classes_per_task) != context.num_tasks:
            raise MaskclError(f"{len(classes_per_task)} head sizes given for {context.num_tasks} tasks")
        self.context = context
        self.classes_per_task = [int(k) for k in classes_per_task]
        total = sum(self.classes_per_task)
        linear = nn.Linear(in_features, total)  # the usual nn.Linear initialisation for all heads at once
        self.weight = nn.Parameter(linear.weight.detach())
        self.bias = nn.Parameter(linear.bias.detach())
        self.offsets = [0, *itertools.accumulate(self.classes_per_task)]
        sizes = torch.tensor(self.classes_per_task, device="cpu")  # index arithmetic, on any default device
        owner = torch.repeat_interleave(torch.arange(context.num_tasks, device="cpu"), sizes)
        self.register_buffer("owner", owner, persistent=False)
        self.register_parameter("reject_weight", None)  # add_reject
        self.register_parameter("reject_bias", None)

    def add_reject(self) -> None:
        """Give every task a "not this task" output (initialised as ``nn.Linear`` initialises), before the
        optimizer is built; a second call changes nothing."""
        if self.reject_weight is not None:
            return
        linear = nn.Linear(self.weight.shape[1], self.context.num_tasks, device=self.weight.device)
        self.reject_weight = nn.Parameter(linear.weight.detach().to(self.weight.dtype))
        self.reject_bias = nn.Parameter(linear.bias.detach().to(self.bias.dtype))

    def reject(self, h: torch.Tensor, task: int | torch.Tensor) -> torch.Tensor:
        """``[B]``: the "not this task" logit of ``task`` (one id, or one per sample) for features ``h``."""
        if self.reject_weight is None:
            raise MaskclError("these heads have no 'not this task' output (add_reject was not called)")
        if isinstance(task, int):
            return F.linear(h, self.reject_weight[task : task + 1], self.reject_bias[task : task + 1])[:, 0]
        return (h * self.reject_weight[task]).sum(1) + self.reject_bias[task]

    def reject_label(self, task: int | torch.Tensor) -> int:
        """The column of the "not this task" output in training mode: after the task's classes (after the
        widest task's, with one task id per sample)."""
        return self.classes_per_task[task] if isinstance(task, int) else max(self.classes_per_task)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        task = self.context.task
        if isinstance(task, int):
            rows = slice(self.offsets[task], self.offsets[task + 1])
            out = F.linear(h, self.weight[rows], self.bias[rows])
        else:
            out = self._per_sample(h, task)
        if self.training and self.reject_weight is not None:
            out = torch.cat([out, self.reject(h, task).unsqueeze(1)], 1)
        return out

    def _per_sample(self, h: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        logits = F.linear(h, self.weight, self.bias)  # [B, total]
        width = max(self.classes_per_task)
        offsets = torch.tensor(self.offsets, device=h.device)
        sizes = torch.tensor(self.classes_per_task, device=h.device)
        column = torch.arange(width, device=h.device)
        index = (offsets[task].unsqueeze(1) + column).clamp(max=logits.shape[1] - 1)
        out = logits.gather(1, index)
        return out.masked_fill(column >= sizes[task].unsqueeze(1), float("-inf"))

    def plain(self, task: int) -> nn.Linear:
        """Task ``task``'s head as an ``nn.Linear`` (a copy)."""
        rows = slice(self.offsets[task], self.offsets[task + 1])
        head = nn.Linear(self.weight.shape[1], self.classes_per_task[task], device=self.weight.device)
        with torch.no_grad():
            head.weight.copy_(self.weight[rows])
            head.bias.copy_(self.bias[rows])
        return head

    def owned_entries(self, tasks: list[int]) -> dict[str, torch.Tensor]:
        rows = _task_rows(self.owner, tasks)
        owned = {"weight": rows.unsqueeze(1).expand_as(self.weight), "bias": rows}
        if self.reject_weight is not None:
            mask = task_rows(self.context.num_tasks, tasks, self.reject_bias.device)
            owned |= {"reject_weight": mask.expand_as(self.reject_weight), "reject_bias": mask[:, 0]}
        return owned

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, classes_per_task={self.classes_per_task}"


class TaskBatchNorm(nn.Module):
    """Batch normalisation with statistics and affine parameters per task, for inputs ``[B, C, *]``.

    ``y = (x - mu_t) / sqrt(var_t + eps) * gamma_t + beta_t``: task ``t`` trains and uses only its own
    row, so later tasks never move an earlier task's normalisation (HAT's task-incremental setting).
    An optional ``activation`` is applied to ``y`` (for norms fused with their activation, as timm's).
    """

    def __init__(
        self,
        num_features: int,
        context: TaskContext,
        eps: float = 1e-5,
        momentum: float = 0.1,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.context, self.eps, self.momentum = context, eps, momentum
        self.activation = activation
        shape = (context.num_tasks, num_features)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._normalise(x)
        return y if self.activation is None else self.activation(y)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        task = self.context.task
        if isinstance(task, int):
            return F.batch_norm(
                x,
                self.running_mean[task],
                self.running_var[task],
                self.weight[task],
                self.bias[task],
                self.training,
                self.momentum,
                self.eps,
            )
        if self.training:
            return self._per_task_batches(x, task)
        shape = [x.shape[0], x.shape[1]] + [1] * (x.dim() - 2)
        scale = (self.running_var[task] + self.eps).rsqrt() * self.weight[task]
        shift = self.bias[task] - self.running_mean[task] * scale
        return x * scale.view(shape) + shift.view(shape)

    def _per_task_batches(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Training on a batch that mixes tasks (``joint``): each task's samples are normalised with their
        own batch statistics and update that task's running statistics, as if each task's part of the
        batch were a batch of its own (a task with one sample in the batch cannot be normalised)."""
        out = torch.empty_like(x)
        for t in task.unique().tolist():
            rows = (task == t).nonzero().flatten()
            out[rows] = F.batch_norm(
                x[rows],
                self.running_mean[t],
                self.running_var[t],
                self.weight[t],
                self.bias[t],
                True,
                self.momentum,
                self.eps,
            )
        return out

    def plain(self, task: int) -> nn.Module:
        """Task ``task``'s normalisation as the BatchNorm it was converted from (a copy, same class)."""
        template = getattr(self, "plain_template", None)
        if template is None:
            raise MaskclError("this TaskBatchNorm was not converted from a BatchNorm; it has no plain form")
        norm = copy.deepcopy(template[0]).to(self.weight.device)
        with torch.no_grad():
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(norm, key).copy_(getattr(self, key)[task])
        return norm

    @property
    def num_features(self) -> int:
        return self.weight.shape[1]

    def owned_entries(self, tasks: list[int]) -> dict[str, torch.Tensor]:
        mask = task_rows(self.context.num_tasks, tasks, self.weight.device).expand_as(self.weight)
        return {"weight": mask, "bias": mask, "running_mean": mask, "running_var": mask}

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, num_tasks={self.context.num_tasks}, eps={self.eps}"
