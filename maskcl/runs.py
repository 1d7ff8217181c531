"""Run folders: what ``maskcl run`` writes, resumes from, and ``maskcl eval`` / ``maskcl report`` read.

One run (one seed) writes into its folder::

    .lock                        claimed (flock) while a process writes here; a second one is refused
    config.json                  the fully resolved config (a valid ``--config`` file)
    run.json                     format version, maskcl/torch versions, thread count, state, timing
    checkpoint.safetensors       the latest training state (model, optimizer, method, RNG, position)
    models/task-K.safetensors    the model after task K (what ``maskcl eval --after-task K`` loads)
    metrics.csv                  one row per epoch (train loss, val acc) and per task end (test accs)
    tensorboard/, wandb/         the loggers' files (TensorBoard by default, when it is installed; see
                                 :mod:`maskcl.loggers`), written from the same rows
    results.json                 the final results: the same bytes for the same config on a machine

What is promised, and how:

- **One process at a time.** A folder is claimed before anything is written into it: the folder is made
  if missing, then ``.lock`` is locked with ``flock`` (the system drops it when the process dies, so a
  killed run never leaves a stale claim). A second process gets one line and touches nothing; a process
  that fails removes only the files it created itself, and only when they hold nothing to resume.
- **Every write is atomic** (:func:`maskcl.checkpoint.write_atomic`). A kill can leave a temporary file
  ``.NAME.XXXXXXXX.tmp``; the next start or resume removes them, and ``tensorboard/`` is rebuilt from
  ``metrics.csv`` at each resume, so the folder does not grow under repeated preemption; the other
  loggers continue their own runs (their ids are kept in ``run.json``).
- **The states a kill can leave** are all continued: no ``config.json`` (nothing started; begin), a
  config but no checkpoint (killed before its first checkpoint; begin again), a checkpoint (continue from
  it, bit-exactly), ``results.json`` (finished; ``run.json`` is repaired if the kill came between the two).
- **A model file holds what its task changed**: a tensor equal, bit for bit, to one that an earlier
  ``models/task-J`` file stores already (a finished task's mask or head) is stored there only once and
  referred to by its SHA-256; :func:`load_task_model` puts the model back together and checks each digest.

A multi-seed run (:class:`SweepFolder`) writes ``sweep.json``, one such folder per seed (``seed-N/``) and
``summary.json`` (mean and std per metric).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskcl.build import build_method, load_scenario, resolve_device
from maskcl.checkpoint import (
    FORMAT_VERSION,
    check_version,
    load_checkpoint,
    parse_json,
    save_checkpoint,
    tensor_digest,
)
from maskcl.claim import LOCK, FolderClaim
from maskcl.config import config_from_dict, upgrade_config
from maskcl.errors import MaskclError, MaskclWarning, one_line
from maskcl.loggers import Logger, Row, check_loggers, create_logger, installed, list_loggers, logger_class
from maskcl.version import __version__

__all__ = [
    "RunFolder",
    "SweepFolder",
    "load_run",
    "load_run_and_scenario",
    "load_task_model",
    "read_run_config",
    "summarize",
    "task_model_files",
]

CHECKPOINT = "checkpoint.safetensors"
CONFIG = "config.json"
INFO = "run.json"
RESULTS = "results.json"
METRICS_FILE = "metrics.csv"
MODELS = "models"
SWEEP = "sweep.json"
"""A multi-seed folder's record of its seeds and base config."""
SUMMARY = "summary.json"
METRICS = ("acc", "bwt", "forgetting")
OPTIONAL_METRICS = ("fwt", "avg_incremental_acc")
"""In the results of runs since format 4 (FWT: when every task has test data)."""
INFERENCE_METRICS = ("task_accuracy", "class_incremental_acc", "acc", "bwt", "forgetting")
"""The task-inference figures a multi-seed summary averages."""
DEFAULT_CHECKPOINT_INTERVAL = 300.0
"""Seconds between two checkpoints inside a task (one is always written at each task's end)."""
METRIC_COLUMNS = ("task", "epoch", "name", "value")
MODES = ("new", "resume", "auto")
"""How a :class:`RunFolder` is opened: ``new`` (the folder must hold nothing), ``resume`` (it must hold a
run), ``auto`` (start, continue or report, whichever the folder calls for)."""
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
_MODEL_FILE = re.compile(r"task-(\d+)\.safetensors")


