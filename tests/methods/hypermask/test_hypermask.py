"""HyperMask: masks by hand, the hypernetwork's sizes, caching, the regulariser by hand, real data."""

import pytest
import torch
from torch.func import functional_call

from maskcl import MaskclError, RunConfig, create_model, run, set_task
from maskcl.methods.hypermask import HyperMask, HyperMaskNet, HyperNetwork, semi_binary_mask


def test_semi_binary_mask_by_hand():
    scores = torch.tensor([0.1, -2.0, 0.5, -0.05, 3.0, 1.0, -0.3, 0.2, 0.0, -1.5], requires_grad=True)
    mask = semi_binary_mask(scores, sparsity=30)  # the 3 smallest |tanh| (0.0, -0.05, 0.1) become 0
    expected = torch.tanh(scores.detach()).abs()
    expected[[0, 3, 8]] = 0
    torch.testing.assert_close(mask.detach(), expected)
    mask.sum().backward()
    assert scores.grad[[0, 3, 8]].abs().sum() == 0 and scores.grad[[1, 2, 4]].abs().min() > 0
    torch.testing.assert_close(semi_binary_mask(scores, 0).detach(), torch.tanh(scores.detach()).abs())


def test_chunked_hypernetwork_is_far_smaller_and_gives_every_score():
    total = 1_792_006  # the MLP 1000-1000 target on 28x28 inputs
    chunked = HyperNetwork(total, num_tasks=10)
    assert chunked(3).shape == (total,) and chunked(torch.tensor([0, 2])).shape == (2, total)
    size = sum(p.numel() for p in chunked.parameters())
    assert size <= 0.25 * total
    unchunked = HyperNetwork(1000, num_tasks=2, chunks=0)
    assert unchunked(1).shape == (1000,) and unchunked.chunk_embeddings is None
    assert (
        HyperNetwork(5, num_tasks=1, chunks=64).chunk_embeddings.shape[0] == 5
    )  # never more chunks than scores


def small_target(**kwargs):
    return create_model(
        "mlp", input_shape=(6,), classes_per_task=[2, 3], hidden=(8, 8), gates=False, **kwargs
    )


def sgd(hm: HyperMask) -> torch.optim.Optimizer:
    return torch.optim.SGD(hm.model.parameters(), lr=0.01)


def test_the_method_builds_its_net_around_the_target_with_its_options():
    torch.manual_seed(0)
    target = small_target()
    hm = HyperMask(target, sparsity=25, chunks=4, hyper_hidden=(7, 5), embedding_dim=3, chunk_embedding_dim=2)
    net = hm.model
    assert isinstance(net, HyperMaskNet) and net.target is target and net.sparsity == 25
    hyper = net.hypernetwork
    assert hyper.chunks == 4 and hyper.hidden == (7, 5) and hyper.task_embeddings.shape == (2, 3)
    assert hyper.chunk_embeddings.shape == (4, 2) and [m.out_features for m in hyper.mlp[::2]] == [7, 5, 42]
    assert hm.state is net.state and hm.config.chunks == 4
    with pytest.raises(MaskclError, match="method hypermask has no option 'hidden'"):
        HyperMask(small_target(), hidden=(4, 4))


def test_forward_is_the_target_with_masked_weights():
    torch.manual_seed(0)
    net = HyperMaskNet(small_target(dropout=0, input_dropout=0), sparsity=25, chunks=4).eval()
    names = [n for n, _ in net.masked]
    assert "heads.bias" not in names and "heads.weight" in names  # the output layer's bias is not masked
    x = torch.randn(5, 6)
    set_task(net, 1)
    weights = {n: p * m for (n, p), m in zip(net.masked, net.masks(1))}
    expected = functional_call(net.target, weights, (x,))
    torch.testing.assert_close(set_task(net, 1)(x), expected)
    assert all(float((m == 0).float().mean()) >= 0.24 for m in net.masks(1))


def test_learned_task_uses_its_cached_mask_and_per_sample_ids_match():
    torch.manual_seed(0)
    hm = HyperMask(small_target(dropout=0, input_dropout=0))
    net = hm.model
    hm.start_task(0, sgd(hm))
    hm.end_task()
    x = torch.randn(4, 6)
    before = set_task(net.eval(), 0)(x)
    with torch.no_grad():
        for p in net.hypernetwork.parameters():
            p.add_(1.0)  # the hypernetwork moves; task 0 keeps its cached mask
    torch.testing.assert_close(set_task(net, 0)(x), before)
    ids = torch.tensor([1, 0, 1, 0])
    mixed = set_task(net, ids)(x)
    for i, t in enumerate(ids.tolist()):
        single = set_task(net, t)(x[i : i + 1])[0]
        torch.testing.assert_close(mixed[i, : single.shape[0]], single)
    assert torch.isinf(mixed[1, 2]) and not torch.isinf(mixed[0, 2])  # task 0 has 2 classes, task 1 three


