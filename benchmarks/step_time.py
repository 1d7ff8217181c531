"""Training-step (or inference) time of HAT networks against the same networks without gates, side by side.

Both models see the same batches with the same optimizer; HAT is measured on its second task, so the
exact protection of the first task is active. Short rounds of steps alternate between the two models
and the median of the per-round ratios HAT / plain is reported: pairing neighbouring rounds cancels
most of the drift of a shared, noisy machine. ``--arch timm:NAME`` compares timm's model with its
conversion by :func:`maskcl.core.convert`; ``--inference`` times evaluation-mode forward passes instead,
``--compact`` the compact export (:func:`maskcl.core.compact.compact`) of a task that uses half the units.

``--methods packnet,wsn,adahat,hat`` times the plain network and each named method side by side instead
(rounds alternate over all of them, in one process; ratios method / plain), each on its second of 5 tasks
after a first task learned (PackNet's pruned), and prints the memory each keeps: its network's parameters
and buffers against the plain network's, what it keeps besides (``extra_memory()``), and the bytes its
state grows by per learned task (WSN's stored masks, ``summary()["mask_bytes"]``).

    python benchmarks/step_time.py [--arch mlp] [--hidden 400,400] [--batch-size 64] [--rounds 200]
    python benchmarks/step_time.py --arch timm:resnet18 --optimizer adamw --rounds 15 --steps 1
    python benchmarks/step_time.py --methods packnet,wsn,adahat,hat --no-dropout --threads 1 --rounds 100
    python benchmarks/step_time.py --methods packnet,wsn,adahat,hat --arch alexnet --threads 1 --rounds 15 \
        --steps 1 --first-task-steps 10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import maskcl.methods.hat.method as hat_method
from maskcl import set_task
from maskcl.core import convert
from maskcl.core.compact import compact
from maskcl.methods import create_method, method_class
from maskcl.methods.hat import HAT
from maskcl.models import create_model


def make_step(model, optimizer, hat, x, y):
    def step():
        loss = F.cross_entropy(model(x), y)
        if hat is not None:
            loss = loss + hat.regularizer()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def make_inference(model, x):
    model.eval()

    def forward():
        with torch.no_grad():
            model(x)

    return forward


def build(arch: str, hat: bool, args, classes):
    torch.manual_seed(0)
    if arch.startswith("timm:"):
        import timm

        kwargs = {"img_size": args.img_size, "patch_size": args.patch_size} if args.patch_size else {}
        model = timm.create_model(arch[5:], num_classes=classes[0], **kwargs)
        model = convert(model, classes) if hat else model
    else:
        kwargs = {"hidden": args.hidden} if arch == "mlp" else {}
        if arch == "mlp" and args.no_dropout:
            kwargs.update(dropout=0.0, input_dropout=0.0)
        model = create_model(
            arch, input_shape=args.input_shape, classes_per_task=classes, gates=hat, **kwargs
        )
    return model.train(), make_optimizer(model, args)


def make_optimizer(model, args):
    if args.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05)
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def measure(args) -> dict:
    classes = [2, 2]
    x = torch.randn(args.batch_size, *args.input_shape)
    y = torch.randint(0, 2, (args.batch_size,))
    plain, plain_opt = build(args.arch, False, args, classes)
    gated, gated_opt = build(args.arch, True, args, classes)
    hat = HAT(gated)
    # learn task 0 for a while, so task 1 trains with protection active and gates partly saturated
    hat.start_task(0, gated_opt, steps_per_epoch=max(args.first_task_steps // 2, 1))
    step0 = make_step(gated, gated_opt, hat, x, y)
    for _ in range(args.first_task_steps):
        step0()
    hat.end_task()
    hat.start_task(1, gated_opt, steps_per_epoch=args.steps)
    if args.without_protection:  # ablation only: task 0 is then NOT protected
        hat._protector.restore = lambda: None
    if hasattr(plain, "set_task"):
        plain.set_task(1)
    if args.compact:  # task 0 redrawn to use a random half of every layer's units, then compacted
        with torch.no_grad():
            for gate in hat.gate_modules:
                gate.embedding[0] = torch.where(
                    torch.randperm(gate.num_units) < gate.num_units // 2, 1.0, -1.0
                )
        steps = {"plain": make_inference(plain, x), "hat": make_inference(compact(gated, 0), x)}
    elif args.inference:
        set_task(gated, 1)
        steps = {"plain": make_inference(plain, x), "hat": make_inference(gated, x)}
    else:
        steps = {
            "plain": make_step(plain, plain_opt, None, x, y),
            "hat": make_step(gated, gated_opt, hat, x, y),
        }
    return paired_times(steps, args.rounds, args.steps)


def paired_times(steps: dict, rounds: int, per_round: int) -> dict:
    """Alternate rounds of ``per_round`` calls of the two ``steps`` (baseline first, after one warm-up
    round each): each one's median time per call (``ms``), and the median and IQR of the per-round ratios
    second / first. More than two ``steps``: ``ratios`` (and ``iqrs``) of each after the first against the
    first, within the same round."""
    times = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        for _ in range(per_round):
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            times[name].append((time.perf_counter() - start) / per_round)
    baseline, *candidates = times.values()
    result = {"ms": {name: statistics.median(t) * 1e3 for name, t in times.items()}, "ratios": {}, "iqrs": {}}
    for name, candidate in zip(list(times)[1:], candidates):
        ratios = [c / b for b, c in zip(baseline, candidate)]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios
        result["ratios"][name] = statistics.median(ratios)
        result["iqrs"][name] = (quartiles[0], quartiles[-1])
    last = list(times)[-1]
    result["ratio"], result["iqr"] = result["ratios"][last], result["iqrs"][last]
    return result


def state_bytes(model) -> int:
    """Bytes of the model's parameters and buffers (what its state_dict holds)."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def build_method(name: str, args, classes):
    """``name`` around a fresh network (with gates if the method has them), its optimizer and step."""
    gates = method_class(name).gates
    torch.manual_seed(0)
    if args.arch.startswith("timm:"):
        import timm

        kwargs = {"img_size": args.img_size, "patch_size": args.patch_size} if args.patch_size else {}
        model = convert(
            timm.create_model(args.arch[5:], num_classes=classes[0], **kwargs), classes, gates=gates
        )
    else:
        kwargs = {"hidden": args.hidden} if args.arch == "mlp" else {}
        if args.arch == "mlp" and args.no_dropout:
            kwargs.update(dropout=0.0, input_dropout=0.0)
        model = create_model(
            args.arch, input_shape=args.input_shape, classes_per_task=classes, gates=gates, **kwargs
        )
    method = create_method(name, model)
    net = method.model.train()
    return method, net, make_optimizer(net, args)


