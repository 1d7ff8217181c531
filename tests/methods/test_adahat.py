"""AdaHAT: the adjustment rate by hand, HAT's behaviour where it must match, what stays frozen, errors."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskcl import create_model, set_task
from maskcl.core import GateLink, TaskGate
from maskcl.core.protection import owned_entries
from maskcl.errors import MaskclError
from maskcl.methods.adahat import AdaHAT, AdaHATConfig, parameter_importance
from maskcl.methods.hat import HAT
from maskcl.models import TaskModel

# Tiny MLP 2 -> 4 -> 3 with two learned tasks. Units used, per layer and task:
#   layer 0: task 0 uses 0, 2; task 1 uses 0, 1  -> summative mask S0 = [2, 1, 1, 0], unit 3 free
#   layer 1: task 0 uses 0;    task 1 uses 0, 1  -> summative mask S1 = [2, 1, 0],    unit 2 free
S0, S1 = torch.tensor([2.0, 1, 1, 0]), torch.tensor([2.0, 1, 0])
IMPORTANCE = {  # eq. 9: min of the output unit's and the input unit's summative masks
    "layers.0.weight": S0[:, None].expand(4, 2),
    "layers.0.bias": S0,
    "layers.1.weight": torch.minimum(S1[:, None], S0[None, :]),
    "layers.1.bias": S1,
}


def tiny_model(task2_embeddings):
    model = create_model(
        "mlp", input_shape=(2,), classes_per_task=[2, 2, 2], hidden=(4, 3), dropout=0.0, input_dropout=0.0
    )
    g0, g1 = model.gates
    with torch.no_grad():
        g0.embedding[:2] = torch.tensor([[1.0, -1, 1, -1], [1.0, 1, -1, -1]])
        g1.embedding[:2] = torch.tensor([[1.0, -1, -1], [1.0, 1, -1]])
        g0.embedding[2], g1.embedding[2] = task2_embeddings
    model.learned[:2] = True
    return model


def rates_by_hand(alpha, epsilon, sparsity0, sparsity1):
    """a = r / (I + r), r = alpha / (epsilon + R_l) (eq. 9); 1 where no earlier task uses the entry."""
    rates = {}
    for name, importance in IMPORTANCE.items():
        r = alpha / (epsilon + (sparsity0 if name.startswith("layers.0") else sparsity1))
        rates[name] = torch.where(importance > 0, r / (importance + r), torch.ones(()))
    return rates


@pytest.mark.parametrize("alpha", [0.0, 0.05, 1.0, 1e9])
def test_sgd_update_is_scaled_by_the_adjustment_rate_by_hand(alpha):
    """alpha = 0 leaves HAT's used entries where they were; a huge alpha lets them move almost freely."""
    e2 = (torch.tensor([0.001, -0.002, 0.003, 0.0015]), torch.tensor([0.002, 0.001, -0.001]))
    model = tiny_model(e2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    adahat = AdaHAT(model, alpha=alpha, epsilon=0.1)
    adahat.start_task(2, optimizer, steps_per_epoch=1)  # scale s = s_max = 400 at every step
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = F.cross_entropy(model.train()(torch.randn(8, 2)), torch.randint(0, 2, (8,))) + adahat.regularizer()
    optimizer.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer.step()
    adahat.end_task()

    gates = torch.sigmoid(400 * torch.cat(e2))  # the step's training gates of task 2
    rates = rates_by_hand(alpha, 0.1, sparsity0=gates[3], sparsity1=gates[4 + 2])  # one free unit each
    after = dict(model.named_parameters())
    for name, rate in rates.items():
        used = IMPORTANCE[name] > 0
        unconstrained = before[name] - 0.1 * grads[name]
        torch.testing.assert_close(after[name], before[name] - 0.1 * rate * grads[name])
        assert (grads[name][used] != 0).any()
        if alpha == 0:
            assert torch.equal(after[name][used], before[name][used])  # HAT's hard block
        if alpha == 1e9:
            torch.testing.assert_close(after[name], unconstrained)
        if alpha == 0.05:
            moved, free_move = (after[name] - before[name]).abs(), (unconstrained - before[name]).abs()
            assert (moved[used] < free_move[used]).any() and (moved[used] > 0).any()


def steps(method, model, optimizer, chunk, seed):
    for i, (x, y) in enumerate(chunk):
        torch.manual_seed(seed + i)  # the same dropout masks in every copy
        loss = F.cross_entropy(model.train()(x), y) + method.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def train(method, model, optimizer, task, chunk, seed):
    method.start_task(task, optimizer, steps_per_epoch=3)
    steps(method, model, optimizer, chunk, seed)
    method.end_task()


def batches(n, shape=(10,), size=16):
    return [(torch.randn(size, *shape), torch.randint(0, 2, (size,))) for _ in range(n)]


def adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def test_alpha_zero_trains_exactly_as_hat_under_adamw():
    model = create_model("mlp", input_shape=(10,), classes_per_task=[2, 2, 2], hidden=(24, 24))
    copies = [copy.deepcopy(model), copy.deepcopy(model)]
    data = [batches(6) for _ in range(3)]
    for cls, net in zip([HAT, AdaHAT], copies):
        method = cls(net) if cls is HAT else cls(net, alpha=0.0)
        optimizer = adamw(net)
        for task in range(3):
            train(method, net, optimizer, task, data[task], seed=10 * task)
    for (name, p), q in zip(copies[0].named_parameters(), copies[1].parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01), adamw],
    ids=["sgd-momentum-wd", "adamw-wd"],
)
def test_entries_no_earlier_task_uses_move_exactly_as_under_hat(make_optimizer):
    model = create_model("mlp", input_shape=(10,), classes_per_task=[2, 2], hidden=(24, 24))
    train(HAT(model), model, make_optimizer(model), 0, batches(4), seed=0)
    step = batches(1)
    nets = {}
    for cls in (HAT, AdaHAT):
        net = copy.deepcopy(model)
        method = cls(net) if cls is HAT else cls(net, alpha=1.0)
        train(method, net, make_optimizer(net), 1, step, seed=1)
        nets[cls] = dict(net.named_parameters())
    links = {f"layers.{i}": link for i, link in enumerate(model.gate_links())}
    moved = False
    for name, before in model.named_parameters():
        hat, adahat = nets[HAT][name], nets[AdaHAT][name]
        prefix, _, leaf = name.rpartition(".")
        if prefix not in links:  # heads, gate embeddings: the same step under both
            assert torch.equal(hat, adahat), name
            continue
        used = links[prefix].owned_entries([0])[leaf].expand_as(before)
        assert used.any() and (~used).any()
        assert torch.equal(adahat[~used], hat[~used]), name
        assert torch.equal(hat[used], before[used])
        moved |= not torch.equal(adahat[used], before[used])
    assert moved


