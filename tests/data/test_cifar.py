"""CIFAR-100 read from small files the test writes in CIFAR's own pickle format; Split CIFAR-100."""

import functools
import http.server
import io
import json
import os
import pickle
import pickletools
import shlex
import struct
import subprocess
import tarfile
import threading
import time
from pathlib import Path

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
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
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


# --- Poisoned and malformed files: the reader unpickles only what a numpy array needs ---------------

CIFAR_GLOBALS = {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}
"""The globals a published CIFAR-100 file names (Python 2.7 cPickle, protocol 2, numpy 1.x)."""


class Py2Pickler(pickle._Pickler):
    """Pickles the way Python 2's cPickle did: every ``str`` and ``bytes`` is a Python-2 ``str`` (opcodes
    SHORT_BINSTRING/BINSTRING, read back as bytes under ``encoding="bytes"``), none goes through
    ``_codecs.encode`` as Python 3 writes bytes at protocol 2."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_py2_str


def py2_pickle(obj, numpy_module="numpy.core.multiarray"):
    """``obj`` pickled like the published files (protocol 2), naming ``_reconstruct`` in ``numpy_module``."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", f"c{numpy_module}\n".encode())


def globals_named(raw):
    """``module.name`` of every GLOBAL opcode of a protocol-2 pickle."""
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}


