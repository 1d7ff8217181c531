"""Multilayer perceptron with a HAT gate after every hidden layer."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from maskcl.core.compact import kept_linear_stack
from maskcl.core.gate import GateLink, TaskGate
from maskcl.models.base import TaskModel
from maskcl.models.registry import register_model


@register_model("mlp")
class MLP(TaskModel):
    """The HAT paper's MLP: ``x -> dropout -> [dropout(relu(linear)) -> gate] * len(hidden) -> head_t``.

    Args:
        input_shape: shape of one sample; it is flattened.
        classes_per_task: classes of each task (one head each).
        hidden: width of each hidden layer.
        gates: put a :class:`TaskGate` after each hidden layer (False: the same network, ungated).
        dropout: dropout after each hidden activation (paper: 0.5).
        input_dropout: dropout on the input features (paper: 0.2).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        classes_per_task: Sequence[int],
        hidden: Sequence[int] = (400, 400),
        gates: bool = True,
        dropout: float = 0.5,
        input_dropout: float = 0.2,
    ) -> None:
        super().__init__(input_shape, classes_per_task)
        widths = [math.prod(self.input_shape), *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.gates = nn.ModuleList(TaskGate(w, self.context) if gates else nn.Identity() for w in hidden)
        self.dropout = nn.Dropout(dropout)
        self.input_dropout = nn.Dropout(input_dropout)
        self.build_heads(widths[-1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_dropout(x.flatten(1))
        for layer, gate in zip(self.layers, self.gates):
            h = gate(self.dropout(F.relu(layer(h))))
        return h

    def compact_layers(self, task: int) -> list[nn.Module]:
        """Task ``task`` with only its units, for :func:`maskcl.core.compact.compact`."""
        masks = [g.hard_mask(task) if isinstance(g, TaskGate) else None for g in self.gates]
        return [nn.Flatten(), *kept_linear_stack(list(self.layers), masks, None, self.heads.plain(task))]

    def gate_links(self) -> list[GateLink]:
        if not isinstance(self.gates[0], TaskGate):
            return []
        inputs = [None, *self.gates[:-1]]
        return [GateLink(layer, gate, prev) for layer, gate, prev in zip(self.layers, self.gates, inputs)]
