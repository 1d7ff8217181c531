"""Tests for the scenario builders: real Fashion-MNIST and small arrays written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from maskcl.data import (
    Scenario,
    TaskData,
    data_scenario,
    load_npz,
    permuted_fashion_mnist,
    permuted_scenario,
    prepare_inputs,
    split_fashion_mnist,
    split_scenario,
)
from maskcl.errors import MaskclError


def toy(n_classes: int = 6, n_train: int = 60, n_test: int = 24, shape=(4, 4), seed: int = 0):
    """Random uint8 images with labels ``0..n_classes-1`` repeating."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        np.arange(n_train) % n_classes,
        rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        np.arange(n_test) % n_classes,
    )


def rows_with_labels(x: torch.Tensor, y: torch.Tensor | np.ndarray) -> list[bytes]:
    """Sorted multiset of (label, input row) pairs, to compare sample sets regardless of order."""
    labels = np.asarray(y, dtype=np.int64)
    return sorted(
        label.tobytes() + row.tobytes() for label, row in zip(labels, x.flatten(1).numpy(), strict=True)
    )


@pytest.fixture(scope="module")
def real(fashion_mnist) -> tuple[np.ndarray, ...]:
    return fashion_mnist


@pytest.fixture(scope="module")
def split_real(real) -> Scenario:
    return split_fashion_mnist()


@pytest.fixture(scope="module")
def permuted_real(real) -> Scenario:
    return permuted_fashion_mnist()


def test_split_fashion_mnist_tasks_classes_and_sizes(split_real: Scenario) -> None:
    assert split_real.name == "split-fmnist" and split_real.num_tasks == 5 and len(split_real) == 5
    assert split_real.input_shape == (1, 28, 28)
    assert [task.classes for task in split_real] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert split_real.classes_per_task == [2] * 5
    for task_id, task in enumerate(split_real):
        assert task.task_id == task_id and task.num_classes == 2
        assert (len(task.train), len(task.val), len(task.test)) == (10800, 1200, 2000)
        for part in (task.train, task.val, task.test):
            assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
            assert part.x.shape[1:] == (1, 28, 28)
            assert sorted(part.y.unique().tolist()) == [0, 1]
            assert part.permutation is None


def test_split_fashion_mnist_partitions_each_class_group(split_real: Scenario, real) -> None:
    """Train and val together are exactly the training samples of the task's classes (so they are disjoint),
    test exactly its test samples, with local label i standing for classes[i]."""
    x_train, y_train, x_test, y_test = real
    prepared_train, prepared_test = prepare_inputs(x_train, x_test)
    for task in split_real:
        first, second = task.classes
        for x, y, parts in (
            (prepared_train, y_train, (task.train, task.val)),
            (prepared_test, y_test, (task.test,)),
        ):
            keep = np.flatnonzero((y == first) | (y == second))
            expected = rows_with_labels(x[keep], (y[keep] == second).astype(np.int64))
            got = rows_with_labels(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
            assert got == expected


def test_split_fashion_mnist_is_standardised_with_training_statistics(split_real: Scenario) -> None:
    std, mean = torch.std_mean(torch.cat([torch.cat([t.train.x, t.val.x]) for t in split_real]), correction=0)
    assert abs(mean.item()) < 1e-4 and abs(std.item() - 1.0) < 1e-4


def test_split_fashion_mnist_same_seed_same_validation_split(split_real: Scenario) -> None:
    again = split_fashion_mnist()
    for a, b in zip(split_real, again, strict=True):
        assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)


def test_split_seed_changes_validation_split() -> None:
    a, b = (split_scenario(*toy(), 3, val_fraction=0.25, seed=seed) for seed in (0, 1))
    assert not torch.equal(a[0].val.x, b[0].val.x)
    assert rows_with_labels(torch.cat([a[0].train.x, a[0].val.x]), torch.cat([a[0].train.y, a[0].val.y])) == (
        rows_with_labels(torch.cat([b[0].train.x, b[0].val.x]), torch.cat([b[0].train.y, b[0].val.y]))
    )


