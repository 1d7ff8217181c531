"""Run folders under preemption and concurrency, with real processes: two runs on one folder, SIGTERM, and
``--auto-resume`` stopped by SIGTERM or SIGKILL at random moments (startup included) until it finishes
with the same bytes as a run never stopped; the states a kill can leave, and what repairs them."""

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SMALL_RUN, maskcl_command
from test_cli import write_npz
from test_config import assert_one_line_error

from maskcl.checkpoint import TEMPORARY_NAME
from maskcl.cli import main

SMALL = [*SMALL_RUN, "--quiet"]
cli = maskcl_command
SAME_BYTES = ("results.json", "metrics.csv", "models/task-0.safetensors", "models/task-1.safetensors")


def assert_same_run(out: Path, reference: Path) -> None:
    for name in SAME_BYTES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
    leftovers = [p for p in out.rglob("*") if TEMPORARY_NAME.fullmatch(p.name)]
    assert leftovers == []
    if (reference / "tensorboard").exists():  # rebuilt at each start: one event file, not one per attempt
        assert len(list((out / "tensorboard").iterdir())) == 1


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    while not path.exists() and process.poll() is None:
        time.sleep(0.005)


# --------------------------------------------------------------------------------- two processes
@pytest.mark.parametrize("delay", [0.0, 0.3, 2.0])
def test_two_runs_started_on_one_folder_one_wins_and_the_other_touches_nothing(
    tmp_path, data, reference, delay
):
    """The issue's ``$A & $A & wait``: the second process gets one line and exit 2; the first one's run
    ends as if alone (before, the second removed the first one's live folder on its way out)."""
    out = tmp_path / "run"
    command = cli("run", "--data", data, *SMALL, "--out", str(out))
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(delay)
    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors = [p.communicate(timeout=300)[1].decode() for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 2], errors
    refused = errors[[first.returncode, second.returncode].index(2)]
    assert refused.count("\n") == 1 and refused.startswith("maskcl: error: "), refused
    assert "in use by another maskcl run" in refused or "already exists" in refused
    assert_same_run(out, reference)


# ----------------------------------------------------------------------------------------- SIGTERM
def test_sigterm_saves_a_checkpoint_exits_143_and_the_same_command_continues(tmp_path, data, reference):
    out = tmp_path / "run"
    command = cli("run", "--data", data, *SMALL[:-1], "--out", str(out), "--auto-resume")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"task 0 epoch 1/3")  # training is under way
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.decode().startswith("maskcl: stopped; checkpoint saved") and err.count(b"\n") == 1
    assert (out / "checkpoint.safetensors").exists() and not (out / "results.json").exists()
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resumed at task" in resumed.stdout, resumed.stderr
    assert_same_run(out, reference)
    again = subprocess.run(command, capture_output=True, text=True)  # finished: reports, trains nothing
    assert again.returncode == 0 and "has finished already" in again.stdout and "ACC" in again.stdout
    assert "epoch" not in again.stdout
    assert_same_run(out, reference)


def _checkpoints(out: Path) -> list[int]:
    """The modification times of the run's checkpoints (one per seed folder). Only the checkpoint paths are
    looked at: a resuming run rebuilds ``tensorboard/``, so walking the whole folder races with it."""
    times = []
    for path in [out / "checkpoint.safetensors", *sorted(out.glob("seed-*/checkpoint.safetensors"))]:
        try:
            times.append(path.stat().st_mtime_ns)
        except FileNotFoundError:  # not written yet, or replaced at this moment
            times.append(0)
    return times


def _stop_until_done(command: list[str], out: Path, seed: int, stops: int) -> tuple[int, int, int]:
    """Start ``command`` again and again, stopping it ``stops`` times, by SIGTERM and SIGKILL in turn:
    every third within its first second (while Python and torch still load, before any handler), the
    others after a random number (1-30) of checkpoint writes, so in training and often inside a write.
    Then let it run to the end. Returns how many SIGTERMs and SIGKILLs reached a live process, and how
    many runs caught a SIGTERM and saved (exit 143)."""
    chance = random.Random(seed)
    delivered = {signal.SIGTERM: 0, signal.SIGKILL: 0}
    saved = 0
    for attempt in range(stops + 1):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt < stops:
            if attempt % 3 == 0:
                time.sleep(chance.uniform(0, 1))
            else:
                writes, last = chance.randint(1, 30), _checkpoints(out)
                while process.poll() is None and writes > 0:
                    if _checkpoints(out) != last:
                        writes, last = writes - 1, _checkpoints(out)
                    time.sleep(0.001)
            number = (signal.SIGTERM, signal.SIGKILL)[attempt % 2]
            if process.poll() is None:
                process.send_signal(number)
                delivered[number] += 1
        _, err = process.communicate(timeout=300)
        allowed = (0, 143, -signal.SIGTERM, -signal.SIGKILL) if attempt < stops else (0,)
        assert process.returncode in allowed, err.decode()
        saved += process.returncode == 143
    return delivered[signal.SIGTERM], delivered[signal.SIGKILL], saved


