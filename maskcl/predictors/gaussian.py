"""Class-conditional Gaussian task prediction with a shrunk covariance (after FeCAM, Goswami et al.,
NeurIPS 2023, "FeCAM: Exploiting the Heterogeneity of Class Distributions in Exemplar-Free Continual
Learning"; Lee et al., NeurIPS 2018, for the Mahalanobis score).

When task ``t`` ends, for each space ``v`` (``input``: the inputs themselves; ``features``: the input of
the per-task heads with task ``t``'s network and masks) its own training data give class means
``mu_{t,c}`` and covariances ``Sigma_{t,c}`` (one per class as FeCAM keeps, by default for the inputs; or
one pooled within-class covariance per task, by default for the features), shrunk as FeCAM's eq. 6 does:

    Sigma' = Sigma + gamma (V_1 I + V_2 (1 - I)),   V_1 = mean of diag(Sigma), V_2 = mean off-diagonal

(``gamma``: ``shrinkage``). An input's distance to task ``t`` is its nearest class's squared Mahalanobis
distance ``d_t(x) = min_c (x - mu_{t,c})^T Sigma_{t,c}'^{-1} (x - mu_{t,c})``. Calibrated so that tasks
compare: the features of different tasks live in different spaces, so ``d_t`` is standardised by its
mean ``m_t`` and standard deviation ``s_t`` on task ``t``'s own training data; the input space is shared,
so its distances are standardised once, by the mean ``M`` and deviation ``S`` pooled over the tasks:

    score_t(x) = -[(d_t^input(x) - M) / S + w (d_t^features(x) - m_t) / s_t]

(``w``: ``feature_weight``; either term alone with ``layers``). The class is task ``t``'s head's. Kept
per task and space: a ``D x D`` whitening matrix per covariance and the ``k_t`` whitened means, no sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from maskcl.errors import MaskclError
from maskcl.predictors.base import TaskOutputs, features_width, register_predictor, task_outputs
from maskcl.predictors.scores import TaskStatistics

__all__ = ["Gaussian"]

LAYERS = ("input", "features")


@register_predictor("gaussian")
class Gaussian(TaskStatistics):
    """Shrunk class-conditional Gaussians on each task's inputs and masked features (module docstring).

    Args:
        layers: the spaces scored, ``input`` and/or ``features``.
        per_class: the spaces with one covariance per class (FeCAM); the others pool one per task.
        shrinkage: ``gamma`` of the covariance shrinkage (``> 0``).
        feature_weight: ``w``, the weight of the features' term against the input's (``> 0``).
    """

    features = True

    def __init__(
        self,
        layers: tuple[str, ...] = LAYERS,
        per_class: tuple[str, ...] = ("input",),
        shrinkage: float = 1.0,
        feature_weight: float = 0.25,
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        if not layers or any(layer not in LAYERS for layer in layers) or len(set(layers)) != len(layers):
            raise MaskclError(f"gaussian layers must be some of {', '.join(LAYERS)}, got {layers}")
        if any(layer not in LAYERS for layer in per_class):
            raise MaskclError(
                f"gaussian per_class must be some of {', '.join(LAYERS)}, got {tuple(per_class)}"
            )
        if not shrinkage > 0:
            raise MaskclError(f"gaussian shrinkage must be > 0, got {shrinkage}")
        if not feature_weight > 0:
            raise MaskclError(f"gaussian feature_weight must be > 0, got {feature_weight}")
        self.layers, self.per_class = layers, tuple(per_class)
        self.shrinkage, self.feature_weight = float(shrinkage), float(feature_weight)

    def _spaces(self, x: torch.Tensor, outputs: TaskOutputs, i: int) -> dict[str, torch.Tensor]:
        spaces = {"input": x.flatten(1), "features": outputs.features[i]} if outputs.features else {}
        return {layer: spaces[layer] for layer in self.layers}

    @torch.no_grad()
    def fit_task(self, model: nn.Module, task: int, data, batch_size: int = 1000) -> None:
        device = next(model.parameters()).device
        k = int(data.y.max()) + 1 if len(data) else 0
        if len(data) <= k:
            raise MaskclError(f"task {task} has {len(data)} training samples for {k} classes: too few to fit")
        sums: dict[str, list] = {}
        for x, y in data.batches(batch_size, device=device):
            for layer, v in self._spaces(x, task_outputs(model, x, [task], True), 0).items():
                v = v.double()
                if layer not in sums:
                    dim = v.shape[1]
                    sums[layer] = [v.new_zeros(k), v.new_zeros(k, dim), v.new_zeros(k, dim, dim)]
                count, total, scatter = sums[layer]
                count.index_add_(0, y, torch.ones_like(y, dtype=v.dtype))
                total.index_add_(0, y, v)
                for c in y.unique().tolist():
                    rows = v[y == c]
                    scatter[c] += rows.T @ rows
        stats: dict[str, torch.Tensor] = {}
        for layer, (count, total, scatter) in sums.items():
            means = total / count.clamp_min(1).unsqueeze(1)
            within = scatter - count.view(-1, 1, 1) * means.unsqueeze(2) * means.unsqueeze(1)  # [k, D, D]
            if layer in self.per_class:  # FeCAM: one covariance per class
                covariances = within / (count - 1).clamp_min(1).view(-1, 1, 1)
            else:  # one pooled over the task's classes
                covariances = (within.sum(0) / (len(data) - k)).unsqueeze(0)
            whiten = torch.stack([_whitening(c, self.shrinkage) for c in covariances])  # [k or 1, D, D]
            stats[f"{layer}.whiten"] = whiten.float()
            stats[f"{layer}.means"] = torch.einsum("kd,kde->ke", means, whiten.expand(k, -1, -1)).float()
            stats[f"{layer}.present"] = count > 1 if layer in self.per_class else count > 0
        self.stats[task] = stats
        distances: dict[str, list] = {layer: [] for layer in self.layers}
        for x, _ in data.batches(batch_size, device=device):
            for layer, v in self._spaces(x, task_outputs(model, x, [task], True), 0).items():
                distances[layer].append(self._distance(task, layer, v))
        for layer, d in distances.items():
            d = torch.cat(d).double()
            stats[f"{layer}.moments"] = torch.stack([d.new_tensor(len(d)), d.sum(), (d * d).sum()]).float()

    def memory_needed(
        self, model: nn.Module, input_shape: Sequence[int], classes_per_task: Sequence[int]
    ) -> int:
        """Per task and space of ``D`` numbers: ``D x D`` float whitening matrices (one per class where
        ``per_class``, else one) and the class means; while a task is fitted, its ``k_t`` double ``D x D``
        scatter sums and a double covariance, Cholesky factor and inverse at a time."""
        sizes = {"input": math.prod(input_shape), "features": features_width(model)}
        kept, fitting = 0, 0
        for k in classes_per_task:
            task_fitting = 0
            for layer in self.layers:
                d = sizes[layer]
                kept += 4 * ((k if layer in self.per_class else 1) * d * d + k * d)
                task_fitting += 8 * (k + 3) * d * d
            fitting = max(fitting, task_fitting)
        return kept + fitting

    def _distance(self, task: int, layer: str, v: torch.Tensor) -> torch.Tensor:
        """``d_t(x)``: the squared Mahalanobis distance to the nearest of the task's classes."""
        whiten = self.stat(task, f"{layer}.whiten").to(v.device)
        means = self.stat(task, f"{layer}.means").to(v.device)
        if whiten.shape[0] == 1:
            d = torch.cdist(v.float() @ whiten[0], means).square()
        else:
            d = torch.stack([((v.float() @ w) - m).square().sum(1) for w, m in zip(whiten, means)], 1)
        return d.masked_fill(~self.stat(task, f"{layer}.present").to(v.device), float("inf")).min(1).values

    def _standardise(self, tasks: list[int], layer: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per task, the mean and deviation its distances are standardised with (pooled for the input)."""
        moments = [self.stat(t, f"{layer}.moments").double() for t in tasks]
        if layer == "input":
            moments = [sum(moments)] * len(tasks)
        out = []
        for n, total, squares in moments:
            mean = total / n
            out.append((mean, (squares / n - mean * mean).clamp_min(1e-12).sqrt()))
        return out

    def score(self, outputs: TaskOutputs, x: torch.Tensor) -> torch.Tensor:
        score = torch.zeros(len(outputs.tasks), x.shape[0], dtype=torch.float64, device=x.device)
        for layer in self.layers:
            weight = self.feature_weight if layer == "features" and len(self.layers) > 1 else 1.0
            scales = self._standardise(outputs.tasks, layer)
            for i, (task, (mean, std)) in enumerate(zip(outputs.tasks, scales)):
                d = self._distance(task, layer, self._spaces(x, outputs, i)[layer]).double()
                score[i] -= weight * (d - mean.to(d.device)) / std.to(d.device)
        return score


def _whitening(covariance: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """``W`` with ``W W^T = Sigma'^{-1}`` (row vectors: ``|(x - mu) W|^2`` is the Mahalanobis distance),
    ``Sigma'`` the shrunk covariance."""
    dim = covariance.shape[0]
    eye = torch.eye(dim, dtype=covariance.dtype, device=covariance.device)
    diagonal = covariance.diagonal().mean()
    off = (covariance.sum() - covariance.diagonal().sum()) / max(dim * dim - dim, 1)
    shrunk = covariance + shrinkage * (diagonal * eye + off * (1 - eye))
    shrunk = shrunk + 1e-6 * max(float(diagonal), 1e-6) * eye  # constant features (dead units) too
    lower = torch.linalg.cholesky(shrunk)
    return torch.linalg.solve_triangular(lower, eye, upper=False).T
