"""Out-of-distribution-aware heads: a "not this task" output per task, trained on rotated copies of the
task's own inputs (after CSI, Tack et al., NeurIPS 2020, "CSI: Novelty Detection via Contrastive Learning
on Distributionally Shifted Instances", whose shifting transformations are rotations, and its use for task
prediction over HAT's masks by Kim et al., 2022, "Continual Learning Based on OOD Detection and Task
Masking"; no sample of another task is needed).

This predictor changes training. :meth:`OODHead.prepare` gives each task's head one more output ``o_t``
(:meth:`~maskcl.core.layers.TaskHeads.add_reject`, owned and protected with the task's head). While task
``t`` is learned, each batch ``(x, y)`` of ``B`` inputs becomes ``2B``: the inputs and their rotations by
``k_i`` quarter turns, ``k_i = 1 + (i mod 3)`` for the batch's ``i``-th input (the batch order is the
epoch's seeded shuffle), labelled "not this task"; the step's cross-entropy over the ``k_t + 1`` outputs
``[z_t(x), o_t(x)]`` then teaches the head and the task's network to tell the task's inputs from shifted
copies of them. In evaluation mode the heads give the classes' logits ``z_t`` alone, as without it.

Score: the log-odds that ``x`` belongs to task ``t``, ``m_t(x) = log sum_c exp z_t[c](x) - o_t(x)``,
standardised so that tasks compare by its mean ``mu_t`` and deviation ``sigma_t`` on the task's own
training data (fitted when the task ends): ``score_t(x) = (m_t(x) - mu_t) / sigma_t``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from maskcl.core.context import task_state
from maskcl.errors import MaskclError
from maskcl.predictors.base import TaskOutputs, register_predictor, task_heads, task_outputs
from maskcl.predictors.scores import TaskStatistics

__all__ = ["OODHead", "rotated"]


def rotated(x: torch.Tensor) -> torch.Tensor:
    """``x`` (``[B, ..., H, H]``) with its ``i``-th input turned by ``1 + (i mod 3)`` quarter turns."""
    out = torch.empty_like(x)
    turns = torch.arange(len(x), device=x.device) % 3
    for k in range(3):
        rows = (turns == k).nonzero().flatten()
        out[rows] = torch.rot90(x[rows], k + 1, dims=(-2, -1))
    return out


@register_predictor("ood-head")
class OODHead(TaskStatistics):
    """The task whose "not this task" output, trained on rotated copies of its inputs, is the least sure
    that the input is not its own: ``argmax_t (logsumexp_c z_t[c] - o_t - mu_t) / sigma_t`` (module
    docstring). Needs square inputs ``[C, H, H]`` and a task-aware model with one per-task head module."""

    features = True
    trains = True

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        task_heads(model)

    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        shape = tuple(input_shape)
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise MaskclError(
                f"the ood-head predictor rotates its training inputs: it needs square images, got inputs of "
                f"shape {shape}"
            )
        task_heads(model).add_reject()

    def training_batch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        heads = task_heads(model)
        if heads.reject_weight is None:
            raise MaskclError("the ood-head predictor trains a model it prepared: call prepare(model, shape)")
        task = task_state(model).context.task if ids is None else ids
        if task is None:
            raise MaskclError("the ood-head predictor's training batch needs a selected task")
        label = heads.reject_label(task)
        y = torch.cat([y, torch.full_like(y, label)])
        return torch.cat([x, rotated(x)]), y, None if ids is None else torch.cat([ids, ids])

    @staticmethod
    def _margins(outputs: TaskOutputs) -> list[torch.Tensor]:
        return [torch.logsumexp(z, 1) - o for z, o in zip(outputs.logits, outputs.rejects)]

    @torch.no_grad()
    def fit_task(self, model: nn.Module, task: int, data, batch_size: int = 1000) -> None:
        if task_heads(model).reject_weight is None:
            raise MaskclError("the ood-head predictor fits a model it prepared and trained (prepare)")
        device = next(model.parameters()).device
        batches = data.batches(batch_size, device=device)
        margins = torch.cat([self._margins(task_outputs(model, x, [task], True))[0] for x, _ in batches])
        if margins.numel() < 2:
            raise MaskclError(f"task {task} has {margins.numel()} training samples: a predictor needs 2")
        self.stats[task] = {
            "mean": margins.mean().reshape(1),
            "std": margins.std().clamp_min(1e-12).reshape(1),
        }

    def score(self, outputs: TaskOutputs, x: torch.Tensor) -> torch.Tensor:
        if len(outputs.rejects) != len(outputs.tasks):
            raise MaskclError("the ood-head predictor scores a model it prepared and trained (prepare)")
        return torch.stack(
            [
                (m - self.stat(t, "mean").to(m)) / self.stat(t, "std").to(m)
                for t, m in zip(outputs.tasks, self._margins(outputs))
            ]
        )