def test_a_seeded_class_order_groups_the_classes_by_the_seed_and_keeps_each_tasks_data() -> None:
    data = toy(n_classes=6)
    sorted_order = split_scenario(*data, 3)
    assert [t.classes for t in sorted_order] == [[0, 1], [2, 3], [4, 5]]
    groupings = [
        [t.classes for t in split_scenario(*data, 3, seed=s, class_order="seeded")] for s in range(4)
    ]
    assert len({str(g) for g in groupings}) > 1  # the seeds group the classes differently
    assert groupings[1] == [t.classes for t in split_scenario(*data, 3, seed=1, class_order="seeded")]
    for grouping in groupings:
        assert sorted(c for task in grouping for c in task) == list(range(6))
        assert all(task == sorted(task) for task in grouping)
    task = split_scenario(*data, 3, seed=1, class_order="seeded")[0]
    x_train, y_train = prepare_inputs(data[0], data[2])[0], data[1]
    mine = np.isin(y_train, task.classes)
    whole = (torch.cat([task.train.x, task.val.x]), torch.cat([task.train.y, task.val.y]))
    local = np.searchsorted(task.classes, y_train[mine])
    assert rows_with_labels(*whole) == rows_with_labels(x_train[torch.from_numpy(mine)], local)


def test_a_seeded_class_order_is_refused_for_permuted_tasks() -> None:
    with pytest.raises(MaskclError, match="a permuted task has them all"):
        permuted_scenario(*toy(), 3, class_order="seeded")
    with pytest.raises(MaskclError, match="unknown class order 'random'; known: sorted, seeded"):
        split_scenario(*toy(), 3, class_order="random")


def test_permuted_fashion_mnist_shares_one_copy_of_the_data(permuted_real: Scenario) -> None:
    assert permuted_real.name == "permuted-fmnist" and permuted_real.num_tasks == 10
    assert permuted_real.classes_per_task == [10] * 10
    first = permuted_real[0]
    assert (len(first.train), len(first.val), len(first.test)) == (54000, 6000, 10000)
    for task in permuted_real:
        assert task.classes == list(range(10))
        for part, base in ((task.train, first.train), (task.val, first.val), (task.test, first.test)):
            assert part.x.data_ptr() == base.x.data_ptr() and part.y.data_ptr() == base.y.data_ptr()


def test_permuted_task_zero_is_identity_and_later_tasks_permute_pixels(permuted_real: Scenario) -> None:
    task0, task1 = permuted_real[0].test, permuted_real[1].test
    assert task0.permutation is None
    assert torch.equal(torch.cat([x for x, _ in task0.batches(4096)]), task0.x)
    x1 = torch.cat([x for x, _ in task1.batches(4096)])
    y1 = torch.cat([y for _, y in task1.batches(4096)])
    perm = task1.permutation
    assert torch.equal(perm.sort().values, torch.arange(784)) and not torch.equal(perm, torch.arange(784))
    assert x1.shape == task0.x.shape and torch.equal(y1, task0.y)
    assert not torch.equal(x1, task0.x)
    # every sample holds the same pixel values, moved: output pixel k is input pixel perm[k]
    flat0, flat1 = task0.x.flatten(1), x1.flatten(1)
    assert torch.equal(flat1.sort(dim=1).values, flat0.sort(dim=1).values)
    for k in (0, 100, 783):
        assert torch.equal(flat1[:, k], flat0[:, perm[k]])
    perms = [tuple(task.test.permutation.tolist()) for task in permuted_real.tasks[1:]]
    assert len(set(perms)) == 9


def test_permuted_same_seed_same_permutations_other_seed_different() -> None:
    a, b, c = (permuted_scenario(*toy(), 4, seed=seed) for seed in (5, 5, 6))
    for t in range(1, 4):
        assert torch.equal(a[t].train.permutation, b[t].train.permutation)
        assert not torch.equal(a[t].train.permutation, c[t].train.permutation)
    assert torch.equal(a[0].val.x, b[0].val.x)
    # the validation split is the same samples for every task
    assert all(task.val.x is a[0].val.x for task in a)
    # the permutations do not depend on the validation split or the number of samples
    d = permuted_scenario(*toy(n_train=90), 4, val_fraction=0.3, seed=5)
    assert all(torch.equal(a[t].test.permutation, d[t].test.permutation) for t in range(1, 4))


def test_split_uneven_class_counts_give_earlier_tasks_the_extra_class() -> None:
    x_train, y_train, x_test, y_test = toy(n_classes=7, n_train=70, n_test=28)
    labels = np.array([3, 10, 11, 20, 21, 40, 41])  # class ids need not be contiguous
    s = split_scenario(x_train, labels[y_train], x_test, labels[y_test], 3, val_fraction=0.0)
    assert [t.classes for t in s] == [[3, 10, 11], [20, 21], [40, 41]]
    assert s.input_shape == (1, 4, 4)
    task = s[0]
    assert len(task.val) == 0 and task.val.num_batches(8) == 0 and list(task.val.batches(8)) == []
    assert len(task.train) == 30 and sorted(task.train.y.unique().tolist()) == [0, 1, 2]
    # local label i is classes[i]
    keep = np.isin(labels[y_train], [3, 10, 11])
    assert np.array_equal(task.train.y.numpy(), np.searchsorted([3, 10, 11], labels[y_train][keep]))


