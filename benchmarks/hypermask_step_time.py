"""HyperMask training-step time: the default hypernetwork (chunked, sized to the target) against the
unchunked one of the original design, or against the earlier fixed default (1024 chunks, hidden 100-100),
on the same target and batches, side by side in one process.

    python benchmarks/hypermask_step_time.py [--hidden 1000,1000] [--rounds 5] [--previous-tasks 1]
        [--against unchunked|fixed]

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
from maskcl.methods.hypermask import HyperMask

AGAINST = {
    "unchunked": ("unchunked", {"chunks": 0}),
    "fixed": ("1024 chunks, 100-100", {"chunks": 1024, "hyper_hidden": (100, 100)}),
}
"""What the default is compared with: the original design's hypernetwork, or the earlier fixed default."""


def build(hidden, options: dict, previous: int):
    torch.manual_seed(0)
    target = create_model(
        "mlp", input_shape=(1, 28, 28), classes_per_task=[10] * (previous + 1), hidden=hidden, gates=False,
        dropout=0.0, input_dropout=0.0,
    )  # fmt: skip
    hypermask = HyperMask(target, **options)
    net = hypermask.model
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for task in range(previous):
        hypermask.start_task(task, optimizer)
        hypermask.end_task()
    hypermask.start_task(previous, optimizer)
    return net, hypermask, optimizer


def describe(net) -> str:
    hyper = net.hypernetwork
    size = sum(p.numel() for p in hyper.parameters())
    shape = "unchunked" if hyper.chunks == 0 else f"{hyper.chunks} chunks"
    widths = "-".join(map(str, hyper.hidden))
    return f"{size:,} ({shape}, {widths}; {size / sum(net.sizes):.1%} of the masked weights)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="1000,1000")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--previous-tasks", type=int, default=1)
    parser.add_argument("--against", choices=sorted(AGAINST), default="unchunked")
    args = parser.parse_args()
    hidden = tuple(int(v) for v in args.hidden.split(","))
    x, y = torch.randn(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))
    other, options = AGAINST[args.against]
    steps, sizes = {}, {}
    for name, chosen in ((other, options), ("default", {})):
        net, hypermask, optimizer = build(hidden, chosen, args.previous_tasks)
        sizes[name] = describe(net)
        target = sum(p.numel() for p in net.target.parameters())

        def step(net=net, hypermask=hypermask, optimizer=optimizer):
            loss = F.cross_entropy(set_task(net.train(), args.previous_tasks)(x), y) + hypermask.regularizer()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps[name] = step
    r = paired_times(steps, args.rounds, 1)
    print(
        f"MLP {args.hidden}, target {target:,} parameters; hypernetwork {other}: {sizes[other]}, default: "
        f"{sizes['default']}; batch {args.batch_size}, Adam, {args.previous_tasks} learned task(s): {other} "
        f"{r['ms'][other]:.1f} ms/step, default {r['ms']['default']:.1f} ms/step, ratio default/{other} "
        f"{r['ratio']:.3f} (IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()})"
    )


if __name__ == "__main__":
    main()