def test_auto_resume_stopped_at_random_moments_ends_with_the_same_run(tmp_path, data, reference):
    """However often ``--auto-resume`` is stopped (SIGTERM or SIGKILL, the first second included, before
    and inside checkpoint writes) and started again, it ends byte-identical to a run never stopped, with
    no temporary file and one TensorBoard event file left."""
    out = tmp_path / "run"
    command = cli(
        "run", "--data", data, *SMALL, "--checkpoint-interval", "0", "--out", str(out), "--auto-resume"
    )
    terms, kills, saved = _stop_until_done(command, out, seed=11, stops=9)
    assert terms >= 4 and kills >= 4 and saved >= 2
    assert_same_run(out, reference)


def test_auto_resume_of_seeds_stopped_at_random_moments_ends_with_the_same_runs(tmp_path, data):
    args = ["--data", data, *SMALL, "--seeds", "0,1"]
    expected = tmp_path / "whole"
    subprocess.run(cli("run", *args, "--out", str(expected)), check=True, capture_output=True)
    out = tmp_path / "stopped"
    command = cli("run", *args, "--checkpoint-interval", "0", "--out", str(out), "--auto-resume")
    terms, kills, saved = _stop_until_done(command, out, seed=3, stops=8)
    assert terms >= 4 and kills >= 4 and saved >= 2
    assert (out / "summary.json").read_bytes() == (expected / "summary.json").read_bytes()
    for seed in (0, 1):
        assert_same_run(out / f"seed-{seed}", expected / f"seed-{seed}")


# ------------------------------------------------------------------------- what a kill leaves behind
def test_every_state_a_kill_can_leave_is_continued(tmp_path, data, reference):
    """Killed just after making the folder (the version before this one made ``models/`` first), mid-write
    (a temporary file), after ``config.json`` but before ``run.json``, or after the first task's model but
    before the first checkpoint: each is begun again and ends as a run never stopped (before, both
    ``--resume`` and the first command refused such a folder forever)."""
    command = ["run", "--data", data, *SMALL]
    made = tmp_path / "made"
    (made / "models").mkdir(parents=True)
    (made / ".lock").touch()
    (made / ".config.json.abcd_123.tmp").write_bytes(b"x" * 1000)
    assert main([*command, "--out", str(made), "--auto-resume"]) == 0
    assert_same_run(made, reference)
    kept = {"config": {"config.json"}, "task-0": {"config.json", "run.json", "metrics.csv", "models"}}
    for name, how in (("config", "auto"), ("config", "resume"), ("task-0", "auto"), ("task-0", "resume")):
        folder = tmp_path / f"{name}-{how}"
        assert main([*command, "--out", str(folder)]) == 0
        for path in folder.iterdir():
            if path.name not in kept[name] | {".lock"}:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        (folder / "models").mkdir(exist_ok=True)
        (folder / "models" / "task-1.safetensors").unlink(missing_ok=True)
        (folder / "models" / ".task-1.safetensors.qq_qqqqq.tmp").write_bytes(b"x" * 1000)  # cut off
        again = [*command, "--out", str(folder), "--auto-resume"] if how == "auto" else []
        assert main(again or ["run", "--resume", str(folder), "--quiet"]) == 0
        assert_same_run(folder, reference)


def test_a_kill_between_results_and_run_json_is_repaired(tmp_path, data, reference, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", data, *SMALL, "--out", str(out)]) == 0
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "state": "running"}))  # as that kill leaves it
    capsys.readouterr()
    assert main(["run", "--data", data, *SMALL, "--out", str(out), "--auto-resume"]) == 0
    assert "has finished already" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
    assert_same_run(out, reference)