def vit():
    timm = pytest.importorskip("timm")
    from maskcl import convert

    net = timm.create_model("vit_tiny_patch16_224", num_classes=4, img_size=16, patch_size=4, depth=1)
    return convert(net, [2, 2])


MODELS = {
    "alexnet-batch-norm": lambda: create_model(
        "alexnet",
        input_shape=(3, 16, 16),
        classes_per_task=[2, 2],
        channels=(4, 4, 4),
        hidden=(8, 8),
        batch_norm=True,
    ),
    "vit-shared-norms-and-tokens": vit,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_task_layers_and_shared_parameters_stay_frozen_while_used_entries_move(name):
    model = MODELS[name]()
    shape = (3, 16, 16)
    adahat, optimizer = AdaHAT(model, alpha=1.0), adamw(model)
    train(adahat, model, optimizer, 0, batches(3, shape, 8), seed=0)
    fixed = torch.randn(4, *shape)
    output0 = set_task(model.eval(), 0)(fixed).detach().clone()
    before = {id(t): t.detach().clone() for t in [*model.parameters(), *model.buffers()]}
    frozen = owned_entries(model, [0], links=False)
    train(adahat, model, optimizer, 1, batches(3, shape, 8), seed=1)

    for tensor, mask in frozen:
        mask = mask.expand_as(tensor)
        assert torch.equal(tensor[mask], before[id(tensor)][mask])
    names = {id(t): n for n, t in [*model.named_parameters(), *model.named_buffers()]}
    kept = {names[id(t)] for t, m in frozen if m.any()}
    if name == "vit-shared-norms-and-tokens":
        assert {"cls_token", "pos_embed", "norm.weight"} <= kept  # shared with no owner: frozen whole
    else:
        assert any("norms" in n for n in kept)  # task 0's BatchNorm rows
    assert any(n.endswith("embedding") for n in kept) and any("head" in n for n in kept)
    used_moved = [
        not torch.equal(param[mask.expand_as(param)], before[id(param)][mask.expand_as(param)])
        for link in adahat.links
        for leaf, mask in link.owned_entries([0]).items()
        for param in [getattr(link.module, leaf)]
    ]
    assert any(used_moved)
    assert not torch.equal(set_task(model.eval(), 0)(fixed), output0)  # BWT is not exactly zero


def test_checkpoint_mid_task_resumes_bit_identically():
    """AdaHAT keeps no state beyond HAT's: the importance comes from the model, the snapshots from each
    step."""

    def make():
        torch.manual_seed(0)
        net = create_model("mlp", input_shape=(10,), classes_per_task=[2, 2], hidden=(16, 16))
        return net, AdaHAT(net, alpha=1.0)

    data = batches(3), batches(6)
    net, adahat = make()
    optimizer = adamw(net)
    train(adahat, net, optimizer, 0, data[0], seed=0)
    adahat.start_task(1, optimizer, steps_per_epoch=4)
    steps(adahat, net, optimizer, data[1][:3], seed=100)
    saved = copy.deepcopy((net.state_dict(), optimizer.state_dict(), adahat.state_dict()))
    assert saved[2] == HAT.state_dict(adahat) == {"step": 3}
    steps(adahat, net, optimizer, data[1][3:], seed=200)

    resumed, method = make()
    opt = adamw(resumed)
    resumed.load_state_dict(saved[0])
    method.start_task(1, opt, steps_per_epoch=4)
    resumed.load_state_dict(saved[0])
    method.load_state_dict(saved[2])
    opt.load_state_dict(saved[1])
    steps(method, resumed, opt, data[1][3:], seed=200)
    for (name, p), q in zip(net.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name


def test_network_capacity_in_the_summary_by_hand():
    # task 2 (learned too) uses layer 0's units 1, 3 and layer 1's unit 0: R_0 = 1 (unit 3, the free one,
    # is on), R_1 = 0 (unit 2, the free one, is off)
    model = tiny_model((torch.tensor([-1.0, 1, -1, 1]), torch.tensor([1.0, -1, -1])))
    model.learned[2] = True
    summary = AdaHAT(model, alpha=0.5, epsilon=0.2).summary()
    rates = rates_by_hand(0.5, 0.2, sparsity0=1.0, sparsity1=0.0)
    expected = sum(float(r.sum()) for r in rates.values()) / sum(r.numel() for r in rates.values())
    assert summary["network_capacity"][0] == 1.0 and 0 < summary["network_capacity"][1] < 1
    assert summary["network_capacity"][2] == pytest.approx(expected)
    assert len(summary["capacity"]) == 2


def test_extra_memory_adds_the_snapshot_and_importance_to_hats():
    model = create_model("mlp", input_shape=(10,), classes_per_task=[2, 2], hidden=(24, 24))
    linked = sum(p.numel() * 4 for link in model.gate_links() for p in link.module.parameters())
    assert AdaHAT(model).extra_memory() == HAT(model).extra_memory() + 2 * linked


class GroupedConvNet(TaskModel):
    def __init__(self):
        super().__init__((4, 5, 5), [2, 2, 2])
        self.conv1, self.conv2 = nn.Conv2d(4, 4, 3), nn.Conv2d(4, 6, 3, groups=2)
        self.g1, self.g2 = TaskGate(4, self.context), TaskGate(6, self.context)
        self.build_heads(6)

    def forward_features(self, x):
        return self.g2(F.relu(self.conv2(self.g1(F.relu(self.conv1(x)))))).mean((2, 3))

    def gate_links(self):
        return [GateLink(self.conv1, self.g1), GateLink(self.conv2, self.g2, self.g1)]


def test_parameter_importance_of_a_grouped_conv_by_hand():
    model = GroupedConvNet()
    link = model.gate_links()[1]
    tasks = [0, 1, 2]
    out_sum = model.g2.hard_mask(tasks).sum(0)
    in_sum = model.g1.hard_mask(tasks).sum(0)
    importance = parameter_importance(link, tasks)
    weight = importance["weight"].expand(6, 2, 3, 3)
    for o in range(6):  # output o of group o // 3 reads inputs 2 * (o // 3) + i
        for i in range(2):
            assert (weight[o, i] == min(out_sum[o], in_sum[2 * (o // 3) + i])).all()
    assert torch.equal(importance["bias"], out_sum)
    assert torch.equal(weight > 0, link.owned_entries(tasks)["weight"].expand(6, 2, 3, 3))
    assert parameter_importance(link, []) == {}


def test_bad_input_gives_one_line_errors():
    model = create_model("mlp", input_shape=(4,), classes_per_task=[2, 2], hidden=(8,))
    for options, message in [
        ({"alpha": -0.1}, "alpha must be finite and >= 0, got -0.1"),
        ({"alpha": float("inf")}, "alpha must be finite"),
        ({"epsilon": 0.0}, "epsilon must be finite and > 0, got 0.0"),
        ({"c": -1.0}, "c must be >= 0"),  # HAT's own options are still checked
        ({"beta": 1.0}, "method adahat has no option 'beta'"),
    ]:
        with pytest.raises(MaskclError, match=message) as err:
            AdaHAT(model, **options)
        assert "\n" not in str(err.value)
    assert AdaHATConfig().alpha == 0.01 and AdaHATConfig().epsilon == 0.1

    class NoLinks(TaskModel):
        def __init__(self):
            super().__init__((4,), [2])
            self.fc, self.gate = nn.Linear(4, 3), TaskGate(3, self.context)
            self.build_heads(3)

    with pytest.raises(MaskclError, match="NoLinks declares no GateLink"):
        AdaHAT(NoLinks())

    adahat = AdaHAT(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train(adahat, model, optimizer, 0, batches(1, (4,)), seed=0)
    adahat.start_task(1, optimizer)
    model.train()(torch.randn(2, 4)).sum().backward()
    model.eval()(torch.randn(2, 4))  # an evaluation pass drops the training gates
    with pytest.raises(MaskclError, match="optimizer step of task 1 came without a training forward pass"):
        optimizer.step()
