"""Data-parallel runs: real ``torchrun`` processes (gloo, on loopback) against one process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import maskcl_command

RUN = {
    "epochs": 2, "batch_size": 16, "hidden": (32, 32), "num_tasks": 2, "dropout": 0.0, "input_dropout": 0.0,
}  # fmt: skip
FLAGS = ["--epochs", "2", "--batch-size", "16", "--hidden", "32,32", "--num-tasks", "2", "--dropout", "0"]
FLAGS += ["--input-dropout", "0", "--quiet"]

# Each rank runs this: the run, and after every task the outputs of every learned task on fixed inputs,
# compared with torch.equal to those after the task where it was learned.
RANK_SCRIPT = """
import json, os, sys
import torch
from maskcl import RunConfig, run, set_task
settings = json.loads(sys.argv[1])
config = RunConfig(method=settings.pop("method"), **settings)
probe = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(5))
seen, exact = {}, []
def check(model, task):
    model.eval()
    with torch.no_grad():
        for t in range(task + 1):
            out = set_task(model, t)(probe)
            if t in seen:
                exact.append(torch.equal(out, seen[t]))
            seen[t] = out
results = run(config, log=lambda _: None, on_task_end=check)
rank = os.environ.get("RANK", "single")
out = {"acc_matrix": results["acc_matrix"], "bwt": results["bwt"], "exact": exact}
with open(os.path.join(sys.argv[2], f"rank-{rank}.json"), "w") as f:
    json.dump(out, f)
