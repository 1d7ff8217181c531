"""Config files for `maskcl run --config`, and the one-line errors of bad configs, resumes and evals."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from test_cli import write_npz

from maskcl.cli import main
from maskcl.runs import RunFolder

yaml = pytest.importorskip("yaml")

FAST = ["--epochs", "1", "--hidden", "16,16", "--quiet"]


def cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert err.startswith("maskcl: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert str(fragment) in err, f"{fragment!r} not in {err!r}"


def dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


@pytest.fixture
def data(tmp_path):
    return write_npz(tmp_path / "data.npz")


# ----------------------------------------------------------------------------------- good config files
def test_yaml_config_sets_the_run_and_flags_win(tmp_path, data, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"""# a YAML config
data: {data}
num_tasks: 2
epochs: 2          # the command line's --epochs 1 wins
hidden: [16, 12]
lr: 1e-3           # YAML 1.1 reads this as the string '1e-3'
optimizer: adam
method: hat
task_inference: true
batch-size: 16
s_max: 200
dropout: 0
out: {tmp_path / "from-file"}
"""
    )
    assert yaml.safe_load(config.read_text())["lr"] == "1e-3"  # the string case is really exercised
    out = tmp_path / "from-flag"
    code, stdout, err = cli(["run", "--config", str(config), "--epochs", "1", "--out", str(out)], capsys)
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["hidden"] == [16, 12] and saved["batch_size"] == 16
    assert saved["lr"] == 0.001 and isinstance(saved["lr"], float)
    assert saved["optimizer"] == "adam" and saved["method"] == "hat" and saved["task_inference"] == "gaussian"
    assert saved["s_max"] == 200.0 and saved["dropout"] == 0.0 and saved["data"] == str(data)
    assert saved["num_tasks"] == 2
    results = json.loads((out / "results.json").read_text())
    assert results["config"] == saved and "task_inference" in results
    # the flag's value is what ran, not only what was written: one epoch per task in metrics.csv
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert sorted({row.split(",")[1] for row in rows if ",train_loss," in row}) == ["1"]
    assert "task unknown at test time" in stdout
    assert not (tmp_path / "from-file").exists()  # --out on the command line wins over the file's out


def test_run_options_in_the_file(tmp_path, data, capsys, monkeypatch):
    saves = []
    save = RunFolder.save_training_state

    def counted(folder, state):  # the real save, counted
        saves.append(state["position"]["step"])
        save(folder, state)

    monkeypatch.setattr(RunFolder, "save_training_state", counted)
    out = tmp_path / "sweep"
    config = tmp_path / "run.yml"
    config.write_text(
        f"data: {data}\nnum_tasks: 2\nepochs: 1\nhidden: 16,16\n"
        f"seeds: [3, 4]\nout: {out}\nquiet: true\ncheckpoint_interval: 0\n"
    )
    code, stdout, err = cli(["run", "--config", str(config)], capsys)
    assert code == 0, err
    assert dirs(out) == ["seed-3", "seed-4"]
    assert json.loads((out / "summary.json").read_text())["seeds"] == [3, 4]
    assert json.loads((out / "seed-4" / "config.json").read_text())["seed"] == 4
    assert "epoch" not in stdout  # quiet: no per-epoch lines
    # interval 0: a checkpoint after every step (step > 0), not only at each task's end (step 0)
    assert any(step > 0 for step in saves) and saves.count(0) == 4

    saves.clear()
    code, stdout, err = cli(["run", "--config", str(config), "--out", str(tmp_path / "flag-out")], capsys)
    assert code == 0, err
    assert dirs(tmp_path / "flag-out") == ["seed-3", "seed-4"]


def test_defaults_keep_per_epoch_lines_and_task_end_checkpoints_only(tmp_path, data, capsys, monkeypatch):
    """The counterpart of the test above: without those keys, progress lines and no mid-task saves."""
    saves = []
    save = RunFolder.save_training_state
    monkeypatch.setattr(RunFolder, "save_training_state", lambda f, s: (saves.append(s), save(f, s)))
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {data}\nnum_tasks: 2\nepochs: 1\nhidden: [16, 16]\n")
    code, stdout, err = cli(["run", "--config", str(config), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert "task 0 epoch 1/1" in stdout
    assert [s["position"]["step"] for s in saves] == [0, 0]


def test_a_run_folders_config_json_is_a_config_file(tmp_path, data, capsys):
    first = tmp_path / "first"
    args = ["--data", str(data), "--num-tasks", "2", "--lr", "0.02", "--per-layer", "--c", "0.5", *FAST]
    code, _, err = cli(["run", *args, "--out", str(first)], capsys)
    assert code == 0, err
    second = tmp_path / "second"
    code, _, err = cli(["run", "--config", str(first / "config.json"), "--out", str(second)], capsys)
    assert code == 0, err
    assert (second / "config.json").read_text() == (first / "config.json").read_text()
    assert json.loads((second / "config.json").read_text())["per_layer"] is True
    # the same config gives the same results, byte for byte
    assert (second / "results.json").read_text() == (first / "results.json").read_text()


# ------------------------------------------------------------------------------------ bad config files
BAD_CONFIGS = [
    ("run.yaml", "epochz: 3\n", ["epochz"]),
    ("run.yaml", "epochs: five\n", ["epochs", "five"]),
    ("run.yaml", "hidden: [4, x]\n", ["hidden"]),
    ("run.yaml", "hidden: 16\n", ["hidden"]),
    ("run.yaml", "per_layer: 3\n", ["per_layer"]),
    ("run.yaml", "lr: true\n", ["lr"]),
    ("run.yaml", "lr: fast\n", ["lr"]),
    ("run.yaml", "epochs: -1\n", ["epochs", "-1"]),
    ("run.yaml", "epochs: 1.5\n", ["epochs"]),
    ("run.yaml", "s_max: 0\n", [re.compile(r"s[-_]max")]),
    ("run.yaml", "lr: 0\n", ["lr"]),
    ("run.yaml", "lr: -0.1\n", ["lr", "-0.1"]),
    ("run.yaml", "method: ewc\n", ["ewc"]),
    ("run.yaml", "resume: somewhere\n", ["resume"]),
    ("run.yaml", "quiet: 3\n", ["quiet"]),
    ("run.yaml", "seeds: [0, x]\n", ["seeds"]),
    ("run.yaml", "- epochs\n- 3\n", ["mapping", "list"]),
    ("run.yaml", "epochs: [1, 2\n", ["YAML"]),
    ("run.yaml", "epochs: 1\n  hidden: 3\n", ["YAML"]),
    ("run.json", '{"epochz": 1}', ["epochz"]),
    ("run.json", '{"epochs": "five"}', ["epochs"]),
    ("run.json", '{"epochs": 1,}', ["JSON"]),
    ("run.json", "[1, 2]", ["mapping"]),
    pytest.param(
        "run.yaml",
        "checkpoint_interval: -1\n",
        ["checkpoint"],
        id="checkpoint_interval-negative",
    ),
    pytest.param(
        "run.yaml",
        "seeds: []\n",
        ["seeds"],
        id="seeds-empty",
    ),
    pytest.param("run.yaml", "seeds: [2, 0, 2]\n", ["seeds", "2", "more than once"], id="seeds-repeated"),
]


@pytest.mark.parametrize(("name", "text", "fragments"), BAD_CONFIGS)
def test_a_bad_config_is_one_line_naming_the_file_and_key(tmp_path, data, capsys, name, text, fragments):
    config = tmp_path / name
    config.write_text(text)
    out = tmp_path / "out"
    code, stdout, err = cli(["run", "--config", str(config), "--data", str(data), "--out", str(out)], capsys)
    assert_one_line_error(code, err, config)
    for fragment in fragments:
        if isinstance(fragment, re.Pattern):
            assert fragment.search(err), err
        else:
            assert fragment in err, err
    assert not out.exists() and dirs(tmp_path) == []  # no run folder
    assert "task 0" not in stdout  # nothing trained


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere.yaml"
    code, _, err = cli(["run", "--config", str(missing), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, missing, "No such file")
    assert dirs(tmp_path) == []


def test_a_config_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "conf.yaml"
    folder.mkdir()
    code, _, err = cli(["run", "--config", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, folder)
    assert dirs(tmp_path) == ["conf.yaml"]


# ---------------------------------------------------------------------------------------- resume errors
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished 2-task runs of the same data: HAT ``narrow`` (16,16) and ``wide`` (32,32), and
    ``hypermask`` (16,16)."""
    root = tmp_path_factory.mktemp("runs")
    data = write_npz(root / "data.npz")
    made = {}
    for name, hidden, method in (
        ("narrow", "16,16", "hat"),
        ("wide", "32,32", "hat"),
        ("hypermask", "16,16", "hypermask"),
    ):
        args = [
            "run",
            "--data",
            str(data),
            "--num-tasks",
            "2",
            "--epochs",
            "1",
            "--hidden",
            hidden,
            "--quiet",
        ]
        args += ["--method", method]
        assert main([*args, "--checkpoint-interval", "0", "--out", str(root / name)]) == 0
        made[name] = root / name
    return made


