"""The logger protocol: where a run's metrics go besides its ``metrics.csv``.

A run folder (:class:`maskcl.runs.RunFolder`) keeps ``metrics.csv`` itself, the record every resume
starts from; each logger it is given receives the same rows through three named hooks::

    start(config, rows, state)    the session begins: the run's config, the rows metrics.csv holds up to
                                  the checkpoint, and the logger's own state of the last session (None: the
                                  logger is new to this run, so it writes ``rows`` first)
    log(task, epoch, values)      rows of one epoch (1-based) of a task, or of its end
    finish(results) / close(status)  the run finished; or the session ends otherwise ("killed", "failed")

and ``state_dict()``, JSON kept in the folder's ``run.json`` (e.g. the MLflow run id, so that a resumed
run continues its own MLflow run). A logger is one module with a :class:`Logger` subclass registered by
:func:`register_logger`; ``requires`` names the package it needs, checked before a run starts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from maskcl.errors import MaskclError
from maskcl.registry import Registry

__all__ = [
    "DEFAULT_LOGGERS",
    "Logger",
    "Row",
    "check_loggers",
    "create_logger",
    "installed",
    "list_loggers",
    "logger_class",
    "register_logger",
    "run_name",
    "step_of",
    "summary_of",
]

Row = tuple[int, int, str, float]
"""One metric: (task, epoch, name, value), as in ``metrics.csv``."""

DEFAULT_LOGGERS = ("tensorboard",)
"""The loggers of a run that names none, each used only when its package is installed."""


def step_of(task: int, epoch: int) -> int:
    """The step of ``epoch`` of ``task`` in every logger: tasks are 1000 epochs apart, so curves line up."""
    return task * 1000 + epoch


def run_name(folder: Path) -> str:
    """A run folder's name in a logger, with its multi-seed folder's for a seed (``sweep/seed-1``)."""
    return f"{folder.parent.name}/{folder.name}" if folder.name.startswith("seed-") else folder.name


SUMMARY = ("acc", "bwt", "forgetting", "fwt", "avg_incremental_acc")


def summary_of(results: Mapping[str, Any]) -> dict[str, float]:
    """The figures of ``results.json`` a logger shows as the run's summary: ACC, BWT, forgetting, and FWT,
    average incremental ACC and the task-unknown ones (``task_unknown/task_accuracy``,
    ``task_unknown/class_incremental_acc``) where they were measured."""
    summary = {key: results[key] for key in SUMMARY if isinstance(results.get(key), (int, float))}
    inference = results.get("task_inference") or {}
    for key in ("task_accuracy", "class_incremental_acc"):
        if isinstance(inference.get(key), (int, float)):
            summary[f"task_unknown/{key}"] = inference[key]
    return summary


class Logger:
    """Receives a run's metrics; subclasses implement :meth:`log` and whichever other hooks they need.

    ``folder``: the run folder (a logger may keep files in it, under a name of its own).
    """

    name: ClassVar[str] = ""
    requires: ClassVar[str] = ""
    """The module the logger imports (its pip extra is ``maskcl[NAME]``)."""
    files: ClassVar[tuple[str, ...]] = ()
    """What the logger writes into the run folder (removed with a run that is abandoned)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def start(self, config: Mapping[str, Any], rows: Sequence[Row], state: dict | None) -> None:
        """The session begins; a logger new to the run (``state`` None) writes ``rows`` first."""
        if state is None:
            for task, epoch, name, value in rows:
                self.log(task, epoch, {name: value})

    def log(self, task: int, epoch: int, values: Mapping[str, float]) -> None:
        raise NotImplementedError

    def finish(self, results: Mapping[str, Any]) -> None:
        """The run finished with ``results`` (``results.json``'s)."""
        self.close("finished")

    def close(self, status: str) -> None:
        """The session ends: ``finished``, ``killed`` (stopped by a signal, to be resumed) or ``failed``."""

    def state_dict(self) -> dict:
        """JSON the next session's :meth:`start` gets back."""
        return {}


L = TypeVar("L", bound=type[Logger])
_LOGGERS: Registry = Registry("logger", Logger)


def register_logger(name: str) -> Callable[[L], L]:
    """Class decorator: register a :class:`Logger` subclass as ``name``."""
    return _LOGGERS.register(name, "register_logger")


def list_loggers() -> list[str]:
    """The registered loggers' names, sorted."""
    return _LOGGERS.names()


def logger_class(name: str) -> type[Logger]:
    """The logger registered as ``name``, or a one-line error listing the known ones."""
    return _LOGGERS.get(name)


def installed(name: str) -> bool:
    """Whether the package the logger ``name`` needs is installed."""
    module = logger_class(name).requires
    return not module or importlib.util.find_spec(module) is not None


def check_loggers(names: Sequence[str] | None) -> tuple[str, ...]:
    """The loggers a run uses: ``names`` (each known and installed, or a one-line error), or for None the
    installed ones of :data:`DEFAULT_LOGGERS`."""
    if names is None:
        return tuple(name for name in DEFAULT_LOGGERS if installed(name))
    for name in names:
        if not installed(name):
            raise MaskclError(
                f"logger {name} needs {logger_class(name).requires}: pip install 'maskcl[{name}]'"
            )
    if len(set(names)) != len(names):
        raise MaskclError(f"a logger is named twice in {', '.join(names)}")
    return tuple(names)


def create_logger(name: str, folder: str | Path) -> Logger:
    """The logger ``name`` for the run folder ``folder``."""
    return logger_class(name)(Path(folder))