def test_regularizer_by_hand():
    torch.manual_seed(0)
    hm = HyperMask(small_target(), chunks=8, beta=0.5, lam=0.1)
    net = hm.model
    optimizer = sgd(hm)
    hm.start_task(0, optimizer)
    with torch.no_grad():
        net.masked[0][1].add_(0.01)
    assert hm.regularizer().item() == 0.0  # the first task has no earlier task whose weights to keep
    hm.end_task()
    hm.start_task(1, optimizer)
    anchors = net.hypernetwork(torch.tensor([0])).detach()
    weights = [p.detach().clone() for _, p in net.masked]
    with torch.no_grad():
        net.hypernetwork.mlp[0].bias.add_(0.3)
        net.masked[0][1].add_(0.01)
    change = (net.hypernetwork(torch.tensor([0])) - anchors).pow(2).sum()
    moved = sum((p - w).abs().sum() for (_, p), w in zip(net.masked, weights))
    torch.testing.assert_close(hm.regularizer(), 0.5 * change + 0.1 * moved)
    hm.regularizer().backward()
    assert net.hypernetwork.mlp[0].weight.grad.abs().sum() > 0


def test_batch_norm_target_keeps_per_task_norm_rows_unmasked():
    target = create_model(
        "alexnet", input_shape=(3, 16, 16), classes_per_task=[2, 2], channels=(4, 4, 4), hidden=(8, 8),
        gates=False, batch_norm=True,
    )  # fmt: skip
    net = HyperMaskNet(target)
    assert not any(n.startswith("norms.") for n, _ in net.masked)
    assert set_task(net.train(), 0)(torch.randn(3, 3, 16, 16)).shape == (3, 2)


def test_sparsity_ramps_up_over_the_first_task_only():
    torch.manual_seed(0)
    hm = HyperMask(small_target(), sparsity=40, sparsity_ramp=4)
    net = hm.model
    optimizer = sgd(hm)

    def zero_fraction(task):
        masks = net.masks(task)
        return sum(int((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)

    seen = []
    for task in range(2):
        hm.start_task(task, optimizer)
        for _ in range(5):
            seen.append(round(zero_fraction(task), 2))
            (set_task(net.train(), task)(torch.randn(4, 6)).sum() + hm.regularizer()).backward()
            optimizer.step()
        hm.end_task()
        assert zero_fraction(task) == pytest.approx(0.4, abs=0.03)  # cached at the full sparsity
    assert seen[:5] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=0.03)  # per-tensor counts round down
    assert seen[5:] == pytest.approx([0.4] * 5, abs=0.03)  # later tasks start at the full sparsity


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": 100}, "sparsity must be in"),
        ({"sparsity_ramp": -1}, "sparsity_ramp must be >= 0"),
        ({"beta": -0.1}, "beta must be >= 0"),
        ({"lam": -1.0}, "lam must be >= 0"),
        ({"embedding_dim": 0}, "embedding_dim must be >= 1"),
        ({"hyper_size": 0.0}, "hyper_size must be a fraction > 0"),
        ({"hyper_size": float("inf")}, "hyper_size must be a fraction > 0"),
        ({"hyper_hidden": ()}, "hyper_hidden must be positive widths"),
        ({"hyper_hidden": (8, 0)}, "hyper_hidden must be positive widths"),
        ({"chunks": -1}, r"chunks must be >= 0 \(0: unchunked\)"),
        ({"chunk_embedding_dim": 0}, "chunk_embedding_dim must be >= 1"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(MaskclError, match=message) as error:
        HyperMask(small_target(), **options)
    assert "\n" not in str(error.value)


def test_bad_uses_are_one_line_errors():
    with pytest.raises(MaskclError, match="sparsity must be in"):
        HyperMaskNet(small_target(), sparsity=100)
    with pytest.raises(MaskclError, match="chunks must be >= 0"):
        HyperMaskNet(small_target(), chunks=-2)
    hm = HyperMask(small_target())
    with pytest.raises(MaskclError, match="start_task"):
        hm.regularizer()
    optimizer = sgd(hm)
    hm.start_task(0, optimizer)
    with pytest.raises(MaskclError, match="still training"):
        hm.start_task(1, optimizer)
    hm.end_task()
    with pytest.raises(MaskclError, match="without a task in training"):
        hm.end_task()
    with pytest.raises(MaskclError, match="already learned"):
        hm.start_task(0, optimizer)
    with pytest.raises(MaskclError, match="out of range"):
        hm.start_task(5, optimizer)


@pytest.mark.slow
def test_hypermask_learns_split_fashion_mnist(fashion_mnist):
    config = RunConfig(
        method="hypermask", epochs=1, hidden=(100, 100), optimizer="adam", lr=1e-3, batch_size=128,
        dropout=0.0, input_dropout=0.0,
    )  # fmt: skip
    results = run(config, log=lambda _: None)
    assert results["acc"] > 0.93, results["acc_matrix"]
    assert results["bwt"] > -0.05


def test_masked_l1_weighs_each_change_by_the_most_an_earlier_task_uses_the_weight():
    torch.manual_seed(0)
    hm = HyperMask(small_target(), sparsity=50, chunks=8, beta=0.0, lam=0.1, l1_masked=True)
    net = hm.model
    optimizer = sgd(hm)
    hm.start_task(0, optimizer)
    hm.end_task()
    hm.start_task(1, optimizer)
    used = net.masks(0)  # the cached mask of task 0: half of each tensor's entries are 0
    weights = [p.detach().clone() for _, p in net.masked]
    with torch.no_grad():
        for (_, p), m in zip(net.masked, used):
            p.add_(torch.where(m == 0, 1.0, 0.01))  # unused entries move far, used ones a little
    expected = sum(((p - w).abs() * m).sum() for (_, p), w, m in zip(net.masked, weights, used))
    torch.testing.assert_close(hm.regularizer(), 0.1 * expected)
    assert all(bool((m == 0).any()) for m in used)  # so the far moves above are free