@pytest.fixture
def stopped(runs, tmp_path):
    """A copy of the narrow run that has not finished (no results.json): ``--resume`` continues it."""
    folder = tmp_path / "stopped"
    shutil.copytree(runs["narrow"], folder)
    (folder / "results.json").unlink()
    return folder


def test_resume_of_an_intact_stopped_run_works(stopped, capsys):
    """The control for the tests below: the copy itself resumes, so their errors are the damage's."""
    code, _, err = cli(["run", "--resume", str(stopped), "--quiet"], capsys)
    assert code == 0, err
    assert (stopped / "results.json").exists()


def test_resume_of_a_missing_folder(tmp_path, capsys):
    missing = tmp_path / "never-ran"
    code, _, err = cli(["run", "--resume", str(missing)], capsys)
    assert_one_line_error(code, err, missing, "holds no maskcl run (no config.json)")
    assert not missing.exists()


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "something"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    code, _, err = cli(["run", "--resume", str(folder)], capsys)
    assert_one_line_error(code, err, folder, "no config.json")
    (folder / "run.json").write_text('{"state": "running"}')
    code, _, err = cli(["run", "--resume", str(folder)], capsys)
    assert_one_line_error(code, err, folder / "run.json", "format_version")
    (folder / "run.json").write_text("not json")
    code, _, err = cli(["run", "--resume", str(folder)], capsys)
    assert_one_line_error(code, err, folder / "run.json", "JSON")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "run.json"]


