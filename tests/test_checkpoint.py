"""Checkpoint files: exact round trips, one-line errors for anything that is not a maskcl checkpoint
(nothing in a file is ever executed), and atomic writes that survive a kill or a full disk."""

import contextlib
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from maskcl.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from maskcl.errors import MaskclError

REPO = Path(__file__).resolve().parents[1]


def assert_same(expected, actual, where="state"):
    """``actual`` equals ``expected``: tensors by ``torch.equal`` with the same dtype and shape, dict keys
    with their types, floats exactly (NaN as NaN); tuples come back as lists (JSON has no tuples)."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), where
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert torch.equal(actual, expected.cpu()), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert list(actual) == list(expected), f"{where}: keys {list(actual)} != {list(expected)}"
        for (k, v), ka in zip(expected.items(), actual):
            assert type(ka) is type(k), f"{where}: key {k!r} came back as {ka!r}"
            assert_same(v, actual[k], f"{where}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (v, a) in enumerate(zip(expected, actual)):
            assert_same(v, a, f"{where}[{i}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(actual, float) and math.isnan(actual), where
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"
        if isinstance(expected, float):
            assert math.copysign(1, actual) == math.copysign(1, expected), where


def _trained_adam(steps=3):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=0.001)
    for _ in range(steps):
        _adam_step(model, optimizer)
    return model, optimizer


def _adam_step(model, optimizer):
    generator = torch.Generator().manual_seed(7)
    x, y = torch.randn(8, 5, generator=generator), torch.randint(0, 3, (8,), generator=generator)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def _nested_state():
    model, optimizer = _trained_adam()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "mixed": {"name": "a", 3: torch.arange(4), 0: "zero", -1: None, "t": torch.tensor(True)},
        "by_task": {
            0: {"mask": torch.tensor([True, False, True])},
            1: {"mask": torch.zeros(3, dtype=torch.bool)},
        },
        "tensors": [
            torch.randn(3, 4),
            torch.arange(6, dtype=torch.int64).reshape(2, 3),
            torch.tensor([0, 255, 7], dtype=torch.uint8),
            torch.tensor(2.5),  # 0-dim
            torch.tensor(-3, dtype=torch.int64),
            torch.empty(0, 24),
            torch.randn(4, 3).t(),  # not contiguous
            torch.arange(10.0)[2:5],  # a view into a larger storage
        ],
        "numbers": [0.1, -0.0, 1e-300, 1.7976931348623157e308, float("inf"), float("nan"), 2**62, -5],
        "flags": [True, False, None],
        "text": ["", "ünïcödé ✓", 'quotes " and \\ and \n newline'],
        "nested": [[], {}, [[{"deep": [torch.ones(2, 2, dtype=torch.float64)]}]]],
        "__dict__": "a key that looks like the format's markers",
        "rng": torch.get_rng_state(),
    }


def test_nested_state_round_trips_exactly(tmp_path):
    state = _nested_state()
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, state, kind="training")
    loaded = load_checkpoint(path, kind="training")
    assert_same(state, loaded)
    assert 3 in loaded["mixed"] and "3" not in loaded["mixed"]
    assert loaded["tensors"][5].shape == (0, 24)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]  # no temporary left


def test_restored_adam_continues_exactly_like_the_original(tmp_path):
    model, optimizer = _trained_adam()
    save_checkpoint(tmp_path / "c.safetensors", {"m": model.state_dict(), "o": optimizer.state_dict()}, "x")
    state = load_checkpoint(tmp_path / "c.safetensors", "x")
    twin = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=1.0)
    twin.load_state_dict(state["m"])
    twin_optimizer.load_state_dict(state["o"])
    assert list(twin_optimizer.param_groups[0]["betas"]) == [0.8, 0.99]
    for _ in range(3):
        _adam_step(model, optimizer)
        _adam_step(twin, twin_optimizer)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "state",
    [
        {"m": {1: torch.zeros(2), "1": torch.ones(2)}},
        {"a.b": torch.zeros(2), "a": {"b": torch.ones(2)}},
        {"a": [torch.zeros(2)], "a.0": torch.ones(2)},
    ],
    ids=["int-and-str-key", "dotted-key", "list-index"],
)
def test_keys_that_join_to_the_same_name_keep_their_own_tensors(tmp_path, state):
    save_checkpoint(tmp_path / "c.safetensors", state, kind="training")
    assert_same(state, load_checkpoint(tmp_path / "c.safetensors", kind="training"))


def test_unstorable_values_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match=r"state\.bad"):
        save_checkpoint(tmp_path / "c.safetensors", {"bad": object()}, kind="training")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ bad files
def _real_checkpoint(path: Path, kind="training") -> bytes:
    save_checkpoint(path, {"x": torch.arange(100, dtype=torch.float32), "n": 3}, kind=kind)
    return path.read_bytes()


def assert_refused(path: Path, kind="training", match=""):
    with pytest.raises(MaskclError) as caught:
        load_checkpoint(path, kind=kind)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message, message
    assert match in message, message
    return message


@pytest.mark.parametrize("where", ["size", "start", "middle", "end"])
def test_a_corrupted_header_is_a_one_line_error(tmp_path, where):
    path = tmp_path / "c.safetensors"
    data = bytearray(_real_checkpoint(path))
    size = int.from_bytes(data[:8], "little")
    at = {"size": 3, "start": 8, "middle": 8 + size // 2, "end": 8 + size - 1}[where]
    for i in range(at, at + 4):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_refused(path)


def test_a_truncated_file_is_a_one_line_error(tmp_path):
    full = _real_checkpoint(tmp_path / "full.safetensors")
    for length in sorted({0, 7, 8, 9, len(full) // 2, len(full) - 1}):
        path = tmp_path / f"cut-{length}.safetensors"
        path.write_bytes(full[:length])
        assert_refused(path)


class _CreatesFile:
    """Unpickling this object creates ``marker``: a stand-in for code that a pickle runs when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_refused_and_never_executed(tmp_path):
    # the payload is live: plain unpickling does create its marker file
    probe = tmp_path / "probe-marker"
    pickle.loads(pickle.dumps(_CreatesFile(probe))).close()
    assert probe.exists()

    marker = tmp_path / "executed"
    plain = tmp_path / "plain.pt"
    with open(plain, "wb") as file:
        pickle.dump({"state": _CreatesFile(marker)}, file)
    zipped = tmp_path / "torch-save.pt"
    torch.save({"state": _CreatesFile(marker), "x": torch.ones(3)}, zipped)
    for path in (plain, zipped):
        assert_refused(path)
        assert not marker.exists()


