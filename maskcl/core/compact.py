"""Compact export: one learned task as a small plain network that keeps only the units the task uses.

A unit that task ``t`` does not use is exactly zero in its forward pass, so removing it (its row of the
layer that computes it, its column of every layer that reads it) leaves the task's outputs unchanged up
to the order of floating-point sums. The result is an ``nn.Sequential`` of plain layers, without gates
or task state: it runs faster than the dense network when the task uses well under all units.

Compact export needs to know which layer reads which units, so it works for maskcl's own models
(``mlp``, ``alexnet``), which implement ``compact_layers(task)``; for a converted network,
:func:`maskcl.core.to_plain` gives a dense plain copy instead.
"""

from __future__ import annotations

import torch
from torch import nn

from maskcl.core.context import check_task_id, task_state
from maskcl.core.layers import TaskBatchNorm
from maskcl.errors import MaskclError

__all__ = ["compact", "kept_batch_norm2d", "kept_conv2d", "kept_linear_stack"]


def compact(model: nn.Module, task: int) -> nn.Sequential:
    """Task ``task`` of ``model`` as a plain ``nn.Sequential`` holding only the units the task uses."""
    state = task_state(model)
    task = check_task_id(task, state.num_tasks)
    if not state.learned[task]:
        raise MaskclError(f"task {task} is not learned yet; only a learned task can be exported")
    if not hasattr(model, "compact_layers"):
        raise MaskclError(
            f"{type(model).__name__} cannot be compacted: maskcl does not know which layer reads which "
            "units; maskcl.core.to_plain (maskcl export without --compact) gives a dense plain copy"
        )
    with torch.no_grad():
        return nn.Sequential(*model.compact_layers(task)).eval()


def kept_linear(layer: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    """A copy of ``layer`` with only the output units ``rows`` and input features ``cols`` (None: all)."""
    weight, bias = _slice(layer.weight, rows, cols), _slice(layer.bias, rows, None)
    kept = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    kept.weight.copy_(weight)
    kept.bias.copy_(bias)
    return kept


def kept_linear_stack(
    linears: list[nn.Linear], masks: list[torch.Tensor | None], cols: torch.Tensor | None, head: nn.Linear
) -> list[nn.Module]:
    """``Linear -> ReLU`` for each of ``linears`` kept to its task's units ``masks[i]`` (reading the units
    kept before it, ``cols`` for the first), then ``head`` reading the last layer's kept units."""
    layers: list[nn.Module] = []
    for linear, rows in zip(linears, masks):
        layers += [kept_linear(linear, rows, cols), nn.ReLU()]
        cols = rows
    return [*layers, kept_linear(head, None, cols)]


def kept_conv2d(layer: nn.Conv2d, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Conv2d:
    """A copy of an ungrouped ``layer`` with only the output channels ``rows`` and input channels ``cols``."""
    if layer.groups != 1:
        raise MaskclError("compact export handles ungrouped convolutions only")
    weight = _slice(layer.weight, rows, cols)
    kept = nn.Conv2d(
        weight.shape[1],
        weight.shape[0],
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        bias=layer.bias is not None,
        padding_mode=layer.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    kept.weight.copy_(weight)
    if layer.bias is not None:
        kept.bias.copy_(_slice(layer.bias, rows, None))
    return kept


def kept_batch_norm2d(norm: TaskBatchNorm, task: int, rows: torch.Tensor | None) -> nn.BatchNorm2d:
    """Task ``task``'s row of ``norm`` as an ``nn.BatchNorm2d`` over the channels ``rows`` (None: all)."""
    keys = ("weight", "bias", "running_mean", "running_var")
    values = {key: _slice(getattr(norm, key)[task], rows, None) for key in keys}
    kept = nn.BatchNorm2d(len(values["weight"]), norm.eps, norm.momentum, device=norm.weight.device)
    for key, value in values.items():
        getattr(kept, key).copy_(value)
    return kept


def _slice(tensor: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None) -> torch.Tensor:
    tensor = tensor.detach()
    if rows is not None:
        tensor = tensor[rows]
    if cols is not None:
        tensor = tensor[:, cols]
    return tensor