def test_resume_of_a_newer_run_format(stopped, capsys):
    info = json.loads((stopped / "run.json").read_text())
    (stopped / "run.json").write_text(json.dumps({**info, "format_version": 99}))
    code, _, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(code, err, stopped, "newer", "99")
    assert not (stopped / "results.json").exists()


def test_resume_with_a_truncated_checkpoint(stopped, capsys):
    checkpoint = stopped / "checkpoint.safetensors"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    code, _, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(code, err, checkpoint, "truncated")
    assert checkpoint.read_bytes() == data[: len(data) // 2]  # the folder is kept as it was
    assert (stopped / "models" / "task-1.safetensors").exists() and not (stopped / "results.json").exists()


def test_resume_with_a_checkpoint_of_the_wrong_kind(stopped, capsys):
    checkpoint = stopped / "checkpoint.safetensors"
    shutil.copy(stopped / "models" / "task-1.safetensors", checkpoint)
    code, _, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(code, err, checkpoint, "'model'")


def test_resume_with_a_config_json_that_is_bad(stopped, capsys):
    config = json.loads((stopped / "config.json").read_text())
    (stopped / "config.json").write_text(json.dumps({**config, "epochs": "many"}))
    code, _, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(code, err, stopped / "config.json", "epochs")


@pytest.mark.parametrize(
    ("other", "fragments"),
    [
        ("wide", ["hidden", "[32, 32]", "[16, 16]"]),
        ("hypermask", ["method", '"hypermask" in the checkpoint', '"hat" in the run']),
    ],
)
def test_resume_with_a_checkpoint_of_another_run_names_the_file_and_problem(
    runs, stopped, capsys, other, fragments
):
    shutil.copy(runs[other] / "checkpoint.safetensors", stopped / "checkpoint.safetensors")
    code, _, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(code, err, stopped / "checkpoint.safetensors", *fragments)
    assert not (stopped / "results.json").exists()


def test_resume_with_a_training_checkpoint_missing_fields(stopped, capsys):
    from maskcl.checkpoint import save_checkpoint

    save_checkpoint(stopped / "checkpoint.safetensors", {"position": {"task": 0}}, kind="training")
    code, _, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(code, err, stopped / "checkpoint.safetensors")


@pytest.mark.parametrize(
    ("flag", "name"),
    [
        (["--lr", "0.1"], "--lr"),
        (["--hidden", "32,32"], "--hidden"),
        (["--per-layer"], "--per-layer"),
        (["--seeds", "0,1"], "--seeds"),
        (["--out", "elsewhere"], "--out"),
        (["--config", "run.yaml"], "--config"),
    ],
)
def test_resume_with_a_config_flag_names_the_flag(stopped, capsys, flag, name):
    before = sorted(p.name for p in stopped.iterdir())
    code, _, err = cli(["run", "--resume", str(stopped), *flag], capsys)
    assert_one_line_error(code, err, name, stopped)
    assert sorted(p.name for p in stopped.iterdir()) == before


def test_resume_of_a_finished_run_changes_nothing(runs, tmp_path, capsys):
    folder = tmp_path / "done"
    shutil.copytree(runs["narrow"], folder)
    before = (folder / "results.json").read_bytes()
    code, stdout, _ = cli(["run", "--resume", str(folder), "--quiet"], capsys)
    assert code == 0 and "finished already" in stdout
    assert (folder / "results.json").read_bytes() == before


# ------------------------------------------------------------------------------------------ eval errors
def test_eval_of_a_good_run_prints_every_task(runs, capsys):
    code, stdout, err = cli(["eval", str(runs["narrow"])], capsys)
    assert code == 0, err
    assert "task 0: test acc" in stdout and "task 1: test acc" in stdout


def test_eval_with_a_corrupted_model_file_names_it(runs, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(runs["narrow"], folder)
    model = folder / "models" / "task-0.safetensors"
    data = bytearray(model.read_bytes())
    data[8:24] = b"\xff" * 16  # the header's start
    model.write_bytes(bytes(data))
    code, _, err = cli(["eval", str(folder), "--after-task", "0"], capsys)
    assert_one_line_error(code, err, model)
    code, stdout, err = cli(["eval", str(folder)], capsys)  # the last model is intact
    assert code == 0 and "task 1: test acc" in stdout, err
    last = folder / "models" / "task-1.safetensors"
    last.write_bytes(last.read_bytes()[:100])
    code, _, err = cli(["eval", str(folder)], capsys)
    assert_one_line_error(code, err, last, "truncated")


def test_eval_with_a_model_of_another_architecture(runs, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(runs["narrow"], folder)
    shutil.copy(runs["wide"] / "models" / "task-1.safetensors", folder / "models" / "task-1.safetensors")
    code, _, err = cli(["eval", str(folder)], capsys)
    assert_one_line_error(code, err, folder / "models" / "task-1.safetensors", "size mismatch")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--tasks", "5"], ["task 5"]),
        (["--tasks", "0,-1"], ["task -1"]),
        (["--tasks", "x"], ["--tasks"]),
        (["--after-task", "7"], ["task 7"]),
    ],
)
def test_eval_of_tasks_the_run_never_learned(runs, capsys, args, fragments):
    code, stdout, err = cli(["eval", str(runs["narrow"]), *args], capsys)
    assert_one_line_error(code, err, *fragments)
    assert "test acc" not in stdout


def test_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = cli(["eval", str(tmp_path)], capsys)
    assert_one_line_error(code, err, tmp_path, "no config.json")


# ------------------------------------------------------------------------------------- unwritable --out
@pytest.mark.parametrize("how", ["flag", "deeper", "file", "seeds"])
def test_out_below_a_regular_file_is_one_line_and_nothing_trains(tmp_path, data, capsys, how):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "x" / "y" if how == "deeper" else blocker / "run"
    args = ["run", "--data", str(data), "--num-tasks", "2", "--epochs", "1", "--hidden", "16,16"]
    if how == "file":
        config = tmp_path / "run.yaml"
        config.write_text(f"out: {out}\n")
        args += ["--config", str(config)]
    else:
        args += ["--out", str(out)]
    if how == "seeds":
        args += ["--seeds", "0,1"]
    code, stdout, err = cli(args, capsys)  # not --quiet: training would print its epochs
    assert_one_line_error(code, err, "cannot create", out)
    assert "epoch" not in stdout and "task 0" not in stdout
    assert blocker.read_text() == "not a folder" and dirs(tmp_path) == []


# ------------------------------------------------------------------- run folders edited or damaged
def _edit_checkpoint(path: Path, edit) -> None:
    from maskcl.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(path, kind="training")
    edit(state)
    save_checkpoint(path, state, kind="training")


def _retype_in_header(path: Path, fragment: str, dtype: str) -> str:
    """Change the dtype of the first tensor whose name contains ``fragment`` in the safetensors header,
    keeping its bytes (the same element size): what a hand edit of the header does. Returns its name."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    name = next(key for key in header if fragment in key)
    header[name]["dtype"] = dtype
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= size
    path.write_bytes(data[:8] + text.ljust(size) + data[8 + size :])
    return name


def test_resume_with_keys_deleted_from_config_json_names_them(stopped, capsys):
    config = json.loads((stopped / "config.json").read_text())
    del config["lr"], config["epochs"]
    (stopped / "config.json").write_text(json.dumps(config))
    code, _, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(code, err, stopped / "config.json", "lacks", "epochs", "lr")
    assert not (stopped / "results.json").exists()


def test_resume_with_a_config_json_that_differs_from_the_checkpoint_names_the_keys(stopped, capsys):
    config = json.loads((stopped / "config.json").read_text())
    (stopped / "config.json").write_text(json.dumps({**config, "lr": 0.2, "c": 0.5}))
    code, _, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(
        code, err, "another configuration", "lr 0.05 in the checkpoint", "0.2 in the run", "c 0.75"
    )


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda s: s["position"].update(task=99), ["task 99", "tasks 0-1"]),
        (lambda s: s["position"].update(epoch=7), ["epoch 7", "1 epochs"]),
        (lambda s: s["position"].update(task=0, in_task=True, step=10**6), ["step 1000000"]),
        (lambda s: s["position"].update(task=0, in_task="yes"), ["in_task"]),
        (lambda s: s["position"].pop("generator"), ["position is damaged"]),
        (lambda s: s["matrix"].pop(), ["accuracy matrix is not 2 x 2"]),
        (lambda s: s["rng"].update(torch=s["rng"]["torch"][:10]), ["torch generator state"]),
        (lambda s: s["config"].update(seed=5), ["seed 5 in the checkpoint"]),
        (lambda s: s["optimizer"]["param_groups"][0].update(lr=9.0), ["optimizer differs", "lr 9.0"]),
        (lambda s: s.update(seconds=-1), ["training time"]),
    ],
)
def test_resume_checks_the_checkpoint_against_the_run_before_training(stopped, capsys, edit, fragments):
    """A checkpoint of this run edited by hand: a position outside the run (before, task 99 of a 2-task
    run "resumed" to exit 0 with a 1 x 1 matrix), damaged parts, another config or optimizer."""
    checkpoint = stopped / "checkpoint.safetensors"
    _edit_checkpoint(checkpoint, edit)
    code, stdout, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(code, err, checkpoint, *fragments)
    assert "epoch" not in stdout and not (stopped / "results.json").exists()


@pytest.mark.parametrize(
    ("fragment", "dtype", "named"),
    [("model", "I32", "torch.int32"), ("rng.torch", "I8", "torch generator state is torch.int8")],
)
def test_resume_refuses_a_tensor_whose_dtype_was_changed_in_the_header(
    stopped, capsys, fragment, dtype, named
):
    """Before, torch converted such a tensor silently."""
    checkpoint = stopped / "checkpoint.safetensors"
    _retype_in_header(checkpoint, fragment, dtype)
    code, _, err = cli(["run", "--resume", str(stopped)], capsys)
    assert_one_line_error(code, err, checkpoint, named)


def test_eval_refuses_a_model_file_whose_dtype_was_changed(runs, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(runs["narrow"], folder)
    model = folder / "models" / "task-1.safetensors"
    name = _retype_in_header(model, "weight", "I32")
    code, _, err = cli(["eval", str(folder)], capsys)
    assert_one_line_error(code, err, model, "torch.int32", name.split(".", 2)[2])


def test_eval_ignores_stray_files_in_models(runs, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(runs["narrow"], folder)
    for stray in ("task-x.safetensors", "task-1.safetensors.bak", "notes.txt", "task-.safetensors"):
        (folder / "models" / stray).write_text("not a model")
    (folder / "models" / "task-extra").mkdir()
    code, stdout, err = cli(["eval", str(folder)], capsys)
    assert code == 0 and "task 1: test acc" in stdout, err


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("where", ["config.json", "run.json", "checkpoint", "results.json"])
def test_deeply_nested_json_in_a_run_folder_is_one_line(stopped, capsys, where):
    """JSON nested past Python's recursion limit (before, a RecursionError traceback)."""
    if where == "checkpoint":
        from maskcl.checkpoint import FORMAT

        path = stopped / "checkpoint.safetensors"
        header = json.dumps({"format": FORMAT, "version": 1, "kind": "training", "state": 0})
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(path), metadata={"maskcl": header.replace("0}", DEEP + "}")})
        command = ["run", "--resume", str(stopped)]
    elif where == "results.json":
        path = stopped / "results.json"
        command = ["report", str(stopped)]
    else:
        path = stopped / where
        command = ["run", "--resume", str(stopped)] if where != "config.json" else ["eval", str(stopped)]
    if where != "checkpoint":
        path.write_text(DEEP)
    code, _, err = cli(command, capsys)
    assert_one_line_error(code, err, path, "nested too deeply")