# -------------------------------------------------------------------------------------------- one run
@dataclass
class Opened:
    """What a claimed run folder holds for the run: the training ``state`` to continue from (None: begin),
    or the ``results`` of the run, finished already."""

    state: dict | None = None
    results: dict | None = None


class RunFolder:
    """The folder of one run: its config, checkpoints, metrics and results (see the module docstring).

    ``mode``: ``new`` (the default; the folder must be absent or empty), ``resume`` (it must hold a run:
    :meth:`open` sets it and returns the run's config) or ``auto`` (start when it holds nothing resumable,
    continue a run of the same config, report a finished one; another config is refused).
    ``checkpoint_interval``: seconds between checkpoints inside a task (0: after every step; ``inf``: only at
    task ends). Setting ``stop`` (e.g. from a SIGINT or SIGTERM handler, to the signal's number) while the
    folder is ``active`` makes the run save a checkpoint at its next step and stop with
    :class:`maskcl.train.Interrupted`. ``loggers``: the names of the loggers the metrics also go to
    (:mod:`maskcl.loggers`; default: those the run used before, for a new run TensorBoard when it is
    installed).
    """

    def __init__(
        self,
        path: str | Path,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        mode: str = "new",
        loggers: Sequence[str] | None = None,
    ) -> None:
        if not checkpoint_interval >= 0:  # NaN too
            raise MaskclError(f"checkpoint_interval must be a number >= 0 seconds, got {checkpoint_interval}")
        self.path = Path(path)
        self.checkpoint_interval = checkpoint_interval
        self.mode = _checked_mode(mode)
        self.stop: int = 0  # the number of the signal that asked to stop; 0: go on
        self.active = False  # True while a session claims the folder: a stop is then honoured at a step
        self.metric_lines = 0
        self.save_seconds = 0.0  # time spent writing checkpoints in this session
        self._last_save = time.monotonic()
        self._named = None if loggers is None else check_loggers(loggers)  # None: the run's own, or defaults
        self.loggers = self._named if self._named is not None else check_loggers(None)
        self._loggers: dict[str, Logger] = {}
        self._config: dict = {}
        self._claim = FolderClaim(self.path, subfolders=(MODELS,))
        self._checkpointed = False  # this process wrote a checkpoint
        self._info: dict = {}
        self._model_index: tuple[int, dict[str, tuple[int, str]]] | None = None

    # -------------------------------------------------------------------------------- before the claim
    def check_new(self) -> None:
        """A new run may start here: the folder is absent or empty (read-only; :meth:`session` checks again
        under the claim)."""
        if self.path.exists() and (not self.path.is_dir() or _entries(self.path)):
            raise MaskclError(
                f"{self.path} already exists and is not an empty folder; choose another --out, or continue "
                "its run with --resume DIR (or this command with --auto-resume)"
            )

    def open(self) -> dict:
        """Reopen the run here to resume it; returns its config (as saved in ``config.json``)."""
        self.mode = "resume"
        if (self.path / INFO).exists():
            check_format(read_json(self.path / INFO), self.path / INFO)
        config = self.saved_config()
        if config is None:
            raise MaskclError(
                f"{self.path} holds no maskcl run (no {CONFIG}); to start one there: maskcl run ... "
                "--out DIR --auto-resume"
            )
        return config

    def saved_config(self) -> dict | None:
        """The config in ``config.json`` (in today's keys, if the folder is of an earlier format), or None
        when there is none."""
        path = self.path / CONFIG
        return upgrade_config(read_json(path), self._format_version()) if path.exists() else None

    def _format_version(self) -> int:
        """The format of this folder's files (``run.json``'s; a folder without one is of today's)."""
        path = self.path / INFO
        version = read_json(path).get("format_version") if path.exists() else FORMAT_VERSION
        return version if type(version) is int else FORMAT_VERSION

    def finished_results(self, config: dict) -> dict | None:
        """The results of a finished run of ``config`` here (``resume``/``auto`` modes), else None; a
        ``run.json`` left "running" by a kill after ``results.json`` was written is set to finished."""
        if self.mode == "new" or not (self.path / RESULTS).is_file():
            return None
        self._check_same_config(config)
        results = read_json(self.path / RESULTS)
        try:
            self._claim.acquire()
        except MaskclError:  # in use: the process using it repairs it
            return results
        try:
            self._mark_finished()
        finally:
            self._claim.release()
        return results

    def _mark_finished(self) -> None:
        """Under the claim: set ``run.json`` to finished if a kill came after ``results.json`` was written."""
        info = read_json(self.path / INFO) if (self.path / INFO).exists() else {}
        if info.get("state") != "finished":
            self._info = info
            self._write_info("finished", info.get("timing"))

    # ------------------------------------------------------------------------------------------ session
    @contextmanager
    def session(self, config: dict, device: str = "cpu") -> Iterator[Opened]:
        """Claim the folder and begin, continue or report the run of ``config`` there (as the mode says).

        On failure, a session that wrote no checkpoint removes what it created (a run it began, the lock
        file); anything resumable stays. The claim ends with the session.
        """
        self.active = True
        try:
            self._claim.acquire()
            try:
                yield self._begin(config, device)
            except BaseException:
                self._close_loggers("killed" if self.stop else "failed")
                if not self._checkpointed:
                    self._claim.abandon()
                raise
            finally:
                self._close_loggers("killed")
                self._claim.release()
        finally:
            self.active = False

    def _begin(self, config: dict, device: str) -> Opened:
        self._config = config
        if self.mode == "new":
            self.check_new()
            return self._start(config, device)
        saved = self.saved_config()
        if saved is None:
            if self.mode == "resume":
                self.open()  # the one-line error
            if _entries(self.path) - {MODELS} or _entries(self.path / MODELS):
                raise MaskclError(
                    f"{self.path} is not empty and holds no maskcl run (no {CONFIG}); choose another --out"
                )
            return self._start(config, device)
        self._check_same_config(config)
        if (self.path / RESULTS).is_file():
            self._mark_finished()
            return Opened(results=read_json(self.path / RESULTS))
        if not (self.path / CHECKPOINT).exists():  # stopped before its first checkpoint: begin again
            return self._start(config, device, over=True)
        info = read_json(self.path / INFO)
        check_format(info, self.path / INFO)
        self._info = info
        _warn_if_other_machine(info, device)
        if self._named is None and isinstance(info.get("loggers"), dict):
            self.loggers = _installed_loggers(list(info["loggers"]), self.path)
        state = self._load_training_state()
        self._write_info(info.get("state", "running"), info.get("timing"))  # the loggers' states
        return Opened(state=state)

    def _check_same_config(self, config: dict) -> None:
        saved = self.saved_config()
        if saved is None:
            return
        differences = config_differences(saved, config)
        if differences:
            raise MaskclError(
                f"{self.path} holds a run of another configuration ({'; '.join(differences)}): "
                "choose another --out"
            )

    def _start(self, config: dict, device: str, over: bool = False) -> Opened:
        """Begin the run here; ``over``: replace what an earlier attempt, stopped before its first
        checkpoint, left (the same config's files)."""
        if over:
            logger_files = [file for name in list_loggers() for file in logger_class(name).files]
            for name in (INFO, METRICS_FILE, MODELS, *logger_files):
                path = self.path / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        self._claim.write(self.path / CONFIG, _json_bytes(config))
        self._info = {"threads": torch.get_num_threads(), "device": device}
        self._open_logs(0)
        self._write_info("running")
        return Opened()

    def _write_info(self, state: str, timing: dict | None = None) -> None:
        info = {
            "format_version": self._info.get("format_version", FORMAT_VERSION),  # a resumed folder keeps it
            "state": state,
            "maskcl": __version__,
            "torch": torch.__version__,
            "threads": self._info.get("threads"),
            "device": self._info.get("device"),
            "timing": timing,
        }
        previous = self._info.get("loggers", {})
        states = {
            name: self._loggers[name].state_dict() if name in self._loggers else previous.get(name, {})
            for name in self.loggers
        }
        # the run's loggers; without --loggers, one not installed in this session is kept for the next
        info["loggers"] = (previous if self._named is None else {}) | states
        self._claim.write(self.path / INFO, _json_bytes(info))

    # ------------------------------------------------------------------------------------- checkpoints
    def checkpoint_due(self) -> bool:
        return bool(self.stop) or time.monotonic() - self._last_save >= self.checkpoint_interval

    def save_training_state(self, state: dict) -> None:
        self._save(self.path / CHECKPOINT, state, kind="training")
        self._checkpointed = True
        self._last_save = time.monotonic()

    def _load_training_state(self) -> dict:
        """The latest training state. The metrics written after it are dropped (the run writes them again)."""
        path = self.path / CHECKPOINT
        state = load_checkpoint(path, kind="training")
        missing = [key for key in TRAINING_STATE if key not in state]
        if missing:
            raise MaskclError(f"{path} is a damaged training checkpoint (no {missing[0]!r})")
        state["config"] = upgrade_config(state["config"], self._format_version())
        lines = state["metric_lines"]
        if type(lines) is not int or lines < 0:
            raise MaskclError(f"{path} is a damaged training checkpoint (metric_lines {lines!r})")
        self._open_logs(lines)
        return state

    def save_task_model(self, task: int, model_state: dict[str, torch.Tensor]) -> None:
        """Write ``models/task-K``: the tensors that differ from those stored for task K-1 and, for every
        tensor, the task file that stores it and its SHA-256 (see :func:`load_task_model`)."""
        index = self._previous_index(task)
        digests = {key: tensor_digest(value) for key, value in model_state.items()}
        stored_in = {
            key: index[key][0] if key in index and index[key][1] == digest else task
            for key, digest in digests.items()
        }
        kept = {key: value for key, value in model_state.items() if stored_in[key] == task}
        self._claim.mkdir(self.path / MODELS)
        state = {"model": kept, "stored_in": stored_in, "digests": digests}
        self._save(self.path / MODELS / f"task-{task}.safetensors", state, kind="model")
        self._model_index = (task, {key: (stored_in[key], digests[key]) for key in digests})

    def _previous_index(self, task: int) -> dict[str, tuple[int, str]]:
        """Where each tensor of ``models/task-(K-1)`` is stored, with its digest ({} for the first task, or
        when that file is missing or of format 1, which stores every tensor)."""
        if self._model_index is not None and self._model_index[0] == task - 1:
            return self._model_index[1]
        previous = self.path / MODELS / f"task-{task - 1}.safetensors"
        if task == 0 or not previous.exists():
            return {}
        state = load_checkpoint(previous, kind="model", tensors=False)
        stored_in, digests = state.get("stored_in"), state.get("digests")
        if not isinstance(stored_in, dict) or not isinstance(digests, dict):
            return {}
        return {key: (stored_in[key], digests[key]) for key in stored_in if key in digests}

    def _save(self, path: Path, state: dict, kind: str) -> None:
        started = time.perf_counter()
        self._claim.note(path)
        save_checkpoint(path, state, kind=kind)
        self.save_seconds += time.perf_counter() - started

    # ------------------------------------------------------------------------------------------ metrics
    def _open_logs(self, lines: int) -> None:
        """Keep the first ``lines`` rows of metrics.csv (all rows up to the checkpoint) and append from there;
        start each logger with those rows (TensorBoard's files are written anew from them, so that events
        written after the checkpoint, and the files of earlier sessions, are gone)."""
        path = self.path / METRICS_FILE
        text = path.read_text().splitlines(keepends=True)[1:] if path.exists() else []
        if len(text) < lines:
            warnings.warn(
                f"{path} has {len(text)} rows, fewer than the {lines} the checkpoint counted: "
                "the missing rows are not written again",
                MaskclWarning,
                stacklevel=2,
            )
        text = text[:lines]
        rows: list[Row] = []
        for number, row in enumerate(csv.reader(text), start=2):
            try:
                task, epoch, name, value = row
                rows.append((int(task), int(epoch), name, float(value)))
            except ValueError:
                raise MaskclError(f"{path}: line {number} is damaged ({','.join(row)!r})") from None
        self._claim.write(path, (",".join(METRIC_COLUMNS) + "\n" + "".join(text)).encode())
        self.metric_lines = len(rows)
        states = self._info.get("loggers", {})
        for name in self.loggers:
            logger = create_logger(name, self.path)
            for file in logger.files:
                self._claim.note(self.path / file)
            try:
                logger.start(self._config, rows, states.get(name))
            except Exception as err:  # the logger's library: its store unreachable, a bad setting
                raise MaskclError(f"logger {name} cannot start: {one_line(err)}") from None
            self._loggers[name] = logger

    def log_metrics(self, task: int, epoch: int, values: dict[str, float]) -> None:
        """Append ``values`` of ``task`` after ``epoch`` (1-based) to metrics.csv and to the loggers."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        for name, value in values.items():
            writer.writerow((task, epoch, name, repr(float(value))))
        with open(self.path / METRICS_FILE, "a") as file:
            file.write(text.getvalue())
        self.metric_lines += len(values)
        for logger in self._loggers.values():
            logger.log(task, epoch, {name: float(value) for name, value in values.items()})

    def _close_loggers(self, status: str, results: dict | None = None) -> None:
        """End every logger's session (``finish`` with the results, else ``close`` with ``status``); a logger
        that fails to close is warned about, never losing the run."""
        loggers, self._loggers = self._loggers, {}
        for name, logger in loggers.items():
            try:
                logger.finish(results) if results is not None else logger.close(status)
            except Exception as err:
                warnings.warn(f"logger {name} did not close: {one_line(err)}", MaskclWarning, stacklevel=2)

    def finish(self, results: dict) -> None:
        """Write ``results.json`` (without the timings, kept in run.json), then mark the run finished. A
        ``results.json`` that cannot be written is saved to a temporary file elsewhere, named in the error:
        a finished run is never lost."""
        timing = {**results.get("timing", {}), "checkpoint_seconds_last_session": self.save_seconds}
        kept = {key: value for key, value in results.items() if key != "timing"}
        try:
            self._claim.write(self.path / RESULTS, _json_bytes(kept))
        except MaskclError as err:
            fd, rescue = tempfile.mkstemp(prefix="maskcl-results-", suffix=".json")
            with os.fdopen(fd, "wb") as file:
                file.write(_json_bytes(kept))
            raise MaskclError(f"{err}; the results were saved to {rescue}") from None
        self._write_info("finished", timing)
        self._close_loggers("finished", kept)


def _checked_mode(mode: str) -> str:
    if mode not in MODES:
        raise MaskclError(f"unknown run-folder mode {mode!r}; known: {', '.join(MODES)}")
    return mode


def _entries(folder: Path) -> set[str]:
    """The names in ``folder`` but its ``.lock`` (an empty set when it is missing or not a folder)."""
    if not folder.is_dir():
        return set()
    return {entry.name for entry in folder.iterdir() if entry.name != LOCK}


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def _installed_loggers(names: list[str], path: Path) -> tuple[str, ...]:
    """Those of a run's loggers ``names`` that are known and installed in this session (the others warned
    about: the run goes on without them)."""
    known = set(list_loggers())
    usable = tuple(name for name in names if name in known and installed(name))
    missing = [name for name in names if name not in usable]
    if missing:
        warnings.warn(
            f"{path} logged to {', '.join(missing)}, not installed here: this session does not",
            MaskclWarning,
            stacklevel=3,
        )
    return usable


def _warn_if_other_machine(info: dict, device: str) -> None:
    """Warn when a resumed run computes with another thread count or device than its first session: the
    floating-point sums, and so the results, may then differ in their last bits."""
    now = {"threads": torch.get_num_threads(), "device": device}
    for key, unit in (("threads", " threads"), ("device", "")):
        if info.get(key) is not None and info[key] != now[key]:
            warnings.warn(
                f"this run started with {info[key]}{unit} and continues with {now[key]}{unit}: results may "
                "differ in the last bits from an uninterrupted run (OMP_NUM_THREADS sets the thread count)",
                MaskclWarning,
                stacklevel=3,
            )


def config_differences(saved: dict, ours: dict, labels: tuple[str, str] = ("there", "here")) -> list[str]:
    """The keys on which two configs differ, as ``"lr 0.05 there, 0.01 here"`` (JSON values compared;
    ``data`` as absolute paths: run format 1 stored the path as typed, relative to where the run began)."""
    theirs, mine = json.loads(json.dumps(saved)), json.loads(json.dumps(ours))
    for config in (theirs, mine):
        if isinstance(config.get("data"), str):
            config["data"] = os.path.abspath(os.path.expanduser(config["data"]))
    missing = object()
    differences = []
    for key in sorted(set(theirs) | set(mine), key=str):
        there, here = theirs.get(key, missing), mine.get(key, missing)
        if there != here:
            show = ["(missing)" if value is missing else json.dumps(value) for value in (there, here)]
            differences.append(f"{key} {show[0]} {labels[0]}, {show[1]} {labels[1]}")
    return differences


def check_format(info: dict, path: Path) -> None:
    """A run folder's ``run.json`` or a multi-seed folder's ``sweep.json`` must have a format version this
    maskcl reads."""
    damaged = f"{path} has no format_version: not a maskcl run folder"
    check_version(info.get("format_version"), damaged, path.parent, "run format")


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or a one-line error naming the file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise MaskclError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    value = parse_json(text, path)
    if not isinstance(value, dict):
        raise MaskclError(f"{path} does not hold a JSON object")
    return value


# --------------------------------------------------------------------------------------- many seeds
class SweepFolder:
    """The folder of a multi-seed run: ``sweep.json`` (its seeds and base config), ``seed-N/`` run folders
    and ``summary.json``. ``mode`` as for :class:`RunFolder`; a failed start that left no seed's run
    behind removes what this process created. ``loggers``: those of every seed's run (as for
    :class:`RunFolder`)."""

    def __init__(self, path: str | Path, mode: str = "new", loggers: Sequence[str] | None = None) -> None:
        self.path, self.mode = Path(path), _checked_mode(mode)
        self.loggers = check_loggers(loggers)
        self._claim = FolderClaim(self.path)

    def read(self) -> tuple[dict, list[int]]:
        """The base config and seeds in ``sweep.json``."""
        file = self.path / SWEEP
        sweep = read_json(file)
        check_format(sweep, file)
        config, seeds = upgrade_config(sweep.get("config"), sweep["format_version"]), sweep.get("seeds")
        if (
            not isinstance(config, dict)
            or not isinstance(seeds, list)
            or not all(type(s) is int for s in seeds)
        ):
            raise MaskclError(f"{file} is damaged: it needs a config object and a list of integer seeds")
        return config, seeds

    def run_folder(self, seed: int, checkpoint_interval: float) -> RunFolder:
        """The run folder of ``seed`` (begun, continued or reported as its state calls for)."""
        return RunFolder(self.path / f"seed-{seed}", checkpoint_interval, mode="auto", loggers=self.loggers)

    @contextmanager
    def session(self, config: dict, seeds: list[int]) -> Iterator[None]:
        """Claim the folder; check or write ``sweep.json`` for ``config`` and ``seeds``."""
        self._claim.acquire()
        started = False
        try:
            file = self.path / SWEEP
            if self.mode == "new" or (self.mode == "auto" and not file.exists()):
                if _entries(self.path):
                    RunFolder(self.path).check_new()
                started = True
                sweep = {"format_version": FORMAT_VERSION, "seeds": list(seeds), "config": config}
                self._claim.write(file, _json_bytes(sweep))
            else:
                saved_config, saved_seeds = self.read()
                differences = config_differences(saved_config, config)
                if saved_seeds != list(seeds):
                    differences.insert(0, f"seeds {saved_seeds} there, {list(seeds)} here")
                if differences:
                    raise MaskclError(
                        f"{self.path} holds a multi-seed run of another configuration "
                        f"({'; '.join(differences)}): choose another --out"
                    )
            yield
        except BaseException:
            if not started or not any((self.path / f"seed-{seed}").exists() for seed in seeds):
                self._claim.abandon()  # only what this process created: no seed's run is lost
            raise
        finally:
            self._claim.release()

    def write_summary(self, summary: dict) -> None:
        self._claim.write(self.path / SUMMARY, _json_bytes(summary))


def summarize(results: list[dict]) -> dict:
    """Mean and standard deviation (sample, n - 1; 0 for one run) over runs of ACC, BWT and forgetting,
    and of FWT, the average incremental accuracy and the task-inference figures (under
    ``task_inference``) where every run has them.

    ``mean = (1/n) sum_i x_i``, ``std = sqrt(sum_i (x_i - mean)^2 / (n - 1))``.
    """
    summary = _statistics(results, [*METRICS, *OPTIONAL_METRICS])
    inference = [r.get("task_inference") or {} for r in results]
    if all(inference):
        summary["task_inference"] = _statistics(inference, INFERENCE_METRICS)
    return summary


def _statistics(results: list[dict], keys: Sequence[str]) -> dict[str, dict]:
    """``{key: {mean, std, values}}`` for each of ``keys`` that every one of ``results`` has a number for."""
    summary: dict[str, Any] = {}
    for key in keys:
        values = [r.get(key) for r in results]
        if not all(isinstance(v, (int, float)) for v in values):
            continue
        mean = sum(values) / len(values)
        spread = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        summary[key] = {"mean": mean, "std": math.sqrt(spread), "values": values}
    return summary


# ------------------------------------------------------------------------------------- reading models
def task_model_files(path: str | Path) -> dict[int, Path]:
    """The run folder's ``models/task-K.safetensors`` files by task K (other files there are ignored)."""
    folder = Path(path) / MODELS
    if not folder.is_dir():
        return {}
    found = (_MODEL_FILE.fullmatch(entry.name) for entry in folder.iterdir())
    return {int(match[1]): folder / match[0] for match in found if match and match[1].isascii()}