def test_foreign_files_are_one_line_errors(tmp_path):
    files = {
        "random.bin": random.Random(0).randbytes(5000),
        "config.json": json.dumps({"epochs": 3, "hidden": [4, 4]}).encode(),
        "empty-json.json": b"{}",
        "text.txt": b"hello\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert_refused(tmp_path / name)
    bare = tmp_path / "bare.safetensors"
    save_file({"weight": torch.ones(2, 2)}, str(bare))
    assert_refused(bare, match="not a maskcl checkpoint")
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.ones(2, 2)}, str(other), metadata={"format": "pt"})
    assert_refused(other, match="not a maskcl checkpoint")
    not_ours = tmp_path / "not-ours.safetensors"
    save_file({"w": torch.ones(1)}, str(not_ours), metadata={"maskcl": json.dumps({"format": "other"})})
    assert_refused(not_ours, match="not a maskcl checkpoint")
    assert_refused(tmp_path / "missing.safetensors", match="cannot read")
    assert_refused(tmp_path, match="cannot read")  # a folder


def _rewrite_header(path: Path, change) -> None:
    """Rewrite the maskcl header of the checkpoint at ``path`` with ``change(header)``, via safetensors."""
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
        tensors = {k: file.get_tensor(k) for k in file.keys()}  # noqa: SIM118 (safe_open is no dict)
    header = json.loads(metadata["maskcl"])
    change(header)
    save_file(tensors, str(path), metadata={**metadata, "maskcl": json.dumps(header)})


def test_a_newer_format_is_refused_with_an_upgrade_hint(tmp_path):
    path = tmp_path / "c.safetensors"
    _real_checkpoint(path)
    _rewrite_header(path, lambda header: header.update(version=FORMAT_VERSION))
    assert load_checkpoint(path, kind="training")["n"] == 3  # the rewrite itself keeps a loadable file
    _rewrite_header(path, lambda header: header.update(version=99))
    message = assert_refused(path, match="newer")
    assert "99" in message and "upgrade" in message


def test_a_version_that_is_not_a_number_is_a_one_line_error(tmp_path):
    path = tmp_path / "c.safetensors"
    _real_checkpoint(path)
    _rewrite_header(path, lambda header: header.update(version="2"))
    assert_refused(path)


def test_a_header_pointing_at_a_missing_tensor_is_a_one_line_error(tmp_path):
    path = tmp_path / "c.safetensors"
    _real_checkpoint(path)
    _rewrite_header(path, lambda header: header["state"]["x"].update(__tensor__="state.nowhere"))
    assert_refused(path, match="damaged")


def test_a_checkpoint_of_the_wrong_kind_is_refused(tmp_path):
    path = tmp_path / "task-0.safetensors"
    _real_checkpoint(path, kind="model")
    assert load_checkpoint(path, kind="model")["n"] == 3
    message = assert_refused(path, kind="training", match="'model'")
    assert "'training'" in message


