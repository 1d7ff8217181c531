"""Weights & Biases, offline (what ``wandb sync`` uploads): the records W&B itself wrote in the run folder
hold the run's config, per-epoch metrics and summary, and a stopped run continues under the same id."""

import json
import struct

import pytest
from conftest import SMALL_RUN
from test_config import cli
from test_loggers import csv_rows
from test_runs import _StopAfter

from maskcl.runs import RunFolder
from maskcl.train import Interrupted, RunConfig, run

pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2

FAST = [*SMALL_RUN, "--quiet"]
BLOCK = 32768


def records(path):
    """The records of a ``.wandb`` file: a 7-byte header, then 32 KiB blocks of records, each in pieces
    with a 7-byte header (checksum, length, kind: 1 whole, 2 first, 3 middle, 4 last)."""
    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7])[0] == b":W&B"
    position, pieces = 7, b""
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (length == 0 and kind == 0):  # the block's padding
            position += left
            continue
        pieces += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def key_of(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B writes some keys as a one-part nested key


def read_runs(out):
    """``[(run id, config, history points {key: [(step, value)]}, summary)]`` of each offline session."""
    sessions = []
    for path in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        config, points, summary, run_id = {}, {}, {}, None
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id = record.run.run_id
                config |= {item.key: json.loads(item.value_json) for item in record.run.config.update}
            elif kind == "history":
                items = {key_of(item): json.loads(item.value_json) for item in record.history.item}
                for key, value in items.items():
                    if key.startswith("task_"):
                        points.setdefault(key, []).append((items["_step"], value))
            elif kind == "summary":
                for item in record.summary.update:
                    summary[key_of(item)] = json.loads(item.value_json)
        sessions.append((run_id, config, points, summary))
    return sessions


def expected(rows):
    points = {}
    for task, epoch, name, value in rows:
        points.setdefault(f"task_{task}/{name}", []).append((task * 1000 + epoch, value))
    return points


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "maskcl-tests")


def test_a_run_is_one_offline_wandb_run(tmp_path, data, capsys):
    out = tmp_path / "run"
    code, _, err = cli(["run", "--data", data, *FAST, "--loggers", "wandb", "--out", str(out)], capsys)
    assert code == 0, err
    [(run_id, config, points, summary)] = read_runs(out)
    assert json.loads((out / "run.json").read_text())["loggers"] == {"wandb": {"run_id": run_id}}
    saved = json.loads((out / "config.json").read_text())
    assert {key: config[key] for key in saved} == saved
    rows = csv_rows(out)
    assert {key: sorted(v) for key, v in points.items()} == {
        key: sorted(v) for key, v in expected(rows).items()
    }
    results = json.loads((out / "results.json").read_text())
    assert summary["acc"] == pytest.approx(results["acc"]) and summary["bwt"] == pytest.approx(results["bwt"])


def test_a_stopped_run_continues_under_its_id(tmp_path, data):
    config = RunConfig(data=data, num_tasks=2, epochs=3, batch_size=16, hidden=(32, 32))
    _StopAfter.steps = 130
    with pytest.raises(Interrupted):
        run(config, log=lambda _: None, folder=_StopAfter(tmp_path / "run", 0, loggers=["wandb"]))
    run(config, log=lambda _: None, folder=RunFolder(tmp_path / "run", mode="resume"))
    sessions = read_runs(tmp_path / "run")
    assert len(sessions) == 2 and sessions[0][0] == sessions[1][0]
    logged = {}
    for _, _, points, _ in sessions:
        for key, values in points.items():
            logged.setdefault(key, set()).update(values)
    assert {key: sorted(v) for key, v in logged.items()} == {
        k: sorted(v) for k, v in expected(csv_rows(tmp_path / "run")).items()
    }
    assert "acc" in sessions[1][3]