def cifar_batch(n, seed=0, classes=100):
    rng = np.random.default_rng(seed)
    labels = [int(i) for i in rng.integers(0, classes, n)]
    return {
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        b"batch_label": b"training batch 1 of 1",
        b"fine_labels": labels,
        b"coarse_labels": [lab // 5 for lab in labels],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
    }


def write_files(root, train, test=None):
    """Put the pickles ``train`` and ``test`` (bytes) in ``root/cifar-100-python/``; returns ``root``."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train").write_bytes(train)
    (folder / "test").write_bytes(test if test is not None else py2_pickle(cifar_batch(10, seed=1)))
    return root


def test_a_file_written_like_the_published_ones_loads_exactly(tmp_path):
    train, test = cifar_batch(30), cifar_batch(12, seed=1)
    raw = py2_pickle(train)
    assert raw[:2] == b"\x80\x02" and globals_named(raw) == CIFAR_GLOBALS
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "SHORT_BINSTRING" in ops and "BINSTRING" in ops and not ops & {"BINUNICODE", "BINBYTES"}
    x_train, y_train, x_test, y_test = load_cifar100(write_files(tmp_path, raw, py2_pickle(test)))
    assert np.array_equal(x_train.reshape(30, 3072), train[b"data"]) and x_train.dtype == np.uint8
    assert y_train.tolist() == train[b"fine_labels"] and y_train.dtype == np.int64
    assert np.array_equal(x_test.reshape(12, 3072), test[b"data"]) and y_test.tolist() == test[b"fine_labels"]


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_numpy_2_naming_loads_too(tmp_path, protocol):
    batch = cifar_batch(8)
    if protocol == 2:
        raw = py2_pickle(batch, numpy_module="numpy._core.multiarray")
        assert "numpy._core.multiarray._reconstruct" in globals_named(raw)
    else:
        raw = pickle.dumps(batch, protocol=protocol)  # what today's Python and numpy write
    path = write_files(tmp_path, raw) / "cifar-100-python" / "train"
    x, y = read_cifar_file(path)
    assert np.array_equal(x.reshape(8, 3072), batch[b"data"]) and y.tolist() == batch[b"fine_labels"]


class Payload:
    """Unpickles into ``call(*args)``: what a poisoned data file would run."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def payloads(marker):
    """``(global the pickle names, object to pickle)``, each of which would create ``marker``."""
    code = f"open({str(marker)!r}, 'w').close()"
    return [
        ("posix.system", Payload(os.system, f"touch {shlex.quote(str(marker))}")),
        ("builtins.eval", Payload(eval, code)),
        ("builtins.exec", Payload(exec, code)),
        ("subprocess.run", Payload(subprocess.run, ["touch", str(marker)])),
        ("subprocess.Popen", Payload(subprocess.Popen, ["touch", str(marker)])),
    ]


def poisoned_pickles(marker):
    """``(id, global named, raw pickle)``: the payload alone, and hidden in an otherwise valid file, at
    protocol 0 (``cos\\nsystem``, as hand-written exploits read), 2 (Python 2's way) and the default."""
    cases = []
    for name, payload in payloads(marker):
        cases.append((f"{name}-alone", name, pickle.dumps(payload)))
        hidden = {**cifar_batch(4), b"batch_label": payload}
        raw = py2_pickle(hidden)
        (py2_name,) = globals_named(raw) - CIFAR_GLOBALS  # protocol 2 writes Python 2's name: __builtin__...
        assert py2_name.rsplit(".", 1)[1] == name.rsplit(".", 1)[1]
        cases.append((f"{name}-in-a-valid-file", py2_name, raw))
    command = f"touch {shlex.quote(str(marker))}".encode()
    cases.append(("os.system-protocol-0", "os.system", b"cos\nsystem\n(V" + command + b"\ntR."))
    return cases


POISON_IDS = [case[0] for case in poisoned_pickles(Path("m"))]


def assert_one_line_refusal(err, path, name):
    message = str(err)
    assert "\n" not in message and str(path) in message
    assert f"is not a CIFAR-100 file: it asks to load {name}, which a CIFAR file never needs" in message


@pytest.mark.parametrize("case", POISON_IDS)
def test_a_poisoned_file_is_refused_before_its_payload_runs(tmp_path, case):
    marker = tmp_path / "MARKER"
    _, name, raw = next(c for c in poisoned_pickles(marker) if c[0] == case)
    root = write_files(tmp_path / "data", raw)
    with pytest.raises(MaskclError) as err:
        load_cifar100(root)
    time.sleep(0.2)  # a Popen would have started touch in the background
    assert not marker.exists()
    assert_one_line_refusal(err.value, root / "cifar-100-python" / "train", name)


@pytest.mark.parametrize(
    "name",
    [
        "numpy.load",
        "numpy.frombuffer",
        "numpy._core.numeric._frombuffer",
        "_codecs.encode",
        "copyreg._reconstructor",
        "numpy.core.multiarray.scalar",
        "builtins.getattr",
        "numpy.ndarray.tofile",
    ],
)
def test_every_other_global_is_refused_by_name(tmp_path, name):
    module, attr = name.rsplit(".", 1)
    raw = b"\x80\x02c" + f"{module}\n{attr}\n".encode() + b"."
    path = tmp_path / "train"
    path.write_bytes(raw)
    with pytest.raises(MaskclError) as err:
        read_cifar_file(path)
    assert_one_line_refusal(err.value, path, name)


def test_a_global_name_with_a_newline_still_gives_one_line(tmp_path):
    path = tmp_path / "train"
    name = b"system\nrm -rf"
    path.write_bytes(
        b"\x80\x04\x8c\x02os\x8c" + bytes([len(name)]) + name + b"\x93."
    )  # STACK_GLOBAL: any text
    with pytest.raises(MaskclError, match=r"asks to load 'os\.system\\nrm -rf'") as err:
        read_cifar_file(path)
    assert "\n" not in str(err.value)


def test_the_command_line_refuses_a_poisoned_data_folder(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "MARKER"
    _, name, raw = next(c for c in poisoned_pickles(marker) if c[0] == "posix.system-in-a-valid-file")
    monkeypatch.setenv("MASKCL_DATA", str(write_files(tmp_path / "data", raw)))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    args = ["run", "--benchmark", "split-cifar100", "--arch", "resnet20", "--epochs", "1", "--quiet"]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("maskcl: error: ")
    assert f"it asks to load {name}, which a CIFAR file never needs" in err
    assert not marker.exists() and not out.exists()


def object_array(n):
    data = np.empty((n, 3072), dtype=object)
    data[:] = 7
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({b"data": object_array(4)}, "b'data' must be a uint8 array [N, 3072], got object array (4, 3072)"),
        ({b"data": np.zeros((4, 3072), np.float32)}, "got float32 array (4, 3072)"),
        ({b"data": np.zeros((4, 3072), np.int64)}, "got int64 array (4, 3072)"),
        ({b"data": np.zeros((4, 3, 32, 32), np.uint8)}, "got uint8 array (4, 3, 32, 32)"),
        ({b"data": np.zeros((4, 1024), np.uint8)}, "got uint8 array (4, 1024)"),
        ({b"data": [[0] * 3072] * 4}, "b'data' must be a uint8 array [N, 3072], got list"),
        ({b"fine_labels": [0, 1, 100, 3]}, "b'fine_labels' must hold ints in 0..99, got 100"),
        ({b"fine_labels": [0, -1, 2, 3]}, "b'fine_labels' must hold ints in 0..99, got -1"),
        ({b"fine_labels": [0, 1.0, 2, 3]}, "b'fine_labels' must hold ints in 0..99, got 1.0"),
        ({b"fine_labels": [0, True, 2, 3]}, "b'fine_labels' must hold ints in 0..99, got True"),
        (
            {b"fine_labels": [0, 1, 2]},
            "b'fine_labels' must be a list of 4 ints (one per image), got 3 labels",
        ),
        (
            {b"fine_labels": np.arange(4)},
            "b'fine_labels' must be a list of 4 ints (one per image), got a ndarray",
        ),
        ({b"fine_labels": None}, "got a NoneType"),
        ({b"data": None}, "b'data' must be a uint8 array [N, 3072], got NoneType"),
    ],
    ids=lambda v: (
        None if isinstance(v, str) else "-".join(f"{k.decode()}={type(x).__name__}" for k, x in v.items())
    ),
)
def test_a_wrong_structure_is_refused_in_one_line(tmp_path, change, message):
    path = tmp_path / "train"
    path.write_bytes(py2_pickle({**cifar_batch(4), **change}))
    with pytest.raises(MaskclError) as err:
        read_cifar_file(path)
    assert f"{path} is not a CIFAR-100 file: " in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2, 3], "it holds a list, not a dict"),
        (np.zeros((4, 3072), np.uint8), "it holds a ndarray, not a dict"),
        ({b"fine_labels": [1]}, "its dict has no b'data'"),
        ({"data": np.zeros((1, 3072), np.uint8), "fine_labels": [1]}, "its dict has no b'data'"),
        ({b"data": np.zeros((1, 3072), np.uint8)}, "its dict has no b'fine_labels'"),
    ],
    ids=["list", "array", "no-data", "str-keys", "no-labels"],
)
def test_anything_but_a_cifar_dict_is_refused_in_one_line(tmp_path, obj, message):
    path = tmp_path / "train"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(MaskclError) as err:
        read_cifar_file(path)
    assert str(err.value) == f"{path} is not a CIFAR-100 file: {message}"


