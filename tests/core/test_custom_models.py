"""A user's own HAT network: Conv1d/Conv3d, LayerNorm and GroupNorm, declared through GateLink."""

import torch
import torch.nn.functional as F
from torch import nn

from maskcl.core import GateLink, TaskGate
from maskcl.methods.hat import HAT
from maskcl.models import TaskModel


class Conv1dNet(TaskModel):
    """conv1d -> gate -> GroupNorm -> relu -> gate -> linear -> gate -> LayerNorm -> gate -> heads.

    Each norm sits between two applications of the same gate, so its statistics see only the task's
    units and its unused outputs are zeroed again: that is what makes a norm exact under HAT.
    """

    def __init__(self, classes_per_task):
        super().__init__((2, 16), classes_per_task)
        self.conv = nn.Conv1d(2, 8, 3)
        self.group_norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8 * 14, 12)
        self.layer_norm = nn.LayerNorm(12)
        self.g1, self.g2 = TaskGate(8, self.context), TaskGate(12, self.context)
        self.build_heads(12)

    def forward_features(self, x):
        h = self.g1(F.relu(self.group_norm(self.g1(self.conv(x)))))
        return self.g2(self.layer_norm(self.g2(self.fc(h.flatten(1)))))

    def gate_links(self):
        return [
            GateLink(self.conv, self.g1),
            GateLink(self.group_norm, self.g1),
            GateLink(self.fc, self.g2, self.g1, in_repeat=14),
            GateLink(self.layer_norm, self.g2),
        ]


class Conv3dNet(TaskModel):
    def __init__(self, classes_per_task):
        super().__init__((1, 6, 6, 6), classes_per_task)
        self.conv1 = nn.Conv3d(1, 4, 3)
        self.conv2 = nn.Conv3d(4, 6, 3, groups=2)  # grouped: each output reads half the inputs
        self.g1, self.g2 = TaskGate(4, self.context), TaskGate(6, self.context)
        self.build_heads(6)

    def forward_features(self, x):
        h = self.g1(F.relu(self.conv1(x)))
        return self.g2(F.relu(self.conv2(h))).mean((2, 3, 4))

    def gate_links(self):
        return [GateLink(self.conv1, self.g1), GateLink(self.conv2, self.g2, self.g1)]


def train_and_check(model):
    hat = HAT(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    fixed = torch.randn(8, *model.input_shape)
    outputs = []
    for task in range(3):
        hat.start_task(task, optimizer, steps_per_epoch=3)
        for _ in range(6):
            x, y = torch.randn(16, *model.input_shape), torch.randint(0, 2, (16,))
            loss = F.cross_entropy(model.train()(x), y) + hat.regularizer()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        hat.end_task()
        with torch.no_grad():
            outputs.append(model.eval().set_task(task)(fixed))
            for earlier in range(task):
                assert torch.equal(model.set_task(earlier)(fixed), outputs[earlier])
    return hat


def test_conv1d_with_group_norm_and_layer_norm_is_exactly_protected():
    train_and_check(Conv1dNet([2, 2, 2]))


def test_norm_affine_entries_are_protected_per_unit_like_weights():
    model = Conv1dNet([2, 2])
    with torch.no_grad():
        model.g2.embedding[0] = torch.tensor([1.0] * 6 + [-1.0] * 6)  # task 0 uses the first 6 units
    owned = GateLink(model.layer_norm, model.g2).owned_entries([0])
    assert owned["weight"].tolist() == [True] * 6 + [False] * 6
    assert owned["bias"].tolist() == [True] * 6 + [False] * 6


def test_grouped_conv3d_is_exactly_protected():
    train_and_check(Conv3dNet([2, 2, 2]))


def test_grouped_conv_protects_only_inputs_of_its_group():
    model = Conv3dNet([2, 2])
    with torch.no_grad():
        model.g1.embedding[0] = torch.tensor([1.0, -1, -1, -1])  # task 0 uses input channel 0 (group 0)
        model.g2.embedding[0] = torch.tensor([1.0, -1, -1, 1, -1, -1])  # outputs 0 (group 0), 3 (group 1)
    mask = GateLink(model.conv2, model.g2, model.g1).owned_entries([0])["weight"]
    assert mask.shape == (6, 2, 1, 1, 1)
    per_output = mask.expand_as(model.conv2.weight).flatten(2).all(2)  # [out, in_per_group]
    assert per_output.tolist() == [
        [True, False],
        [False, False],
        [False, False],
        [False, False],
        [False, False],
        [False, False],
    ]
