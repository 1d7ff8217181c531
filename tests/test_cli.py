"""`maskcl run`: results on real and self-made data, and one-line errors that leave nothing behind."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import maskcl
from maskcl.cli import main
from maskcl.runs import load_run

FAST = ["--epochs", "1", "--hidden", "32,32", "--quiet"]
LEARN = [
    "--epochs",
    "5",
    "--batch-size",
    "8",
    "--hidden",
    "32,32",
    "--dropout",
    "0",
    "--input-dropout",
    "0",
    "--quiet",
]


def write_npz(path: Path, n_classes=4, n=240, shape=(6, 6), **overrides) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % n_classes
    x = (rng.integers(0, 60, (n, *shape)) + 40 * y.reshape(-1, *[1] * len(shape))).astype(np.uint8)
    arrays = {"x_train": x, "y_train": y, "x_test": x[:80], "y_test": y[:80], **overrides}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def run_cli(args, capsys):
    code = main(["run", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_on_own_npz_writes_results_with_config(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz")
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["--data", str(data), "--num-tasks", "2", "--out", str(out), *FAST], capsys)
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["acc_matrix"]) == 2 and all(0 <= a <= 1 for a in results["acc_matrix"][1])
    assert {"acc", "bwt", "forgetting", "config", "capacity"} <= set(results)
    assert results["config"]["data"] == str(data) and results["config"]["hidden"] == [32, 32]
    assert results["bwt"] == 0.0
    assert "ACC" in stdout and "after task 1" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.npz", "out"]  # no staging folder left


def test_permuted_scenario_from_npz(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz")
    code, _, _ = run_cli(
        [
            "--data",
            str(data),
            "--scenario",
            "permuted",
            "--num-tasks",
            "3",
            "--out",
            str(tmp_path / "o"),
            *FAST,
        ],
        capsys,
    )
    assert code == 0
    assert len(json.loads((tmp_path / "o" / "results.json").read_text())["acc_matrix"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "ewc"], "invalid choice: 'ewc'"),
        (["--benchmark", "mnist"], "invalid choice: 'mnist'"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--hidden", "4,x"], "comma-separated integers"),
        (["--data", "nowhere.npz"], "nowhere.npz"),
        (["--arch", "alexnet", "--data", "FEATURES"], "alexnet takes images"),
        (["--arch", "resnet"], "unknown arch 'resnet'"),
        (["--method", "hypermask", "--sparsity", "100"], "sparsity must be in [0, 100)"),
        (["--method", "hypermask", "--chunks", "-1"], "chunks must be >= 0"),
        (["--arch", "timm:no_such_net", "--data", "GOOD"], "timm cannot build 'no_such_net'"),
        (["--arch", "timm:resnet18", "--data", "FEATURES"], "timm models take images"),
        (["--data", "TOO_FEW", "--num-tasks", "3"], "too few"),
        (["--data", "MISSING_ARRAY"], "y_test"),
        (["--data", "MISMATCH"], "y_train"),
        (["--data", "GOOD", "--lr", "1e30", "--optimizer", "sgd"], "loss became"),
        (
            ["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"],
            "device",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    files = {
        "FEATURES": write_npz(tmp_path / "features.npz", shape=(12,)),
        "TOO_FEW": write_npz(tmp_path / "few.npz", n_classes=4),
        "MISSING_ARRAY": write_npz(tmp_path / "missing.npz", y_test=None),
        "MISMATCH": write_npz(tmp_path / "mismatch.npz", y_train=np.zeros(7, dtype=np.int64)),
        "GOOD": write_npz(tmp_path / "good.npz"),
    }
    args = [str(files.get(a, a)) for a in args]
    out = tmp_path / "out"
    code, _, err = run_cli([*FAST, *args, "--out", str(out)], capsys)
    assert code == 2
    assert err.startswith("maskcl: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == []


def test_existing_results_are_never_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    code, _, err = run_cli(["--data", str(write_npz(tmp_path / "d.npz")), "--out", str(out), *FAST], capsys)
    assert code == 2 and "already exists" in err
    assert (out / "results.json").read_text() == "{}"


def test_entry_point_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "maskcl", "run", "--method", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("maskcl: error:") and "Traceback" not in proc.stderr


def test_python_m_maskcl_prints_the_version():
    proc = subprocess.run([sys.executable, "-m", "maskcl", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == f"maskcl {maskcl.__version__}\n", proc.stderr


def test_default_job_on_real_split_fashion_mnist(tmp_path, capsys, fashion_mnist):
    """The default HAT job, shortened to 1 epoch: it learns every task and forgets nothing."""
    code, _stdout, _ = run_cli(
        ["--epochs", "1", "--hidden", "100,100", "--quiet", "--out", str(tmp_path / "r")], capsys
    )
    assert code == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["bwt"] == 0.0 and results["forgetting"] == 0.0
    assert results["acc"] > 0.95
    assert results["scenario"]["classes"] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_unwritable_out_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, stdout, err = run_cli(["--out", str(blocker / "run"), *FAST], capsys)
    assert code == 2 and "cannot create" in err and err.count("\n") == 1
    assert "task 0" not in stdout  # nothing was trained


def test_results_that_cannot_be_written_are_rescued_not_lost(tmp_path, capsys, monkeypatch):
    from maskcl.runs import RunFolder

    finish = RunFolder.finish

    def blocked_finish(folder, results):  # something took results.json's place: the rename fails
        (folder.path / "results.json" / "in-the-way").mkdir(parents=True)
        finish(folder, results)

    monkeypatch.setattr(RunFolder, "finish", blocked_finish)
    out = tmp_path / "out"
    code, _, err = run_cli(["--data", str(write_npz(tmp_path / "d.npz")), "--out", str(out), *FAST], capsys)
    assert code == 2 and err.count("\n") == 1 and "results.json" in err
    rescue = Path(err.strip().rsplit("saved to ", 1)[1])
    results = json.loads(rescue.read_text())
    assert len(results["acc_matrix"]) == 2 and results["config"]["hidden"] == [32, 32]
    assert (out / "models" / "task-1.safetensors").exists()  # the finished tasks stay too
    rescue.unlink()


def test_joint_reference_adds_the_forgetting_ratio_and_a_mismatch_is_refused_before_training(
    tmp_path, capsys
):
    data = str(write_npz(tmp_path / "d.npz"))
    code, _, _ = run_cli(
        ["--data", data, "--method", "joint", "--out", str(tmp_path / "joint"), *LEARN], capsys
    )
    assert code == 0
    reference = str(tmp_path / "joint" / "results.json")
    code, stdout, _ = run_cli(
        ["--data", data, "--joint-reference", reference, "--out", str(tmp_path / "hat"), *LEARN], capsys
    )
    assert code == 0 and "forgetting ratio" in stdout
    assert "forgetting_ratio" in json.loads((tmp_path / "hat" / "results.json").read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"acc_matrix": [[0.5, 0.2, 0.1]]}))
    code, _, err = run_cli(["--data", data, "--joint-reference", str(bad), *LEARN], capsys)
    assert (code == 2 and "square" in err) or "not" in err
    three = tmp_path / "three.json"
    three.write_text(json.dumps({"acc_matrix": [[0.9, 0, 0], [0.9, 0.9, 0], [0.9, 0.9, 0.9]]}))
    code, stdout, err = run_cli(
        ["--data", data, "--joint-reference", str(three), "--out", str(tmp_path / "never"), *LEARN], capsys
    )
    assert code == 2 and err.count("\n") == 1 and "joint reference has 3 tasks, this run 2" in err
    assert "task 0" not in stdout and not (tmp_path / "never").exists()  # found before any training
    chance = tmp_path / "chance.json"  # a reference no better than chance: the ratio is undefined
    chance.write_text(json.dumps({"acc_matrix": [[0.5, None], [0.5, 0.5]]}))
    code, _, err = run_cli(
        ["--data", data, "--joint-reference", str(chance), "--out", str(tmp_path / "kept"), *LEARN], capsys
    )
    assert code == 0 and err.startswith("maskcl: warning: --joint-reference:") and "without it" in err
    assert "forgetting_ratio" not in json.loads((tmp_path / "kept" / "results.json").read_text())


@pytest.mark.parametrize("method", ["hat", "finetune"])
def test_converted_timm_network_from_the_command_line(tmp_path, capsys, method):
    pytest.importorskip("timm")
    data = write_npz(tmp_path / "images.npz", shape=(1, 16, 16))
    out = tmp_path / method
    args = ["--data", str(data), "--num-tasks", "2", "--arch", "timm:resnet18", "--method", method]
    code, _, _ = run_cli([*args, "--epochs", "2", "--batch-size", "16", "--quiet", "--out", str(out)], capsys)
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["arch"] == "timm:resnet18"
    if method == "hat":
        assert results["bwt"] == 0.0 and len(results["capacity"]) == 20  # one gated layer per conv
    else:
        assert "capacity" not in results


def test_hypermask_from_the_command_line_learns_and_caches_its_masks(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz")
    out = tmp_path / "hm"
    args = [
        "--data",
        str(data),
        "--num-tasks",
        "2",
        "--method",
        "hypermask",
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
    ]
    code, _, _ = run_cli([*args, *LEARN, "--epochs", "15", "--sparsity", "30", "--out", str(out)], capsys)
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["method"] == "hypermask" and results["config"]["sparsity"] == 30
    assert min(results["acc_matrix"][1]) >= 0.85  # 40 test samples a task; chance is 0.5


@pytest.mark.parametrize(
    "method, flag, predictor",
    [
        ("hat", [], "gaussian"),
        ("hypermask", ["energy"], "energy"),
        ("wsn", ["entropy"], "entropy"),
        ("adahat", ["ood-head"], "ood-head"),
    ],
)
def test_task_inference_is_reported_when_asked(tmp_path, capsys, method, flag, predictor):
    data = write_npz(tmp_path / "mine.npz")
    out = tmp_path / "ti"
    args = ["--data", str(data), "--num-tasks", "2", "--method", method, "--task-inference", *flag, *FAST]
    code, stdout, _ = run_cli([*args, "--out", str(out)], capsys)
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    inference = results["task_inference"]
    assert results["config"]["task_inference"] == predictor == inference["predictor"]
    assert 0 <= inference["class_incremental_acc"] <= inference["task_accuracy"] <= 1
    assert len(inference["per_task_task_accuracy"]) == 2
    # the class-incremental matrix: after task 0 only task 0 is known (found always), then both
    matrix, found = inference["acc_matrix"], inference["task_found_matrix"]
    assert found[0] == [1.0, None] and matrix[0][1] is None and matrix[0][0] == results["acc_matrix"][0][0]
    assert matrix[1] == inference["per_task_class_incremental_acc"]
    assert inference["acc"] == pytest.approx(sum(matrix[1]) / 2)
    assert inference["bwt"] == pytest.approx(matrix[1][0] - matrix[0][0])
    assert "task unknown at test time: task inferred" in stdout


def test_an_unknown_task_predictor_is_one_line_and_writes_nothing(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz")
    out = tmp_path / "ti"
    code, _, err = run_cli(
        ["--data", str(data), "--task-inference", "oracle", *FAST, "--out", str(out)], capsys
    )
    assert code == 2 and err.count("\n") == 1, err
    assert "unknown task predictor 'oracle'; known: energy, entropy, gaussian, max-logit" in err
    assert not out.exists()


def test_a_predictor_that_trains_keeps_its_outputs_in_the_model_files(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz")
    out = tmp_path / "ti"
    args = ["--data", str(data), "--num-tasks", "2", "--task-inference", "ood-head", *FAST, "--out", str(out)]
    assert run_cli([*args], capsys)[0] == 0
    model = load_run(out)
    assert model.heads.reject_weight.shape == (2, model.heads.weight.shape[1])
    assert main(["eval", str(out)]) == 0


def test_a_predictor_that_cannot_train_on_the_inputs_says_why_and_writes_nothing(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz", shape=(6, 5))
    out = tmp_path / "ti"
    args = ["--data", str(data), "--task-inference", "ood-head", *FAST, "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "the ood-head predictor rotates its training inputs: it needs square images" in err
    assert not out.exists()


def test_a_task_predictor_that_cannot_serve_the_method_says_why_and_writes_nothing(tmp_path, capsys):
    data = write_npz(tmp_path / "mine.npz")
    out = tmp_path / "ti"
    args = ["--data", str(data), "--method", "hat", "--task-inference", "one-shot", *FAST, "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "the one-shot predictor needs superposed supermasks (method supsup)" in err
    assert not out.exists()


def test_print_config_prints_the_complete_config_writes_nothing_and_reads_back(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["run", "--method", "packnet", "--lr", "0.01", "--retrain-epochs", "2", "--print-config"]) == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["method"] == "packnet" and printed["lr"] == 0.01 and printed["retrain_epochs"] == 2
    assert "s_max" not in printed and list(tmp_path.iterdir()) == []  # nothing run, nothing written
    (tmp_path / "printed.json").write_text(json.dumps(printed))
    assert main(["run", "--config", str(tmp_path / "printed.json"), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == printed


def test_run_help_groups_the_flags_and_shows_every_default(capsys):
    from maskcl.cli import FLAG_GROUPS, build_parser
    from maskcl.config import RUN_FIELDS

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    heads = [f"\n{group}:\n" for group in FLAG_GROUPS] + ["\noptions of method hat:\n", "\nexamples:\n"]
    positions = [text.find(head) for head in heads]
    assert -1 not in positions and positions == sorted(positions)
    run_parser = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    groups = {a.dest: g.title for g in run_parser._action_groups for a in g._group_actions}
    for name in RUN_FIELDS:
        action = next(a for a in run_parser._actions if a.dest == name)
        assert "default" in action.help, name
        assert groups[name] == next((g for g, names in FLAG_GROUPS.items() if name in names), "run"), name