def test_prepare_inputs_scales_reshapes_and_standardises() -> None:
    x_train, _, x_test, _ = toy()
    train, test = prepare_inputs(x_train, x_test)
    assert train.shape == (60, 1, 4, 4) and test.shape == (24, 1, 4, 4) and train.dtype == torch.float32
    scaled = x_train.astype(np.float64) / 255
    mean, std = scaled.mean(), scaled.std()
    np.testing.assert_allclose(train[:, 0].numpy(), (scaled - mean) / std, rtol=0, atol=1e-5)
    np.testing.assert_allclose(test[:, 0].numpy(), (x_test / 255 - mean) / std, rtol=0, atol=1e-5)


def test_prepare_inputs_keeps_feature_and_channel_layouts_and_leaves_input_alone() -> None:
    features = np.linspace(-3.0, 5.0, 40).reshape(8, 5)
    original = features.copy()
    train, test = prepare_inputs(features, features[:2])
    assert train.shape == (8, 5) and test.shape == (2, 5)
    assert (
        abs(train.double().mean().item()) < 1e-6 and abs(train.double().std(correction=0).item() - 1) < 1e-6
    )
    assert np.array_equal(features, original)
    images = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    assert prepare_inputs(images, images)[0].shape == (2, 3, 2, 2)
    with pytest.raises(MaskclError, match="same value everywhere"):
        prepare_inputs(np.zeros((4, 3)), np.zeros((1, 3)))


@pytest.mark.parametrize(
    ("arrays", "num_tasks", "message"),
    [
        (toy(n_classes=3), 2, "data has 3 classes: too few for 2 tasks of at least 2 classes"),
        (toy(), 0, "num_tasks must be a positive integer, got 0"),
        ((toy()[0][:-1], *toy()[1:]), 2, "x_train has 59 rows but y_train has 60"),
        ((toy()[0], toy()[1].astype(np.float32), *toy()[2:]), 2, "y_train has dtype float32"),
        ((*toy()[:3], toy()[3] + 1), 2, "y_test has class 6, which does not occur in y_train"),
    ],
    ids=["too-few-classes", "no-tasks", "row-mismatch", "float-labels", "unseen-test-class"],
)
def test_split_rejects_bad_data(arrays, num_tasks: int, message: str) -> None:
    with pytest.raises(MaskclError) as info:
        split_scenario(*arrays, num_tasks)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_permuted_rejects_a_single_class_and_bad_val_fraction() -> None:
    x_train, y_train, x_test, y_test = toy()
    with pytest.raises(MaskclError, match="data has 1 class"):
        permuted_scenario(x_train, y_train * 0, x_test, y_test * 0, 2)
    with pytest.raises(MaskclError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        permuted_scenario(x_train, y_train, x_test, y_test, 2, val_fraction=1.0)
    with pytest.raises(MaskclError, match="seed must be a non-negative integer, got -1"):
        permuted_scenario(x_train, y_train, x_test, y_test, 2, seed=-1)


def test_scenario_index_out_of_range_message() -> None:
    s = split_scenario(*toy(n_classes=10, n_train=100, n_test=20), 5)
    assert s[4].task_id == 4
    for bad in (7, -1):
        with pytest.raises(MaskclError) as info:
            s[bad]
        assert str(info.value) == f"task {bad} out of range: scenario has 5 tasks (0-4)"


def counting_data(n: int = 103) -> TaskData:
    """Sample i has input [i, -i] and label i, so a batch shows which samples it holds."""
    idx = torch.arange(n)
    return TaskData(torch.stack([idx, -idx], dim=1).float(), idx)


def test_shuffled_batches_cover_every_sample_once_and_are_reproducible() -> None:
    data = counting_data()
    assert data.num_batches(10) == 11
    epochs = [
        list(data.batches(10, shuffle=True, generator=torch.Generator().manual_seed(s))) for s in (1, 1, 2)
    ]
    for batches in epochs:
        assert [len(y) for _, y in batches] == [10] * 10 + [3]
        y = torch.cat([y for _, y in batches])
        assert torch.equal(y.sort().values, torch.arange(103)) and not torch.equal(y, torch.arange(103))
        x = torch.cat([x for x, _ in batches])
        assert torch.equal(x[:, 0], y.float()) and torch.equal(x[:, 1], -y.float())
    order = [torch.cat([y for _, y in batches]) for batches in epochs]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])