def load_task_model(path: str | Path, task: int) -> dict[str, torch.Tensor]:
    """The model state saved after ``task`` in the run folder ``path``: the tensors of its
    ``models/task-K`` file and those it refers to in earlier task files, each checked against its SHA-256
    (files of run format 1 hold every tensor themselves)."""
    files = task_model_files(path)
    if task not in files:
        raise MaskclError(
            f"{path} has no model after task {task} (models/task-{task}.safetensors is missing)"
        )
    file = files[task]
    state = load_checkpoint(file, kind="model")
    model = state.get("model")
    stored_in, digests = state.get("stored_in"), state.get("digests")
    if not isinstance(model, dict):
        raise MaskclError(f"{file} is a damaged model file (no model)")
    if stored_in is None:
        return model
    if not _valid_manifest(stored_in, digests, model, task):
        raise MaskclError(f"{file} is a damaged model file (its list of stored tensors does not add up)")
    model = dict(model)
    for earlier in sorted({j for j in stored_in.values() if j != task}):
        if earlier not in files:
            raise MaskclError(
                f"{file} needs tensors stored in models/task-{earlier}.safetensors, which is missing"
            )
        theirs = load_checkpoint(files[earlier], kind="model").get("model")
        for key in (k for k, j in stored_in.items() if j == earlier):
            value = theirs.get(key) if isinstance(theirs, dict) else None
            if not isinstance(value, torch.Tensor) or tensor_digest(value) != digests[key]:
                raise MaskclError(
                    f"{file} needs {key} from {files[earlier].name}, which does not hold it as saved "
                    "(another run's file?)"
                )
            model[key] = value
    return {key: model[key] for key in stored_in}


