"""Epoch time of a run under torchrun with 2 ranks against 1 process, same global batch, side by side.

    python benchmarks/ddp_epoch.py                 # MLP 400-400, Split Fashion-MNIST, 1 task, 1 epoch
    python benchmarks/ddp_epoch.py --arch resnet20 --repeats 1

Each configuration runs ``--repeats`` times, alternating 1 and 2 ranks; the figure is each one's median
training time (``results.json``'s ``timing.train_seconds``, which includes the evaluation after each
epoch) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def one(nproc: int, flags: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "maskcl", "run", *flags, "--out", str(out), "--quiet"]
        if nproc > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            launcher.append(f"--nproc-per-node={nproc}")
            command = [*launcher, "-m", "maskcl", *command[3:]]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        return json.loads((out / "results.json").read_text())["timing"]["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    flags = ["--benchmark", "split-fmnist", "--num-tasks", "1", "--epochs", "1", "--arch", args.arch]
    flags += ["--batch-size", "64", "--lr", "0.05"]
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for nproc in (1, 2):
            times[nproc].append(one(nproc, flags))
    single, double = (statistics.median(times[n]) for n in (1, 2))
    print(f"{args.arch}: 1 process {single:.1f} s, 2 ranks {double:.1f} s, ratio 2/1 {double / single:.2f}")
    print(json.dumps(times))


if __name__ == "__main__":
    main()
