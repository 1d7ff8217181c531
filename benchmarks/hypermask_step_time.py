"""HyperMask training-step time: the chunked hypernetwork (maskcl's default) against the unchunked one of
the original design, on the same target and batches, side by side in one process.

    python benchmarks/hypermask_step_time.py [--hidden 1000,1000] [--rounds 5] [--previous-tasks 1]

The task trained is preceded by ``--previous-tasks`` learned ones, so the regulariser's hypernetwork pass
over earlier tasks' embeddings is part of the step, as in every task but the first.
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F
from step_time import paired_times

from maskcl import create_model, set_task
from maskcl.methods.hypermask import HyperMask, HyperMaskNet


def build(hidden, chunks, previous: int):
    torch.manual_seed(0)
    target = create_model(
        "mlp", input_shape=(1, 28, 28), classes_per_task=[10] * (previous + 1), hidden=hidden, gates=False,
        dropout=0.0, input_dropout=0.0,
    )  # fmt: skip
    net = HyperMaskNet(target, chunks=chunks)
    hypermask = HyperMask(net)
    for task in range(previous):
        hypermask.start_task(task)
        hypermask.end_task()
    hypermask.start_task(previous)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    return net, hypermask, optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="1000,1000")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--previous-tasks", type=int, default=1)
    args = parser.parse_args()
    hidden = tuple(int(v) for v in args.hidden.split(","))
    x, y = torch.randn(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))
    steps, sizes = {}, {}
    for name, chunks in (("unchunked", None), ("chunked", 1024)):
        net, hypermask, optimizer = build(hidden, chunks, args.previous_tasks)
        sizes[name] = sum(p.numel() for p in net.hypernetwork.parameters())
        target = sum(p.numel() for p in net.target.parameters())

        def step(net=net, hypermask=hypermask, optimizer=optimizer):
            loss = F.cross_entropy(set_task(net.train(), args.previous_tasks)(x), y) + hypermask.regularizer()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps[name] = step
    r = paired_times(steps, args.rounds, 1)
    print(
        f"MLP {args.hidden}, target {target:,} parameters; hypernetwork unchunked {sizes['unchunked']:,}, "
        f"chunked {sizes['chunked']:,} ({sizes['chunked'] / target:.1%} of the target); batch "
        f"{args.batch_size}, Adam, {args.previous_tasks} learned task(s): unchunked "
        f"{r['ms']['unchunked']:.1f} ms/step, chunked {r['ms']['chunked']:.1f} ms/step, speed-up "
        f"{1 / r['ratio']:.1f}x (ratio IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()})"
    )


if __name__ == "__main__":
    main()
