"""The default hypernetwork is sized to the target: within ``hyper_size`` (0.2) of its masked weights and
close to it, or at the floor for small targets; given sizes build exactly the network they name."""

import math
import typing

import pytest
import torch

from maskcl import create_model
from maskcl.methods.hypermask import HyperMask, HyperMaskConfig, HyperNetwork, auto_size
from maskcl.methods.hypermask import hypernetwork_parameters as count
from maskcl.methods.hypermask.hypernetwork import DEFAULT_SIZE, MIN_WIDTH, PUBLISHED_WIDTH

TOLERANCE = 0.02
"""Where a hypernetwork fits the budget ``size x W``, it has between ``(1 - TOLERANCE)`` and 1 times it."""

TARGETS = {
    "mlp 400-400": ("mlp", {"input_shape": (1, 28, 28), "classes_per_task": [2] * 5, "hidden": (400, 400)}),
    "mlp 1000-1000": (
        "mlp",
        {"input_shape": (1, 28, 28), "classes_per_task": [10] * 10, "hidden": (1000, 1000)},
    ),
    "cnn 32-64-128": (
        "alexnet",
        {
            "input_shape": (3, 32, 32),
            "classes_per_task": [2] * 5,
            "channels": (32, 64, 128),
            "hidden": (256, 256),
        },
    ),
}
SMALL_CNNS = {
    "cnn 16-32-64": (
        "alexnet",
        {
            "input_shape": (3, 32, 32),
            "classes_per_task": [2] * 5,
            "channels": (16, 32, 64),
            "hidden": (64, 64),
        },
    ),
    "cnn 4-4-4": (
        "alexnet",
        {"input_shape": (3, 16, 16), "classes_per_task": [2, 2], "channels": (4, 4, 4), "hidden": (8, 8)},
    ),
}


def method(name: str, targets: dict = TARGETS, **options) -> HyperMask:
    torch.manual_seed(0)
    arch, kwargs = targets[name]
    return HyperMask(create_model(arch, gates=False, **kwargs), **options)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def smallest(total: int, tasks: int, hidden: tuple[int, ...]) -> int:
    """The smallest hypernetwork of these widths over every chunk count, by brute force."""
    return min(count(total, tasks, 24, hidden, c, 16) for c in range(1, total + 1))


@pytest.mark.parametrize("name", TARGETS)
def test_the_default_hypernetwork_is_a_fifth_of_the_targets_masked_weights(name):
    hm = method(name)
    net, hyper = hm.model, hm.model.hypernetwork
    weights, size = sum(net.sizes), parameters(hyper)
    assert DEFAULT_SIZE == hm.config.hyper_size == 0.2
    assert (1 - TOLERANCE) * 0.2 * weights <= size <= 0.2 * weights, (size, weights)
    assert size == count(weights, net.state.num_tasks, 24, hyper.hidden, hyper.chunks, 16)
    assert abs(size / parameters(net.target) - 0.2) < 0.01  # the same share of all the target's parameters
    summary = {"hidden": list(hyper.hidden), "chunks": hyper.chunks, "parameters": size}
    assert hm.summary()["hypernetwork"] == {**summary, "share_of_target": size / weights}
    if weights > 286_000:  # large targets: the published widths, the budget filled by the fewest chunks
        assert hyper.hidden == (100, 100)
        assert count(weights, net.state.num_tasks, 24, (100, 100), hyper.chunks - 1, 16) > 0.2 * weights
    else:  # cnn 32-64-128, 252,640 weights: narrower layers
        assert MIN_WIDTH < hyper.hidden[0] < PUBLISHED_WIDTH


def test_the_sizes_at_0_2_of_the_named_targets():
    """The rule's outcome, written out (so a change of the rule shows here)."""
    sizes = {name: method(name).model.hypernetwork for name in TARGETS}
    assert {name: (h.hidden, h.chunks) for name, h in sizes.items()} == {
        "mlp 400-400": ((100, 100), 688),
        "mlp 1000-1000": ((100, 100), 538),
        "cnn 32-64-128": ((90, 90), 1094),
    }


@pytest.mark.parametrize("name", SMALL_CNNS)
def test_a_small_target_gets_the_floor_the_smallest_hypernetwork_of_width_16(name):
    hm = method(name, SMALL_CNNS)
    net, hyper = hm.model, hm.model.hypernetwork
    weights, tasks, size = sum(net.sizes), net.state.num_tasks, parameters(hyper)
    assert hyper.hidden == (MIN_WIDTH, MIN_WIDTH) and size > 0.2 * weights  # nothing fits the budget
    assert size == smallest(weights, tasks, (16, 16))
    floor = 928 + 24 * tasks + 8 * math.sqrt(17 * weights)  # as the docs state it
    assert abs(size - floor) / floor < 0.02, (size, floor)


