"""MNIST through torchvision's MNIST class: raw idx files in torchvision's layout, written here."""

from pathlib import Path

import numpy as np
import pytest
from test_fashion_mnist import idx_bytes, small_fashion

from maskcl import RunConfig, run
from maskcl.data import BENCHMARKS, load_mnist
from maskcl.data.mnist import RAW_FILES
from maskcl.errors import MaskclError

pytest.importorskip("torchvision")


def write_mnist(place: Path, arrays) -> Path:
    raw = place / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, array in zip(RAW_FILES, arrays, strict=True):
        (raw / name).write_bytes(idx_bytes(array))
    return place


@pytest.fixture
def mnist_place(tmp_path, monkeypatch):
    arrays = small_fashion(seed=3, n_train=200, n_test=50)
    monkeypatch.setenv("MASKCL_DATA", str(write_mnist(tmp_path / "data", arrays)))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no cached copy, no download
    return arrays


def test_the_files_torchvision_reads_are_loaded_as_they_were_written(mnist_place):
    loaded = load_mnist(download=False)
    for got, want in zip(loaded, mnist_place, strict=True):
        np.testing.assert_array_equal(got, want)
    assert loaded[0].dtype == np.uint8 and loaded[1].dtype == np.int64


def test_split_and_permuted_mnist_are_benchmarks_that_run(mnist_place):
    split = BENCHMARKS["split-mnist"][0](5)
    assert [t.classes for t in split] == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
        [8, 9],
    ] and split.name == "split-mnist"
    permuted = BENCHMARKS["permuted-mnist"][0](3, seed=1)
    assert permuted.num_tasks == 3 and permuted[1].train.permutation is not None
    results = run(RunConfig(benchmark="split-mnist", num_tasks=2, epochs=1, hidden=(8,)), log=lambda _: None)
    assert results["scenario"]["name"] == "split-mnist" and results["bwt"] == 0.0


def test_missing_or_damaged_files_are_one_line(tmp_path, monkeypatch, mnist_place):
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(MaskclError, match=r"MNIST not found in .*nowhere/MNIST/raw"):
        load_mnist(download=False)
    place = write_mnist(tmp_path / "bad", mnist_place)
    (place / "MNIST" / "raw" / RAW_FILES[0]).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)
    monkeypatch.setenv("MASKCL_DATA", str(place))
    with pytest.raises(MaskclError, match=r"MNIST in .*bad/MNIST/raw cannot be read"):
        load_mnist(download=False)
