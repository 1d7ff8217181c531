"""Task inference when the task id is unknown at test time: the task whose prediction is most confident.

For each input, every learned task ``t`` gives class probabilities ``p_t``; the inferred task is the one
with the lowest entropy ``H(p_t) = -sum_c p_t[c] log p_t[c]``, and the prediction is that task's argmax.
All tasks run in one pass of the batch repeated once per task (one task id per sample), in slices of
``max_rows`` rows to bound memory. Works for any task-aware model (HAT, HyperMask, baselines).
"""

from __future__ import annotations

import torch
from torch import nn

from maskcl.core.context import set_task, task_state
from maskcl.errors import MaskclError

__all__ = ["infer_task"]


@torch.no_grad()
def infer_task(
    model: nn.Module, x: torch.Tensor, tasks: list[int] | None = None, max_rows: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(task, class)`` per input of ``x``: the lowest-entropy task among ``tasks`` (default: the learned
    ones) and its predicted class (an index into that task's classes). Runs in evaluation mode; the
    model's mode and selected task are restored afterwards."""
    state = task_state(model)
    tasks = state.learned_tasks() if tasks is None else list(tasks)
    if not tasks:
        raise MaskclError("task inference needs at least one learned task")
    previous, training, n = state.context.task, model.training, x.shape[0]
    model.eval()
    ids = torch.tensor(tasks, device=x.device).repeat_interleave(n)  # task-major: [t0 x n, t1 x n, ...]
    rows = x.repeat(len(tasks), *[1] * (x.dim() - 1))
    logits = torch.cat(
        [set_task(model, ids[i : i + max_rows])(rows[i : i + max_rows]) for i in range(0, len(ids), max_rows)]
    )
    state.context.select(previous)
    model.train(training)
    probabilities = logits.softmax(dim=1)  # -inf padding of tasks with fewer classes gives p = 0
    entropy = torch.special.entr(probabilities).sum(1).view(len(tasks), n)
    best = entropy.argmin(0)
    chosen = logits.view(len(tasks), n, -1)[best, torch.arange(n, device=x.device)]
    return torch.tensor(tasks, device=x.device)[best], chosen.argmax(1)
