"""Benchmarks whose tasks are whole data sets (5-datasets, the HAT mixture) and Split TinyImageNet, built
from small copies of every set in its own on-disk format, written here."""

import json

import numpy as np
import pytest
import test_tinyimagenet
import torch
from test_cifar import write_cifar, write_cifar10
from test_facescrub import write_faces
from test_fashion_mnist import small_fashion, write_fashion
from test_gtsrb import write_gtsrb
from test_mnist import write_mnist
from test_notmnist import write_notmnist
from test_svhn import write_svhn
from test_tinyimagenet import write_tiny

from maskcl.cli import main
from maskcl.data import BENCHMARKS, load_mnist, load_svhn
from maskcl.data.multi import as_colour_images
from maskcl.errors import MaskclError


def write_signs(place):
    """GTSRB's copy, its test image of a class without training images given a class that has some."""
    write_gtsrb(place)
    annotations = place / "gtsrb" / "GT-final_test.csv"
    annotations.write_text(annotations.read_text().replace(";16\n", ";2\n"))


SETS = {
    "mnist": lambda place: write_mnist(place, small_fashion(seed=3, n_train=60, n_test=20)),
    "notmnist": lambda place: write_notmnist(place / "notMNIST_small"),
    "fashion-mnist": lambda place: write_fashion(place / "fashion-mnist", small_fashion(seed=4, n_train=50)),
    "svhn": lambda place: write_svhn(place, n_train=30, n_test=10),
    "cifar10": lambda place: write_cifar10(place, per_file=8),
    "cifar100": lambda place: write_cifar(place, n_train=60, n_test=20, classes=6),
    "trafficsigns": write_signs,
    "facescrub": lambda place: write_faces(place / "facescrub"),
}


@pytest.fixture
def place(tmp_path, monkeypatch, empty_home):
    """A data place holding a small copy of each set of the HAT mixture (and so of 5-datasets)."""
    place = tmp_path / "data"
    for write in SETS.values():
        write(place)
    monkeypatch.setenv("MASKCL_DATA", str(place))
    return place


def test_five_datasets_one_task_a_set_each_standardised_with_its_own_statistics(place):
    scenario = BENCHMARKS["5-datasets"][0](5, seed=0)
    assert scenario.name == "5-datasets" and scenario.input_shape == (3, 32, 32)
    classes = [t.classes for t in scenario]
    assert [len(c) for c in classes] == [10] * 5 and [c for task in classes for c in task] == list(range(50))
    mnist = scenario[0]
    x_train = load_mnist()[0]
    assert mnist.train.x.dtype == torch.uint8  # kept as stored, a quarter of float32's memory
    rows = torch.cat([mnist.train.x, mnist.val.x])  # every training image once, padded and grey thrice
    assert len(rows) == len(x_train)
    padded = torch.from_numpy(as_colour_images(x_train))
    assert sorted(map(bytes, rows.numpy())) == sorted(map(bytes, padded.numpy()))
    assert torch.equal(padded[0, :, 13:19, 13:19], torch.from_numpy(x_train[0]).expand(3, 6, 6))
    for task in scenario:
        whole = torch.cat([x for x, _ in task.train.batches(1000)] + [x for x, _ in task.val.batches(1000)])
        mean, std = whole.mean((0, 2, 3)), whole.std((0, 2, 3), correction=0)
        assert torch.allclose(mean, torch.zeros(3), atol=1e-4) and torch.allclose(
            std, torch.ones(3), atol=1e-4
        )
    svhn = scenario[3]
    assert sorted(set(svhn.test.y.tolist())) == sorted(set(load_svhn()[3].tolist()))


def test_the_hat_mixture_in_the_papers_order_or_one_order_a_seed(place):
    build = BENCHMARKS["hat-mixture"][0]
    listed = build(8)
    assert [len(t.classes) for t in listed] == [10, 6, 10, 10, 10, 3, 3, 10]  # the copies' classes
    first = [t.test.y.tolist() for t in listed]
    orders = {seed: build(8, seed=seed, class_order="seeded") for seed in (0, 1)}
    again = build(8, seed=1, class_order="seeded")

    def sizes(scenario):
        return [len(t.test) for t in scenario]

    assert sizes(orders[1]) == sizes(again) and sizes(orders[0]) != sizes(orders[1])
    assert sorted(sizes(orders[0])) == sorted(sizes(listed))
    assert first[0] == listed[0].test.y.tolist()
    offsets = [t.classes[0] for t in orders[1]]
    assert offsets == np.cumsum([0, *[len(t.classes) for t in orders[1]][:-1]]).tolist()


def test_fewer_tasks_read_only_their_sets_and_more_is_one_line(tmp_path, monkeypatch, empty_home):
    place = tmp_path / "data"
    for name in ("cifar10", "cifar100"):
        SETS[name](place)
    monkeypatch.setenv("MASKCL_DATA", str(place))
    assert [len(t.classes) for t in BENCHMARKS["hat-mixture"][0](2)] == [10, 6]  # no MNIST needed
    with pytest.raises(MaskclError, match="hat-mixture has 8 data sets: it cannot make 9 tasks"):
        BENCHMARKS["hat-mixture"][0](9)


def test_split_tinyimagenet_keeps_uint8_images_standardised_per_channel(tmp_path, monkeypatch, empty_home):
    monkeypatch.setattr(test_tinyimagenet, "WNIDS", ["n04", "n01", "n03", "n02"])
    write_tiny(tmp_path / "data", per_class=4, val=6)
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path / "data"))
    scenario = BENCHMARKS["split-tinyimagenet"][0](2, val_fraction=0.25)
    assert scenario.input_shape == (3, 64, 64) and [t.classes for t in scenario] == [[0, 1], [2, 3]]
    assert [len(t.train) + len(t.val) for t in scenario] == [8, 8]
    task = scenario[0]
    assert task.train.x.dtype == torch.uint8 and task.train.standardise is not None
    x, _ = next(task.train.batches(4))
    mean, std = task.train.standardise
    assert torch.equal(x, (task.train.x[:4].float() / 255 - mean[:, None, None]) / std[:, None, None])


def test_a_run_on_five_datasets_from_the_command_line(place, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--benchmark", "5-datasets", "--epochs", "1", "--hidden", "16", "--augment", "crop-flip"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["scenario"]["name"] == "5-datasets" and len(results["acc_matrix"]) == 5
    assert results["bwt"] == 0.0  # HAT


def test_colour_images_of_one_size(tmp_path):
    grey = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    out = as_colour_images(grey)
    assert out.shape == (2, 3, 32, 32) and (out[:, :, :2] == 0).all() and (out[:, :, :, 30:] == 0).all()
    assert (out[:, 1, 2:30, 2:30] == grey).all()
    colour = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    assert np.array_equal(as_colour_images(colour), colour)
    with pytest.raises(MaskclError, match="images of 40x33 are larger than 32x32: resize them first"):
        as_colour_images(np.zeros((1, 33, 40), dtype=np.uint8))
    with pytest.raises(MaskclError, match="expected grey or colour images, got 2 channels"):
        as_colour_images(np.zeros((1, 2, 8, 8), dtype=np.uint8))
