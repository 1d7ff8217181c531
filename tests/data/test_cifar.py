"""CIFAR-100 read from small files the test writes in CIFAR's own pickle format; Split CIFAR-100."""

import json
import pickle

import numpy as np
import pytest

from maskcl.cli import main
from maskcl.data import load_cifar100, read_cifar_file, split_cifar100
from maskcl.errors import MaskclError


def write_cifar(root, n_train=200, n_test=100, classes=20):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = [i % classes for i in range(n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        batch = {
            b"batch_label": f"{name} batch".encode(),
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
            b"fine_labels": labels,
            b"coarse_labels": [lab // 5 for lab in labels],
            b"data": data,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def test_reads_images_as_rgb_planes(tmp_path):
    root = write_cifar(tmp_path)
    x_train, y_train, x_test, y_test = load_cifar100(root)
    assert x_train.shape == (200, 3, 32, 32) and x_test.shape == (100, 3, 32, 32)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    with open(root / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][7]
    assert np.array_equal(x_train[7, 1].ravel(), raw[1024:2048])  # second plane: green
    assert y_train[:3].tolist() == [0, 1, 2] and y_test.max() == 19


def test_split_cifar100_cuts_classes_in_order(tmp_path):
    scenario = split_cifar100(10, root=write_cifar(tmp_path))
    assert scenario.name == "split-cifar100" and scenario.num_tasks == 10
    assert scenario.input_shape == (3, 32, 32) and scenario.classes_per_task == [2] * 10
    assert scenario.tasks[3].classes == [6, 7]


def test_missing_and_broken_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setattr("maskcl.data.cifar.CACHE", tmp_path / "cache")
    monkeypatch.delenv("MASKCL_DATA", raising=False)
    with pytest.raises(MaskclError, match="CIFAR-100 not found"):
        load_cifar100(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.write_bytes(b"not a pickle")
    with pytest.raises(MaskclError, match="is not a CIFAR-100 file"):
        read_cifar_file(broken)


@pytest.mark.filterwarnings("ignore:HAT. no free unit")  # 1 epoch on 200 random images
@pytest.mark.parametrize("method", ["hat", "hypermask"])
def test_split_cifar100_with_resnet20_from_the_command_line(tmp_path, monkeypatch, capsys, method):
    """The documented CIFAR-100 configuration, on self-made files: 10 tasks, ResNet-20."""
    monkeypatch.setenv("MASKCL_DATA", str(write_cifar(tmp_path / "data")))
    out = tmp_path / "out"
    args = ["run", "--benchmark", "split-cifar100", "--arch", "resnet20", "--method", method, "--lr", "1e-3"]
    assert main([*args, "--optimizer", "adam", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["acc_matrix"]) == 10 and results["config"]["arch"] == "resnet20"
    if method == "hat":
        assert results["bwt"] == 0.0
