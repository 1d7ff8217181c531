"""The CIFAR ResNets of He et al. (CVPR 2016, Sec. 4.2): ResNet-20 and friends, depth ``6n + 2``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from maskcl.core.context import TaskContext
from maskcl.core.gate import GateLink, TaskGate
from maskcl.core.layers import TaskBatchNorm
from maskcl.errors import MaskclError
from maskcl.models.base import TaskModel
from maskcl.models.registry import register_model


class _ConvNorm(nn.Module):
    """``gate(task_batch_norm(conv(x)))``: one gated unit of the network."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, context: TaskContext, gates: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.norm = TaskBatchNorm(c_out, context)
        self.gate = TaskGate(c_out, context) if gates else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.norm(self.conv(x)))


class _Block(nn.Module):
    """Basic residual block: ``relu(f(x) + shortcut(x))``; the shortcut is a gated 1x1 conv when the
    shape changes (option B of the paper), the identity otherwise."""

    def __init__(self, c_in: int, c_out: int, stride: int, context: TaskContext, gates: bool) -> None:
        super().__init__()
        self.first = _ConvNorm(c_in, c_out, 3, stride, context, gates)
        self.second = _ConvNorm(c_out, c_out, 3, 1, context, gates)
        self.shortcut = (
            _ConvNorm(c_in, c_out, 1, stride, context, gates)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.second(F.relu(self.first(x))) + self.shortcut(x))


@register_model("resnet20")
class CifarResNet(TaskModel):
    """ResNet for 32x32 images: a 3x3 stem, three stages of ``n`` basic blocks with ``width``, ``2 width``
    and ``4 width`` channels (strides 1, 2, 2), global average pooling, one head per task.

    Every convolution is followed by a :class:`TaskBatchNorm` and, with ``gates``, a HAT gate. Weights are
    protected by their output channels (residual sums make the input side unknowable per layer).

    Args:
        input_shape: ``(C, H, W)``.
        classes_per_task: classes of each task.
        depth: ``6n + 2`` (20, 32, 44, 56, 110).
        width: channels of the first stage (paper: 16).
        gates: gate every convolution (False: the same network, ungated).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        classes_per_task: Sequence[int],
        depth: int = 20,
        width: int = 16,
        gates: bool = True,
    ) -> None:
        super().__init__(input_shape, classes_per_task)
        if len(self.input_shape) != 3:
            raise MaskclError(
                f"resnet20 takes images [C, H, W]; this data has samples of shape {self.input_shape}"
            )
        if depth < 8 or (depth - 2) % 6:
            raise MaskclError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.stem = _ConvNorm(self.input_shape[0], width, 3, 1, self.context, gates)
        stages, c_in = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                stages.append(_Block(c_in, c_out, stride, self.context, gates))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.build_heads(c_in)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(F.relu(self.stem(x))).mean((2, 3))

    def gate_links(self) -> list[GateLink]:
        units = [m for m in self.modules() if isinstance(m, _ConvNorm) and isinstance(m.gate, TaskGate)]
        return [GateLink(unit.conv, unit.gate) for unit in units]
