"""maskcl.report on run folders written here in the formats `maskcl run` writes; the page rendered by a
real headless Chromium."""

import base64
import dataclasses
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from maskcl import MaskclError, create_model
from maskcl.core.capacity import capacity
from maskcl.metrics import AccuracyMatrix

pytest.importorskip("matplotlib")
from matplotlib.image import imread

from maskcl.report import write_report

MATRIX = [[0.95, None, None], [0.90, 0.97, None], [0.85, 0.93, 0.96]]
PLOTS = ("accuracy_matrix", "task_accuracy", "capacity")
MIN_INK = {"accuracy_matrix": 0.2, "task_accuracy": 0.02, "capacity": 0.1}
"""Per plot, the least fraction of its pixels that are not white (a line plot has less ink than a heatmap)."""
EMBEDDED_PNG = '<img src="data:image/png;base64,'


def results_for(matrix, seed=0, **extra):
    """A results.json dict like `maskcl run` writes: metrics from the matrix, a config, and ``extra``."""
    results = AccuracyMatrix.from_matrix(matrix).compute()
    results["config"] = {
        "method": "hat",
        "benchmark": "split-fmnist",
        "arch": "mlp",
        "seed": seed,
        "epochs": 2,
    }
    return {**results, **extra}


def stored_capacity():
    """A 2-layer HAT model's capacity as `maskcl run` stores it (asdict, then a JSON round trip)."""
    model = create_model("mlp", input_shape=(2,), classes_per_task=[2, 2, 2], hidden=(4, 3))
    with torch.no_grad():
        model.gates[0].embedding[:3] = torch.tensor([[1.0, 1, -1, -1], [-1, 1, 1, -1], [-1, -1, 1, -1]])
        model.gates[1].embedding[:3] = torch.tensor([[1.0, -1, -1], [1, 1, -1], [-1, 1, -1]])
    model.learned[:3] = True
    return json.loads(json.dumps([dataclasses.asdict(layer) for layer in capacity(model).layers]))


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def single_run(tmp_path):
    run_dir = tmp_path / "split-fmnist-hat"
    write_json(run_dir / "results.json", results_for(MATRIX))
    return run_dir


@pytest.fixture
def hat_run(tmp_path):
    run_dir = tmp_path / "with-capacity"
    write_json(run_dir / "results.json", results_for(MATRIX, capacity=stored_capacity()))
    return run_dir


