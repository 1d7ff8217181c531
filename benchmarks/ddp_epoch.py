"""Data-parallel speed: an epoch with 2 ranks against 1 process (same global batch), and the share of a
2-rank training step spent reducing gradients.

    python benchmarks/ddp_epoch.py                       # the default MLP, Split Fashion-MNIST's task 0
    python benchmarks/ddp_epoch.py --arch resnet20 --repeats 1

Epochs: one task, one epoch of ``maskcl run`` (its defaults: HAT, SGD, batch 64), ``--repeats`` times
alternating 1 process and ``torchrun --nproc-per-node 2``; each one's median ``timing.train_seconds`` in
``run.json`` (training and the validation after the epoch) and the ratio. Communication: under
``torchrun`` with 2 ranks, the same network, method and optimizer time ``--steps`` training steps with
DistributedDataParallel's gradient all-reduce and as many inside its ``no_sync()`` (no reduction), in
alternating blocks; the share is ``1 - no_sync / synced`` of the step time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def flags(arch: str) -> list[str]:
    return ["--benchmark", "split-fmnist", "--num-tasks", "1", "--epochs", "1", "--arch", arch]


def epoch_seconds(nproc: int, arch: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = ["-m", "maskcl", "run", *flags(arch), "--out", str(out), "--quiet"]
        command = [*LAUNCH, *command] if nproc > 1 else [sys.executable, *command]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
        return json.loads((out / "run.json").read_text())["timing"]["train_seconds"]


def communication_share(arch: str, steps: int) -> None:
    """Run under torchrun: time synced and unsynced steps; rank 0 prints one JSON line."""
    import contextlib

    import torch
    import torch.nn.functional as F

    from maskcl.build import build_method, build_optimizer, load_scenario
    from maskcl.config import RunConfig
    from maskcl.core.context import set_task
    from maskcl.distributed import world

    torch.set_num_threads(1)
    config = RunConfig(benchmark="split-fmnist", num_tasks=1, arch=arch)
    ranks, device = world("cpu")
    scenario = load_scenario(config)
    method = build_method(config, scenario, torch.device(device))
    net = ranks.parallel(method.model, torch.device(device))
    optimizer = build_optimizer(config, method.model)
    batches = list(scenario[0].train.batches(config.batch_size, shuffle=True, generator=torch.Generator()))
    method.start_task(0, optimizer, len(batches))
    set_task(method.model.train(), 0)

    def block(synced: bool, offset: int, count: int) -> float:
        start = time.perf_counter()
        for x, y in batches[offset : offset + count]:
            x, y = ranks.shard(x, y)
            with contextlib.nullcontext() if synced else net.no_sync():
                loss = F.cross_entropy(net(x), y) + method.regularizer()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    block(True, 0, 5)  # warm-up
    times = {True: 0.0, False: 0.0}
    size = 10
    for i in range(steps // size):
        for synced in (True, False) if i % 2 == 0 else (False, True):
            times[synced] += block(synced, (i * size) % (len(batches) - size), size)
    if ranks.main:
        n = steps // size * size
        synced, unsynced = times[True] / n * 1e3, times[False] / n * 1e3
        share = 1 - unsynced / synced
        print(json.dumps({"arch": arch, "synced_ms": synced, "no_sync_ms": unsynced, "share": share}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="timed steps of each kind (communication)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        communication_share(args.arch, args.steps)
        return
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for nproc in (1, 2):
            times[nproc].append(epoch_seconds(nproc, args.arch))
    single, double = (statistics.median(times[n]) for n in (1, 2))
    ratio = double / single
    print(f"{args.arch}: epoch 1 process {single:.1f} s, 2 ranks {double:.1f} s, ratio 2/1 {ratio:.2f}")
    print(json.dumps(times))
    worker = [*LAUNCH, __file__, "--worker", "--arch", args.arch, "--steps", str(args.steps)]
    done = subprocess.run(worker, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    print(done.stdout.decode().strip())


if __name__ == "__main__":
    main()
