"""maskcl compare: a table of experiments by metrics over finished run folders (real runs, in-process)."""

import csv
import io
import json
import math

import pytest
from conftest import SMALL_RUN

from maskcl.cli import main
from maskcl.compare import average_accuracy_curve, compare_runs, format_table, plot_average_accuracy
from maskcl.errors import MaskclError


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """hat over seeds 0 and 1 (a multi-seed folder); packnet seed 0 with task inference, and its seed 1
    in a folder of its own; hat with lr 0.01; hat on the permuted scenario (another benchmark)."""
    root = tmp_path_factory.mktemp("compare")
    common = ["run", "--data", data, *SMALL_RUN, "--quiet"]
    assert main([*common, "--seeds", "0,1", "--out", str(root / "hat")]) == 0
    packnet = [*common, "--method", "packnet", "--task-inference", "energy"]
    assert main([*packnet, "--out", str(root / "packnet-0")]) == 0
    assert main([*packnet, "--seed", "1", "--out", str(root / "packnet-1")]) == 0
    assert main([*common, "--lr", "0.01", "--out", str(root / "hat-lr")]) == 0
    assert main([*common, "--scenario", "permuted", "--out", str(root / "hat-permuted")]) == 0
    return root


def results(path):
    return json.loads(path.read_text())


def test_runs_differing_only_in_the_seed_are_one_row_with_their_mean_and_std(runs):
    rows = compare_runs([runs / "hat", runs / "packnet-0", runs / "packnet-1"])
    assert [row.label for row in rows] == ["hat", "packnet"] and [len(r.runs) for r in rows] == [2, 2]
    accs = [
        results(runs / "packnet-0" / "results.json")["acc"],
        results(runs / "packnet-1" / "results.json")["acc"],
    ]
    mean, std = rows[1].stats("acc")
    assert mean == pytest.approx(sum(accs) / 2) and std == pytest.approx(
        abs(accs[0] - accs[1]) / math.sqrt(2)
    )
    table = format_table(rows, "markdown").splitlines()
    head = "| method | runs | ACC | BWT | forgetting | FWT | avg. incremental ACC | task found |"
    assert table[0] == head + " class-incremental ACC |"
    hat_row, packnet_row = table[2], table[3]
    assert packnet_row.startswith("| packnet | 2 | ") and f"{mean:.4f} ± {std:.4f}" in packnet_row
    assert hat_row.endswith("| - | - |")  # hat ran without task inference
    best = max(row.stats("acc")[0] for row in rows)
    assert sum(f"**{best:.4f} ±" in line for line in table) == 1  # the best ACC is bold, once


def test_experiments_of_one_method_are_told_apart_by_what_differs(runs):
    rows = compare_runs([runs / "hat", runs / "hat-lr"])
    assert [row.label for row in rows] == ["hat (lr=0.05)", "hat (lr=0.01)"]


def test_latex_and_csv_give_the_same_figures(runs):
    rows = compare_runs([runs / "hat", runs / "packnet-0"])
    latex = format_table(rows, "latex")
    assert (
        latex.startswith("\\begin{tabular}")
        and "\\toprule" in latex
        and latex.rstrip().endswith("\\end{tabular}")
    )
    mean, std = rows[0].stats("acc")
    assert f"{mean:.4f} \\pm {std:.4f}" in latex
    table = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    assert [r["method"] for r in table] == ["hat", "packnet"]
    assert float(table[0]["acc_mean"]) == mean and float(table[0]["acc_std"]) == pytest.approx(std)
    assert table[0]["task_inference.class_incremental_acc_mean"] == ""  # not measured for hat


def test_runs_of_different_benchmarks_are_refused_in_one_line(runs, capsys):
    code = main(["compare", str(runs / "hat"), str(runs / "hat-permuted")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "these runs are of different benchmarks" in err and "hat-permuted is " in err


def test_a_folder_without_results_is_refused(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a finished maskcl run folder" in capsys.readouterr().err


def test_the_cli_writes_the_table_and_the_plot(runs, tmp_path, capsys):
    out, plot = tmp_path / "table.tex", tmp_path / "acc.pdf"
    args = ["compare", str(runs / "hat"), str(runs / "packnet-0"), "--format", "latex"]
    assert main([*args, "--out", str(out), "--plot", str(plot)]) == 0
    assert out.read_text() == format_table(compare_runs([runs / "hat", runs / "packnet-0"]), "latex")
    assert plot.read_bytes().startswith(b"%PDF")
    assert main(["compare", str(runs / "hat")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("| hat | 2 | ")


def test_the_curve_is_the_average_accuracy_over_the_tasks_learned(runs, tmp_path):
    row = compare_runs([runs / "hat-lr"])[0]
    R = results(runs / "hat-lr" / "results.json")["acc_matrix"]
    assert average_accuracy_curve(row.runs[0]).tolist() == pytest.approx([R[0][0], (R[1][0] + R[1][1]) / 2])
    assert plot_average_accuracy([row], tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(MaskclError, match=r"written as \.png, \.pdf or \.svg, not \.jpg"):
        plot_average_accuracy([row], tmp_path / "a.jpg")
