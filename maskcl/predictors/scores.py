"""Task predictors from each task's head alone: entropy, and calibrated max-logit and energy scores.

``entropy`` (no statistics): the task whose class probabilities ``p_t = softmax(z_t)`` are the most
certain, ``score_t(x) = -H(p_t) = sum_c p_t[c] log p_t[c]``.

``max-logit`` and ``energy`` (Liu et al., NeurIPS 2020, "Energy-based Out-of-distribution Detection",
eq. 3; Hendrycks et al., ICML 2022, "Scaling Out-of-Distribution Detection for Real-World Settings"
for max-logit): ``s_t(x) = max_c z_t[c]`` or ``s_t(x) = log sum_c exp z_t[c]`` (the negative free
energy). Each task's head has its own scale, so raw scores of different tasks do not compare; each is
normalised by its mean and standard deviation on the task's own training data (fitted when the task
ends): ``score_t(x) = (s_t(x) - mu_t) / sigma_t``.
"""

from __future__ import annotations

import torch
from torch import nn

from maskcl.errors import MaskclError
from maskcl.predictors.base import TaskOutputs, TaskPredictor, register_predictor, task_outputs

__all__ = ["Energy", "Entropy", "MaxLogit", "TaskStatistics"]


@register_predictor("entropy")
class Entropy(TaskPredictor):
    """The lowest-entropy task: ``argmax_t -H(softmax(z_t(x)))``; keeps nothing."""

    def score(self, outputs: TaskOutputs, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([-torch.special.entr(z.softmax(1)).sum(1) for z in outputs.logits])


class TaskStatistics(TaskPredictor):
    """A predictor that keeps tensors per fitted task (``task-T.NAME`` in its state) and chooses among
    the fitted tasks only."""

    fitted = True

    def __init__(self) -> None:
        self.stats: dict[int, dict[str, torch.Tensor]] = {}

    def learned(self, model: nn.Module) -> list[int]:
        tasks = super().learned(model)
        missing = [t for t in tasks if t not in self.stats]
        if missing:
            raise MaskclError(f"the {self.name} predictor has not been fitted on task(s) {missing}")
        return tasks

    def stat(self, task: int, name: str) -> torch.Tensor:
        if task not in self.stats:
            raise MaskclError(f"the {self.name} predictor has not been fitted on task {task}")
        return self.stats[task][name]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"task-{t}.{k}": v for t, stats in self.stats.items() for k, v in stats.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        stats: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            head, _, name = key.partition(".")
            if not head.startswith("task-") or not head[5:].isdigit() or not name:
                raise MaskclError(f"the {self.name} predictor's state has a key {key!r} it does not know")
            stats.setdefault(int(head[5:]), {})[name] = value
        self.stats = stats


class _Calibrated(TaskStatistics):
    """``(s_t(x) - mu_t) / sigma_t`` for a raw score ``s_t`` of a task's logits (:meth:`raw`)."""

    @staticmethod
    def raw(logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def fit_task(self, model: nn.Module, task: int, data, batch_size: int = 1000) -> None:
        device = next(model.parameters()).device
        scores = torch.cat(
            [
                self.raw(task_outputs(model, x, [task]).logits[0])
                for x, _ in data.batches(batch_size, device=device)
            ]
        )
        if scores.numel() < 2:
            raise MaskclError(f"task {task} has {scores.numel()} training samples: a predictor needs 2")
        self.stats[task] = {"mean": scores.mean().reshape(1), "std": scores.std().clamp_min(1e-12).reshape(1)}

    def score(self, outputs: TaskOutputs, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                (self.raw(z) - self.stat(t, "mean").to(z)) / self.stat(t, "std").to(z)
                for t, z in zip(outputs.tasks, outputs.logits)
            ]
        )


@register_predictor("max-logit")
class MaxLogit(_Calibrated):
    """The task with the largest calibrated max-logit ``(max_c z_t[c] - mu_t) / sigma_t``."""

    @staticmethod
    def raw(logits: torch.Tensor) -> torch.Tensor:
        return logits.max(1).values


@register_predictor("energy")
class Energy(_Calibrated):
    """The task with the largest calibrated negative energy ``(logsumexp_c z_t[c] - mu_t) / sigma_t``."""

    @staticmethod
    def raw(logits: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(logits, 1)
