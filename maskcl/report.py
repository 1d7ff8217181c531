"""A finished run folder as PNG plots and one self-contained HTML page (needs matplotlib: maskcl[plot]).

    write_report("runs/split-fmnist-hat-20250101-120000")  # -> .../report.html, plots in .../report/

A run folder holds ``results.json`` (``maskcl run --out DIR``); a multi-seed folder holds ``summary.json``
and one such run folder per seed, and its plots show the accuracy matrix averaged over the seeds. The page
embeds its images as data URIs: no other file, no script, no network.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskcl import plotting
from maskcl.checkpoint import write_atomic
from maskcl.core.capacity import CapacitySummary, LayerCapacity
from maskcl.errors import MaskclError
from maskcl.runs import read_json

__all__ = ["RunResults", "read_runs", "write_report"]

METRICS = ("acc", "bwt", "forgetting")
METRIC_NAMES = {"acc": "ACC", "bwt": "BWT", "forgetting": "forgetting"}
OPTIONAL_NAMES = {"fwt": "FWT", "avg_incremental_acc": "avg. incremental ACC"}
INFERENCE_NAMES = {"task_accuracy": "task inferred", "class_incremental_acc": "class-incremental ACC"}
PLOT_CAPTIONS = {
    "accuracy_matrix": "Accuracy matrix: test accuracy (%) on task j after learning tasks 0..i.",
    "task_accuracy": "Each task's test accuracy from when it is learned to the end of the run.",
    "capacity": "Capacity: fraction of each gated layer's units used by each task, and still free.",
    "class_incremental_matrix": "Class-incremental accuracy matrix: test accuracy (%) on task j after "
    "learning tasks 0..i with the task id unknown (the task predictor chooses among tasks 0..i).",
}

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
table.config { font-size: 0.85em; }
figure { margin: 1em 0 2em; }
img { max-width: 100%; }
"""


@dataclass
class RunResults:
    """One run's ``results.json``, checked: ``matrix`` is ``R`` as floats with NaN where not recorded."""

    name: str
    path: Path
    results: dict[str, Any]
    matrix: np.ndarray


def write_report(run_dir: str | Path) -> Path:
    """Write the plots into ``run_dir/report/`` and the page ``run_dir/report.html``; return the page's path.

    Plots, each as ``NAME.png`` (300 dpi), ``NAME.pdf`` and ``NAME.svg``: ``accuracy_matrix`` (R as a
    heatmap, the tasks not yet learned left blank), ``task_accuracy`` (each task's accuracy as tasks are
    learned; over seeds, the mean with a band of one standard deviation), for runs with task inference
    ``class_incremental_matrix`` (the same with the task unknown) and, for runs that store it (HAT),
    ``capacity`` (units used per layer and task; of the first seed's run in a multi-seed folder).
    """
    run_dir = Path(run_dir)
    runs, summary = read_runs(run_dir)
    pyplot = plotting.pyplot()
    matrix = _mean_matrix(runs, run_dir / "summary.json") if summary else runs[0].matrix
    over = f", mean over {len(runs)} seeds" if summary else ""
    plots = {
        "accuracy_matrix": lambda: _plot_accuracy_matrix(pyplot, matrix, "accuracy matrix" + over),
        "task_accuracy": lambda: _plot_task_accuracy(pyplot, [run.matrix for run in runs]),
    }
    captions = dict(PLOT_CAPTIONS)
    if summary:
        captions["task_accuracy"] += (
            f" Mean over the {len(runs)} seeds, with a band of one standard deviation."
        )
    incremental = _incremental_matrix(runs, matrix.shape)
    if incremental is not None:
        title = "class-incremental accuracy matrix" + over
        plots["class_incremental_matrix"] = lambda: _plot_accuracy_matrix(pyplot, incremental, title)
    capacity = _capacity_summary(runs[0])
    if capacity is not None:
        plots["capacity"] = capacity.figure
        if summary:
            captions["capacity"] += f" Of the first seed's run ({runs[0].name}), not a mean over the seeds."
    plot_dir = run_dir / "report"
    try:
        plot_dir.mkdir(exist_ok=True)
    except OSError as err:
        raise MaskclError(f"{plot_dir}: cannot create the folder ({err.strerror or err})") from None
    images = {name: _write_figure(pyplot, plot_dir, name, draw()) for name, draw in plots.items()}
    page = run_dir / "report.html"
    write_atomic(page, _html_page(run_dir, runs, summary, images, captions).encode())
    return page


