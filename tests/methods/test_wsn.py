"""WSN: top-c% selection and the straight-through gradient by hand, bit-packed masks, learned tasks kept
bit-for-bit under momentum, Adam and weight decay, inference with the stored masks, checkpoints, strict
state loading, reuse-only tasks and bad input."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import maskcl
from maskcl import MaskclError, convert, create_model, set_task
from maskcl.methods.wsn import WSN, WSNConfig, WSNNet, pack_bits, top_mask, unpack_bits


def mlp(tasks: int = 3, **kwargs):
    return create_model(
        "mlp", input_shape=(10,), classes_per_task=[2] * tasks, hidden=(24, 24), gates=False, **kwargs
    )


def batches(shape: tuple[int, ...], steps: int, seed: int, size: int = 8) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(size) % 2
    return [(torch.randn(size, *shape, generator=generator), labels) for _ in range(steps)]


def learn(wsn: WSN, optimizer, task: int, data, end: bool = True) -> None:
    wsn.model.train()
    wsn.start_task(task, optimizer, steps_per_epoch=len(data))
    train_steps(wsn, optimizer, task, data)
    if end:
        wsn.end_task()


def train_steps(wsn: WSN, optimizer, task: int, data) -> None:
    for x, y in data:
        loss = F.cross_entropy(set_task(wsn.model.train(), task)(x), y) + wsn.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_top_mask_selects_the_largest_scores_by_hand():
    scores = torch.tensor([0.3, -1.0, 2.0, 0.1, -0.2, 0.9, 0.0])
    assert top_mask(scores, 0.3).tolist() == [0, 0, 1, 0, 0, 1, 0]  # round(0.3 * 7) = 2: 2.0 and 0.9
    assert top_mask(scores, 0.6).tolist() == [1, 0, 1, 1, 0, 1, 0]  # round(4.2) = 4
    grid = torch.tensor([[4.0, -3.0], [0.5, 7.0]])
    assert top_mask(grid, 0.25).tolist() == [[0, 0], [0, 1]]
    with pytest.raises(MaskclError, match="selects none of 7 scores"):
        top_mask(scores, 0.05)


def test_each_masked_tensor_keeps_its_own_top_c_percent():
    net = WSNNet(mlp(dropout=0, input_dropout=0), density=0.25)
    assert [n for n, _ in net.masked] == ["layers.0.weight", "layers.1.weight"]  # no bias, no head
    with torch.no_grad():
        net.scores[0].copy_(torch.arange(240.0).view(24, 10))  # the last 60 entries are the largest
        net.scores[1].copy_(-torch.arange(576.0).view(24, 24))  # the first 144 entries are the largest
    first, second = net.masks(0)
    assert int(first.sum()) == 60 and bool(first.flatten()[180:].all()) and not first.flatten()[:180].any()
    assert (
        int(second.sum()) == 144 and bool(second.flatten()[:144].all()) and not second.flatten()[144:].any()
    )


def test_the_scores_gradient_is_straight_through_by_hand():
    weight = torch.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]])
    scores = torch.tensor([[0.2, 0.9, -0.4], [0.7, -0.1, 0.3]], requires_grad=True)
    upstream = torch.tensor([[1.0, 2.0, -1.0], [3.0, 0.5, 2.0]])
    mask = top_mask(scores, 0.5)  # 0.9, 0.7, 0.3 selected
    assert mask.tolist() == [[0, 1, 0], [1, 0, 1]]
    ((weight * mask) * upstream).sum().backward()
    assert torch.equal(scores.grad, upstream * weight)  # every score, selected or not: dL/dm = g * W
    gained = scores.detach().clone().requires_grad_()
    ((weight * top_mask(gained, 0.5, gain=100.0)) * upstream).sum().backward()
    assert torch.equal(gained.grad, upstream * weight * 100.0)  # the gain scales it, nothing else


@pytest.mark.parametrize("gain", [1.0, 100.0])
def test_the_nets_scores_get_the_effective_weights_gradient_times_the_weight(gain):
    net = WSNNet(mlp(dropout=0, input_dropout=0), density=0.5, score_gain=gain)
    x, y = batches((10,), 1, seed=3)[0]
    F.cross_entropy(set_task(net, 0)(x), y).backward()
    effective = {n: (p * m).detach().requires_grad_() for (n, p), m in zip(net.masked, net.masks(0))}
    F.cross_entropy(functional_call(net.target, effective, (x,)), y).backward()
    for i, (name, p) in enumerate(net.masked):
        torch.testing.assert_close(net.scores[i].grad, gain * effective[name].grad * p.detach())
        torch.testing.assert_close(p.grad, effective[name].grad * net.masks(0)[i])


def test_bit_packing_round_trips_in_ceil_n_over_8_bytes():
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=torch.bool)
    assert pack_bits(mask).tolist() == [13, 1]  # bits 0, 2, 3 of byte 0; bit 0 of byte 1
    for n in (1, 7, 8, 9, 100, 1001):
        bits = torch.rand(n) < 0.4
        packed = pack_bits(bits)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 8)
        assert torch.equal(unpack_bits(packed, n), bits)
    grid = torch.rand(3, 5, 2) < 0.5
    assert torch.equal(unpack_bits(pack_bits(grid), 30).view(3, 5, 2), grid)


def test_each_learned_task_stores_ceil_w_over_8_bytes_per_tensor():
    wsn = WSN(mlp(), density=0.5)
    optimizer = torch.optim.SGD(wsn.model.parameters(), lr=0.05)
    per_task = math.ceil(240 / 8) + math.ceil(576 / 8)
    for task in range(3):
        buffers = dict(wsn.model.task_masks.named_buffers())
        assert sorted(buffers) == [str(t) for t in range(task)]
        assert all(b.dtype == torch.uint8 and b.numel() == per_task for b in buffers.values())
        learn(wsn, optimizer, task, batches((10,), 2, seed=task))
    summary = wsn.summary()
    assert summary["mask_bytes"] == {0: per_task, 1: per_task, 2: per_task}
    params = sum(p.numel() * p.element_size() for p in wsn.model.parameters())
    assert wsn.extra_memory() == 3 * per_task + 2 * params


def test_summary_gives_each_tensors_capacity():
    wsn = WSN(mlp(), density=0.25)
    optimizer = torch.optim.SGD(wsn.model.parameters(), lr=0.05)
    for task in range(2):
        learn(wsn, optimizer, task, batches((10,), 2, seed=task))
    summary = json.loads(json.dumps(wsn.summary()))
    first = summary["capacity"][0]
    assert first["name"] == "layers.0.weight" and first["units"] == 240
    assert first["used"] == {"0": 0.25, "1": 0.25}
    zero, one = (m[0] for m in (wsn.model.stored_masks(0), wsn.model.stored_masks(1)))
    assert first["shared"] == pytest.approx(float((zero & one).float().mean()))
    assert first["free"] == pytest.approx(float((~(zero | one)).float().mean()))


def alexnet_bn():
    return create_model(
        "alexnet", input_shape=(3, 16, 16), classes_per_task=[2] * 3, channels=(4, 4, 4), hidden=(8, 8),
        gates=False, batch_norm=True,
    )  # fmt: skip


def resnet20():
    return create_model("resnet20", input_shape=(3, 16, 16), classes_per_task=[2] * 3, gates=False)


def timm_resnet18():
    timm = pytest.importorskip("timm")
    return convert(timm.create_model("resnet18", num_classes=10), [2] * 3, gates=False)


MODELS = {
    "mlp": ((10,), mlp),
    "alexnet_bn": ((3, 16, 16), alexnet_bn),
    "resnet20": ((3, 16, 16), resnet20),
    "timm_resnet18": ((3, 32, 32), timm_resnet18),
}
OPTIMIZERS = {
    "sgd_momentum_wd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01),
    "adamw_wd": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_learned_tasks_outputs_stay_bit_exact(model_name, optimizer_name):
    shape, build = MODELS[model_name]
    wsn = WSN(build(), density=0.5)
    net = wsn.model
    optimizer = OPTIMIZERS[optimizer_name](net.parameters())
    x = torch.randn(4, *shape)
    learn(wsn, optimizer, 0, batches(shape, 2, seed=0, size=4))
    kept = [set_task(net.eval(), 0)(x)]
    weights = [p.detach().clone() for _, p in net.masked]
    scores = [s.detach().clone() for s in net.scores]
    task1_before = set_task(net.eval(), 1)(x)
    learn(wsn, optimizer, 1, batches(shape, 2, seed=1, size=4))
    assert torch.equal(set_task(net.eval(), 0)(x), kept[0])
    kept.append(set_task(net.eval(), 1)(x))
    assert not torch.equal(kept[1], task1_before)  # task 1 trained
    assert any(not torch.equal(p, w) for (_, p), w in zip(net.masked, weights))
    assert all(not torch.equal(s, before) for s, before in zip(net.scores, scores))
    for (_, p), w, m in zip(net.masked, weights, net.stored_masks(0)):
        assert torch.equal(p[m], w[m])  # task 0's weights, bit for bit
    if model_name == "mlp":  # a third task keeps both
        learn(wsn, optimizer, 2, batches(shape, 2, seed=2, size=4))
        for task in (0, 1):
            assert torch.equal(set_task(net.eval(), task)(x), kept[task])


def test_inference_uses_the_stored_mask_not_the_scores():
    wsn = WSN(mlp(dropout=0, input_dropout=0), density=0.5)
    net = wsn.model
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    learn(wsn, optimizer, 0, batches((10,), 3, seed=0))
    with torch.no_grad():
        for s in net.scores:
            s.copy_(torch.randn_like(s))  # the scores now select another subnetwork
    x = torch.randn(5, 10)
    set_task(net.eval(), 0)
    stored = [
        unpack_bits(b, n) for b, n in zip(net.task_masks.get_buffer("0").split(net.packed_sizes), net.sizes)
    ]
    weights = {name: p * m.view_as(p).to(p.dtype) for (name, p), m in zip(net.masked, stored)}
    assert torch.equal(net(x), functional_call(net.target, weights, (x,)))
    current = {name: p * top_mask(s, 0.5) for (name, p), s in zip(net.masked, net.scores)}
    assert not torch.equal(net(x), functional_call(net.target, current, (x,)))


def test_per_sample_task_ids_compute_each_learned_task():
    wsn = WSN(mlp(), density=0.5)
    net = wsn.model
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.01)
    for task in range(2):
        learn(wsn, optimizer, task, batches((10,), 2, seed=task))
    x = torch.randn(6, 10)
    ids = torch.tensor([1, 0, 0, 1, 1, 0])
    mixed = set_task(net.eval(), ids)(x)
    for task in (0, 1):
        assert torch.equal(mixed[ids == task], set_task(net, task)(x[ids == task]))


def test_a_task_that_only_reuses_earlier_weights_is_learned_and_keeps_them():
    wsn = WSN(mlp(), density=0.5)
    net = wsn.model
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    learn(wsn, optimizer, 0, batches((10,), 2, seed=0))
    with torch.no_grad():
        for s, m in zip(net.scores, net.stored_masks(0)):
            s.copy_(m.float() * 100)  # task 0's weights far ahead: task 1 keeps selecting them
    x = torch.randn(4, 10)
    kept = set_task(net.eval(), 0)(x)
    learn(wsn, optimizer, 1, batches((10,), 2, seed=1))
    assert all(torch.equal(a, b) for a, b in zip(net.stored_masks(0), net.stored_masks(1)))
    assert torch.equal(set_task(net.eval(), 0)(x), kept)
    layer = wsn.summary()["capacity"][0]
    assert layer["shared"] == layer["used"][1] == 0.5  # nothing new


def test_a_checkpoint_mid_task_continues_identically():
    data = batches((10,), 6, seed=5)

    def build(seed: int) -> tuple[WSN, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        wsn = WSN(mlp(dropout=0, input_dropout=0), density=0.5)
        return wsn, torch.optim.SGD(wsn.model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)

    wsn, optimizer = build(0)
    learn(wsn, optimizer, 0, batches((10,), 3, seed=0))
    learn(wsn, optimizer, 1, data[:3], end=False)
    model_state = {k: v.clone() for k, v in wsn.model.state_dict().items()}
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    method_state = copy.deepcopy(wsn.state_dict())
    train_steps(wsn, optimizer, 1, data[3:])
    wsn.end_task()

    fresh, fresh_optimizer = build(1)  # other weights and scores until loaded
    fresh.model.load_state_dict(model_state)
    fresh.start_task(1, fresh_optimizer, steps_per_epoch=len(data))
    fresh.model.load_state_dict(model_state)
    fresh.load_state_dict(method_state)
    fresh_optimizer.load_state_dict(optimizer_state)
    train_steps(fresh, fresh_optimizer, 1, data[3:])
    fresh.end_task()
    for (name, mine), theirs in zip(wsn.model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_a_state_loads_strictly_into_a_fresh_net():
    wsn = WSN(mlp(), density=0.5)
    optimizer = torch.optim.SGD(wsn.model.parameters(), lr=0.05)
    for task in range(2):
        learn(wsn, optimizer, task, batches((10,), 2, seed=task))
    state = wsn.model.state_dict()
    fresh = WSNNet(mlp(), density=0.5)
    fresh.load_state_dict(state)
    assert sorted(dict(fresh.task_masks.named_buffers())) == ["0", "1"]
    x = torch.randn(3, 10)
    for task in (0, 1):
        assert torch.equal(set_task(fresh.eval(), task)(x), set_task(wsn.model.eval(), task)(x))
    missing = {k: v for k, v in state.items() if k != "task_masks.1"}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*task_masks\.1"):
        WSNNet(mlp(), density=0.5).load_state_dict(missing)
    extra = {**state, "task_masks.2": state["task_masks.0"].clone()}  # task 2 is not learned
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*task_masks\.2"):
        WSNNet(mlp(), density=0.5).load_state_dict(extra)
    short = {**state, "task_masks.0": state["task_masks.0"][:-1]}
    with pytest.raises(RuntimeError, match=r"size mismatch for task_masks\.0"):
        WSNNet(mlp(), density=0.5).load_state_dict(short)


def test_bad_input_is_a_one_line_error():
    for density in (0.0, 1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(MaskclError, match=r"density must be in \(0, 1\)"):
            WSNConfig(density=density)
    for gain in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(MaskclError, match="score_gain must be finite and > 0"):
            WSNConfig(score_gain=gain)
    assert WSNConfig().score_gain == 100.0 == WSNNet(mlp()).score_gain
    with pytest.raises(MaskclError, match="has no option 'bogus'"):
        maskcl.create_method("wsn", mlp(), bogus=1)
    tiny = create_model("mlp", input_shape=(2,), classes_per_task=[2], hidden=(2,), gates=False)
    with pytest.raises(MaskclError, match=r"layers\.0\.weight has 4 weights: density 0\.1 selects none"):
        maskcl.create_method("wsn", tiny, density=0.1)
    wsn = maskcl.create_method("wsn", mlp(), density=0.2)
    assert isinstance(wsn, WSN) and wsn.config.density == 0.2 and wsn.exact and not wsn.gates
    with pytest.raises(MaskclError, match="task 0 has no stored mask"):
        wsn.model.stored_masks(0)
