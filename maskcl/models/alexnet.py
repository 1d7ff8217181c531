"""The AlexNet-like network of the HAT paper (Serrà et al., ICML 2018, Sec. 4.1), for any image size."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from maskcl.core.compact import kept_batch_norm2d, kept_conv2d, kept_linear_stack
from maskcl.core.gate import GateLink, TaskGate
from maskcl.core.layers import TaskBatchNorm
from maskcl.errors import MaskclError
from maskcl.models.base import TaskModel
from maskcl.models.registry import register_model


@register_model("alexnet")
class AlexNet(TaskModel):
    """Three conv blocks and two fully connected layers, each followed by a HAT gate.

    Conv block ``i``: ``conv(k_i) -> [task batch norm] -> relu -> dropout -> maxpool(2) -> gate`` with
    kernel sizes ``size // 8``, ``size // 10`` and 2 as in the paper's code (``size`` = the image side),
    then ``flatten -> [dropout(relu(linear)) -> gate] * 2 -> head_t``. Paper sizes: channels (64, 128, 256),
    hidden (2048, 2048), dropout 0.2 after the first two conv blocks and 0.5 elsewhere.

    Args:
        input_shape: ``(C, H, W)`` (square or not; the kernel sizes follow the smaller side).
        classes_per_task: classes of each task.
        channels: output channels of the three conv layers.
        hidden: widths of the fully connected layers.
        gates: gate every block (False: the same network, ungated).
        batch_norm: add a :class:`TaskBatchNorm` after each conv (not in the paper).
        dropout: ``(conv dropout, fc dropout)``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        classes_per_task: Sequence[int],
        channels: Sequence[int] = (64, 128, 256),
        hidden: Sequence[int] = (2048, 2048),
        gates: bool = True,
        batch_norm: bool = False,
        dropout: tuple[float, float] = (0.2, 0.5),
    ) -> None:
        super().__init__(input_shape, classes_per_task)
        if len(self.input_shape) != 3:
            raise MaskclError(
                f"alexnet takes images [C, H, W]; this data has samples of shape {self.input_shape}"
            )
        if len(channels) != 3:
            raise MaskclError(f"alexnet has 3 conv layers; {len(channels)} channel sizes given")
        in_channels, height, width = self.input_shape
        side = min(height, width)
        kernels = [max(side // 8, 1), max(side // 10, 1), 2]
        self.convs = nn.ModuleList()
        for c_in, c_out, k in zip([in_channels, *channels[:-1]], channels, kernels):
            self.convs.append(nn.Conv2d(c_in, c_out, k))
            height, width = (height - k + 1) // 2, (width - k + 1) // 2
            if height < 1 or width < 1:
                raise MaskclError(
                    f"images of {self.input_shape[1]}x{self.input_shape[2]} are too small for alexnet"
                )
        self.norms = nn.ModuleList(
            TaskBatchNorm(c, self.context) if batch_norm else nn.Identity() for c in channels
        )
        self.spatial = height * width
        widths = [channels[-1] * self.spatial, *hidden]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        units = [*channels, *hidden]
        self.gates = nn.ModuleList(TaskGate(u, self.context) if gates else nn.Identity() for u in units)
        self.conv_dropout, self.fc_dropout = nn.Dropout(dropout[0]), nn.Dropout(dropout[1])
        self.build_heads(widths[-1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (conv, norm, gate) in enumerate(zip(self.convs, self.norms, self.gates)):
            drop = self.conv_dropout if i < 2 else self.fc_dropout
            h = gate(F.max_pool2d(drop(F.relu(norm(conv(h)))), 2))
        h = h.flatten(1)
        for fc, gate in zip(self.fcs, self.gates[3:]):
            h = gate(self.fc_dropout(F.relu(fc(h))))
        return h

    def compact_layers(self, task: int) -> list[nn.Module]:
        """Task ``task`` with only its units, for :func:`maskcl.core.compact.compact`."""
        masks = [g.hard_mask(task) if isinstance(g, TaskGate) else None for g in self.gates]
        layers: list[nn.Module] = []
        cols = None
        for conv, norm, rows in zip(self.convs, self.norms, masks):
            layers.append(kept_conv2d(conv, rows, cols))
            if isinstance(norm, TaskBatchNorm):
                layers.append(kept_batch_norm2d(norm, task, rows))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            cols = rows
        layers.append(nn.Flatten())
        cols = None if cols is None else cols.repeat_interleave(self.spatial)
        return [*layers, *kept_linear_stack(list(self.fcs), masks[3:], cols, self.heads.plain(task))]

    def gate_links(self) -> list[GateLink]:
        if not isinstance(self.gates[0], TaskGate):
            return []
        g = list(self.gates)
        links = [GateLink(conv, g[i], g[i - 1] if i else None) for i, conv in enumerate(self.convs)]
        links.append(GateLink(self.fcs[0], g[3], g[2], in_repeat=self.spatial))
        links.append(GateLink(self.fcs[1], g[4], g[3]))
        return links
