"""The data-loading share of a training epoch, made in the training process or by DataLoader workers.

    python benchmarks/data_loading.py                        # both settings below, 3 rounds
    python benchmarks/data_loading.py --settings cifar --rounds 5 --workers 0,1,2

An epoch is one task's training batches (``maskcl.data.EpochBatches``, batch 64) through HAT's training
step (forward, the method's regulariser, backward, SGD step); the time spent waiting for the next batch is
the loading share. Settings: ``fmnist``, Split Fashion-MNIST's first task (12,000 training images 1x28x28)
with the default MLP 400-400; ``cifar``, a CIFAR-shaped task of a synthetic CIFAR-10 copy written in its
own format to a temporary folder (5 x 2,000 images 3x32x32: 1,800 training images in task 0) with
``resnet20``. Each is run without augmentation and with ``crop-flip``, with each ``--workers`` count, in
rounds that alternate the counts (one process: the machine's load drifts), one torch thread for training.
Printed: per setting the median epoch seconds, the median loading share, and the epoch time against 0
workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from maskcl.build import build_method, build_optimizer, load_scenario
from maskcl.config import RunConfig
from maskcl.core.context import set_task
from maskcl.data import EpochBatches


def write_synthetic_cifar10(root: Path, per_file: int = 2000) -> None:
    """Random images in CIFAR-10's own files (``cifar-10-batches-py``), classes 0-9 in turn."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"labels": [i % 10 for i in range(per_file)],
            b"data": rng.integers(0, 256, (per_file, 3072)),
        }
        batch[b"data"] = batch[b"data"].astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def epoch(config: RunConfig, workers: int) -> tuple[float, float]:
    """Seconds of one epoch of task 0, and the seconds of it spent waiting for batches."""
    torch.manual_seed(0)
    scenario = load_scenario(config)
    method = build_method(config, scenario, torch.device("cpu"))
    model, optimizer = method.model, build_optimizer(config, method.model)
    data = scenario[0].train
    batches = EpochBatches([data], [0], config.batch_size, torch.Generator().manual_seed(0), config.augment)
    method.start_task(0, optimizer, len(batches))
    set_task(model.train(), 0)
    waited, start = 0.0, time.perf_counter()
    stream = batches.iterate(workers=workers)
    while True:
        before = time.perf_counter()
        item = next(stream, None)
        waited += time.perf_counter() - before
        if item is None:
            break
        x, y, _ = item
        loss = F.cross_entropy(model(x), y) + method.regularizer()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start, waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="fmnist,cifar")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_cifar10(Path(tmp))
        os.environ["MASKCL_DATA"] = tmp
        settings = {
            "fmnist": RunConfig(benchmark="split-fmnist"),
            "cifar": RunConfig(benchmark="split-cifar10", arch="resnet20"),
        }
        for name in args.settings.split(","):
            for augment in ("none", "crop-flip"):
                config = dataclasses.replace(settings[name], augment=augment)
                times: dict[int, list[tuple[float, float]]] = {w: [] for w in counts}
                for _ in range(args.rounds):
                    for w in counts:
                        times[w].append(epoch(config, w))
                base = statistics.median(t for t, _ in times[counts[0]])
                for w in counts:
                    seconds = statistics.median(t for t, _ in times[w])
                    share = statistics.median(wait / t for t, wait in times[w])
                    print(
                        f"{name:6} augment {augment:9} workers {w}: epoch {seconds:7.2f} s, "
                        f"loading {100 * share:5.1f}%, epoch / {counts[0]} workers {seconds / base:.3f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
