"""SupSup's one-shot gradient task inference (Wortsman et al., NeurIPS 2020, "Supermasks in
Superposition", Sec. 3.3, eq. 4): with every learned task's supermask in superposition,
``W * sum_t alpha_t m_t`` at ``alpha_t = 1 / T``, an input belongs to the task whose weight, raised, lowers
the entropy ``H`` of the output the most: ``task = argmin_t dH / d alpha_t``.

It serves models that superpose their masks (``superposition_gradient(x, tasks)``: SupSup's
:class:`~maskcl.methods.supsup.SupSupNet`), keeps nothing, and costs one forward and one backward pass
of the superposed network and one pass of each masked layer per learned task.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from maskcl.errors import MaskclError
from maskcl.predictors.base import TaskOutputs, TaskPredictor, register_predictor, task_outputs

__all__ = ["OneShot"]


@register_predictor("one-shot")
class OneShot(TaskPredictor):
    """``argmin_t dH/d alpha_t`` over the superposition of the learned tasks' supermasks; the class is the
    chosen task's head's.

    Args:
        per_batch: the paper's setting, where every input of a batch comes from one task: the batch's
            summed gradient chooses one task for all of them. False (default): each input on its own.
    """

    def __init__(self, per_batch: bool = False) -> None:
        self.per_batch = bool(per_batch)

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        if not hasattr(model, "superposition_gradient"):
            kind = type(model).__name__
            raise MaskclError(
                f"the one-shot predictor needs superposed supermasks (method supsup), not a {kind}"
            )

    def score(self, outputs: TaskOutputs, x: torch.Tensor) -> torch.Tensor:
        raise MaskclError("the one-shot predictor scores with the model: call predict(model, x)")

    @torch.no_grad()
    def predict(
        self, model: nn.Module, x: torch.Tensor, tasks: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_model(model)
        tasks = self.learned(model) if tasks is None else list(tasks)
        if not tasks:
            raise MaskclError("task inference needs at least one learned task")
        gradient = model.superposition_gradient(x, tasks)
        if self.per_batch:
            gradient = gradient.sum(1, keepdim=True).expand_as(gradient)
        best = gradient.argmin(0)
        classes = torch.stack([logits.argmax(1) for logits in task_outputs(model, x, tasks).logits])
        label = classes.gather(0, best.unsqueeze(0)).squeeze(0)
        return torch.tensor(tasks, device=x.device)[best], label
