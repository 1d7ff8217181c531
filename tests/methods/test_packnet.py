"""PackNet: pruning by hand, equal shares, exact protection on every architecture, the inference mask,
a checkpoint inside a task, bad input, real data."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from maskcl import MaskclError, convert, create_method, create_model, set_task
from maskcl.config import RunConfig
from maskcl.errors import MaskclWarning
from maskcl.methods.packnet import PackNet, PackNetConfig, prune_count, smallest_magnitudes
from maskcl.train import run


def mlp(tasks: int = 3, hidden: tuple[int, ...] = (24, 24), inputs: int = 10):
    return create_model(
        "mlp", input_shape=(inputs,), classes_per_task=[2] * tasks, hidden=hidden, gates=False, dropout=0.0,
        input_dropout=0.0,
    )  # fmt: skip


def batches(shape: tuple[int, ...], n: int = 3, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(size, *shape), torch.randint(0, 2, (size,))) for _ in range(n)]


def learn(packnet: PackNet, optimizer, task: int, data, epochs: int = 2) -> None:
    """Train ``task`` for ``epochs`` epochs over ``data``, as the trainer does (end_epoch after each)."""
    net = packnet.model.train()
    packnet.start_task(task, optimizer, len(data))
    for epoch in range(1, epochs + 1):
        for x, y in data:
            loss = F.cross_entropy(set_task(net, task)(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        packnet.end_epoch(epoch, epochs)
    packnet.end_task()


def owners(packnet: PackNet) -> list[torch.Tensor]:
    return [packnet.model.owner(i).clone() for i in range(len(packnet.model.masked))]


def sgd(packnet: PackNet) -> torch.optim.Optimizer:
    return torch.optim.SGD(packnet.model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)


def test_prune_count_and_smallest_magnitudes_by_hand():
    assert [prune_count(n, t, 3, None) for n, t in ((10, 0), (7, 1), (3, 2))] == [7, 3, 0]  # keeps 3, 4, 3
    assert [prune_count(9, t, 3, 0.25) for t in range(3)] == [2, 2, 0]  # round(2.25); the last task keeps all
    weight = torch.tensor([[0.3, -0.1, 2.0], [0.1, 0.05, -5.0]])
    candidates = torch.tensor([[True, True, True], [True, False, True]])  # 0.05 belongs to someone else
    expected = torch.tensor([[False, True, False], [True, False, False]])
    assert torch.equal(smallest_magnitudes(weight, candidates, 2), expected)
    expected[1, 0] = False  # a tie at the threshold: the first in memory order
    assert torch.equal(smallest_magnitudes(weight, candidates, 1), expected)
    assert torch.equal(smallest_magnitudes(weight, candidates, 5), candidates)
    assert not smallest_magnitudes(weight, candidates, 0).any()


def test_pruning_by_hand_takes_the_smallest_magnitudes_of_each_layer():
    packnet = PackNet(mlp(hidden=(3, 3), inputs=4), prune=0.25)
    net = packnet.model
    assert [name for name, _ in net.masked] == ["layers.0.weight", "layers.1.weight"]  # not heads nor biases
    small = torch.tensor([[0.5, -0.1, 0.9, -0.3], [0.05, 1.2, -0.7, 0.2], [-0.6, 0.15, 0.8, -0.4]])
    # a hundred times larger: a threshold over both layers would prune none of these
    large = 100 * torch.tensor([[0.3, -0.2, 0.25], [0.9, -0.01, 0.4], [-0.5, 0.6, 0.7]])
    with torch.no_grad():
        net.target.layers[0].weight.copy_(small)
        net.target.layers[1].weight.copy_(large)
    packnet.start_task(0, sgd(packnet))
    assert all(bool((o == 0).all()) for o in owners(packnet))  # the task trains every free weight
    packnet.end_epoch(1, 3)
    assert not packnet.pruned  # epoch 2 of 3 is the pruning one
    packnet.end_epoch(2, 3)
    pruned_small = torch.zeros(3, 4, dtype=torch.bool)
    pruned_small[[1, 0, 2], [0, 1, 1]] = True  # round(0.25 * 12) = 3: 0.05, -0.1, 0.15
    pruned_large = torch.zeros(3, 3, dtype=torch.bool)
    pruned_large[[1, 0], [1, 1]] = True  # round(0.25 * 9) = 2: -1, -20
    for (_, p), owner, pruned, before, mask in zip(
        net.masked, owners(packnet), [pruned_small, pruned_large], [small, large], net.masks(0)
    ):
        assert torch.equal(owner == net.free, pruned)  # released to later tasks
        assert torch.equal(p.detach(), torch.where(pruned, 0.0, before))  # set to 0, the rest untouched
        assert torch.equal(mask, ~pruned)  # and out of the task's own mask
    packnet.end_task()


def test_equal_shares_give_every_task_a_third_and_the_last_the_rest():
    packnet = PackNet(mlp(tasks=3))
    sizes = packnet.model.sizes
    assert sizes == [240, 576]
    for task in range(3):
        packnet.start_task(task, sgd(packnet))
        packnet.end_epoch(1, 2)
        packnet.end_task()
        if task == 0:
            summary = packnet.summary()["capacity"]
            assert [layer["used"][0] for layer in summary] == pytest.approx([1 / 3, 1 / 3])
            assert [layer["free"] for layer in summary] == pytest.approx([2 / 3, 2 / 3])
    for owner, size in zip(owners(packnet), sizes):
        assert [int((owner == t).sum()) for t in range(3)] == [size // 3] * 3
        assert not (owner == packnet.model.free).any()  # the last task takes all that is left
    layer = packnet.summary()["capacity"][0]
    assert layer["units"] == 240 and layer["used"] == pytest.approx({0: 1 / 3, 1: 2 / 3, 2: 1.0})
    assert layer["free"] == 0 and layer["shared"] == pytest.approx(2 / 3)  # tasks 0's and 1's weights


def alexnet(tasks: int = 3):
    return create_model(
        "alexnet", input_shape=(3, 16, 16), classes_per_task=[2] * tasks, channels=(4, 4, 4), hidden=(8, 8),
        gates=False, batch_norm=True,
    )  # fmt: skip


def resnet20(tasks: int):
    return create_model("resnet20", input_shape=(3, 16, 16), classes_per_task=[2] * tasks, gates=False)


def timm_resnet18(tasks: int):
    timm = pytest.importorskip("timm")
    return convert(timm.create_model("resnet18", num_classes=10), [2] * tasks, gates=False)


ARCHITECTURES = {  # builder, input shape, tasks (resnet18's 11M weights: 2 tasks, to stay quick)
    "mlp": (lambda tasks: mlp(tasks=tasks), (10,), 3),
    "alexnet": (alexnet, (3, 16, 16), 3),
    "resnet20": (resnet20, (3, 16, 16), 3),
    "timm-resnet18": (timm_resnet18, (3, 32, 32), 2),
}
OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_learned_tasks_outputs_stay_bit_for_bit(arch, optimizer):
    build, shape, tasks = ARCHITECTURES[arch]
    packnet = PackNet(build(tasks))
    net = packnet.model
    opt = OPTIMIZERS[optimizer](net.parameters())
    x = torch.randn(4, *shape)
    outputs = {}
    for task in range(tasks):
        data = batches(shape, n=1, size=4)
        weights = [p.detach().clone() for _, p in net.masked]
        before = set_task(net.eval(), task)(x)
        learn(packnet, opt, task, data)
        after = set_task(net.eval(), task)(x)
        assert not torch.equal(before, after)  # the task trained
        own = [o == task for o in owners(packnet)]
        free = [o == net.free for o in owners(packnet)]
        # released weights are 0 for the next task, however the optimizer moved them while retraining
        assert all(bool((p[m] == 0).all()) for (_, p), m in zip(net.masked, free))
        assert (task == tasks - 1) != any(bool(m.any()) for m in free)  # all but the last task pruned
        assert any(not torch.equal(p[m], w[m]) for (_, p), w, m in zip(net.masked, weights, own))
        outputs[task] = after
        for earlier, out in outputs.items():
            assert torch.equal(set_task(net, earlier)(x), out), f"task {earlier} changed after task {task}"


def test_task_computes_with_its_own_and_earlier_tasks_weights_only():
    packnet = PackNet(mlp(tasks=3))
    net = packnet.model
    opt = sgd(packnet)
    for task in range(2):
        learn(packnet, opt, task, batches((10,)))
    packnet.start_task(2, opt)
    with torch.no_grad():  # task 2 has weights of its own, unlike tasks 0 and 1
        for _, p in net.masked:
            p.add_(1.0)
    x = torch.randn(5, 10)
    net.eval()
    for task in range(3):
        weights = {}
        for (name, p), owner in zip(net.masked, owners(packnet)):
            weights[name] = p.detach().clone()
            weights[name][owner > task] = 0.0  # later tasks' weights and free ones out
        assert torch.equal(set_task(net, task)(x), functional_call(net.target, weights, (x,)))
    assert not torch.equal(set_task(net, 0)(x), set_task(net, 1)(x))
    ids = torch.tensor([2, 0, 1, 0, 2])
    mixed = set_task(net, ids)(x)
    for i, t in enumerate(ids.tolist()):
        torch.testing.assert_close(mixed[i], set_task(net, t)(x)[i])  # batch sizes differ: to rounding


def test_per_sample_task_ids_through_batch_norm():
    packnet = PackNet(alexnet())
    opt = sgd(packnet)
    for task in range(2):
        learn(packnet, opt, task, batches((3, 16, 16), n=2, size=4))
    net = packnet.model.eval()
    x, ids = torch.randn(4, 3, 16, 16), torch.tensor([1, 0, 0, 1])
    mixed = set_task(net, ids)(x)
    for t in (0, 1):
        torch.testing.assert_close(mixed[ids == t], set_task(net, t)(x[ids == t]))


def test_checkpoint_after_pruning_continues_as_if_never_stopped():
    data = batches((10,), n=3)
    first = PackNet(mlp(tasks=3), retrain_epochs=1)  # task 1 is not the last: it is pruned
    opt = sgd(first)
    learn(first, opt, 0, data, epochs=3)
    first.start_task(1, opt, len(data))
    net = first.model.train()

    def step(method, optimizer, x, y):
        loss = F.cross_entropy(set_task(method.model, 1)(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for epoch in (1, 2):
        for x, y in data:
            step(first, opt, x, y)
        first.end_epoch(epoch, 3)
    assert first.pruned
    step(first, opt, *data[0])
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    saved_opt, saved_method = copy.deepcopy(opt.state_dict()), copy.deepcopy(first.state_dict())

    second = create_method("packnet", mlp(tasks=3), retrain_epochs=1)
    second.model.load_state_dict(saved)
    opt2 = sgd(second)
    second.start_task(1, opt2, len(data))
    second.model.load_state_dict(saved)
    opt2.load_state_dict(saved_opt)
    second.load_state_dict(saved_method)
    second.model.train()
    for method, optimizer in ((first, opt), (second, opt2)):
        for x, y in data[1:]:
            step(method, optimizer, x, y)
        method.end_epoch(3, 3)
        method.end_task()
    ours, theirs = first.model.state_dict(), second.model.state_dict()
    assert ours.keys() == theirs.keys() and any(k.startswith("owners.") for k in ours)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_a_task_ended_without_its_pruning_epoch_is_pruned_then():
    packnet = PackNet(mlp(tasks=2), prune=0.5)
    packnet.start_task(0, sgd(packnet))
    with pytest.warns(MaskclWarning, match="ended before its pruning epoch"):
        packnet.end_task()
    assert [int((o == packnet.model.free).sum()) for o in owners(packnet)] == [120, 288]
    assert all(
        bool((p[o == packnet.model.free] == 0).all())
        for (_, p), o in zip(packnet.model.masked, owners(packnet))
    )


def test_bad_options_are_refused_in_one_line():
    for prune in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(MaskclError, match="prune must be in"):
            PackNetConfig(prune=prune)
    with pytest.raises(MaskclError, match="retrain_epochs must be >= 1"):
        PackNetConfig(retrain_epochs=0)
    with pytest.raises(MaskclError, match="no option 'bogus'"):
        create_method("packnet", mlp(), bogus=1)
    packnet = create_method("packnet", mlp(), retrain_epochs=2)
    packnet.check_epochs(3)
    for epochs in (1, 2):
        with pytest.raises(MaskclError, match=f"retrain_epochs 2 must be fewer than the {epochs} epochs"):
            packnet.check_epochs(epochs)


def test_tasks_are_learned_in_order():
    packnet = PackNet(mlp(tasks=3))
    with pytest.raises(MaskclError, match="learns tasks in order"):
        packnet.start_task(1, sgd(packnet))
    assert packnet.task is None


def test_few_free_weights_warn_and_none_is_an_error():
    packnet = PackNet(mlp(tasks=3), prune=0.003)  # 1 of 240 and 2 of 576 released
    opt = sgd(packnet)
    learn(packnet, opt, 0, batches((10,)))
    with pytest.warns(MaskclWarning, match="fewer than 1% of the weights free in 2 of 2 masked layers"):
        packnet.start_task(1, opt)
    packnet.end_epoch(1, 2)
    packnet.end_task()
    stingy = PackNet(mlp(tasks=3), prune=1e-4)  # rounds to 0 weights released in every layer
    learn(stingy, sgd(stingy), 0, batches((10,)))
    with pytest.raises(MaskclError, match="no free weight is left in any masked layer for task 1"):
        stingy.start_task(1, sgd(stingy))
    assert stingy.task is None


def test_packnet_learns_split_fashion_mnist_and_forgets_nothing(fashion_mnist):
    config = RunConfig(
        method="packnet", epochs=2, hidden=(64, 64), optimizer="adam", lr=2e-3, batch_size=512, dropout=0.0,
        input_dropout=0.0,
    )  # fmt: skip
    results = run(config, log=lambda _: None)
    assert results["acc"] > 0.9, results["acc_matrix"]
    assert results["bwt"] == 0.0  # exact: every task's accuracy stays what it was when learned
    for layer in results["capacity"]:
        assert layer["used"] == pytest.approx({t: (t + 1) / 5 for t in range(5)}, abs=0.01)
        assert layer["free"] == 0
