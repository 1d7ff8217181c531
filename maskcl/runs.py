"""Run folders: what ``maskcl run`` writes, resumes from, and ``maskcl eval`` / ``maskcl report`` read.

One run (one seed) writes into its folder::

    config.json                  the fully resolved config (a valid ``--config`` file)
    run.json                     format version, maskcl/torch versions, state, timing
    checkpoint.safetensors       the latest training state (model, optimizer, method, RNG, position)
    models/task-K.safetensors    the model after task K (what ``maskcl eval --after-task K`` loads)
    metrics.csv                  one row per epoch (train loss, val acc) and per task end (test accs)
    tensorboard/                 the same scalars as TensorBoard events, when tensorboard is installed
    results.json                 the final results: the same bytes for the same config on a machine
    .lock                        held while a process trains in the folder (a second one is refused)

A multi-seed run writes ``seed-N/`` folders like that and ``summary.json`` (mean and std per metric).
Checkpoints are :mod:`maskcl.checkpoint` files: safetensors plus JSON, written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskcl.checkpoint import (
    FORMAT_VERSION,
    check_version,
    load_checkpoint,
    save_checkpoint,
    write_atomic,
    write_json,
)
from maskcl.errors import MaskclError, one_line

CHECKPOINT = "checkpoint.safetensors"
LOCK = ".lock"
SWEEP = "sweep.json"
"""A multi-seed folder's record of its seeds and base config (``--resume`` reads it)."""
METRICS = ("acc", "bwt", "forgetting")
DEFAULT_CHECKPOINT_INTERVAL = 300.0
"""Seconds between two checkpoints inside a task (one is always written at each task's end)."""
METRIC_COLUMNS = ("task", "epoch", "name", "value")
TRAINING_STATE = (
    "config",
    "position",
    "model",
    "optimizer",
    "method",
    "rng",
    "matrix",
    "metric_lines",
    "seconds",
)
"""What a training checkpoint holds (:meth:`maskcl.train._Run.checkpoint`)."""


