"""HAT's controller: exact protection under any optimizer, annealing, regulariser, errors."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from maskcl.errors import MaskclError
from maskcl.methods.hat import HAT, SCALE_SCHEDULES, linear_scale
from maskcl.models import create_model

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
    "sgd-momentum-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw-wd": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01),
    "adamw-strong-wd": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1.0),
}


def train_sequence(model, optimizer, tasks=3, steps=12, scheduler=None, batch=32):
    """Train tasks in turn on random data; return each task's outputs on a fixed input, per stage."""
    hat = HAT(model)
    fixed = torch.randn(16, *model.input_shape)
    history = []  # history[k][t]: output of task t after training task k
    for task in range(tasks):
        x = torch.randn(batch, *model.input_shape)
        y = torch.randint(0, model.classes_per_task[task], (batch,))
        model.train()
        hat.start_task(task, optimizer, steps_per_epoch=4)
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y) + hat.regularizer()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        hat.end_task()
        model.eval()
        with torch.no_grad():
            history.append([model.set_task(t)(fixed).clone() for t in range(task + 1)])
    return hat, history


def assert_outputs_unchanged(history):
    for k in range(1, len(history)):
        for t in range(k):
            assert torch.equal(history[k][t], history[t][t]), f"task {t} changed while training task {k}"


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_learned_tasks_outputs_are_bit_identical_mlp(name):
    model = create_model("mlp", input_shape=(10,), classes_per_task=[2, 3, 2], hidden=(24, 24), dropout=0.1)
    _, history = train_sequence(model, OPTIMIZERS[name](model.parameters()))
    assert_outputs_unchanged(history)