def test_auto_resume_refuses_another_configuration_naming_the_keys(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", data, *SMALL, "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code = main(
        ["run", "--data", data, *SMALL, "--lr", "0.01", "--seed", "4", "--out", str(out), "--auto-resume"]
    )
    assert_one_line_error(
        code, capsys.readouterr().err, out, "another configuration", "lr 0.05 there, 0.01 here"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("not a run")
    code = main(["run", "--data", data, *SMALL, "--out", str(tmp_path / "mine"), "--auto-resume"])
    assert_one_line_error(code, capsys.readouterr().err, "holds no maskcl run")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["thesis.tex"]
    code = main(["run", "--data", data, *SMALL, "--auto-resume"])
    assert_one_line_error(code, capsys.readouterr().err, "--auto-resume needs --out")


def test_the_first_command_on_a_finished_run_says_how_to_continue(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data", data, *SMALL, "--out", str(out)]) == 0
    code = main(["run", "--data", data, *SMALL, "--out", str(out)])
    assert_one_line_error(code, capsys.readouterr().err, "already exists", "--auto-resume")


def test_seeds_given_another_list_are_refused(tmp_path, data, capsys):
    out = tmp_path / "sweep"
    assert main(["run", "--data", data, *SMALL, "--seeds", "0", "--out", str(out)]) == 0
    code = main(["run", "--data", data, *SMALL, "--seeds", "0,1", "--out", str(out), "--auto-resume"])
    assert_one_line_error(code, capsys.readouterr().err, "seeds [0] there, [0, 1] here")
    assert not (out / "seed-1").exists()


def test_a_run_folder_of_relative_data_works_from_any_directory(tmp_path, monkeypatch, capsys):
    """``--data`` is stored as an absolute path; a moved data file is named in one line."""
    project = tmp_path / "project"
    project.mkdir()
    write_npz(project / "d.npz", n=400)
    monkeypatch.chdir(project)
    args = ["run", "--data", "d.npz", *SMALL[:-1], "--out", "runs/r"]
    assert main([*args, "--quiet", "--checkpoint-interval", "0"]) == 0
    config = json.loads((project / "runs" / "r" / "config.json").read_text())
    assert config["data"] == str(project / "d.npz")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["eval", str(project / "runs" / "r")]) == 0
    assert capsys.readouterr().out.startswith("task 0: test acc")
    (project / "runs" / "r" / "results.json").unlink()
    assert main(["run", "--resume", str(project / "runs" / "r"), "--quiet"]) == 0
    (project / "d.npz").rename(project / "moved.npz")
    code = main(["eval", str(project / "runs" / "r")])
    assert_one_line_error(code, capsys.readouterr().err, project / "d.npz", "not found")


def test_run_json_records_threads_and_a_resume_with_other_threads_warns(tmp_path, data, capsys):
    import torch

    out = tmp_path / "run"
    assert main(["run", "--data", data, *SMALL, "--out", str(out)]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["threads"] == torch.get_num_threads() and info["device"] == "cpu"
    (out / "results.json").unlink()
    (out / "run.json").write_text(json.dumps({**info, "threads": info["threads"] + 3}))
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("maskcl: warning: this run started with") and "last bits" in err
    assert err.count("\n") == 1


def test_a_sigterm_while_a_seed_finishes_anyway_starts_no_further_seed(tmp_path, data, capsys, monkeypatch):
    """A SIGTERM that arrives after the run's last step (so no checkpoint is due) lets that seed finish;
    the command then stops with 143 instead of starting the next seed (before, the signal was lost)."""
    from maskcl.runs import RunFolder

    finish = RunFolder.finish

    def finish_after_a_sigterm(folder, results):
        signal.raise_signal(signal.SIGTERM)  # a real signal, while the folder is being written
        finish(folder, results)

    monkeypatch.setattr(RunFolder, "finish", finish_after_a_sigterm)
    out = tmp_path / "sweep"
    code = main(["run", "--data", data, *SMALL, "--seeds", "0,1", "--out", str(out), "--auto-resume"])
    assert code == 143 and "stopped" in capsys.readouterr().err
    assert (out / "seed-0" / "results.json").exists() and not (out / "seed-1").exists()
    monkeypatch.undo()
    assert main(["run", "--data", data, *SMALL, "--seeds", "0,1", "--out", str(out), "--auto-resume"]) == 0
