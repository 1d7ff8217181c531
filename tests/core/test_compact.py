"""Compact export: only the task's units, the same outputs, plain layers; refused where wiring is unknown."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskcl import HAT, MaskclError, create_model, set_task
from maskcl.core import TaskGate, convert
from maskcl.core.compact import compact
from maskcl.core.layers import TaskBatchNorm, TaskHeads

MODELS = {
    "mlp": dict(name="mlp", input_shape=(1, 12, 12), hidden=(40, 30)),
    "alexnet_bn": dict(
        name="alexnet", input_shape=(3, 16, 16), channels=(8, 12, 16), hidden=(32, 24), batch_norm=True
    ),
}


@pytest.mark.parametrize("which", sorted(MODELS))
def test_compact_keeps_only_used_units_and_the_outputs(which):
    torch.manual_seed(0)
    kwargs = dict(MODELS[which])
    model = create_model(kwargs.pop("name"), classes_per_task=[2, 3], **kwargs)
    with torch.no_grad():  # task 1 uses about half of every layer's units
        for gate in model.gates:
            gate.embedding[1] = torch.where(torch.rand(gate.num_units) < 0.5, 1.0, -1.0)
    hat = HAT(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    hat.start_task(1, optimizer, steps_per_epoch=3)
    model.train()
    for _ in range(3):
        x = torch.randn(8, *model.input_shape)
        loss = F.cross_entropy(model(x), torch.randint(0, 3, (8,))) + hat.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hat.end_task()

    small = compact(model, 1)
    x = torch.randn(5, *model.input_shape)
    torch.testing.assert_close(small(x), set_task(model.eval(), 1)(x), rtol=1e-5, atol=1e-6)
    assert not any(isinstance(m, TaskGate | TaskHeads | TaskBatchNorm) for m in small.modules())
    widths = [m.out_features for m in small if isinstance(m, nn.Linear)][:-1]
    assert widths == [int(g.hard_mask(1).sum()) for g in model.gates][-len(widths) :]
    assert sum(p.numel() for p in small.parameters()) < 0.7 * sum(p.numel() for p in model.parameters())


def test_compact_refusals():
    model = create_model("mlp", input_shape=(4,), classes_per_task=[2, 2], hidden=(8,))
    with pytest.raises(MaskclError, match="task 0 is not learned"):
        compact(model, 0)
    converted = convert(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), [2])
    converted[2].task_state.learned[0] = True
    with pytest.raises(MaskclError, match="cannot be compacted"):
        compact(converted, 0)