def read_runs(run_dir: str | Path) -> tuple[list[RunResults], dict[str, Any] | None]:
    """The finished runs of a run folder (one) or of a multi-seed folder (one per seed, with its
    ``summary.json``, else None), checked; a one-line error for a folder that is neither."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MaskclError(f"{run_dir}: no such run folder")
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = _read_summary(summary_path)
        return [_read_run(run_dir / name / "results.json", name) for name in summary["runs"]], summary
    if (run_dir / "results.json").exists():
        return [_read_run(run_dir / "results.json", run_dir.name)], None
    raise MaskclError(f"{run_dir}: no results.json or summary.json; not a finished maskcl run folder")


def _read_summary(path: Path) -> dict[str, Any]:
    summary = read_json(path)
    runs = summary.get("runs")
    if not isinstance(runs, list) or not runs or not all(isinstance(name, str) for name in runs):
        raise MaskclError(f"{path}: 'runs' must be a non-empty list of run folder names")
    for metric in METRICS:
        stats = summary.get(metric)
        if not (isinstance(stats, dict) and _is_number(stats.get("mean")) and _is_number(stats.get("std"))):
            raise MaskclError(f"{path}: {metric!r} must be {{'mean': number, 'std': number}}")
    return summary


def _read_run(path: Path, name: str) -> RunResults:
    results = read_json(path)
    if "acc_matrix" not in results:
        raise MaskclError(f"{path}: no acc_matrix")
    try:
        matrix = np.array(results["acc_matrix"], dtype=np.float64)  # None becomes NaN
    except (TypeError, ValueError):
        raise MaskclError(f"{path}: acc_matrix must be a T x T list of numbers or null") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        raise MaskclError(f"{path}: acc_matrix must be square T x T with T >= 1, got shape {matrix.shape}")
    for metric in METRICS:
        if not _is_number(results.get(metric)):
            raise MaskclError(f"{path}: {metric!r} must be a number")
    if not isinstance(results.get("config", {}), dict):
        raise MaskclError(f"{path}: 'config' must be a JSON object")
    inference = results.get("task_inference", {})
    if not isinstance(inference, dict):
        raise MaskclError(f"{path}: 'task_inference' must be a JSON object")
    for key in INFERENCE_NAMES:
        if key in inference and not _is_number(inference[key]):
            raise MaskclError(f"{path}: task_inference {key!r} must be a number, got {inference[key]!r}")
    return RunResults(name, path, results, matrix)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mean_matrix(runs: list[RunResults], summary_path: Path) -> np.ndarray:
    """The entrywise mean over the runs' accuracy matrices, ignoring entries a run did not record."""
    shapes = {run.matrix.shape for run in runs}
    if len(shapes) > 1:
        raise MaskclError(f"{summary_path}: its runs' acc_matrix shapes differ: {sorted(shapes)}")
    return _entrywise_mean([run.matrix for run in runs])


def _entrywise_mean(matrices: list[np.ndarray]) -> np.ndarray:
    """The mean of each entry over the matrices that recorded it (NaN: recorded by none)."""
    stacked = np.stack(matrices)
    recorded = (~np.isnan(stacked)).sum(axis=0)
    return np.where(recorded > 0, np.nansum(stacked, axis=0) / np.maximum(recorded, 1), np.nan)