@pytest.mark.parametrize("name", ["deep.json", "deep.yaml"])
def test_deeply_nested_config_files_are_one_line(tmp_path, data, capsys, name):
    pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(DEEP if name.endswith(".json") else "lr: " + DEEP)
    code, _, err = cli(["run", "--config", str(path), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, path, "nested too deeply")
    code, _, err = cli(["run", "--data", str(data), "--joint-reference", str(path)], capsys)
    assert_one_line_error(code, err, "--joint-reference", path)
    assert dirs(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--device", "meta"], ["unknown device 'meta'"]),
        (["--device", "mps"], ["MPS"]),
        (["--device", "cuda:7"], ["cuda:7"]),
        (["--device", "nonsense"], ["unknown device"]),
        (["--checkpoint-interval", "nan"], ["--checkpoint-interval", "nan"]),
        (["--lr", "inf"], ["--lr", "finite"]),
        (["--beta", "nan"], ["--beta"]),
        (["--lr-schedule", "warmup"], ["--lr-schedule", "invalid choice: 'warmup'"]),
        (["--lr-gamma", "0"], ["--lr-gamma must be in (0, 1], got 0.0"]),
        (["--lr-step-epochs", "0"], ["--lr-step-epochs must be >= 1"]),
        (["--grad-clip", "-1"], ["--grad-clip must be > 0, got -1.0"]),
        (["--scenario", "permuted", "--class-order", "seeded"], ["a permuted task has them all"]),
    ],
)
def test_devices_and_numbers_that_cannot_work_are_one_line_and_write_nothing(
    tmp_path, data, capsys, args, fragments
):
    code, stdout, err = cli(["run", "--data", str(data), *args, "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, *fragments)
    assert "epoch" not in stdout and dirs(tmp_path) == []


def test_checkpoint_interval_nan_in_a_config_file_is_refused(tmp_path, data, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"data": str(data), "checkpoint_interval": float("nan")}))
    code, _, err = cli(["run", "--config", str(config), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "checkpoint-interval", "nan")
    assert dirs(tmp_path) == []


def test_bad_data_with_seeds_leaves_nothing_and_the_same_command_then_works(tmp_path, data, capsys):
    """Before, the sweep's ``sweep.json`` stayed behind, and the same command was then refused."""
    mine = tmp_path / "mine.npz"
    mine.write_bytes(Path(data).read_bytes()[:2000])  # truncated
    args = ["run", "--data", str(mine), "--num-tasks", "2", "--epochs", "1", "--hidden", "16,16", "--quiet"]
    args += ["--seeds", "0,1", "--out", str(tmp_path / "runs" / "sweep")]
    code, _, err = cli(args, capsys)
    assert_one_line_error(code, err, mine, "not a valid .npz")
    assert dirs(tmp_path) == []
    shutil.copy(data, mine)
    code, _, err = cli(args, capsys)
    assert code == 0, err


def test_a_format_3_config_with_task_inference_true_means_the_entropy_predictor_it_ran_with():
    from maskcl.config import upgrade_config

    assert upgrade_config({"method": "hat", "task_inference": True}, 3)["task_inference"] == "entropy"
    assert upgrade_config({"method": "hat", "task_inference": False}, 3)["task_inference"] is None
    assert upgrade_config({"method": "hat", "task_inference": "energy"}, 4)["task_inference"] == "energy"


def test_a_format_4_config_reads_with_no_schedule_and_no_clipping():
    from maskcl.config import upgrade_config

    old = {"method": "hat", "lr": 0.05}
    upgraded = upgrade_config(old, 4)
    assert upgraded["lr_schedule"] == "constant" and upgraded["grad_clip"] is None
    assert upgraded["early_stop"] is None and upgraded["lr_patience"] == 5
    assert upgrade_config({**old, "lr_schedule": "cosine"}, 7) == {**old, "lr_schedule": "cosine"}
    assert upgrade_config(old, 6) == {**old, "augment": "none", "workers": 0, "pretrained": None}
    assert upgrade_config({**old, "lr_schedule": "cosine"}, 5) == {
        **old,
        "lr_schedule": "cosine",
        "lr_patience": 5,
        "lr_min": 1e-4,
        "early_stop": None,
        "augment": "none",
        "workers": 0,
        "pretrained": None,
    }


def test_a_config_file_holds_a_section_per_method_and_a_run_takes_its_own(tmp_path, capsys):
    config = tmp_path / "all.json"
    sections = {"lr": 0.01, "hat": {"s-max": 300, "c": 0.5}, "packnet": {"retrain_epochs": 2}}
    config.write_text(json.dumps(sections))
    code, out, _ = cli(["run", "--config", str(config), "--print-config"], capsys)
    hat = json.loads(out)
    assert code == 0 and hat["s_max"] == 300 and hat["c"] == 0.5 and hat["lr"] == 0.01
    assert "retrain_epochs" not in hat and "hat" not in hat
    code, out, _ = cli(["run", "--config", str(config), "--method", "packnet", "--print-config"], capsys)
    packnet = json.loads(out)
    assert packnet["retrain_epochs"] == 2 and "s_max" not in packnet
    code, out, _ = cli(["run", "--config", str(config), "--s-max", "200", "--print-config"], capsys)
    assert json.loads(out)["s_max"] == 200  # flags still win
    config.write_text(json.dumps({"s_max": 100, "hat": {"s_max": 300}}))
    code, _, err = cli(["run", "--config", str(config), "--print-config"], capsys)
    assert_one_line_error(code, err, "'s_max' is given both at the top and in the hat section")


def test_key_value_overrides_sit_between_the_config_file_and_the_flags(tmp_path, capsys):
    pytest.importorskip("omegaconf")
    config = tmp_path / "all.yaml"
    config.write_text("epochs: 3\nlr: 0.01\nhat:\n  s_max: 300\npacknet:\n  prune: 0.6\n")
    args = ["run", "--config", str(config), "epochs=2", "hat.s_max=500", "batch-size=32", "hidden=[100,100]"]
    code, out, err = cli([*args, "--lr", "0.2", "--print-config"], capsys)
    values = json.loads(out)
    assert code == 0, err
    assert (values["epochs"], values["s_max"], values["batch_size"]) == (2, 500, 32)
    assert values["hidden"] == [100, 100] and values["lr"] == 0.2  # the flag wins over the file
    code, out, _ = cli(["run", "--config", str(config), "method=packnet", "--print-config"], capsys)
    packnet = json.loads(out)  # method= chooses the file's packnet section and packnet's flags
    assert packnet["method"] == "packnet" and packnet["prune"] == 0.6 and packnet["epochs"] == 3
    args = ["run", "method=packnet", "packnet.prune=0.7", "--retrain-epochs", "3", "--print-config"]
    code, out, _ = cli(args, capsys)
    packnet = json.loads(out)
    assert (packnet["prune"], packnet["retrain_epochs"]) == (0.7, 3)
    code, out, _ = cli(["run", "seeds=0,1", "--print-config"], capsys)
    assert code == 0 and "seeds" not in json.loads(out)  # a run option, not the config


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["lr=abc"], "lr must be a number, got 'abc'"),
        (["hat.s_max=1", "s_max=2"], "'s_max' is given both at the top and in the hat section"),
        (["nothing=1"], "unknown key 'nothing'"),
        (["packnet.prune=0.7"], "packnet.* sets options of packnet, but the run's method is hat"),
        (["hat..s_max=1"], "must be key=value"),
        (["lr=0.1", "stray"], "unrecognized arguments: stray"),
    ],
)
def test_a_bad_override_is_a_one_line_error_and_runs_nothing(tmp_path, capsys, monkeypatch, args, fragment):
    pytest.importorskip("omegaconf")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["run", *args, *FAST], capsys)
    assert_one_line_error(code, err, fragment)
    assert dirs(tmp_path) == []


def test_a_resume_takes_no_override(tmp_path, capsys):
    code, _, err = cli(["run", "--resume", str(tmp_path), "lr=0.1"], capsys)
    assert_one_line_error(code, err, "drop lr=0.1")
