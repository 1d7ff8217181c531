"""SVHN through torchvision's SVHN class: small .mat files in SVHN's own layout, written here with scipy."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from reader_checks import assert_not_found_offline

from maskcl.data import svhn
from maskcl.data.svhn import FILES, load_svhn
from maskcl.errors import MaskclError

scipy_io = pytest.importorskip("scipy.io")
datasets = pytest.importorskip("torchvision.datasets")


def svhn_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``X`` uint8 ``[32, 32, 3, n]`` (a distinct first pixel per image) and ``y`` ``[n, 1]`` in 1..10."""
    x = np.random.default_rng(seed).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    x[0, 0, 0] = np.arange(n, dtype=np.uint8) + seed
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
    return x, y


def write_svhn(place: Path, n_train: int = 12, n_test: int = 7, seed: int = 0) -> dict:
    """SVHN's two files in ``place/svhn``; returns ``{split: (X, y)}`` as written."""
    (place / "svhn").mkdir(parents=True, exist_ok=True)
    written = {"train": svhn_split(n_train, seed), "test": svhn_split(n_test, seed + 1)}
    for split, (x, y) in written.items():
        scipy_io.savemat(place / "svhn" / FILES[split], {"X": x, "y": y})
    return written


def assert_loaded(loaded, written) -> None:
    x_train, y_train, x_test, y_test = loaded
    for (x, y), (got_x, got_y) in zip(written.values(), ((x_train, y_train), (x_test, y_test))):
        assert got_x.dtype == np.uint8 and got_y.dtype == np.int64 and got_x.flags.c_contiguous
        np.testing.assert_array_equal(got_x, x.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(got_y, np.where(y.ravel() == 10, 0, y.ravel()))
    x, _ = written["train"]
    assert x_train[4, 2, 5, 7] == x[5, 7, 2, 4]  # image 4, blue, row 5, column 7
    assert y_train[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 is the digit 0


def test_a_local_copy_is_read_as_written(tmp_path, monkeypatch, empty_home):
    written = write_svhn(tmp_path / "data")
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path / "data"))
    assert_loaded(load_svhn(download=False), written)
    assert not (empty_home / ".cache").exists()


def test_files_with_the_published_md5_are_read_by_torchvision(tmp_path, monkeypatch, empty_home):
    written = write_svhn(tmp_path)
    md5s = {
        split: hashlib.md5((tmp_path / "svhn" / name).read_bytes()).hexdigest()
        for split, name in FILES.items()
    }
    published = {
        split: [url, name, md5s[split]]
        for split, (url, name, _) in datasets.SVHN.split_list.items()
        if split in FILES
    }
    monkeypatch.setattr(datasets.SVHN, "split_list", {**datasets.SVHN.split_list, **published})

    def refuse(path):
        raise AssertionError(f"{path} read by maskcl, not torchvision")

    monkeypatch.setattr(svhn, "_read_mat", refuse)
    assert_loaded(load_svhn(tmp_path, download=False), written)


def test_root_comes_before_maskcl_data(tmp_path, monkeypatch, empty_home):
    written = write_svhn(tmp_path / "root", seed=5)
    write_svhn(tmp_path / "env", seed=9)
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path / "env"))
    assert_loaded(load_svhn(tmp_path / "root", download=False), written)


def test_a_missing_copy_is_one_line_and_not_downloaded(tmp_path, empty_home):
    assert_not_found_offline(load_svhn, "SVHN", "svhn", tmp_path / "nowhere", empty_home)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"MATLAB 5.0 MAT-file, damaged", r"SVHN file .*/svhn/train_32x32\.mat cannot be read: "),
        (
            {"X": np.zeros((28, 28, 1, 3), np.uint8), "y": np.ones((3, 1), np.uint8)},
            r"train_32x32\.mat is not an SVHN file: X must be uint8 \[32, 32, 3, N\], "
            r"got uint8 \(28, 28, 1, 3\)",
        ),
        ({"X": np.zeros((32, 32, 3, 3), np.float64), "y": np.ones((3, 1), np.uint8)}, "got float64"),
        (
            {"X": np.zeros((32, 32, 3, 3), np.uint8), "y": np.ones((2, 1), np.uint8)},
            "y must be 3 whole numbers",
        ),
        (
            {"X": np.zeros((32, 32, 3, 3), np.uint8), "y": np.zeros((3, 1), np.uint8)},
            "labels 1 to 10, got 0 to 0",
        ),
        ({"y": np.ones((3, 1), np.uint8)}, "X must be uint8 .*, got none"),
    ],
    ids=["damaged", "shape", "dtype", "labels-count", "labels-range", "no-X"],
)
def test_a_bad_file_is_one_line(tmp_path, empty_home, content, message):
    write_svhn(tmp_path)
    path = tmp_path / "svhn" / FILES["train"]
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        scipy_io.savemat(path, content)
    with pytest.raises(MaskclError, match=message) as err:
        load_svhn(tmp_path, download=False)
    assert "\n" not in str(err.value)


def fake_download(written_by: dict, fail: bool = False):
    """Stands in for torchvision's ``download_url``: writes the test's files (or part of one, then fails)."""

    def download_url(url, root, filename, md5):
        assert url.startswith("http://ufldl.stanford.edu/housenumbers/") and len(md5) == 32
        assert Path(root).name == "svhn"
        if fail:
            Path(root).mkdir(parents=True, exist_ok=True)
            (Path(root) / filename).write_bytes(b"partial")
            raise RuntimeError("File not found or corrupted.")
        written_by.update(write_svhn(Path(root).parent))

    return download_url


def test_a_missing_copy_is_downloaded_into_the_cache(monkeypatch, empty_home):
    written = {}
    monkeypatch.setattr(datasets.utils, "download_url", fake_download(written))
    loaded = load_svhn()
    assert (empty_home / ".cache" / "maskcl" / "svhn" / "test_32x32.mat").is_file()
    assert_loaded(loaded, written)


def test_a_failed_download_is_one_line_and_leaves_no_partial_file(monkeypatch, empty_home):
    monkeypatch.setattr(datasets.utils, "download_url", fake_download({}, fail=True))
    with pytest.raises(
        MaskclError, match=r"^SVHN could not be downloaded from http://ufldl.*: File not found"
    ):
        load_svhn()
    assert list((empty_home / ".cache" / "maskcl" / "svhn").iterdir()) == []
