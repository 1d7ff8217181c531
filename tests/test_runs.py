"""Run folders: determinism, kill-and-resume, Ctrl-C, multi-seed summaries, eval, metrics and progress."""

import fcntl
import json
import os
import pty
import random
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
import torch
from conftest import SMALL_RUN, maskcl_command
from test_config import assert_one_line_error

from maskcl.claim import FolderClaim
from maskcl.cli import main
from maskcl.errors import MaskclError
from maskcl.runs import RunFolder, load_run
from maskcl.train import Interrupted, RunConfig, run

SMALL = SMALL_RUN
cli = maskcl_command


def test_same_config_and_seed_give_the_same_results_json(tmp_path, capsys, data):
    for name in ("a", "b"):
        assert (
            main(["run", "--data", data, *SMALL, "--method", "hypermask", "--out", str(tmp_path / name)]) == 0
        )
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    assert main(["run", "--data", data, *SMALL, "--seed", "1", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "a" / "results.json").read_bytes() != (tmp_path / "c" / "results.json").read_bytes()


def _modified(path: Path) -> float:
    return path.stat().st_mtime_ns if path.exists() else 0


def test_sigkill_at_random_moments_then_resume_ends_with_the_same_results(tmp_path, data, reference):
    """At least five SIGKILLs at random moments (checkpoints after every step, so many land inside a
    save); each --resume continues from the last checkpoint and the end is byte-identical."""
    out = tmp_path / "run"
    checkpoint = out / "checkpoint.safetensors"
    chance = random.Random(5)
    kills, command = (
        0,
        cli("run", "--data", data, *SMALL, "--quiet", "--checkpoint-interval", "0", "--out", str(out)),
    )
    for _ in range(30):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        saves, last = chance.randint(10, 80), _modified(checkpoint)
        while process.poll() is None and saves > 0:  # let it train (and checkpoint) a random while
            if _modified(checkpoint) != last:
                saves, last = saves - 1, _modified(checkpoint)
            time.sleep(0.001)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        assert process.returncode in (0, -signal.SIGKILL), process.stderr.read().decode()
        if process.returncode == 0:
            break
        command = cli("run", "--resume", str(out), "--quiet", "--checkpoint-interval", "0")
    assert kills >= 5 and process.returncode == 0
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()
    assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    for task in (0, 1):
        name = f"models/task-{task}.safetensors"
        assert (out / name).read_bytes() == (reference / name).read_bytes()


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, data, reference):
    out = tmp_path / "run"
    process = subprocess.Popen(
        cli("run", "--data", data, *SMALL, "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout.readline().startswith(b"task 0 epoch 1/3")  # training is under way
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    hint = "(or the same command with --auto-resume)"
    assert (
        err.decode() == f"maskcl: stopped; checkpoint saved: continue with maskcl run --resume {out} {hint}\n"
    )
    assert not (out / "results.json").exists()
    resumed = subprocess.run(cli("run", "--resume", str(out)), capture_output=True, text=True)
    assert resumed.returncode == 0 and "resumed at task" in resumed.stdout
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()


def test_a_folder_in_use_is_not_resumed_by_a_second_process(tmp_path, capsys, data, reference):
    """While one process trains in a folder (here paused by SIGSTOP after its first checkpoint), a
    ``--resume`` of it is refused in one line, and the first run, continued, ends as if alone."""
    out = tmp_path / "run"
    command = cli("run", "--data", data, *SMALL, "--quiet", "--checkpoint-interval", "0", "--out", str(out))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not (out / "checkpoint.safetensors").exists() and process.poll() is None:
        time.sleep(0.001)
    process.send_signal(signal.SIGSTOP)
    try:
        saved = (out / "checkpoint.safetensors").read_bytes()
        code = main(["run", "--resume", str(out), "--quiet"])
        assert_one_line_error(code, capsys.readouterr().err, out, "in use by another maskcl run")
        assert (out / "checkpoint.safetensors").read_bytes() == saved
    finally:
        process.send_signal(signal.SIGCONT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()
    claim = FolderClaim(out)  # the claim ended with the process: the folder can be claimed again
    claim.acquire()
    with pytest.raises(MaskclError, match="in use"):
        FolderClaim(out).acquire()
    claim.release()
    FolderClaim(out).acquire()


class _StopAfter(RunFolder):
    """A run folder whose stop flag (what Ctrl-C sets) is raised after a given number of steps."""

    steps = 0

    def checkpoint_due(self) -> bool:
        _StopAfter.steps -= 1
        self.stop = self.stop or _StopAfter.steps == 0
        return super().checkpoint_due()


@pytest.mark.parametrize(
    "options",
    [
        {"method": "hat"},
        {"method": "hat", "optimizer": "adamw", "weight_decay": 0.1, "lr": 1e-3},
        {
            "method": "hypermask",
            "optimizer": "adam",
            "lr": 1e-3,
            "options": {"sparsity": 30, "sparsity_ramp": 20},
        },
        {"method": "finetune", "momentum": 0.9},
        {"method": "joint"},
        {"method": "packnet", "optimizer": "adamw", "weight_decay": 0.1, "lr": 1e-3},
        {"method": "wsn", "momentum": 0.9},
        {"method": "adahat", "optimizer": "adamw", "weight_decay": 0.1, "lr": 1e-3},
        {"method": "hat", "task_inference": "gaussian"},
        {"method": "hat", "optimizer": "adamw", "lr": 1e-3, "lr_schedule": "cosine", "grad_clip": 0.5},
        {"method": "packnet", "lr_schedule": "step", "lr_step_epochs": 1},
        {"method": "hat", "lr_schedule": "patience", "lr_patience": 1, "lr_gamma": 0.5, "early_stop": 2},
        {"method": "packnet", "task_inference": "energy"},
        {"method": "hat", "augment": "crop-flip"},
        {"method": "joint", "augment": "crop", "workers": 1},
        {
            "method": "wsn",
            "optimizer": "adamw",
            "weight_decay": 0.1,
            "lr": 1e-3,
            "task_inference": "ood-head",
        },
        {
            "method": "supsup",
            "optimizer": "adamw",
            "weight_decay": 0.1,
            "lr": 1e-3,
            "task_inference": "one-shot",
        },
    ],
)
def test_stopping_anywhere_and_resuming_is_bit_exact_for_every_method(tmp_path, data, options):
    config = RunConfig(data=data, num_tasks=2, epochs=3, batch_size=32, hidden=(16, 16), **options)
    expected = run(config, log=lambda _: None)
    folder = _StopAfter(tmp_path / "run", checkpoint_interval=1e9)
    chance, stops = random.Random(0), 0
    while True:
        _StopAfter.steps = chance.randint(1, 25)
        try:
            results = run(config, log=lambda _: None, folder=folder)
            break
        except Interrupted:
            stops += 1
            folder = _StopAfter(tmp_path / "run", checkpoint_interval=1e9)
            folder.open()
    assert stops >= 5
    assert results["acc_matrix"] == expected["acc_matrix"]
    assert {k: v for k, v in results.items() if k != "timing"} == {
        k: v for k, v in expected.items() if k != "timing"
    }


def test_results_keep_the_initial_accuracies_and_forward_transfer(tmp_path, data):
    config = RunConfig(data=data, num_tasks=2, epochs=1, batch_size=32, hidden=(16,))
    results = run(config, log=lambda _: None)
    initial, matrix = results["initial_acc"], results["acc_matrix"]
    assert len(initial) == 2 and all(0 <= a <= 1 for a in initial)
    assert results["fwt"] == pytest.approx(matrix[0][1] - initial[1])
    assert results["avg_incremental_acc"] == pytest.approx(
        (matrix[0][0] + (matrix[1][0] + matrix[1][1]) / 2) / 2
    )


def test_a_seeds_summary_averages_the_task_inference_too(tmp_path, capsys, data):
    out = tmp_path / "sweep"
    args = ["run", "--data", data, *SMALL, "--quiet", "--task-inference", "energy", "--seeds", "0,1"]
    assert main([*args, "--out", str(out)]) == 0
    runs = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    summary = json.loads((out / "summary.json").read_text())["task_inference"]
    for key in ("task_accuracy", "class_incremental_acc"):
        values = [r["task_inference"][key] for r in runs]
        assert summary[key]["values"] == values and summary[key]["mean"] == pytest.approx(sum(values) / 2)
    assert "task unknown class_incremental_acc" in capsys.readouterr().out


def test_resume_before_the_first_checkpoint_starts_over(tmp_path, data, reference):
    out = tmp_path / "run"
    assert main(["run", "--data", data, *SMALL, "--quiet", "--out", str(out)]) == 0
    for name in (
        "checkpoint.safetensors",
        "results.json",
        "models/task-0.safetensors",
        "models/task-1.safetensors",
    ):
        (out / name).unlink()
    (out / "metrics.csv").write_text(
        "task,epoch,name,value\n0,1,train_loss,0.5\n"
    )  # rows past the checkpoint
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert (out / "results.json").read_bytes() == (reference / "results.json").read_bytes()
    assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()


def test_seeds_write_one_run_each_and_a_summary(tmp_path, capsys, data):
    out = tmp_path / "sweep"
    assert main(["run", "--data", data, *SMALL, "--quiet", "--seeds", "0,3", "--out", str(out)]) == 0
    results = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 3)]
    assert [r["config"]["seed"] for r in results] == [0, 3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 3] and summary["runs"] == ["seed-0", "seed-3"]
    accs = [r["acc"] for r in results]
    assert accs[0] != accs[1]
    assert summary["acc"]["mean"] == pytest.approx(sum(accs) / 2)
    assert summary["acc"]["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    assert "over seeds acc" in capsys.readouterr().out
    assert main(["run", "--resume", str(out), "--quiet"]) == 0  # finished: nothing is trained again
    assert "has finished already" in capsys.readouterr().out


def test_eval_and_load_run_give_the_saved_models_accuracies(tmp_path, capsys, data):
    out = tmp_path / "run"
    assert main(["run", "--data", data, *SMALL, "--quiet", "--out", str(out)]) == 0
    matrix = json.loads((out / "results.json").read_text())["acc_matrix"]
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"task {j}: test acc {matrix[1][j]:.4f}" for j in (0, 1)]
    assert main(["eval", str(out), "--after-task", "0"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"task 0: test acc {matrix[0][0]:.4f}"]
    model = load_run(out)
    assert not model.training
    from maskcl import set_task

    x = torch.randn(5, 1, 6, 6)
    set_task(model, 1)
    assert model(x).shape == (5, 2)


def test_metrics_csv_and_tensorboard_events(tmp_path, data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["run", "--data", data, *SMALL, "--quiet", "--out", str(out)]) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "task,epoch,name,value"
    names = {tuple(r.split(",")[:3]) for r in rows[1:]}
    assert ("0", "3", "val_acc") in names and ("1", "3", "test_acc_task_0") in names
    assert len(rows) == 1 + 2 * (3 * 2) + 1 + 2
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    losses = events.Scalars("task_1/train_loss")
    assert [e.step for e in losses] == [1001, 1002, 1003]
    csv_losses = [float(r.split(",")[3]) for r in rows[1:] if r.startswith("1,") and "train_loss" in r]
    assert [e.value for e in losses] == pytest.approx(csv_losses)


@pytest.mark.parametrize(("quiet", "bar"), [(False, True), (True, False)])
def test_progress_bar_on_a_terminal_only(tmp_path, data, quiet, bar):
    pytest.importorskip("tqdm")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    args = ["run", "--data", data, *SMALL, "--out", str(tmp_path / "run"), *(["--quiet"] if quiet else [])]
    process = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    terminal = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the run ended and closed the terminal
            break
        if not chunk:
            break
        terminal += chunk
    process.wait()
    os.close(leader)
    assert process.returncode == 0
    assert (b"task 0 epoch 1: " in terminal and b"it/s" in terminal) == bar
    if bar:  # the same run with stderr not a terminal: no bar
        piped = subprocess.run(cli(*args[:-2], "--out", str(tmp_path / "piped")), capture_output=True)
        assert piped.returncode == 0 and b"it/s" not in piped.stderr


def test_a_failed_run_keeps_the_checkpoints_it_wrote(tmp_path, capsys, data):
    out = tmp_path / "run"
    args = ["--data", data, *SMALL, "--lr", "1e30", "--checkpoint-interval", "0", "--out", str(out)]
    assert main(["run", *args]) == 2
    assert "loss became" in capsys.readouterr().err
    from maskcl.checkpoint import load_checkpoint

    assert load_checkpoint(out / "checkpoint.safetensors", kind="training")["position"]["task"] == 0


def test_tensorboard_events_of_a_resumed_run_match_an_uninterrupted_one(tmp_path, data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = RunConfig(data=data, num_tasks=2, epochs=3, batch_size=32, hidden=(16, 16))
    run(config, log=lambda _: None, folder=RunFolder(tmp_path / "whole"))
    folder = _StopAfter(tmp_path / "stopped", checkpoint_interval=1e9)
    for steps in (30, 40, 50, 30, 1000):
        _StopAfter.steps = steps
        try:
            run(config, log=lambda _: None, folder=folder)
        except Interrupted:
            folder = _StopAfter(tmp_path / "stopped", checkpoint_interval=1e9)
            folder.open()

    def scalars(path):
        events = EventAccumulator(str(path / "tensorboard"))
        events.Reload()
        return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}

    whole = scalars(tmp_path / "whole")
    assert len(whole) == 2 * 2 + 3 and whole == scalars(tmp_path / "stopped")


def test_a_run_folder_of_format_1_still_evaluates(tmp_path, capsys, data):
    """Folders written before model files referred to each other (format 1: every file holds the whole
    model) load as before."""
    import json as json_module

    from safetensors.torch import save_file

    from maskcl.checkpoint import FORMAT, _flatten
    from maskcl.runs import load_task_model

    out = tmp_path / "run"
    assert main(["run", "--data", data, *SMALL, "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    for task in (0, 1):
        tensors: dict = {}
        skeleton = _flatten({"model": load_task_model(out, task)}, "state", tensors)
        header = {"format": FORMAT, "version": 1, "kind": "model", "state": skeleton}
        save_file(
            tensors, str(out / "models" / f"task-{task}.safetensors"), {"maskcl": json_module.dumps(header)}
        )
    info = json_module.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json_module.dumps({**info, "format_version": 1}))
    matrix = json_module.loads((out / "results.json").read_text())["acc_matrix"]
    assert main(["eval", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"task {j}: test acc {matrix[1][j]:.4f}" for j in (0, 1)]


def _stopped_as_format(out, data, version: int, old_config) -> None:
    """A run stopped in ``out`` after 100 steps, then made as format ``version`` wrote it: its config (in
    ``config.json`` and in the checkpoint) made ``old_config(config)``, ``run.json`` of that version."""
    import json as json_module

    from maskcl.checkpoint import load_checkpoint, save_checkpoint

    config = RunConfig(data=data, num_tasks=2, epochs=3, batch_size=16, hidden=(32, 32))
    folder = _StopAfter(out, checkpoint_interval=1e9)
    _StopAfter.steps = 100
    with pytest.raises(Interrupted):
        run(config, log=lambda _: None, folder=folder)
    saved = json_module.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json_module.dumps(old_config(saved)))
    state = load_checkpoint(out / "checkpoint.safetensors", kind="training")
    state["config"] = old_config(state["config"])
    save_checkpoint(out / "checkpoint.safetensors", state, kind="training")
    info = json_module.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json_module.dumps({**info, "format_version": version}))


def _resumed_like(out, reference) -> dict:
    """The results of ``maskcl run --resume out``, whose accuracy matrix is the reference's."""
    import json as json_module

    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    mine, theirs = (json_module.loads((p / "results.json").read_text()) for p in (out, reference))
    assert mine["acc_matrix"] == theirs["acc_matrix"]
    return mine


def test_a_stopped_run_of_format_1_with_a_relative_data_path_resumes_from_where_it_began(
    tmp_path, monkeypatch, data, reference
):
    """Format 1 stored ``--data`` as typed and every method's options; resumed from the same directory,
    it continues to the same results as a run never stopped."""
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copy(data, tmp_path / "d.npz")
    out = tmp_path / "run"
    _stopped_as_format(out, data, 1, _format_1_config)  # data as typed, every method's options
    assert _resumed_like(out, reference)["config"]["data"] == str(tmp_path / "d.npz")


def test_a_stopped_run_of_format_6_resumes_to_the_same_results(tmp_path, data, reference):
    """Format 6 had no augmentation, workers or pretrained weights in its config: it reads as it ran."""
    import json as json_module

    out = tmp_path / "run"
    added = ("augment", "workers", "pretrained")
    _stopped_as_format(out, data, 6, lambda config: {k: v for k, v in config.items() if k not in added})
    _resumed_like(out, reference)
    assert json_module.loads((out / "run.json").read_text())["format_version"] == 6


def _format_1_config(config: dict) -> dict:
    """A HAT run's config as maskcl 0.1 (run formats 1 and 2) wrote it: ``tasks`` for ``num_tasks``, no
    plug-ins or clamps, every method's options, and ``data`` as typed."""
    old = {("tasks" if key == "num_tasks" else key): value for key, value in config.items()}
    for key in ("plugins", "embedding_clamp", "compensation_clamp"):
        del old[key]
    hypermask = {"sparsity": 0.0, "sparsity_ramp": 0, "beta": 0.01, "lam": 0.001, "l1_masked": False}
    hypermask |= {"embedding_dim": 24, "hyper_hidden": [100, 100], "chunks": 1024}
    return {**old, **hypermask, "data": "d.npz"}
