"""Checkpoint overhead: the same Split Fashion-MNIST run with and without a run folder, alternating.

    python benchmarks/checkpoint_overhead.py [--method hat] [--epochs 5] [--pairs 2] [--interval 300]

A run folder is claimed (flock) and writes a full training checkpoint (model, optimizer, method, RNG) at
each task's end and every ``--interval`` seconds inside a task, the model after each task (the tensors
it changed, each digested with SHA-256), metrics.csv (and TensorBoard events when tensorboard is
installed) and results.json. The overhead is the wall time of the run with the folder over the
run without, per pair (alternating which goes first), measured side by side in one process, and the time
spent writing checkpoints as a share of the run (less noisy than the ratio); the results must be identical.
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

from maskcl import RunConfig, run
from maskcl.runs import DEFAULT_CHECKPOINT_INTERVAL, RunFolder


def timed_run(config: RunConfig, folder: RunFolder | None) -> tuple[float, dict]:
    started = time.perf_counter()
    results = run(config, log=lambda _: None, folder=folder)  # with a folder: results.json too
    return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="hat")
    parser.add_argument("--epochs", type=int, default=RunConfig.epochs)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--interval", type=float, default=DEFAULT_CHECKPOINT_INTERVAL)
    args = parser.parse_args()
    config = RunConfig(method=args.method, epochs=args.epochs)
    ratios, shares = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.pairs):
            folder = RunFolder(Path(scratch) / f"run-{pair}", checkpoint_interval=args.interval)
            order = [None, folder] if pair % 2 == 0 else [folder, None]  # ABBA: no order effect
            (first, results_a), (second, results_b) = (timed_run(config, f) for f in order)
            assert results_a["acc_matrix"] == results_b["acc_matrix"], "checkpointing changed the results"
            plain, saved = (first, second) if order[0] is None else (second, first)
            size = sum(f.stat().st_size for f in folder.path.rglob("*") if f.is_file())
            ratios.append(saved / plain)
            shares.append(folder.save_seconds / saved)
            print(
                f"pair {pair}: without folder {plain:.1f} s, with folder {saved:.1f} s (ratio "
                f"{saved / plain:.4f}); writing checkpoints {folder.save_seconds:.3f} s; folder "
                f"{size / 2**20:.1f} MiB"
            )
    print(
        f"{config.method} split-fmnist, {config.epochs} epochs, checkpoint interval {args.interval:g} s: "
        f"checkpoint writes {statistics.median(shares):.2%} of the run, wall-time ratio "
        f"{statistics.median(ratios):.4f} (medians of {len(ratios)} pairs; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} cpus, {platform.machine()})"
    )


if __name__ == "__main__":
    main()