# --------------------------------------------------------------------------------------- atomic writes
_SAVER = r"""
import os, sys
import torch
torch.set_num_threads(1)  # no thread pool before the forks
from maskcl.checkpoint import save_checkpoint
path, numel = sys.argv[1], int(sys.argv[2])
values = [torch.full((numel,), 1.0), torch.full((numel,), 2.0)]
child = None
for line in sys.stdin:
    command = line.strip()
    if command == "fork":  # a child that saves the two states in turn into path until it is killed
        child = os.fork()
        if child == 0:
            try:
                i = 0
                while True:
                    save_checkpoint(path, {"value": i % 2 + 1, "x": values[i % 2]}, kind="training")
                    i += 1
            finally:
                os._exit(1)
        print(child, flush=True)
    elif command == "reap":
        _, status = os.waitpid(child, 0)
        print(os.WIFSIGNALED(status) and os.WTERMSIG(status), flush=True)
    else:
        break
"""


def test_a_kill_during_saves_always_leaves_a_complete_checkpoint(tmp_path):
    """SIGKILL a process that saves 20 MB checkpoints in a loop at random moments: the file is always
    one of the two complete states. The saver imports torch once and forks a fresh child per kill."""
    path = tmp_path / "checkpoint.safetensors"
    numel = 5_000_000  # 20 MB of float32
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    saver = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(path), str(numel)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    rng = random.Random(20240607)
    kills = mid_write = 0
    child = None
    try:
        # at least 8 kills, and on until 3 of them hit a write in progress (about 1 in 3 does)
        while kills < 8 or (mid_write < 3 and kills < 40):
            kills += 1
            saver.stdin.write("fork\n")
            saver.stdin.flush()
            child = int(saver.stdout.readline())
            deadline = time.monotonic() + 60
            while not path.exists():
                assert time.monotonic() < deadline, "the saver never wrote a checkpoint"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.25))
            os.kill(child, signal.SIGKILL)
            saver.stdin.write("reap\n")
            saver.stdin.flush()
            assert int(saver.stdout.readline()) == signal.SIGKILL
            state = load_checkpoint(path, kind="training")
            assert state["value"] in (1, 2)
            assert torch.equal(state["x"], torch.full((numel,), float(state["value"])))
            strays = [p for p in tmp_path.iterdir() if p != path]
            assert all(p.name.startswith(".checkpoint.safetensors.") for p in strays), strays
            mid_write += bool(strays)
            for stray in strays:  # a temporary cut short by the kill: junk, not a checkpoint
                stray.unlink()
    finally:
        if child is not None:  # a test that failed midway leaves no saver running
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        saver.stdin.close()
        saver.wait(timeout=30)
    assert mid_write >= 3, f"only {mid_write} of {kills} kills hit a write in progress"


_FULL_DISK = r"""
import resource, signal, sys
import torch
from maskcl.checkpoint import save_checkpoint
from maskcl.errors import MaskclError
path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # no file may grow past 1 MiB
save_checkpoint(path, {"x": torch.arange(10)}, kind="training")
try:
    save_checkpoint(path, {"x": torch.zeros(1 << 20)}, kind="training")  # 4 MiB
except MaskclError as err:
    print("MaskclError:", err)
else:
    print("saved")
"""


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("MaskclError:") and "\n" not in out, out
    assert str(path) in out and "File too large" in out
    assert torch.equal(load_checkpoint(path, kind="training")["x"], torch.arange(10))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_tensor_digest_tells_apart_any_bit_dtype_or_shape():
    from maskcl.checkpoint import tensor_digest

    x = torch.zeros(6)
    digests = {tensor_digest(t) for t in (x, -x, x.view(2, 3), x.int(), x.double(), x[:5], x.bool())}
    assert len(digests) == 7  # -0.0 differs from 0.0 in one bit
    assert tensor_digest(torch.arange(6.0).view(2, 3).t()) == tensor_digest(
        torch.arange(6.0).view(2, 3).t().clone()
    )


def test_check_like_names_the_first_difference():
    from maskcl.checkpoint import check_like

    expected = {"a": torch.zeros(2), "b": [1, 2.0, None], "c": {"d": True}}
    check_like({"a": torch.ones(2), "b": [5, 3, "anything"], "c": {"d": False}}, expected, "state")
    for saved, where in [
        ({**expected, "a": torch.zeros(2, dtype=torch.int32)}, "state.a is torch.int32"),
        ({**expected, "a": torch.zeros(3)}, r"state.a is torch.float32 \(3,\)"),
        ({**expected, "b": [1, 2.0]}, "state.b should be a list of 3"),
        ({**expected, "b": ["x", 2.0, None]}, "state.b.0 should be of type int"),
        ({**expected, "c": {"d": 1}}, "state.c.d should be of type bool"),
        ({"a": torch.zeros(2)}, "state does not hold the expected entries"),
    ]:
        with pytest.raises(MaskclError, match=where):
            check_like(saved, expected, "state")


def test_json_nested_too_deeply_is_one_line(tmp_path):
    from maskcl.checkpoint import parse_json

    with pytest.raises(MaskclError, match=r"x\.json is nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000, "x.json")
    assert parse_json('{"a": [1]}', "x.json") == {"a": [1]}
