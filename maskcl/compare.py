"""Comparing finished runs: methods (rows) by metrics (columns), mean ± std over seeds (``maskcl compare``).

    rows = compare_runs(["runs/hat", "runs/packnet", "runs/wsn"])   # run folders or multi-seed folders
    print(format_table(rows, "markdown"))                          # or "latex", "csv"
    plot_average_accuracy(rows, "acc.pdf")                         # ACC after each task, with std bands

Runs whose configs differ only in the seed make one row, whichever folders they come from (a multi-seed
folder gives all of its seeds). A row's label is its method, with the options that tell it apart from
another row of the same method. Every run must be of the same benchmark (scenario and number of tasks);
runs of different ones are refused, not mixed.

Each cell is ``mean ± std`` over the row's runs (``std`` the sample deviation, ``n - 1``; no ``±`` for one
run), ``-`` where a run lacks the metric (e.g. task inference not measured). The best mean of each column
is bold (forgetting: the lowest) in Markdown and LaTeX.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskcl import plotting
from maskcl.checkpoint import write_atomic
from maskcl.errors import MaskclError
from maskcl.report import RunResults, read_runs

__all__ = [
    "COLUMNS",
    "FORMATS",
    "Row",
    "average_accuracy_curve",
    "compare_runs",
    "format_table",
    "plot_average_accuracy",
]

COLUMNS = {
    "acc": "ACC",
    "bwt": "BWT",
    "forgetting": "forgetting",
    "fwt": "FWT",
    "avg_incremental_acc": "avg. incremental ACC",
    "task_inference.task_accuracy": "task found",
    "task_inference.class_incremental_acc": "class-incremental ACC",
}
"""The metrics a comparison shows (keys of ``results.json``; dotted: inside ``task_inference``)."""
LOWER_IS_BETTER = {"forgetting"}
FORMATS = ("markdown", "latex", "csv")
_IGNORED = ("seed", "device")  # config keys that do not make another experiment


@dataclass
class Row:
    """One experiment: its label and its runs (one per seed)."""

    label: str
    runs: list[RunResults] = field(default_factory=list)

    def values(self, key: str) -> list[float] | None:
        """The metric ``key`` of every run, or None when a run lacks it."""
        values = [_metric(run.results, key) for run in self.runs]
        return None if any(v is None for v in values) else values

    def stats(self, key: str) -> tuple[float, float] | None:
        """``(mean, std)`` of ``key`` over the runs (std 0 for one run), or None."""
        values = self.values(key)
        if values is None:
            return None
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        return mean, std


def _metric(results: dict[str, Any], key: str) -> float | None:
    value: Any = results
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _benchmark(run: RunResults) -> str:
    scenario = run.results.get("scenario") or {}
    name = scenario.get("name") if isinstance(scenario, dict) else None
    return f"{name or run.results.get('config', {}).get('benchmark', '?')} ({len(run.matrix)} tasks)"


def compare_runs(paths: Sequence[str | Path]) -> list[Row]:
    """The rows of run folders or multi-seed folders ``paths``, in the order first met; a one-line error
    for runs of different benchmarks, or no path."""
    if not paths:
        raise MaskclError("compare needs at least one run folder")
    runs: list[tuple[Path, RunResults]] = []
    for path in paths:
        runs += [(Path(path), run) for run in read_runs(path)[0]]
    benchmarks: dict[str, Path] = {}
    for path, run in runs:
        benchmarks.setdefault(_benchmark(run), path)
    if len(benchmarks) > 1:
        which = ", ".join(f"{path} is {name}" for name, path in benchmarks.items())
        raise MaskclError(
            f"these runs are of different benchmarks ({which}): compare one benchmark at a time"
        )
    groups: dict[str, list[RunResults]] = {}
    for _, run in runs:
        config = {k: v for k, v in run.results.get("config", {}).items() if k not in _IGNORED}
        groups.setdefault(json.dumps(config, sort_keys=True), []).append(run)
    configs = {key: json.loads(key) for key in groups}
    return [Row(_label(configs[key], list(configs.values())), group) for key, group in groups.items()]


def _label(config: dict[str, Any], configs: list[dict[str, Any]]) -> str:
    """The method, and the options that differ from the other experiments of the same method."""
    method = str(config.get("method", "?"))
    same = [c for c in configs if c.get("method") == config.get("method")]
    if len(same) == 1:
        return method
    keys = sorted({k for c in same for k in {*c, *config} if c.get(k) != config.get(k)})
    return f"{method} ({', '.join(f'{k}={_short(config.get(k))}' for k in keys)})"


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def format_table(rows: Sequence[Row], fmt: str = "markdown") -> str:
    """The rows as a Markdown, LaTeX (booktabs) or CSV table, with the columns some run has."""
    if fmt not in FORMATS:
        raise MaskclError(f"unknown table format {fmt!r}; known: {', '.join(FORMATS)}")
    keys = [k for k in COLUMNS if any(row.values(k) is not None for row in rows)]
    if fmt == "csv":
        return _csv(rows, keys)
    best = {k: _best(rows, k) for k in keys}
    cells = [
        [_cell(row, k, best[k] is not None and _mean(row, k) == best[k], fmt) for k in keys] for row in rows
    ]
    if fmt == "markdown":
        lines = ["| method | runs | " + " | ".join(COLUMNS[k] for k in keys) + " |"]
        lines.append("| --- | --- |" + " --- |" * len(keys))
        lines += [f"| {row.label} | {len(row.runs)} | " + " | ".join(c) + " |" for row, c in zip(rows, cells)]
        return "\n".join(lines) + "\n"
    lines = [
        r"\begin{tabular}{l r " + "r " * len(keys) + "}",
        r"\toprule",
        "method & runs & " + " & ".join(_latex_escape(COLUMNS[k]) for k in keys) + r" \\",
        r"\midrule",
    ]
    lines += [
        f"{_latex_escape(row.label)} & {len(row.runs)} & " + " & ".join(c) + r" \\"
        for row, c in zip(rows, cells)
    ]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _best(rows: Sequence[Row], key: str) -> float | None:
    """The best mean of ``key`` over the rows (forgetting: the lowest), or None when every row that has
    it ties (nothing to single out)."""
    means = [stats[0] for row in rows if (stats := row.stats(key)) is not None]
    if len(set(means)) < 2:
        return None
    return min(means) if key in LOWER_IS_BETTER else max(means)


def _mean(row: Row, key: str) -> float | None:
    stats = row.stats(key)
    return None if stats is None else stats[0]


def _cell(row: Row, key: str, bold: bool, fmt: str) -> str:
    stats = row.stats(key)
    if stats is None:
        return "-"
    signed = "+" if key in ("bwt", "fwt") else ""
    mean, std = f"{stats[0]:{signed}.4f}", f"{stats[1]:.4f}"
    if fmt == "latex":
        text = mean if len(row.runs) == 1 else f"{mean} \\pm {std}"
        return f"$\\mathbf{{{text}}}$" if bold else f"${text}$"
    text = mean if len(row.runs) == 1 else f"{mean} ± {std}"
    return f"**{text}**" if bold else text


def _latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
    ):
        text = text.replace(char, escaped)
    return text


def _csv(rows: Sequence[Row], keys: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "runs", *(f"{k}_{s}" for k in keys for s in ("mean", "std"))])
    for row in rows:
        values = []
        for key in keys:
            stats = row.stats(key)
            values += ["", ""] if stats is None else [repr(stats[0]), repr(stats[1])]
        writer.writerow([row.label, len(row.runs), *values])
    return out.getvalue()


def average_accuracy_curve(run: RunResults) -> np.ndarray:
    """``ACC_i = 1/(i+1) * sum_{j<=i} R[i][j]`` for each task ``i``: the average accuracy over the tasks
    learned so far, after each task."""
    R = run.matrix
    return np.array([np.mean(R[i, : i + 1]) for i in range(len(R))])


def plot_average_accuracy(rows: Sequence[Row], path: str | Path) -> Path:
    """Plot each row's average accuracy after each task (mean over its runs, a band of ± one std) to
    ``path`` (PNG at 300 dpi, PDF or SVG, by its suffix); needs matplotlib (``maskcl[plot]``)."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise MaskclError(
            f"{path}: the plot is written as .png, .pdf or .svg, not {path.suffix or 'no suffix'}"
        )
    pyplot = plotting.pyplot()
    figure, axes = pyplot.subplots(figsize=(5.5, 3.6))
    for row in rows:
        curves = np.stack([average_accuracy_curve(run) for run in row.runs])
        mean, tasks = curves.mean(0), np.arange(1, curves.shape[1] + 1)
        (line,) = axes.plot(tasks, mean, marker="o", label=row.label)
        if len(row.runs) > 1:
            std = curves.std(0, ddof=1)
            axes.fill_between(tasks, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("tasks learned")
    axes.set_ylabel("average accuracy on the learned tasks")
    axes.set_xticks(np.arange(1, len(rows[0].runs[0].matrix) + 1))
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix[1:].lower(), dpi=300)
    pyplot.close(figure)
    write_atomic(path, buffer.getvalue())
    return path