# --- The download: torchvision's downloader into ~/.cache/maskcl, then the same restricted reader ----
# torchvision 0.29's download_url cannot read file:// URLs (it asks the response for .length, which only
# an HTTP response has), so the tests serve their archives over HTTP on 127.0.0.1.


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """``(folder, url of folder)``: an HTTP server on 127.0.0.1 serving an empty folder."""
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def cifar_archive(path, train, test):
    """A ``.tar.gz`` laid out like the official one: ``cifar-100-python/{train,test}``."""
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in (("train", train), ("test", test)):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_download_fetches_the_archive_into_the_cache_and_reads_it(monkeypatch, empty_home, mirror):
    folder, url = mirror
    train, test = cifar_batch(20), cifar_batch(6, seed=1)
    cifar_archive(folder / "mirror.tar.gz", py2_pickle(train), py2_pickle(test))
    monkeypatch.setenv("MASKCL_CIFAR100_URL", f"{url}/mirror.tar.gz")
    x_train, y_train, x_test, y_test = load_cifar100(download=True)
    assert np.array_equal(x_train.reshape(20, 3072), train[b"data"])
    assert np.array_equal(x_test.reshape(6, 3072), test[b"data"])
    assert y_train.tolist() == train[b"fine_labels"] and y_test.tolist() == test[b"fine_labels"]
    assert (empty_home / ".cache" / "maskcl" / "cifar-100-python" / "train").is_file()
    (folder / "mirror.tar.gz").unlink()
    assert load_cifar100(download=True)[1].tolist() == train[b"fine_labels"]  # from the cache now


def test_a_downloaded_poisoned_file_is_refused_too(tmp_path, monkeypatch, empty_home, mirror):
    folder, url = mirror
    marker = tmp_path / "MARKER"
    _, name, raw = next(c for c in poisoned_pickles(marker) if c[0] == "builtins.exec-in-a-valid-file")
    cifar_archive(folder / "evil.tar.gz", raw, py2_pickle(cifar_batch(3)))
    monkeypatch.setenv("MASKCL_CIFAR100_URL", f"{url}/evil.tar.gz")
    with pytest.raises(MaskclError) as err:
        load_cifar100(download=True)
    assert not marker.exists()
    assert_one_line_refusal(err.value, empty_home / ".cache" / "maskcl" / "cifar-100-python" / "train", name)