class RunFolder:
    """The folder of one run: its config, checkpoints, metrics and results (see the module docstring).

    ``checkpoint_interval``: seconds between checkpoints inside a task (0: after every step).
    Setting ``stop`` (e.g. from a SIGINT handler) makes the run save a checkpoint at its next step and
    stop with :class:`maskcl.train.Interrupted`.
    """

    def __init__(self, path: str | Path, checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL) -> None:
        if checkpoint_interval < 0:
            raise MaskclError(f"checkpoint_interval must be >= 0 seconds, got {checkpoint_interval}")
        self.path = Path(path)
        self.checkpoint_interval = checkpoint_interval
        self.stop = False
        self.resuming = False  # set by open(): the run continues from the folder's checkpoint
        self.metric_lines = 0
        self.save_seconds = 0.0  # time spent writing checkpoints in this session
        self._last_save = time.monotonic()
        self._writer: Any = None
        self._lock: int | None = None

    # ------------------------------------------------------------------------------------ create / open
    def check_new(self) -> None:
        """A new run may start here: the folder is new or empty."""
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise MaskclError(f"{self.path} already exists and is not an empty folder; choose another")

    def create(self, config: dict) -> None:
        """Start a new run here: the folder must be new or empty."""
        self.check_new()
        try:
            (self.path / "models").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MaskclError(f"cannot create {self.path}: {err.strerror or err}") from None
        write_json(self.path / "config.json", config)
        self.write_run_info(state="running")
        self._open_logs(0, purge_step=None)

    def open(self) -> dict:
        """Reopen an existing run to resume it; returns its config (as saved in ``config.json``)."""
        check_format(read_json(self.path / "run.json"), self.path / "run.json")
        self.resuming = True
        return read_json(self.path / "config.json")

    def lock(self) -> None:
        """Claim the folder for this process until :meth:`unlock`: a second process training here (two
        ``--resume`` of one run, say) would overwrite the first one's checkpoints, so it is refused. An
        advisory ``flock`` on ``.lock``: the system drops it when the process dies; where there is no
        ``flock`` (Windows) nothing is claimed."""
        try:
            import fcntl
        except ImportError:
            return
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise MaskclError(f"cannot claim {self.path}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MaskclError(f"{self.path} is in use by another maskcl run; wait for it to stop") from None
        self._lock = fd

    def unlock(self) -> None:
        """Release :meth:`lock`'s claim."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def write_run_info(self, state: str, timing: dict | None = None) -> None:
        import maskcl

        info = {
            "format_version": FORMAT_VERSION,
            "state": state,
            "maskcl": maskcl.__version__,
            "torch": torch.__version__,
            "timing": timing,
        }
        write_json(self.path / "run.json", info)

    # ------------------------------------------------------------------------------------- checkpoints
    def checkpoint_due(self) -> bool:
        return self.stop or time.monotonic() - self._last_save >= self.checkpoint_interval

    def save_training_state(self, state: dict) -> None:
        self._save(self.path / CHECKPOINT, state, kind="training")
        self._last_save = time.monotonic()

    def load_training_state(self) -> dict | None:
        """The latest training state, or None if the run stopped before its first checkpoint. The metrics
        written after that checkpoint are dropped: the resumed run writes them again."""
        path = self.path / CHECKPOINT
        if not path.exists():
            self._open_logs(0, purge_step=None)
            return None
        state = load_checkpoint(path, kind="training")
        missing = [key for key in TRAINING_STATE if key not in state]
        if missing:
            raise MaskclError(f"{path} is a damaged training checkpoint (no {missing[0]!r})")
        task, epoch = state["position"]["task"], state["position"]["epoch"]
        self._open_logs(state["metric_lines"], purge_step=_global_step(task, epoch + 1))  # epochs 1..epoch
        return state

    def save_task_model(self, task: int, model_state: dict) -> None:
        self._save(self.path / "models" / f"task-{task}.safetensors", {"model": model_state}, kind="model")

    def _save(self, path: Path, state: dict, kind: str) -> None:
        started = time.perf_counter()
        save_checkpoint(path, state, kind=kind)
        self.save_seconds += time.perf_counter() - started

    # ------------------------------------------------------------------------------------------ metrics
    def _open_logs(self, lines: int, purge_step: int | None) -> None:
        """Keep the first ``lines`` metric rows (all rows up to the checkpoint) and append from there; open
        the TensorBoard writer (when installed), dropping its events from ``purge_step`` on."""
        path = self.path / "metrics.csv"
        rows = path.read_text().splitlines(keepends=True)[1 : lines + 1] if path.exists() else []
        header = ",".join(METRIC_COLUMNS) + "\n"
        write_atomic(path, (header + "".join(rows)).encode())
        self.metric_lines = len(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self._writer = SummaryWriter(str(self.path / "tensorboard"), purge_step=purge_step)

    def log_metrics(self, task: int, epoch: int, values: dict[str, float]) -> None:
        """Append ``values`` of ``task`` after ``epoch`` (1-based) to metrics.csv and TensorBoard."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        for name, value in values.items():
            writer.writerow((task, epoch, name, repr(float(value))))
        with open(self.path / "metrics.csv", "a") as file:
            file.write(text.getvalue())
        self.metric_lines += len(values)
        if self._writer is not None:
            step = _global_step(task, epoch)
            for name, value in values.items():
                self._writer.add_scalar(f"task_{task}/{name}", value, step)
            self._writer.flush()

    def finish(self, results: dict) -> None:
        """Write ``results.json`` (without the timings, kept in run.json) and mark the run finished."""
        timing = {**results.get("timing", {}), "checkpoint_seconds_last_session": self.save_seconds}
        write_json(self.path / "results.json", {k: v for k, v in results.items() if k != "timing"})
        self.write_run_info(state="finished", timing=timing)
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _global_step(task: int, epoch: int) -> int:
    """TensorBoard's step for ``epoch`` of ``task``: tasks are 1000 epochs apart, so curves line up."""
    return task * 1000 + epoch


def check_format(info: dict, path: Path) -> None:
    """A run folder's ``run.json`` or a multi-seed folder's ``sweep.json`` must have a format version this
    maskcl reads."""
    damaged = f"{path} has no format_version: not a maskcl run folder"
    check_version(info.get("format_version"), damaged, path.parent, "run format")


def read_sweep(path: Path) -> tuple[dict, list[int]]:
    """The base config and seeds of the multi-seed folder ``path`` (its ``sweep.json``)."""
    file = path / SWEEP
    sweep = read_json(file)
    check_format(sweep, file)
    config, seeds = sweep.get("config"), sweep.get("seeds")
    if not isinstance(config, dict) or not isinstance(seeds, list) or not all(type(s) is int for s in seeds):
        raise MaskclError(f"{file} is damaged: it needs a config object and a list of integer seeds")
    return config, seeds


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or a one-line error naming the file."""
    try:
        value = json.loads(path.read_text())
    except OSError as err:
        raise MaskclError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise MaskclError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise MaskclError(f"{path} does not hold a JSON object")
    return value


def summarize(results: list[dict]) -> dict:
    """Mean and standard deviation (sample, n - 1; 0 for one run) of ACC, BWT and forgetting over runs.

    ``mean = (1/n) sum_i x_i``, ``std = sqrt(sum_i (x_i - mean)^2 / (n - 1))``.
    """
    summary: dict[str, Any] = {}
    for key in METRICS:
        values = [r[key] for r in results]
        mean = sum(values) / len(values)
        spread = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        summary[key] = {"mean": mean, "std": math.sqrt(spread), "values": values}
    return summary


def load_run(path: str | Path, after_task: int | None = None, device: str = "cpu") -> nn.Module:
    """The model of a run folder, in evaluation mode: after its last finished task, or ``after_task``.

    Select the task with :func:`maskcl.set_task` and call it, as ``maskcl eval DIR`` does.
    """
    return load_run_and_scenario(path, after_task, device)[0]


def load_run_and_scenario(path: str | Path, after_task: int | None = None, device: str = "cpu") -> tuple:
    """:func:`load_run`'s model and the run's :class:`~maskcl.data.Scenario` (its data), built once."""
    from maskcl.train import build_method, load_scenario, resolve_device

    path = Path(path)
    config = read_run_config(path)
    if after_task is None:
        finished = sorted((path / "models").glob("task-*.safetensors"), key=lambda p: int(p.stem[5:]))
        if not finished:
            raise MaskclError(f"{path} has no finished task yet (no models/task-K.safetensors)")
        file = finished[-1]
    else:
        file = path / "models" / f"task-{after_task}.safetensors"
        if not file.exists():
            raise MaskclError(f"{path} has no model after task {after_task} ({file.name} is missing)")
    state = load_checkpoint(file, kind="model")["model"]
    scenario = load_scenario(config)
    model = build_method(config, scenario, resolve_device(device)).model
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise MaskclError(f"{file} does not fit this run's {config.arch} model: {one_line(err)}") from None
    return model.eval(), scenario


def read_run_config(path: str | Path):
    """The validated :class:`~maskcl.train.RunConfig` of the run folder ``path``."""
    from maskcl.config import config_from_dict

    path = Path(path)
    return config_from_dict(RunFolder(path).open(), source=str(path / "config.json"))