def _valid_manifest(stored_in: Any, digests: Any, model: dict, task: int) -> bool:
    if not isinstance(stored_in, dict) or not isinstance(digests, dict) or set(stored_in) != set(digests):
        return False
    for key, where in stored_in.items():
        if type(where) is not int or not 0 <= where <= task or (where == task) != (key in model):
            return False
    return set(model) <= set(stored_in)


def load_run(path: str | Path, after_task: int | None = None, device: str = "cpu") -> nn.Module:
    """The model of a run folder, in evaluation mode: after its last finished task, or ``after_task``.

    Select the task with :func:`maskcl.set_task` and call it, as ``maskcl eval DIR`` does.
    """
    return load_run_and_scenario(path, after_task, device)[0]


def load_run_and_scenario(path: str | Path, after_task: int | None = None, device: str = "cpu") -> tuple:
    """:func:`load_run`'s model and the run's :class:`~maskcl.data.Scenario` (its data), built once."""
    path = Path(path)
    config = read_run_config(path)
    if after_task is None:
        files = task_model_files(path)
        if not files:
            raise MaskclError(f"{path} has no finished task yet (no models/task-K.safetensors)")
        after_task = max(files)
    state = load_task_model(path, after_task)
    target = resolve_device(device)
    scenario = load_scenario(config)
    model = build_method(config, scenario, target).model
    file = path / MODELS / f"task-{after_task}.safetensors"
    load_model_state(model, state, f"{file}", config.arch)
    return model.eval(), scenario


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> None:
    """``model.load_state_dict(state)``, refusing in one line a state of another shape or dtype (torch would
    convert another dtype silently)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, MaskclError) as err:
        raise MaskclError(f"{source} does not fit this run's {arch} model: {one_line(err)}") from None
    ours = model.state_dict()
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and key in ours and value.dtype != ours[key].dtype:
            raise MaskclError(f"{source}: {key} is {value.dtype}, but this run's model has {ours[key].dtype}")


def read_run_config(path: str | Path):
    """The validated :class:`~maskcl.train.RunConfig` of the run folder ``path`` (every key present)."""
    path = Path(path)
    return config_from_dict(RunFolder(path).open(), source=str(path / CONFIG), complete=True)