def measure_methods(args) -> tuple[dict, dict]:
    """The plain network and each of ``args.methods`` on its second task, side by side; and per method
    its memory: network state, extra memory and the growth of its state per learned task."""
    classes = [2] * 5
    x = torch.randn(args.batch_size, *args.input_shape)
    y = torch.randint(0, 2, (args.batch_size,))
    plain, plain_opt = build(args.arch, False, args, classes)
    if hasattr(plain, "set_task"):
        plain.set_task(1)
    steps, memory, methods = {"plain": make_step(plain, plain_opt, None, x, y)}, {}, {}
    for name in args.methods:
        method, net, optimizer = build_method(name, args, classes)
        step = make_step(net, optimizer, method, x, y)
        half = max(args.first_task_steps // 2, 1)
        before = state_bytes(net)
        method.start_task(0, optimizer, steps_per_epoch=half)
        set_task(net, 0)
        for epoch in (1, 2):  # two "epochs" of task 0: PackNet prunes after the first, retrains in the second
            for _ in range(half):
                step()
            method.end_epoch(epoch, 2)
        method.end_task()
        one = state_bytes(net)
        method.start_task(1, optimizer, steps_per_epoch=args.steps)
        set_task(net, 1)
        steps[name], methods[name] = step, (method, net, before, one)
    times = paired_times(steps, args.rounds, args.steps)
    for name, (method, net, before, one) in methods.items():
        for epoch in (1, 2):
            method.end_epoch(epoch, 2)
        method.end_task()
        two = state_bytes(net)
        summary = method.summary()
        memory[name] = {
            "state": two,
            "plain_state": state_bytes(plain),
            "extra": method.extra_memory(),
            "per_task": two - one,
            "first_task": one - before,
            "mask_bytes": summary.get("mask_bytes"),
            "owner_bytes": sum(b.numel() * b.element_size() for b in net.owners.buffers())
            if hasattr(net, "owners")
            else 0,
            "scores_bytes": sum(p.numel() * p.element_size() for p in net.scores)
            if hasattr(net, "scores")
            else 0,
        }
    return times, memory


def print_methods(args, times: dict, memory: dict) -> None:
    size = "-".join(map(str, args.hidden)) if args.arch == "mlp" else f"{args.input_shape}"
    size += " no-dropout" if args.no_dropout else ""
    print(
        f"{args.arch} {size} batch {args.batch_size} {args.optimizer}, {args.rounds} rounds of {args.steps} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()})"
    )
    print(
        "| method | ms/step | method / plain (IQR) | state bytes | extra_memory() | state added by a task |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    plain_state = next(iter(memory.values()))["plain_state"]
    print(f"| plain | {times['ms']['plain']:.3f} | 1 | {plain_state:,} | - | - |")
    for name, m in memory.items():
        lo, hi = times["iqrs"][name]
        notes = [f"{m['per_task']:,}"]
        if m["mask_bytes"]:
            notes.append(f"summary mask_bytes {next(iter(m['mask_bytes'].values())):,}")
        state = [f"{m['state']:,}"]
        if m["owner_bytes"]:
            state.append(f"owner buffers {m['owner_bytes']:,}")
        if m["scores_bytes"]:
            state.append(f"scores {m['scores_bytes']:,}")
        print(
            f"| {name} | {times['ms'][name]:.3f} | {times['ratios'][name]:.3f} ({lo:.3f}-{hi:.3f}) | "
            f"{'; '.join(state)} | {m['extra']:,} | {'; '.join(notes)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", default="mlp", help="mlp, alexnet, or timm:NAME (e.g. timm:resnet18)")
    parser.add_argument("--img-size", type=int, default=32, help="timm models: image side")
    parser.add_argument("--patch-size", type=int, default=None, help="timm ViTs: patch side (sets img_size)")
    parser.add_argument("--inference", action="store_true", help="time eval-mode forward passes")
    parser.add_argument(
        "--compact", action="store_true", help="time the compact export of a task using half the units"
    )
    parser.add_argument("--hidden", default="400,400")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"))
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--first-task-steps", type=int, default=100, help="HAT steps on task 0 first")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--methods",
        default="",
        help="comma-separated methods to time against the plain network (e.g. packnet,wsn)",
    )
    parser.add_argument("--no-dropout", action="store_true", help="mlp without the paper's dropout")
    parser.add_argument(
        "--without-protection", action="store_true", help="ablation: skip the protection pass (not exact)"
    )
    parser.add_argument(
        "--no-flush", action="store_true", help="keep tiny gate values (shows the cost of subnormal floats)"
    )
    args = parser.parse_args()
    if args.no_flush:
        hat_method.FLUSH_BELOW = 0.0
    args.hidden = tuple(int(v) for v in args.hidden.split(","))
    args.input_shape = (3, args.img_size, args.img_size) if args.arch.startswith("timm:") else (1, 28, 28)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.methods:
        args.methods = args.methods.split(",")
        print_methods(args, *measure_methods(args))
        return
    r = measure(args)
    size = "-".join(map(str, args.hidden)) if args.arch == "mlp" else f"{args.input_shape}"
    size += " no-dropout" if args.no_dropout else ""
    size += " no-flush" if args.no_flush else ""
    size += " WITHOUT-PROTECTION" if args.without_protection else ""
    size += " INFERENCE" if args.inference else ""
    size += " COMPACT (half the units) against the plain network, inference" if args.compact else ""
    print(
        f"{args.arch} {size} batch {args.batch_size} {args.optimizer}: plain {r['ms']['plain']:.3f} ms/step, "
        f"HAT {r['ms']['hat']:.3f} ms/step, ratio {r['ratio']:.3f} (IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}) "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()})"
    )


if __name__ == "__main__":
    main()