def test_learned_tasks_outputs_are_bit_identical_cnn_with_batch_norm_and_scheduler():
    model = create_model(
        "alexnet",
        input_shape=(3, 16, 16),
        classes_per_task=[2, 2, 2],
        channels=(6, 8, 8),
        hidden=(16, 16),
        batch_norm=True,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    _, history = train_sequence(model, optimizer, scheduler=scheduler)
    assert_outputs_unchanged(history)


def test_protected_parameters_are_bit_identical_and_free_ones_train():
    model = create_model("mlp", input_shape=(10,), classes_per_task=[2, 2], hidden=(24, 24))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    hat = HAT(model)
    for task in range(2):
        if task == 1:
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            used0 = model.gates[0].used_units([0])
            used1 = model.gates[1].used_units([0])
        hat.start_task(task, optimizer, steps_per_epoch=3)
        for _ in range(6):
            x, y = torch.randn(16, 10), torch.randint(0, 2, (16,))
            loss = F.cross_entropy(model.train()(x), y) + hat.regularizer()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        hat.end_task()
    after = dict(model.named_parameters())
    w = after["layers.1.weight"]
    frozen = used1[:, None] & used0[None, :]
    assert frozen.any() and (~frozen).any()
    assert torch.equal(w[frozen], before["layers.1.weight"][frozen])
    assert not torch.equal(w[~frozen], before["layers.1.weight"][~frozen])
    assert torch.equal(after["gates.0.embedding"][0], before["gates.0.embedding"][0])
    assert torch.equal(after["heads.weight"][:2], before["heads.weight"][:2])
    assert not torch.equal(after["heads.weight"][2:], before["heads.weight"][2:])


def test_without_hat_the_same_training_forgets():
    """The protection test can fail: the ungated network trained the same way changes task 0."""
    model = create_model("mlp", input_shape=(10,), classes_per_task=[2, 2], hidden=(24, 24), gates=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    fixed = torch.randn(8, 10)
    outputs = []
    for task in range(2):
        model.train().set_task(task)
        for _ in range(5):
            loss = F.cross_entropy(model(torch.randn(16, 10)), torch.randint(0, 2, (16,)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        outputs.append(model.eval().set_task(0)(fixed).detach().clone())
    assert not torch.equal(outputs[0], outputs[1])


def test_scale_is_annealed_linearly_over_each_epoch():
    model = create_model("mlp", input_shape=(4,), classes_per_task=[2], hidden=(8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    hat = HAT(model, s_max=400)
    hat.start_task(0, optimizer, steps_per_epoch=5)
    seen = []
    for _ in range(7):
        seen.append(model.context.scale)
        loss = model.train()(torch.randn(3, 4)).sum() + hat.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hat.end_task()
    expected = [1 / 400 + (400 - 1 / 400) * b / 4 for b in (0, 1, 2, 3, 4, 0, 1)]
    assert seen == pytest.approx(expected)
    assert seen[4] == pytest.approx(400) and linear_scale(0.0, 400) == pytest.approx(1 / 400)


def test_regularizer_matches_equation_6_by_hand():
    model = create_model("mlp", input_shape=(2,), classes_per_task=[2, 2], hidden=(3, 2))
    g0, g1 = model.gates
    with torch.no_grad():
        g0.embedding[0] = torch.tensor([1.0, -1.0, 1.0])  # task 0 uses units 0, 2 of layer 0
        g1.embedding[0] = torch.tensor([-1.0, 1.0])  # and unit 1 of layer 1
    model.learned[0] = True
    hat = HAT(model, c=0.75)
    hat.start_task(1, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=1)
    model.train()(torch.randn(4, 2))
    a0, a1 = model.context.soft_gates.detach().split([3, 2])
    # free units: layer 0 unit 1, layer 1 unit 0 -> denominator 2
    expected = 0.75 * (a0[1] + a1[0]) / 2
    torch.testing.assert_close(hat.regularizer().detach(), expected)
    hat.end_task()


def test_no_free_units_gives_zero_regulariser_and_a_warning():
    model = create_model("mlp", input_shape=(2,), classes_per_task=[2, 2], hidden=(3,))
    with torch.no_grad():
        model.gates[0].embedding[0] = 1.0
    model.learned[0] = True
    hat = HAT(model)
    with pytest.warns(UserWarning, match="no free unit"):
        hat.start_task(1, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=2)
    model.train()(torch.randn(4, 2))
    reg = hat.regularizer()
    assert reg.item() == 0.0 and not torch.isnan(reg)


def test_embeddings_are_clamped_after_each_step():
    model = create_model("mlp", input_shape=(2,), classes_per_task=[2], hidden=(3,))
    with torch.no_grad():
        model.gates[0].embedding.fill_(5.99)
    optimizer = torch.optim.SGD(model.parameters(), lr=100.0)
    hat = HAT(model, embedding_clamp=6.0)
    hat.start_task(0, optimizer, steps_per_epoch=2)
    (-model.train()(torch.randn(4, 2)).sum() - 1000 * model.context.soft_gates.sum()).backward()
    optimizer.step()
    assert model.gates[0].embedding.abs().max().item() == 6.0
    hat.end_task()


def test_misuse_gives_one_line_errors():
    model = create_model("mlp", input_shape=(2,), classes_per_task=[2, 2], hidden=(3,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hat = HAT(model)
    with pytest.raises(MaskclError, match="out of range"):
        hat.start_task(2, opt, steps_per_epoch=1)
    with pytest.raises(MaskclError, match="start_task"):
        hat.regularizer()
    hat.start_task(0, opt, steps_per_epoch=1)
    with pytest.raises(MaskclError, match="forward pass"):
        hat.regularizer()
    with pytest.raises(MaskclError, match="still training"):
        hat.start_task(1, opt, steps_per_epoch=1)
    with pytest.raises(MaskclError, match="must use that task"):
        model.train().set_task(1)(torch.randn(2, 2))
    with pytest.raises(MaskclError, match="per-sample task ids"):
        model.train().set_task(torch.tensor([0, 1]))(torch.randn(2, 2))
    model.set_task(0)
    hat.end_task()
    with pytest.raises(MaskclError, match="already learned"):
        hat.start_task(0, opt, steps_per_epoch=1)
    with pytest.raises(MaskclError, match="no HAT gates"):
        HAT(create_model("mlp", input_shape=(2,), classes_per_task=[2], gates=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MaskclError, match="s_max"):
            HAT(model, s_max=0.5)


# ------------------------------------------------------------------------------------ HAT-CL's techniques
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("linear", (1 / 400, 200.0, 400.0)),
        ("cosine", (400.0, 1.0, 400.0)),  # s_max/2 * cos(2 pi p) + s_max/2, floored at 1
        ("exponential", (1 / 400, 1.0, 400.0)),
        ("constant", (400.0, 400.0, 400.0)),
    ],
)
def test_scale_schedules_by_hand(name, expected):
    schedule = SCALE_SCHEDULES[name]
    assert [schedule(p, 400.0) for p in (0.0, 0.5, 1.0)] == pytest.approx(expected, rel=1e-3)


def test_hat_follows_the_chosen_schedule_over_the_epoch():
    model = create_model("mlp", input_shape=(4,), classes_per_task=[2], hidden=(8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    hat = HAT(model, scale_schedule="cosine")
    hat.start_task(0, optimizer, steps_per_epoch=5)
    seen = []
    for _ in range(5):
        seen.append(model.context.scale)
        (model.train()(torch.randn(3, 4)).sum() + hat.regularizer()).backward()
        optimizer.step()
    hat.end_task()
    assert seen == pytest.approx([400.0, 200.0, 1.0, 200.0, 400.0], abs=1e-3)


def test_mask_init_dense_sparse_and_normal():
    model = create_model("mlp", input_shape=(2,), classes_per_task=[2] * 4, hidden=(10, 7))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    normal_row = model.gates[0].embedding[0].detach().clone()
    hat = HAT(model)
    hat.start_task(0, opt, steps_per_epoch=1)
    assert torch.equal(model.gates[0].embedding[0], normal_row)  # the paper's N(0, 1) is left as drawn
    hat.end_task()
    HAT(model, mask_init="dense").start_task(1, opt, steps_per_epoch=1)
    assert all(bool(g.hard_mask(1).all()) for g in model.gates)
    HAT(model, mask_init="sparse").start_task(2, opt, steps_per_epoch=1)
    assert [int(g.hard_mask(2).sum()) for g in model.gates] == [3, 2]  # ceil(10 / 4), ceil(7 / 4)
    assert {v for g in model.gates for v in g.embedding[2].tolist()} == {-1.0, 1.0}


def learned_two_layer_model():
    """Layer 0 (3 units): task 0 uses units 0, 2. Layer 1 (2 units): task 0 uses unit 1."""
    model = create_model("mlp", input_shape=(2,), classes_per_task=[2, 2], hidden=(3, 2))
    g0, g1 = model.gates
    with torch.no_grad():
        g0.embedding[0] = torch.tensor([1.0, -1.0, 1.0])
        g1.embedding[0] = torch.tensor([-1.0, 1.0])
    model.learned[0] = True
    return model


def test_per_layer_regularizer_and_quota_by_hand():
    model = learned_two_layer_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 2)
    hat = HAT(model, c=0.75, per_layer=True)
    hat.start_task(1, opt, steps_per_epoch=1)
    model.train()(x)
    a0, a1 = model.context.soft_gates.detach().split([3, 2])
    # each layer has one free unit: R = c * mean(a0[1] / 1, a1[0] / 1)
    torch.testing.assert_close(hat.regularizer().detach(), 0.75 * (a0[1] + a1[0]) / 2)
    hat.end_task()

    model = learned_two_layer_model()
    hat = HAT(model, c=0.75, quota=0.2)  # one group of 5 units: 1 unit may be taken for free
    hat.start_task(1, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=1)
    model.train()(x)
    a0, a1 = model.context.soft_gates.detach().split([3, 2])
    expected = 0.75 * torch.relu(a0[1] + a1[0] - 0.2 * 5) / 2
    torch.testing.assert_close(hat.regularizer().detach(), expected)
    with torch.no_grad():  # a task using most free units goes over its quota: the penalty has a gradient
        model.gates[0].embedding[1] = 0.005  # s = 400 here: s * e = 2, gates about 0.88
        model.gates[1].embedding[1] = 0.005
    model.train()(x)
    reg = hat.regularizer()
    assert reg.item() > 0
    reg.backward()
    assert model.gates[0].embedding.grad[1].abs().sum() > 0
    hat.end_task()


def test_compensation_factor_scales_the_embedding_gradient():
    grads = []
    for factor in (None, 800.0):
        torch.manual_seed(0)
        model = create_model("mlp", input_shape=(2,), classes_per_task=[2], hidden=(3,))
        hat = HAT(model, s_max=400.0, compensation=factor)
        hat.start_task(0, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=3)
        torch.manual_seed(1)
        model.train()(torch.randn(4, 2)).sum().backward()
        grads.append(model.gates[0].embedding.grad[0].clone())
        hat.end_task()
    torch.testing.assert_close(grads[1], 2 * grads[0])


def test_technique_options_are_checked():
    model = create_model("mlp", input_shape=(2,), classes_per_task=[2], hidden=(3,))
    with pytest.raises(MaskclError, match="unknown scale_schedule 'cos'"):
        HAT(model, scale_schedule="cos")
    with pytest.raises(MaskclError, match="unknown mask_init"):
        HAT(model, mask_init="zeros")
    with pytest.raises(MaskclError, match="quota must be in"):
        HAT(model, quota=1.5)
    with pytest.raises(MaskclError, match="compensation must be > 0"):
        HAT(model, compensation=0)
