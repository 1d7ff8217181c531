import pytest
import torch

from maskcl.core.context import TaskContext
from maskcl.core.gate import TaskGate
from maskcl.methods.hat.method import soft_gates


def make_gate(units=5, tasks=3, **kw):
    return TaskGate(units, TaskContext(tasks), **kw)


def test_hard_gate_in_eval_is_binary_e_positive():
    gate = make_gate().eval()
    gate.context.select(1)
    h = torch.randn(4, 5)
    expected = h * (gate.embedding[1] > 0).float()
    assert torch.equal(gate(h), expected)


def test_soft_gate_in_training_is_sigmoid_of_scaled_embedding():
    gate = make_gate().train()
    gate.context.select(2)
    gate.context.scale = 3.0
    h = torch.ones(2, 5)
    torch.testing.assert_close(gate(h), torch.sigmoid(3.0 * gate.embedding[2]).expand(2, 5))


def test_channel_dim_broadcasts_over_images_and_tokens():
    images = make_gate(units=3).eval()
    out = images(torch.ones(2, 3, 4, 4))
    assert torch.equal(out[:, :, 0, 0], (images.embedding[0] > 0).float().expand(2, 3))
    tokens = make_gate(units=3, channel_dim=-1).eval()
    out = tokens(torch.ones(2, 7, 3))
    assert torch.equal(out[:, 5], (tokens.embedding[0] > 0).float().expand(2, 3))


def test_per_sample_task_ids_match_single_task_forward():
    gate = make_gate().eval()
    h = torch.randn(6, 5)
    ids = torch.tensor([0, 1, 2, 2, 1, 0])
    gate.context.select(ids)
    mixed = gate(h)
    for i, t in enumerate(ids.tolist()):
        gate.context.select(t)
        assert torch.equal(mixed[i], gate(h[i : i + 1])[0])


def test_compensated_gradient_matches_the_paper_formula():
    s, s_max = 7.0, 400.0
    table = torch.tensor([[9.0, 9, 9, 9], [-0.3, 0.01, 0.2, 2.0]], requires_grad=True)
    soft_gates([table], 1, s, s_max).sum().backward()
    assert torch.equal(table.grad[0], torch.zeros(4))  # other tasks' embeddings get no gradient
    e = table[1].detach()
    e.grad = table.grad[1]
    a = torch.sigmoid(s * e.detach())
    plain = a * (1 - a) * s
    factor = s_max / s * (torch.cosh((s * e.detach()).clamp(-50, 50)) + 1) / (torch.cosh(e.detach()) + 1)
    torch.testing.assert_close(e.grad, plain * factor)
    # mathematically s_max / (2 (cosh e + 1)): independent of s (up to float32 rounding of 1 - a)
    torch.testing.assert_close(e.grad, s_max / (2 * (torch.cosh(e.detach()) + 1)), rtol=1e-2, atol=0)


def test_tiny_gates_are_flushed_to_zero_in_value_but_keep_their_gradient():
    e = torch.tensor([[-0.12, 1.0]], requires_grad=True)  # s * e = -48: sigmoid ~ 1.4e-21
    gates = soft_gates([e], 0, 400.0, 400.0)
    assert gates.tolist() == [0.0, 1.0]
    gates[0].backward()
    assert e.grad[0, 0] > 0  # the compensated gradient of the exact sigmoid still flows


def test_flushing_is_exact_for_gates_above_the_threshold():
    e = torch.linspace(-0.2, 0.2, 101)
    gates = soft_gates([e.view(1, -1), e.view(1, -1)], 0, 400.0, 400.0)
    assert torch.equal(gates[:101][e > -0.1], torch.sigmoid(400.0 * e)[e > -0.1])
    assert torch.equal(gates[:101], gates[101:])


def test_used_units_is_the_union_of_hard_masks():
    gate = make_gate(units=4, tasks=3)
    with torch.no_grad():
        gate.embedding.copy_(torch.tensor([[1.0, -1, -1, -1], [-1, 2, -1, -1], [-1, -1, -1, 3]]))
    assert gate.used_units([]).tolist() == [False] * 4
    assert gate.used_units([0, 1]).tolist() == [True, True, False, False]
    assert gate.used_units([2]).tolist() == [False, False, False, True]


@pytest.mark.parametrize("task", [3, -1, 1.0, True])
def test_task_out_of_range_is_a_one_line_error(task):
    from maskcl.errors import MaskclError

    with pytest.raises(MaskclError, match="out of range"):
        TaskContext(3).select(task)
