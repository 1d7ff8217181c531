"""The exact-protection pass alone, against the plain training step it follows, side by side.

HAT's MLP learns task 0, then starts task 1, so the pass restores everything task 0 owns; the plain MLP
of the same sizes takes training steps in alternating rounds. ``--compile`` times the same integer
passes compiled by ``torch.compile`` instead (the compile time is printed too).

    python benchmarks/protection_pass.py [--hidden 400,400] [--rounds 100] [--compile]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from step_time import build, make_step, paired_times

from maskcl.methods.hat import HAT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="400,400")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    args.hidden = tuple(int(v) for v in args.hidden.split(","))
    args.input_shape, args.optimizer, args.no_dropout = (1, 28, 28), "sgd", False
    x, y = torch.randn(args.batch_size, *args.input_shape), torch.randint(0, 2, (args.batch_size,))
    plain, plain_opt = build("mlp", False, args, [2, 2])
    gated, gated_opt = build("mlp", True, args, [2, 2])
    hat = HAT(gated)
    hat.start_task(0, gated_opt, steps_per_epoch=50)
    step = make_step(gated, gated_opt, hat, x, y)
    for _ in range(100):
        step()
    hat.end_task()
    hat.start_task(1, gated_opt, steps_per_epoch=50)
    protector = hat._protector
    restore, label = protector.restore, "loop"
    if args.compile:

        def passes(bits, keep, frozen):
            for b, k, f in zip(bits, keep, frozen):
                b.bitwise_and_(k).bitwise_or_(f)

        compiled = torch.compile(passes)
        start = time.perf_counter()
        compiled(protector.bits, protector.keep, protector.frozen_bits)
        label = f"torch.compile (compiled in {time.perf_counter() - start:.1f} s)"

        def restore():
            compiled(protector.bits, protector.keep, protector.frozen_bits)

    plain.set_task(1)
    r = paired_times({"plain": make_step(plain, plain_opt, None, x, y), "pass": restore}, args.rounds, 5)
    size = "-".join(map(str, args.hidden))
    print(
        f"MLP {size}, batch {args.batch_size}, {len(protector.bits)} protected tensors, "
        f"{protector.num_frozen:,} frozen entries: plain step {r['ms']['plain'] * 1e3:.0f} us, "
        f"protection pass [{label}] {r['ms']['pass'] * 1e3:.0f} us = {r['ratio']:.3f} of the plain step "
        f"(IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}) (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()})"
    )


if __name__ == "__main__":
    main()