@pytest.mark.parametrize("size", [0.05, 0.2, 1.0])
def test_across_target_sizes_the_hypernetwork_fits_the_budget_or_is_the_floor(size):
    widths = []
    for weights in [50, 300, 2_000, 10_000, 40_000, 100_000, 300_000, 1_000_000, 5_000_000, 30_000_000]:
        hidden, chunks = auto_size(weights, 10, size=size)
        total, budget = count(weights, 10, 24, hidden, chunks, 16), size * weights
        assert len(hidden) == 2 and hidden[0] == hidden[1] and MIN_WIDTH <= hidden[0] <= PUBLISHED_WIDTH
        if total <= budget:
            assert total >= (1 - TOLERANCE) * budget, (weights, hidden, chunks, total)
        else:
            assert hidden == (MIN_WIDTH, MIN_WIDTH)
        if weights <= 40_000:  # brute force: no fewer chunks and no wider layers fit
            if total <= budget:
                fitting = [
                    c for c in range(1, weights + 1) if count(weights, 10, 24, hidden, c, 16) <= budget
                ]
                assert chunks == fitting[0]
                if hidden[0] < PUBLISHED_WIDTH:
                    assert smallest(weights, 10, (hidden[0] + 1,) * 2) > budget
            else:
                assert total == smallest(weights, 10, hidden) > budget
        widths.append(hidden[0])
    assert widths == sorted(widths)  # a larger target never gets narrower layers


def test_given_sizes_build_exactly_that_network():
    """The earlier defaults (1024 chunks, hidden 100-100), given, are the earlier network: its parameter
    counts for these targets and, from the same seed, the same values as a HyperNetwork of those sizes."""
    for name, expected in (("mlp 400-400", 77_972), ("mlp 1000-1000", 216_866)):
        hm = method(name, chunks=1024, hyper_hidden=(100, 100))
        hyper = hm.model.hypernetwork
        assert (hyper.hidden, hyper.chunks, parameters(hyper)) == ((100, 100), 1024, expected)
    torch.manual_seed(0)
    direct = HyperNetwork(1000, 3, hidden=(30, 20), chunks=7, chunk_embedding_dim=5, size=0.01)
    torch.manual_seed(0)
    again = HyperNetwork(1000, 3, hidden=(30, 20), chunks=7, chunk_embedding_dim=5, size=5.0)
    assert direct.hidden == (30, 20) and direct.chunks == 7  # size plays no part when both are given
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), again.state_dict().values()))
    unchunked = method("mlp 400-400", chunks=0).model.hypernetwork
    assert unchunked.hidden == (100, 100) and unchunked.chunk_embeddings is None  # the original design


def test_one_size_given_the_other_is_fitted_to_the_budget():
    weights = sum(method("mlp 1000-1000").model.sizes)
    hidden, chunks = auto_size(weights, 10, hidden=(50,))
    assert hidden == (50,) and chunks == min(
        c for c in range(1, 5000) if count(weights, 10, 24, (50,), c, 16) <= 0.2 * weights
    )
    hidden, chunks = auto_size(weights, 10, chunks=256)  # few chunks: a large output layer, narrow widths
    assert chunks == 256 and 16 < hidden[0] < 100 and count(weights, 10, 24, hidden, 256, 16) <= 0.2 * weights
    assert count(weights, 10, 24, (hidden[0] + 1,) * 2, 256, 16) > 0.2 * weights
    assert auto_size(weights, 10, chunks=5) == ((16, 16), 5)  # nothing fits: the narrowest widths
    assert auto_size(weights, 10, hidden=(10**6,))[1] >= 1  # nothing fits: the smallest such network
    assert auto_size(weights, 10, chunks=0) == ((100, 100), 0)  # unchunked: the published widths
    hm = method("mlp 400-400", hyper_size=0.1)
    assert abs(parameters(hm.model.hypernetwork) / sum(hm.model.sizes) - 0.1) < 0.1 * TOLERANCE


def test_the_size_options_are_types_the_command_line_takes():
    hints = typing.get_type_hints(HyperMaskConfig)
    assert hints["hyper_size"] is float
    assert hints["hyper_hidden"] == tuple[int, ...] | None and hints["chunks"] == int | None
    fields = HyperMaskConfig.__dataclass_fields__
    assert all(fields[n].metadata["help"] for n in ("hyper_size", "hyper_hidden", "chunks"))
    config = HyperMaskConfig()
    assert (config.hyper_size, config.hyper_hidden, config.chunks) == (0.2, None, None)