@pytest.mark.parametrize("archive", ["missing", "not-a-tar", "empty-tar"])
def test_a_failed_download_is_one_line(monkeypatch, empty_home, mirror, archive):
    folder, url = mirror
    if archive == "not-a-tar":
        (folder / "mirror.tar.gz").write_bytes(b"<html>404</html>")
    elif archive == "empty-tar":
        tarfile.open(folder / "mirror.tar.gz", "w:gz").close()
    monkeypatch.setenv("MASKCL_CIFAR100_URL", f"{url}/mirror.tar.gz")
    with pytest.raises(MaskclError) as err:
        load_cifar100(download=True)
    message = str(err.value)
    assert "\n" not in message and f"{url}/mirror.tar.gz" in message
    if archive == "empty-tar":
        assert message.startswith("the archive from") and "holds no cifar-100-python/train" in message
    else:
        assert message.startswith("CIFAR-100 could not be downloaded from")
        assert not (empty_home / ".cache" / "maskcl" / "cifar-100-python.tar.gz").exists()


def test_a_url_torchvision_cannot_fetch_is_one_line(tmp_path, monkeypatch, empty_home):
    path = cifar_archive(tmp_path / "local.tar.gz", py2_pickle(cifar_batch(3)), py2_pickle(cifar_batch(3)))
    monkeypatch.setenv("MASKCL_CIFAR100_URL", path.as_uri())
    with pytest.raises(MaskclError) as err:
        load_cifar100(download=True)
    assert str(err.value) == (
        f"MASKCL_CIFAR100_URL must be an http(s) URL, got {path.as_uri()}; to use a copy on disk,"
        " set MASKCL_DATA to the folder holding cifar-100-python/"
    )


def test_the_official_url_is_md5_checked(monkeypatch, empty_home):
    from maskcl.data import cifar

    calls = []
    monkeypatch.setattr("torchvision.datasets.utils.download_url", lambda *a, **k: calls.append((a, k)))
    monkeypatch.delenv("MASKCL_CIFAR100_URL", raising=False)
    with pytest.raises(MaskclError, match="could not be downloaded"):  # the stub wrote no archive
        load_cifar100(download=True)
    (url, folder), options = calls[0]
    assert url == cifar.CIFAR100.url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert options["md5"] == "eb9058c3a382ffc7106e4002c42a8d85"
    assert folder == str(empty_home / ".cache" / "maskcl")


def test_an_archive_reaching_outside_the_cache_is_refused(tmp_path, monkeypatch, empty_home, mirror):
    """A mirror's archive whose member climbs out of the cache folder writes nothing there."""
    folder, url = mirror
    with tarfile.open(folder / "evil.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../../outside")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setenv("MASKCL_CIFAR100_URL", f"{url}/evil.tar.gz")
    with pytest.raises(MaskclError, match="could not be downloaded") as err:
        load_cifar100(download=True)
    assert "\n" not in str(err.value)
    assert not (empty_home / "outside").exists() and not (empty_home.parent / "outside").exists()


def write_cifar10(root, per_file=40):
    """CIFAR-10's layout: five training batches and a test batch, b"labels" over 10 classes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in rng.integers(0, 10, per_file)]
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, f)
        written[name] = (data, labels)
    return written


def test_cifar10_concatenates_its_five_training_batches_and_is_split_into_5_tasks(tmp_path, monkeypatch):
    from maskcl.data import BENCHMARKS, load_cifar10

    written = write_cifar10(tmp_path)
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path))
    x_train, y_train, x_test, y_test = load_cifar10()
    batches = [written[f"data_batch_{i}"] for i in range(1, 6)]
    assert np.array_equal(x_train.reshape(200, 3072), np.concatenate([d for d, _ in batches]))
    assert y_train.tolist() == [label for _, labels in batches for label in labels]
    assert np.array_equal(x_test.reshape(40, 3072), written["test_batch"][0])
    assert x_test.shape[1:] == (3, 32, 32) and y_test.tolist() == written["test_batch"][1]
    scenario = BENCHMARKS["split-cifar10"][0](5)
    assert [t.classes for t in scenario] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert scenario.name == "split-cifar10" and scenario.input_shape == (3, 32, 32)


def test_a_cifar10_file_with_cifar100_labels_is_refused_in_one_line(tmp_path, monkeypatch):
    from maskcl.data import load_cifar10

    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump({b"fine_labels": [0], b"data": np.zeros((1, 3072), np.uint8)}, f)
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path))
    with pytest.raises(MaskclError, match=r"data_batch_3 is not a CIFAR-10 file: its dict has no b'labels'"):
        load_cifar10()
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(MaskclError, match="CIFAR-10 not found in"):
        load_cifar10()