def test_batches_keep_order_without_shuffle_and_move_to_device() -> None:
    data = counting_data(25)
    batches = list(data.batches(8, device="cpu"))
    assert [y.tolist() for _, y in batches] == [list(range(s, min(s + 8, 25))) for s in range(0, 25, 8)]
    assert all(x.device.type == "cpu" for x, _ in batches)
    with pytest.raises(MaskclError, match="batch size must be a positive integer, got 0"):
        data.batches(0)


def test_permuted_batches_apply_the_permutation_to_each_shuffled_sample() -> None:
    x = torch.arange(5 * 6, dtype=torch.float32).reshape(5, 1, 2, 3)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    data = TaskData(x, torch.arange(5), perm)
    for xb, yb in data.batches(2, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert xb.shape[1:] == (1, 2, 3)
        assert torch.equal(xb.flatten(1), x[yb].flatten(1).flip(1))
    with pytest.raises(MaskclError, match=r"permutation has shape \(4,\), expected \(6,\)"):
        TaskData(x, torch.arange(5), torch.arange(4))


# ---- user .npz files ----


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def good_arrays() -> dict[str, np.ndarray]:
    return dict(zip(("x_train", "y_train", "x_test", "y_test"), toy(), strict=True))


def test_npz_split_and_permuted_scenarios(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "mydata.npz", **good_arrays())
    for got, want in zip(load_npz(path), toy(), strict=True):
        np.testing.assert_array_equal(got, want)
    split = data_scenario(path)
    assert split.name == "split-mydata" and split.num_tasks == 3 and split.classes_per_task == [2, 2, 2]
    permuted = data_scenario(path, "permuted", 2, name="p")
    assert permuted.name == "p" and permuted.num_tasks == 2 and permuted.input_shape == (1, 4, 4)


def test_npz_flat_float_features(tmp_path: Path) -> None:
    arrays = good_arrays()
    arrays["x_train"] = arrays["x_train"].reshape(60, 16) / 7.0
    arrays["x_test"] = arrays["x_test"].reshape(24, 16) / 7.0
    s = data_scenario(save_npz(tmp_path / "flat.npz", **arrays), num_tasks=2)
    assert s.input_shape == (16,) and s.classes_per_task == [3, 3]


def broken(tmp_path: Path, change: dict) -> Path:
    arrays = good_arrays()
    arrays.update(change)
    return save_npz(tmp_path / "data.npz", **{k: v for k, v in arrays.items() if v is not None})


def nan_test(tmp_path: Path) -> Path:
    x_test = toy()[2].astype(np.float32)
    x_test[3, 1, 1] = np.nan
    return broken(tmp_path, {"x_test": x_test})


def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.npz"
    path.write_text("hello")
    return path


def truncated(tmp_path: Path) -> Path:
    path = save_npz(tmp_path / "cut.npz", **good_arrays())
    path.write_bytes(path.read_bytes()[:600])
    return path


def npy_file(tmp_path: Path) -> Path:
    np.save(tmp_path / "single.npy", np.zeros(3))
    return (tmp_path / "single.npy").rename(tmp_path / "single.npz")


NPZ_ERRORS = {
    "missing-file": (lambda p: p / "nope.npz", "npz file not found"),
    "not-npz": (text_file, "is not a valid .npz file"),
    "npy-content": (npy_file, "is not a valid .npz file (it holds a single array"),
    "missing-arrays": (
        lambda p: broken(p, {"x_test": None, "y_test": None}),
        "missing arrays: x_test, y_test",
    ),
    "row-mismatch": (lambda p: broken(p, {"y_test": toy()[3][:-2]}), "x_test has 24 rows but y_test has 22"),
    "float-labels": (
        lambda p: broken(p, {"y_train": toy()[1] + 0.5}),
        "y_train has dtype float64: class labels must be integers",
    ),
    "shape-mismatch": (
        lambda p: broken(p, {"x_test": toy(shape=(5, 5))[2]}),
        "x_train samples have shape (4, 4) but x_test samples have shape (5, 5)",
    ),
    "nan": (nan_test, "x_test contains NaN or infinite values"),
    "truncated": (truncated, "is not a valid .npz file (damaged or truncated)"),  # was BadZipFile
}


@pytest.mark.parametrize(("make", "message"), NPZ_ERRORS.values(), ids=NPZ_ERRORS.keys())
def test_npz_errors_name_the_problem_in_one_line(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(MaskclError) as info:
        data_scenario(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_npz_unknown_scenario_name(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "ok.npz", **good_arrays())
    with pytest.raises(MaskclError) as info:
        data_scenario(path, "rotated")
    assert str(info.value) == "unknown scenario 'rotated': choose one of 'split', 'permuted'"