@pytest.fixture
def multi_seed_run(tmp_path):
    run_dir = tmp_path / "seeds"
    other = [[0.91, None, None], [0.80, 0.93, None], [0.75, 0.89, 0.94]]
    seeds = [results_for(MATRIX, seed=0, capacity=stored_capacity()), results_for(other, seed=1)]
    for seed, results in enumerate(seeds):
        write_json(run_dir / f"seed-{seed}" / "results.json", results)
    accs = [results["acc"] for results in seeds]
    summary = {"method": "hat", "seeds": [0, 1], "runs": ["seed-0", "seed-1"]}
    for metric in ("acc", "bwt", "forgetting"):
        values = [results[metric] for results in seeds]
        summary[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    write_json(run_dir / "summary.json", summary)
    return run_dir, seeds, summary, accs


def image_stats(pixels):
    """(fraction of pixels that are not white, number of distinct colours, fraction of colourful pixels)."""
    rgb = np.asarray(pixels)[..., :3]
    if rgb.dtype == np.uint8:
        rgb = rgb / 255
    not_white = (rgb < 0.95).any(axis=-1).mean()
    colours = len(np.unique((rgb * 255).round().astype(np.uint8).reshape(-1, 3), axis=0))
    colourful = (rgb.max(axis=-1) - rgb.min(axis=-1) > 0.2).mean()
    return not_white, colours, colourful


def assert_drawn(path, min_ink):
    """``path`` is a PNG with at least ``min_ink`` of it not white, some of it in colour."""
    not_white, colours, colourful = image_stats(imread(path))
    assert not_white > min_ink and colours > 100 and colourful > 0.003, (path.name, not_white, colourful)


def embedded_pngs(page):
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_single_run_report_has_the_plots_and_metrics(single_run):
    page_path = write_report(single_run)
    assert page_path == single_run / "report.html"
    assert not (single_run / "report" / "capacity.png").exists()
    for name in PLOTS[:2]:
        assert_drawn(single_run / "report" / f"{name}.png", MIN_INK[name])
    assert image_stats(imread(single_run / "report" / "accuracy_matrix.png"))[1] > 500  # a colour scale
    page = page_path.read_text()
    assert page.count(EMBEDDED_PNG) == 2
    assert embedded_pngs(page) == [(single_run / "report" / f"{name}.png").read_bytes() for name in PLOTS[:2]]
    results = json.loads((single_run / "results.json").read_text())
    assert f"{results['acc']:.4f}" == "0.9133" and ">0.9133<" in page
    assert ">-0.0700<" in page and ">0.0700<" in page  # BWT, forgetting
    assert "<th>arch</th><td>mlp</td>" in page and "split-fmnist" in page
    markup = re.sub(r"base64,[^\"]+", "base64,", page)
    assert "<script" not in markup and "http" not in markup  # nothing to run, nothing to fetch
    assert sorted(p.name for p in single_run.iterdir()) == ["report", "report.html", "results.json"]


def test_capacity_plot_only_for_runs_that_store_capacity(hat_run):
    page = write_report(hat_run).read_text()
    assert page.count(EMBEDDED_PNG) == 3
    assert_drawn(hat_run / "report" / "capacity.png", MIN_INK["capacity"])


def test_multi_seed_report_shows_mean_std_and_every_seed(multi_seed_run):
    run_dir, _, summary, accs = multi_seed_run
    page = write_report(run_dir).read_text()
    acc = summary["acc"]
    assert f">{acc['mean']:.4f} ± {acc['std']:.4f}<" in page
    assert "mean ± std (2 seeds)" in page and "<th>seed</th><td>0, 1</td>" in page
    for name, value in zip(summary["runs"], accs):
        assert f'<th>{name}</th><td class="number">{value:.4f}</td>' in page
    assert page.count(EMBEDDED_PNG) == 3  # the first seed's capacity
    assert all((run_dir / "report" / f"{name}.png").stat().st_size > 1000 for name in PLOTS)


def test_multi_seed_heatmap_is_the_mean_over_seeds(multi_seed_run):
    """The cell colours of the mean matrix differ from those of the first seed's own report."""
    run_dir, *_ = multi_seed_run
    write_report(run_dir)
    write_report(run_dir / "seed-0")
    mean_map = imread(run_dir / "report" / "accuracy_matrix.png")
    first_map = imread(run_dir / "seed-0" / "report" / "accuracy_matrix.png")
    assert mean_map.shape == first_map.shape and not np.array_equal(mean_map, first_map)


def test_config_values_are_escaped(tmp_path):
    results = results_for(MATRIX)
    results["config"]["arch"] = '<img src=x onerror="alert(1)">'
    write_json(tmp_path / "results.json", results)
    page = write_report(tmp_path).read_text()
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_task_inference_is_in_the_summary_when_stored(tmp_path):
    inference = {"task_accuracy": 0.8125, "class_incremental_acc": 0.75}
    write_json(tmp_path / "results.json", results_for(MATRIX, task_inference=inference))
    page = write_report(tmp_path).read_text()
    assert "<th>task inferred</th><th>class-incremental ACC</th>" in page
    assert ">0.8125<" in page and ">0.7500<" in page
    assert "Class-incremental accuracy matrix" not in page  # not stored: not drawn


def test_the_class_incremental_matrix_is_drawn_when_stored(tmp_path):
    incremental = [[0.95, None, None], [0.6, 0.7, None], [0.5, 0.4, 0.6]]
    inference = {"task_accuracy": 0.8125, "class_incremental_acc": 0.375, "acc_matrix": incremental}
    write_json(tmp_path / "results.json", results_for(MATRIX, task_inference=inference))
    page = write_report(tmp_path).read_text()
    assert (
        "Class-incremental accuracy matrix" in page
        and (tmp_path / "report" / "class_incremental_matrix.png").exists()
    )
    inference["acc_matrix"] = [[0.5]]
    write_json(tmp_path / "results.json", results_for(MATRIX, task_inference=inference))
    with pytest.raises(MaskclError, match="task_inference acc_matrix is not 3 x 3"):
        write_report(tmp_path)


def test_unrecorded_entries_are_left_blank(tmp_path):
    matrix = [[0.9, None], [None, 0.8]]
    results = {"acc_matrix": matrix, "acc": 0.8, "bwt": 0.0, "forgetting": 0.0, "config": {"method": "hat"}}
    write_json(tmp_path / "results.json", results)
    assert write_report(tmp_path).read_text().count(EMBEDDED_PNG) == 2


def test_a_failed_report_keeps_the_previous_page(single_run):
    page = write_report(single_run)
    before = page.read_bytes()
    results = json.loads((single_run / "results.json").read_text())
    write_json(single_run / "results.json", {**results, "capacity": [{"name": "gates.0"}]})
    with pytest.raises(MaskclError, match=r"results\.json: 'capacity'"):
        write_report(single_run)
    assert page.read_bytes() == before
    assert not [p for p in single_run.rglob(".*")]  # no temporary files left behind


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "results.json is not valid JSON"),
        ("[1, 2]", "results.json does not hold a JSON object"),
        ('{"acc": 0.5}', "results.json: no acc_matrix"),
        ('{"acc_matrix": [[0.5, 0.5]], "acc": 0.5}', r"results.json: acc_matrix must be square"),
        ('{"acc_matrix": [[0.5]], "acc": 0.5, "bwt": 0}', "results.json: 'forgetting' must be a number"),
        (  # before, a ValueError traceback from the summary table
            '{"acc_matrix": [[0.5]], "acc": 0.5, "bwt": 0, "forgetting": 0, '
            '"task_inference": {"task_accuracy": "high", "class_incremental_acc": 0.4}}',
            "results.json: task_inference 'task_accuracy' must be a number",
        ),
        (
            '{"acc_matrix": [[0.5]], "acc": 0.5, "bwt": 0, "forgetting": 0, "task_inference": [1]}',
            "results.json: 'task_inference' must be a JSON object",
        ),
        ("[" * 100_000 + "]" * 100_000, "results.json is nested too deeply"),
    ],
)
def test_bad_results_name_the_file(tmp_path, content, problem):
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(MaskclError, match=re.escape(str(tmp_path)) + ".*" + problem):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(MaskclError, match="no such run folder"):
        write_report(tmp_path / "absent")
    with pytest.raises(MaskclError, match=r"no results\.json or summary\.json"):
        write_report(tmp_path)


