"""The logger protocol with real runs: a logger written in this test gets every row of metrics.csv through
its hooks, its state comes back on resume, and the errors of unknown, missing and failing loggers."""

import json
from typing import ClassVar

import pytest
from conftest import SMALL_RUN
from test_config import assert_one_line_error, cli
from test_runs import _StopAfter

from maskcl.loggers import DEFAULT_LOGGERS, Logger, check_loggers, list_loggers, register_logger
from maskcl.runs import RunFolder
from maskcl.train import Interrupted, RunConfig, run

FAST = [*SMALL_RUN, "--quiet"]


def csv_rows(out):
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    return [(int(t), int(e), name, float(v)) for t, e, name, v in rows]


@register_logger("recorder")
class Recorder(Logger):
    """Keeps what it receives in ``sessions`` (one list of events per session) and counts its sessions."""

    sessions: ClassVar[list] = []

    def start(self, config, rows, state):
        self.events = [("start", config["method"], len(rows), state)]
        Recorder.sessions.append(self.events)
        self.count = (state or {}).get("count", 0) + 1
        super().start(config, rows, state)

    def log(self, task, epoch, values):
        self.events += [("row", task, epoch, name, value) for name, value in values.items()]

    def finish(self, results):
        self.events.append(("finish", results["acc"]))

    def close(self, status):
        self.events.append(("close", status))

    def state_dict(self):
        return {"count": self.count}


@register_logger("unreachable")
class Unreachable(Logger):
    def start(self, config, rows, state):
        raise ConnectionError("the tracking server at http://nowhere:5000 does not answer\nretried 3 times")


@register_logger("uninstalled")
class Uninstalled(Logger):
    requires = "maskcl_no_such_module"


def rows_of(events):
    return [event[1:] for event in events if event[0] == "row"]


def test_the_builtin_loggers_are_registered():
    assert {"mlflow", "tensorboard", "wandb"} <= set(list_loggers())
    assert DEFAULT_LOGGERS == ("tensorboard",)


def test_a_logger_gets_every_row_and_the_results(tmp_path, data, capsys):
    Recorder.sessions = []
    out = tmp_path / "run"
    code, _, err = cli(["run", "--data", data, *FAST, "--loggers", "recorder", "--out", str(out)], capsys)
    assert code == 0, err
    [events] = Recorder.sessions
    assert events[0] == ("start", "hat", 0, None)
    assert rows_of(events) == csv_rows(out)
    results = json.loads((out / "results.json").read_text())
    assert events[-1] == ("finish", results["acc"])
    assert json.loads((out / "run.json").read_text())["loggers"] == {"recorder": {"count": 1}}
    assert not (out / "tensorboard").exists()  # --loggers names the run's loggers: not the default too


def test_a_resumed_run_gives_the_logger_its_state_and_the_rows_up_to_the_checkpoint(tmp_path, data):
    Recorder.sessions = []
    config = RunConfig(data=data, num_tasks=2, epochs=3, batch_size=16, hidden=(32, 32))
    _StopAfter.steps = 130  # in task 1 (100 steps a task), after its first epoch's checkpoint
    with pytest.raises(Interrupted):
        run(config, log=lambda _: None, folder=_StopAfter(tmp_path / "run", 0, loggers=["recorder"]))
    assert Recorder.sessions[0][-1] == ("close", "killed")
    kept = len(csv_rows(tmp_path / "run"))
    run(config, log=lambda _: None, folder=RunFolder(tmp_path / "run", mode="resume"))  # no loggers named
    first, second = Recorder.sessions
    assert second[0] == ("start", "hat", kept, {"count": 1})  # the same logger, its state back
    assert rows_of(first)[:kept] == csv_rows(tmp_path / "run")[:kept]
    assert rows_of(second) == csv_rows(tmp_path / "run")[kept:]  # a logger with state logs only new rows
    assert second[-1][0] == "finish"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["loggers"] == {"recorder": {"count": 2}}


def test_the_same_results_with_any_loggers(tmp_path, data, capsys):
    pytest.importorskip("tensorboard")
    for loggers in ("none", "tensorboard,recorder"):
        out = tmp_path / loggers
        assert cli(["run", "--data", data, *FAST, "--loggers", loggers, "--out", str(out)], capsys)[0] == 0
    assert (tmp_path / "none" / "results.json").read_bytes() == (
        tmp_path / "tensorboard,recorder" / "results.json"
    ).read_bytes()
    assert not (tmp_path / "none" / "tensorboard").exists()
    assert (tmp_path / "tensorboard,recorder" / "tensorboard").is_dir()


@pytest.mark.parametrize(
    ("loggers", "fragments"),
    [
        ("mlfow", ["unknown logger 'mlfow'", "known:", "mlflow", "tensorboard"]),
        (
            "uninstalled",
            ["logger uninstalled needs maskcl_no_such_module", "pip install 'maskcl[uninstalled]'"],
        ),
        ("recorder,recorder", ["a logger is named twice in recorder, recorder"]),
        ("unreachable", ["logger unreachable cannot start", "http://nowhere:5000 does not answer"]),
    ],
)
def test_a_bad_logger_is_one_line_and_leaves_nothing(tmp_path, data, capsys, loggers, fragments):
    out = tmp_path / "run"
    code, _, err = cli(["run", "--data", data, *FAST, "--loggers", loggers, "--out", str(out)], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not out.exists()


def test_check_loggers_without_names_is_the_installed_defaults():
    tensorboard = pytest.importorskip("tensorboard")
    assert tensorboard and check_loggers(None) == ("tensorboard",)
    assert check_loggers([]) == ()


PLUGIN = """
from maskcl.loggers import Logger, register_logger


@register_logger("final-acc-plugin")
class FinalAcc(Logger):
    def log(self, task, epoch, values):
        pass

    def finish(self, results):
        print(f"{self.folder.name}: ACC {results['acc']:.4f}")
"""


def test_a_logger_in_a_plugin_module(tmp_path, data, capsys, monkeypatch):
    (tmp_path / "my_final_acc.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "mine"
    args = ["run", "--data", data, *FAST, "--plugins", "my_final_acc", "--loggers", "final-acc-plugin"]
    code, stdout, err = cli([*args, "--out", str(out)], capsys)
    assert code == 0, err
    acc = json.loads((out / "results.json").read_text())["acc"]
    assert f"mine: ACC {acc:.4f}" in stdout