"""


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize(
    "method, extra",
    [
        ("hat", {}),
        ("packnet", {"augment": "crop-flip", "workers": 1}),
        ("wsn", {}),
        ("hat", {"task_inference": "ood-head"}),
    ],  # augmentation, workers and ood-head: their batches, made on every rank
)
def test_two_ranks_give_one_process_results_with_earlier_tasks_exact_on_every_rank(
    tmp_path, data, method, extra
):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    settings = json.dumps({**RUN, "method": method, "data": data, **extra})
    subprocess.run(torchrun(str(script), settings, str(tmp_path)), check=True, env=environment(), timeout=600)
    single = tmp_path / "single"
    single.mkdir()
    subprocess.run([sys.executable, str(script), settings, str(single)], check=True, env=environment())
    reference = json.loads((single / "rank-single.json").read_text())
    test_size = 40  # each task's test split of the fixture's data
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert got["bwt"] == 0.0 and got["exact"] == [True] and reference["exact"] == [True]
        for row, ref_row in zip(got["acc_matrix"], reference["acc_matrix"]):
            for a, b in zip(row, ref_row):
                assert (a is None and b is None) or abs(a - b) <= 1 / test_size, (got, reference)


def test_sigterm_stops_both_ranks_with_one_checkpoint_and_one_process_resumes(tmp_path, data):
    out = tmp_path / "run"
    command = torchrun("-m", "maskcl", "run", "--data", data, *FLAGS, "--epochs", "8", "--out", str(out))
    err = stop_when_checkpointed([*command, "--checkpoint-interval", "0"], out)
    assert err.count("checkpoint saved") == 1, err  # rank 0 says it for both
    assert not (out / "results.json").exists() and (out / "checkpoint.safetensors").exists()
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    resume = maskcl_command("run", "--resume", str(out), "--quiet")
    resumed = subprocess.run(resume, env=environment(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    subprocess.run(
        [*maskcl_command("run", "--data", data, *FLAGS, "--epochs", "8", "--out", str(whole))],
        env=environment(),
        check=True,
        capture_output=True,
    )
    got = json.loads((out / "results.json").read_text())
    reference = json.loads((whole / "results.json").read_text())
    assert got["bwt"] == 0.0
    for row, ref_row in zip(got["acc_matrix"], reference["acc_matrix"]):
        assert all(abs(a - b) <= 1 / 40 for a, b in zip(row, ref_row) if a is not None), (got, reference)


def stop_when_checkpointed(command: list[str], out: Path) -> str:
    """Start ``command``, SIGTERM it once ``out`` holds a checkpoint; its stderr."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    job = subprocess.Popen(command, env=environment(), **pipes)
    deadline = time.monotonic() + 300
    while (
        not (out / "checkpoint.safetensors").exists() and job.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    return job.communicate(timeout=300)[1]


def same_run(a: Path, b: Path) -> None:
    """Two finished run folders hold the same results, metrics and model files, byte for byte."""
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    for name in ("task-0.safetensors", "task-1.safetensors"):
        assert (a / "models" / name).read_bytes() == (b / "models" / name).read_bytes(), name


def test_sigterm_then_the_same_auto_resume_line_ends_as_a_run_never_stopped(tmp_path, data):
    def line(out):
        flags = ["--epochs", "8", "--checkpoint-interval", "0", "--auto-resume", "--out", str(out)]
        return torchrun("-m", "maskcl", "run", "--data", data, *FLAGS, *flags)

    out, whole = tmp_path / "run", tmp_path / "whole"
    err = stop_when_checkpointed(line(out), out)
    assert err.count("checkpoint saved") == 1, err  # rank 0 says it for both
    assert not (out / "results.json").exists()
    subprocess.run(line(out), env=environment(), check=True, capture_output=True, timeout=600)
    subprocess.run(line(whole), env=environment(), check=True, capture_output=True, timeout=600)
    same_run(out, whole)


def test_a_single_process_checkpoint_resumes_with_two_ranks(tmp_path, data):
    out, whole = tmp_path / "run", tmp_path / "whole"
    flags = [*FLAGS, "--epochs", "8", "--checkpoint-interval", "0"]
    stop_when_checkpointed(maskcl_command("run", "--data", data, *flags, "--out", str(out)), out)
    assert not (out / "results.json").exists()
    resumed = subprocess.run(
        torchrun("-m", "maskcl", "run", "--resume", str(out), "--quiet"),
        env=environment(),
        capture_output=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    command = maskcl_command("run", "--data", data, *flags, "--out", str(whole))
    subprocess.run(command, env=environment(), check=True, capture_output=True)
    got, reference = (json.loads((p / "results.json").read_text()) for p in (out, whole))
    assert got["bwt"] == 0.0
    for row, ref_row in zip(got["acc_matrix"], reference["acc_matrix"]):
        assert all(abs(a - b) <= 1 / 40 for a, b in zip(row, ref_row) if a is not None), (got, reference)


def test_two_rank_cli_run_writes_one_run_folder(tmp_path, data):
    out = tmp_path / "run"
    done = subprocess.run(
        torchrun("-m", "maskcl", "run", "--data", data, *FLAGS, "--out", str(out)),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("results:") == 1  # rank 0 alone prints
    results = json.loads((out / "results.json").read_text())
    assert results["bwt"] == 0.0 and len(results["acc_matrix"]) == 2
    assert sorted(p.name for p in (out / "models").iterdir()) == ["task-0.safetensors", "task-1.safetensors"]


def test_a_global_batch_smaller_than_the_ranks_is_refused(tmp_path, data):
    done = subprocess.run(
        torchrun(
            "-m", "maskcl", "run", "--data", data, *FLAGS, "--batch-size", "1", "--out", str(tmp_path / "r")
        ),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 0
    assert "--batch-size 1 is the global batch: it cannot be shared by 2 ranks" in done.stderr
    assert not (tmp_path / "r").exists()


def test_seeds_under_torchrun_write_one_sweep_folder_with_the_single_process_results(tmp_path, data):
    out, single = tmp_path / "ranks", tmp_path / "single"
    seeds = ["--seeds", "0,1"]
    done = subprocess.run(
        torchrun("-m", "maskcl", "run", "--data", data, *FLAGS, *seeds, "--out", str(out)),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("over seeds") == 1 and done.stdout.count("seed 1:") == 1  # rank 0 prints
    command = maskcl_command("run", "--data", data, *FLAGS, *seeds, "--out", str(single))
    subprocess.run(command, env=environment(), check=True, capture_output=True)
    for seed in (0, 1):
        got, reference = (
            json.loads((p / f"seed-{seed}" / "results.json").read_text()) for p in (out, single)
        )
        assert got["bwt"] == 0.0
        for row, ref_row in zip(got["acc_matrix"], reference["acc_matrix"]):
            assert all(abs(a - b) <= 1 / 40 for a, b in zip(row, ref_row) if a is not None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["runs"] == ["seed-0", "seed-1"]


def test_world_size_without_torchrun_is_a_one_line_error(tmp_path, data):
    command = maskcl_command("run", "--data", data, *FLAGS, "--out", str(tmp_path / "r"))
    env = {**environment(), "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}  # no MASTER_ADDR
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(
        "maskcl: error: the 2 processes could not form a group (start them with torchrun)"
    )
    assert not (tmp_path / "r").exists()


LEAVE_SCRIPT = """
import sys, weakref, torch, torch.distributed as dist
from torch import nn
from maskcl.distributed import _leave_group
dist.init_process_group("gloo", rank=0, world_size=1, init_method="file://" + sys.argv[1])
net = nn.parallel.DistributedDataParallel(nn.Linear(3, 2))
net.module.cycle = [net]  # a reference cycle: nothing but the garbage collector frees the wrapper
net(torch.randn(4, 3)).sum().backward()
wrapper = weakref.ref(net)
del net
_leave_group()
print(wrapper() is None, dist.is_initialized())
"""


def test_leaving_the_group_frees_a_wrapper_kept_by_a_cycle_first(tmp_path):
    """A DistributedDataParallel wrapper kept alive by a reference cycle (as a run's network can be) holds
    the group past ``destroy_process_group`` into the interpreter's teardown, where gloo can abort the
    process after its work is done (SIGABRT, a few runs in a hundred); leaving the group frees it first."""
    script = tmp_path / "leave.py"
    script.write_text(LEAVE_SCRIPT)
    command = [sys.executable, str(script), str(tmp_path / "rendezvous")]
    done = subprocess.run(command, env=environment(), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["True", "False"], done.stderr