def test_bad_multi_seed_folder_names_the_file(multi_seed_run):
    run_dir, *_ = multi_seed_run
    shutil.rmtree(run_dir / "seed-1")
    with pytest.raises(MaskclError, match=r"cannot read .*seed-1/results\.json"):
        write_report(run_dir)
    (run_dir / "summary.json").write_text('{"runs": []}')
    with pytest.raises(MaskclError, match=r"summary\.json: 'runs' must be a non-empty list"):
        write_report(run_dir)


@pytest.fixture(scope="module")
def chromium():
    """Chromium's path. Missing, the browser tests skip, except under CI, where it means a broken set-up."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: install it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


def run_chromium(chromium, tmp_path, *args):
    """Headless Chromium with its own profile; its stdout. Its stderr is noisy (D-Bus, GPU) and only shown
    when it fails."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"chromium exited with {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def test_page_renders_in_a_browser(chromium, hat_run, tmp_path):
    page = write_report(hat_run)
    screenshot = tmp_path / "screenshot.png"
    run_chromium(chromium, tmp_path, f"--screenshot={screenshot}", "--window-size=1200,2400", page.as_uri())
    not_white, colours, colourful = image_stats(imread(screenshot))
    assert colourful > 0.02, f"the plots are not on the rendered page: {colourful:.4f} of it in colour"
    assert not_white > 0.03 and colours > 500
    dom = run_chromium(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert dom.count(EMBEDDED_PNG) == 3
    summary = re.search(r'<table class="summary">.*?</table>', dom, re.DOTALL)
    assert summary is not None and "ACC" in summary.group() and ">0.9133<" in summary.group()


def test_every_plot_is_a_print_resolution_png_a_pdf_and_an_svg_with_the_same_bytes_each_time(single_run):
    write_report(single_run)
    folder = single_run / "report"
    first = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert sorted(first) == sorted(f"{n}.{ext}" for n in PLOTS[:2] for ext in ("png", "pdf", "svg"))
    assert imread(folder / "task_accuracy.png").shape[:2] == (1350, 2100)  # 7 x 4.5 inches at 300 dpi
    assert first["accuracy_matrix.pdf"].startswith(b"%PDF") and b"<svg" in first["accuracy_matrix.svg"]
    write_report(single_run)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == first


def test_the_tasks_not_yet_learned_are_left_blank_in_the_matrix(tmp_path):
    """The entries above the diagonal (measured, for FWT) are not drawn: the heatmap is the same as with
    none there."""
    upper = [[0.95, 0.5, 0.4], [0.90, 0.97, 0.6], [0.85, 0.93, 0.96]]
    for name, matrix in (("with", upper), ("without", MATRIX)):
        write_json(tmp_path / name / "results.json", results_for(matrix))
        write_report(tmp_path / name)
    drawn = [
        (tmp_path / name / "report" / "accuracy_matrix.png").read_bytes() for name in ("with", "without")
    ]
    assert drawn[0] == drawn[1]


def test_a_multi_seed_report_says_what_is_a_mean_and_what_is_one_seeds(multi_seed_run):
    run_dir, *_ = multi_seed_run
    page = write_report(run_dir).read_text()
    assert "Mean over the 2 seeds, with a band of one standard deviation." in page
    assert "Of the first seed&#x27;s run (seed-0), not a mean over the seeds." in page


def test_fwt_and_the_average_incremental_accuracy_are_in_the_summary_when_stored(multi_seed_run):
    run_dir, seeds, _, _ = multi_seed_run
    for seed, (fwt, inc) in enumerate([(0.01, 0.9), (-0.03, 0.8)]):
        write_json(
            run_dir / f"seed-{seed}" / "results.json", {**seeds[seed], "fwt": fwt, "avg_incremental_acc": inc}
        )
    page = write_report(run_dir).read_text()
    assert "<th>FWT</th><th>avg. incremental ACC</th>" in page
    assert (
        f"-0.0100 ± {np.std([0.01, -0.03], ddof=1):.4f}" in page
        and ">+0.0100<" in page
        and ">0.8000<" in page
    )
