"""Tests for the idx reader and the Fashion-MNIST loader: real files and idx files written here."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from maskcl.data import fashion_mnist
from maskcl.data.fashion_mnist import FILES, load_fashion_mnist, read_idx
from maskcl.errors import MaskclError

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as an idx file, written out byte by byte from the format description."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def small_fashion(seed: int = 0, n_train: int = 30, n_test: int = 10) -> tuple[np.ndarray, ...]:
    """A tiny stand-in for Fashion-MNIST: uint8 images [N, 6, 6] with labels 0-9."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n_train, 6, 6), dtype=np.uint8),
        (np.arange(n_train) % 10).astype(np.uint8),
        rng.integers(0, 256, (n_test, 6, 6), dtype=np.uint8),
        (np.arange(n_test) % 10).astype(np.uint8),
    )


def write_fashion(folder: Path, arrays: tuple[np.ndarray, ...], gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(FILES, arrays, strict=True):
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def assert_same(loaded: tuple[np.ndarray, ...], written: tuple[np.ndarray, ...]) -> None:
    for got, want in zip(loaded, written, strict=True):
        np.testing.assert_array_equal(got, want)
    assert loaded[0].dtype == np.uint8 and loaded[1].dtype == np.int64 and loaded[3].dtype == np.int64


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_read_idx_round_trips_several_dtypes(tmp_path: Path, gz: bool) -> None:
    arrays = [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-5, 0, 70000], dtype=np.int32),
        np.array([[0.5, -1.25], [3.0, 1e300]]),
    ]
    for k, array in enumerate(arrays):
        path = tmp_path / f"a{k}.idx"
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gz else data)
        got = read_idx(path)
        assert got.dtype == array.dtype and got.dtype.isnative
        np.testing.assert_array_equal(got, array)


CORRUPTIONS = {
    "bad-magic": lambda data: b"\x01\x02" + data[2:],
    "unknown-dtype": lambda data: data[:2] + b"\x07" + data[3:],
    "truncated-data": lambda data: data[:-5],
    "trailing-bytes": lambda data: data + b"\x00",
    "truncated-header": lambda data: data[:6],
    "empty": lambda data: b"",
    "truncated-gzip": lambda data: gzip.compress(data)[:-10],
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_read_idx_rejects_corrupted_files(tmp_path: Path, corrupt) -> None:
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(corrupt(idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))))
    with pytest.raises(MaskclError) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def real(fashion_mnist) -> tuple[np.ndarray, ...]:
    return fashion_mnist


def test_real_fashion_mnist_shapes_dtypes_and_class_counts(real: tuple[np.ndarray, ...]) -> None:
    x_train, y_train, x_test, y_test = real
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int64
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert x_train.min() == 0 and x_train.max() == 255
    assert not x_train.flags.writeable  # cached in-process, so shared: must not be modified
    assert load_fashion_mnist(download=False)[0] is x_train


def test_raw_files_in_root_subfolder_are_found(tmp_path: Path) -> None:
    arrays = small_fashion()
    write_fashion(tmp_path / "fashion-mnist", arrays, gz=False)
    assert_same(load_fashion_mnist(tmp_path, download=False), arrays)


def test_maskcl_data_env_is_searched_before_the_system_copy(tmp_path: Path, monkeypatch) -> None:
    arrays = small_fashion(seed=1)
    write_fashion(tmp_path, arrays)
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path))
    assert_same(load_fashion_mnist(download=False), arrays)


def test_user_cache_is_searched_before_the_system_copy(tmp_path: Path, monkeypatch) -> None:
    arrays = small_fashion(seed=2)
    write_fashion(tmp_path / ".cache" / "maskcl" / "fashion-mnist", arrays)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MASKCL_DATA", raising=False)
    assert_same(load_fashion_mnist(download=False), arrays)


def test_download_from_base_url_argument(tmp_path: Path) -> None:
    arrays = small_fashion(seed=3)
    server = write_fashion(tmp_path / "server", arrays)
    got = load_fashion_mnist(tmp_path / "data", base_url=server.as_uri())
    assert_same(got, arrays)
    stored = sorted(p.name for p in (tmp_path / "data" / "fashion-mnist").iterdir())
    assert stored == sorted(f"{name}.gz" for name in FILES)  # no temporary files left


def test_download_into_default_cache_from_url_env(tmp_path: Path, monkeypatch) -> None:
    arrays = small_fashion(seed=4)
    server = write_fashion(tmp_path / "server", arrays)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MASKCL_DATA", raising=False)
    monkeypatch.setenv("MASKCL_FASHION_MNIST_URL", server.as_uri() + "/")
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-system-copy")
    assert_same(load_fashion_mnist(), arrays)
    assert (tmp_path / "home" / ".cache" / "maskcl" / "fashion-mnist" / f"{FILES[0]}.gz").is_file()


def test_failed_download_names_the_url_and_leaves_no_partial_file(tmp_path: Path) -> None:
    server = tmp_path / "empty-server"
    server.mkdir()
    with pytest.raises(
        MaskclError, match=r"could not download Fashion-MNIST file file://.*train-images"
    ) as info:
        load_fashion_mnist(tmp_path / "data", base_url=server.as_uri())
    assert "\n" not in str(info.value)
    assert list((tmp_path / "data" / "fashion-mnist").iterdir()) == []


def test_not_found_without_download_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(MaskclError) as info:
        load_fashion_mnist(tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path) in message and "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path: Path) -> None:
    x_train, y_train, x_test, y_test = small_fashion()
    write_fashion(tmp_path, (x_train, y_train[:-1], x_test, y_test))
    with pytest.raises(MaskclError, match="train files"):
        load_fashion_mnist(tmp_path, download=False)
