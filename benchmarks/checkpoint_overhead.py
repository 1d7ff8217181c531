"""Checkpoint overhead: the same Split Fashion-MNIST run with and without a run folder, alternating.

    python benchmarks/checkpoint_overhead.py [--method hat] [--epochs 5] [--pairs 2] [--interval 300]

A run folder writes a full training checkpoint (model, optimizer, method, RNG) at each task's end and
every ``--interval`` seconds inside a task, the model after each task, and metrics.csv (and TensorBoard
events when tensorboard is installed). The overhead is the wall time of the run with the folder over the
run without, per pair, measured side by side in one process; the results must be identical.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from maskcl.runs import DEFAULT_CHECKPOINT_INTERVAL, RunFolder
from maskcl.train import RunConfig, run


def timed_run(config: RunConfig, folder: RunFolder | None) -> tuple[float, dict]:
    started = time.perf_counter()
    results = run(config, log=lambda _: None, folder=folder)
    if folder is not None:
        folder.finish(results)
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="hat")
    parser.add_argument("--epochs", type=int, default=RunConfig.epochs)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--interval", type=float, default=DEFAULT_CHECKPOINT_INTERVAL)
    args = parser.parse_args()
    config = RunConfig(method=args.method, epochs=args.epochs)
    ratios = []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.pairs):
            plain, expected = timed_run(config, None)
            folder = RunFolder(Path(scratch) / f"run-{pair}", checkpoint_interval=args.interval)
            saved, results = timed_run(config, folder)
            assert results["acc_matrix"] == expected["acc_matrix"], "checkpointing changed the results"
            size = sum(f.stat().st_size for f in folder.path.rglob("*") if f.is_file())
            ratios.append(saved / plain)
            print(
                f"pair {pair}: without folder {plain:.1f} s, with folder {saved:.1f} s "
                f"(ratio {saved / plain:.4f}); folder {size / 2**20:.1f} MiB"
            )
    print(
        f"{config.method} split-fmnist, {config.epochs} epochs, checkpoint interval {args.interval:g} s: "
        f"overhead {statistics.median(ratios) - 1:+.2%} (median of {len(ratios)} pairs; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
        f"{platform.machine()})"
    )


if __name__ == "__main__":
    main()