def _incremental_matrix(runs: list[RunResults], shape: tuple[int, ...]) -> np.ndarray | None:
    """The mean class-incremental accuracy matrix (``task_inference.acc_matrix``) over the runs, when
    every run stores one."""
    matrices = []
    for run in runs:
        saved = run.results.get("task_inference", {}).get("acc_matrix")
        if saved is None:
            return None
        try:
            matrices.append(np.array(saved, dtype=np.float64))
        except (TypeError, ValueError):
            raise MaskclError(
                f"{run.path}: task_inference acc_matrix must be a list of numbers or null"
            ) from None
        if matrices[-1].shape != shape:
            raise MaskclError(f"{run.path}: task_inference acc_matrix is not {shape[0]} x {shape[1]}")
    return _entrywise_mean(matrices)


def _capacity_summary(run: RunResults) -> CapacitySummary | None:
    """The run's stored capacity as a :class:`CapacitySummary` (task keys back to ints), or None."""
    layers = run.results.get("capacity")
    if not layers:
        return None
    try:
        rebuilt = [
            LayerCapacity(
                name=str(layer["name"]),
                units=int(layer["units"]),
                used={int(task): float(fraction) for task, fraction in layer["used"].items()},
                free=float(layer["free"]),
                shared=float(layer["shared"]),
            )
            for layer in layers
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise MaskclError(f"{run.path}: 'capacity' is not a list of per-layer capacities ({err!r})") from None
    tasks = sorted(rebuilt[0].used)
    if any(sorted(layer.used) != tasks for layer in rebuilt):
        raise MaskclError(f"{run.path}: 'capacity' layers list different tasks")
    return CapacitySummary(tasks, rebuilt)


FIGURE_FORMATS = {"png": {"dpi": 300}, "pdf": {}, "svg": {}}
"""The files each plot is written as: PNG at print resolution, and the vector formats."""


def _write_figure(pyplot: Any, folder: Path, name: str, fig: Any) -> bytes:
    """Write ``fig`` as ``folder/name.png``, ``.pdf`` and ``.svg`` (each atomically), close it, and return
    the PNG's bytes (what the page embeds)."""
    files = {}
    for fmt, options in FIGURE_FORMATS.items():
        buffer = io.BytesIO()
        with pyplot.rc_context({"svg.hashsalt": "maskcl"}):  # the SVG's element ids, fixed
            fig.savefig(buffer, format=fmt, metadata=_FIXED_METADATA[fmt], **options)
        files[fmt] = buffer.getvalue()
    pyplot.close(fig)
    for fmt, data in files.items():
        write_atomic(folder / f"{name}.{fmt}", data)
    return files["png"]


_FIXED_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
"""No date or version stamped into the files: the same run gives the same bytes."""


def _plot_accuracy_matrix(pyplot: Any, matrix: np.ndarray, title: str) -> Any:
    """The heatmap of ``matrix`` with the upper triangle (tasks not yet learned) left blank."""
    tasks = len(matrix)
    matrix = np.where(np.tril(np.ones_like(matrix, dtype=bool)), matrix, np.nan)
    size = min(2.5 + 0.6 * tasks, 14.0)
    fig, ax = pyplot.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(np.ma.masked_invalid(100 * matrix), cmap="viridis", vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, label="test accuracy (%)")
    if tasks <= 20:
        for (i, j), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                color = "black" if value > 0.6 else "white"
                ax.text(j, i, f"{100 * value:.1f}%", ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(tasks))
    ax.set_yticks(range(tasks))
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("learned up to task i")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _plot_task_accuracy(pyplot: Any, matrices: list[np.ndarray]) -> Any:
    """Each task's accuracy from when it is learned on: the runs' mean, and a band of one (sample)
    standard deviation when there are several runs."""
    stacked = 100 * np.stack(matrices)
    tasks = stacked.shape[1]
    fig, ax = pyplot.subplots(figsize=(7, 4.5))
    colors = pyplot.get_cmap("tab10" if tasks <= 10 else "tab20")
    for j in range(tasks):
        learned = np.arange(j, tasks)
        values = stacked[:, learned, j]
        recorded = (~np.isnan(values)).sum(axis=0)
        mean = np.where(recorded > 0, np.nansum(values, axis=0) / np.maximum(recorded, 1), np.nan)
        ax.plot(learned + 1, mean, marker="o", color=colors(j % 20), label=f"task {j}")
        if len(matrices) > 1:
            squares = np.nansum((values - mean) ** 2, axis=0)
            std = np.where(recorded > 1, np.sqrt(squares / np.maximum(recorded - 1, 1)), 0.0)
            ax.fill_between(learned + 1, mean - std, mean + std, color=colors(j % 20), alpha=0.15)
    ax.set_xticks(range(1, tasks + 1))
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=max(1, tasks // 10), loc="lower left")
    fig.tight_layout()
    return fig


def _html_page(
    run_dir: Path,
    runs: list[RunResults],
    summary: dict[str, Any] | None,
    images: dict[str, bytes],
    captions: dict[str, str],
) -> str:
    config = dict(runs[0].results.get("config", {}))
    if summary is not None and "seeds" in summary:
        config["seed"] = ", ".join(str(seed) for seed in summary["seeds"])
    method = (summary or {}).get("method", config.get("method", "?"))
    title = f"maskcl report: {method} on {config.get('benchmark', '?')} ({run_dir.resolve().name})"
    config_rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(_config_value(value))}</td></tr>"
        for key, value in config.items()
    )
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" '
        f'alt="{name}"><figcaption>{html.escape(captions[name])}</figcaption></figure>\n'
        for name, png in images.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Summary</h2>
{_summary_table(runs, summary)}
<h2>Configuration</h2>
<table class="config">{config_rows}</table>
<h2>Plots</h2>
{figures}</body>
</html>
"""


def _config_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _summary_table(runs: list[RunResults], summary: dict[str, Any] | None) -> str:
    """ACC, BWT and forgetting (FWT, the average incremental accuracy and task inference where every run
    stores them): one row per run, mean ± std first (the others' std: the runs' sample deviation)."""
    inference = [
        key for key in INFERENCE_NAMES if all(key in run.results.get("task_inference", {}) for run in runs)
    ]
    optional = [key for key in OPTIONAL_NAMES if all(_is_number(run.results.get(key)) for run in runs)]
    head = ["run", *(METRIC_NAMES[m] for m in METRICS), *(OPTIONAL_NAMES[k] for k in optional)]
    head += [INFERENCE_NAMES[k] for k in inference]

    def others(run: RunResults) -> list[float]:
        return [run.results[k] for k in optional] + [run.results["task_inference"][k] for k in inference]

    signs = [k == "fwt" for k in optional] + [False] * len(inference)
    rows = []
    if summary is not None:
        stats = [f"{_format_metric(m, summary[m]['mean'])} ± {summary[m]['std']:.4f}" for m in METRICS]
        values = np.array([others(run) for run in runs], dtype=np.float64).reshape(len(runs), -1)
        spread = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(values.shape[1])
        stats += [
            f"{m:{'+' if sign else ''}.4f} ± {d:.4f}" for m, d, sign in zip(values.mean(0), spread, signs)
        ]
        rows.append([f"mean ± std ({len(runs)} seeds)", *stats])
    for run in runs:
        metrics = [_format_metric(m, run.results[m]) for m in METRICS]
        rows.append(
            [run.name, *metrics, *(f"{v:{'+' if sign else ''}.4f}" for v, sign in zip(others(run), signs))]
        )
    header = "".join(f"<th>{html.escape(cell)}</th>" for cell in head)
    body = "".join(
        "<tr><th>"
        + html.escape(row[0])
        + "</th>"
        + "".join(f'<td class="number">{html.escape(cell)}</td>' for cell in row[1:])
        + "</tr>"
        for row in rows
    )
    return f'<table class="summary"><tr>{header}</tr>{body}</table>'


def _format_metric(metric: str, value: float) -> str:
    """As ``maskcl run`` prints it: four decimals, BWT with its sign."""
    return f"{value:+.4f}" if metric == "bwt" else f"{value:.4f}"
