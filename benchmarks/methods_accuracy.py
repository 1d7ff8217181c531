"""Accuracy of the new methods (PackNet, WSN, AdaHAT) beside HAT, with a check of exact protection.

Every run checks, after each task, that the entries owned by each earlier task (``owned_entries(model,
[task])`` at that task's end: its weights, head rows, norm rows and the shared parameters frozen whole)
are bit-for-bit what they were when that task was learned (``protected entries changed``). AdaHAT lets the
gated layers' entries of earlier tasks move by design, so its count is expected not to be 0.

Each run's results are written to ``OUT/<group>/<label>.json`` as soon as it ends; a run whose file is
there already is not run again (so a stopped sweep continues where it stopped), and ``table`` prints the
markdown table of whatever has finished.

    python benchmarks/methods_accuracy.py split      # Split Fashion-MNIST, MLP 400-400 without dropout,
                                                     # 5 epochs, batch 64: SGD lr 0.05, and AdamW lr 1e-3
                                                     # with weight decay 0.01
    python benchmarks/methods_accuracy.py permuted   # Permuted Fashion-MNIST, 10 tasks, MLP 1000-1000,
                                                     # SGD lr 0.05, 5 epochs (--epochs, --num-tasks reduce)
    python benchmarks/methods_accuracy.py converted  # PackNet and WSN on timm resnet18, Split, reduced
    python benchmarks/methods_accuracy.py adahat-alpha  # AdaHAT on Split, SGD, alpha 0.1, 1 and 10
    python benchmarks/methods_accuracy.py wsn-gain      # WSN on Split, SGD, score_gain 1, 10, 100, 1000
    python benchmarks/methods_accuracy.py wsn-density   # WSN on Split, SGD, density 0.3 and 0.7
    python benchmarks/methods_accuracy.py adahat-permuted  # AdaHAT alpha 0.1 on Permuted; HAT and AdaHAT on
                                                        # MLP 100-100
    python benchmarks/methods_accuracy.py split --only packnet --epochs 2   # a subset, shorter
    python benchmarks/methods_accuracy.py permuted --only wsn --epochs 2 --num-tasks 3 --adamw
    python benchmarks/methods_accuracy.py table [--out DIR]                 # the table of the finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

from maskcl import RunConfig, run
from maskcl.core import owned_entries

# the settings: MLP 400-400 without dropout, SGD lr 0.05, batch 64, 5 epochs a task, seed 0
SPLIT = {
    "benchmark": "split-fmnist", "epochs": 5, "lr": 0.05, "batch_size": 64, "hidden": (400, 400),
    "dropout": 0.0, "input_dropout": 0.0, "optimizer": "sgd", "weight_decay": 0.0,
}  # fmt: skip
ADAMW = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01}
# HAT's recorded Permuted setting (docs/benchmarks.md: ACC 0.858)
PERMUTED = {
    "benchmark": "permuted-fmnist", "num_tasks": 10, "epochs": 5, "lr": 0.05, "batch_size": 64,
    "hidden": (1000, 1000), "dropout": 0.0, "input_dropout": 0.0, "optimizer": "sgd",
}  # fmt: skip
PERMUTED_SMALL = {**PERMUTED, "hidden": (100, 100), "epochs": 2}
METHODS = ("packnet", "wsn", "adahat", "hat")
EXPERIMENTS = {
    "split": [
        *((f"{m}-sgd", {**SPLIT, "method": m}) for m in METHODS),
        *((f"{m}-adamw", {**SPLIT, **ADAMW, "method": m}) for m in METHODS),
    ],
    "permuted": [(f"{m}-sgd", {**PERMUTED, "method": m}) for m in ("packnet", "wsn", "adahat", "hat")],
    # AdaHAT's adjustment intensity (default 0.01) raised, on Split with SGD
    "adahat-alpha": [
        (f"adahat-sgd-alpha{a}", {**SPLIT, "method": "adahat", "options": {"alpha": a}})
        for a in (0.1, 1.0, 10.0)
    ],
    # WSN's score_gain (default 100; 1 is the paper's estimator), on Split with SGD
    "wsn-gain": [
        (f"wsn-sgd-gain{g:g}", {**SPLIT, "method": "wsn", "options": {"score_gain": g}})
        for g in (1.0, 10.0, 100.0, 1000.0)
    ],
    # WSN's density (default 0.5) on Split with SGD: a lower density leaves later tasks more free weights
    "wsn-density": [
        (f"wsn-sgd-density{d:g}", {**SPLIT, "method": "wsn", "options": {"density": d}}) for d in (0.3, 0.7)
    ],
    # AdaHAT's alpha on Permuted (the setting), and HAT against AdaHAT on a network too small for
    # 10 tasks (MLP 100-100, 2 epochs a task), where HAT's later tasks find few free units
    "adahat-permuted": [
        ("adahat-sgd-alpha0.1", {**PERMUTED, "method": "adahat", "options": {"alpha": 0.1}}),
        *((f"{m}-sgd-mlp100", {**PERMUTED_SMALL, "method": m}) for m in ("hat", "adahat")),
        *(
            (f"adahat-sgd-mlp100-alpha{a}", {**PERMUTED_SMALL, "method": "adahat", "options": {"alpha": a}})
            for a in (0.1, 1.0)
        ),
    ],
    # timm resnet18 (in_chans=1 for 1x28x28, no pretraining), converted without gates; AdamW as for HAT's
    # recorded converted runs (docs/benchmarks.md), reduced for this CPU: PackNet 2 epochs a task (the
    # fewest: it prunes after the first and retrains in the second), WSN 1
    "converted": [
        (f"{m}-resnet18-adamw", {**SPLIT, **ADAMW, "method": m, "arch": "timm:resnet18", "epochs": e})
        for m, e in (("packnet", 2), ("wsn", 1))
    ],
}
# the results kept in each run's JSON file, and the keys of the methods' summaries kept with them
KEYS = ("acc", "bwt", "forgetting", "acc_matrix")
SUMMARY_KEYS = ("capacity", "mask_bytes", "network_capacity")


class ProtectionCheck:
    """After each task, compares every entry owned by earlier tasks with its value at their end."""

    def __init__(self) -> None:
        self.snapshots: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []
        self.changed = 0
        self.checked = 0
        self.per_task: list[int] = []  # entries changed, found after each task

    def __call__(self, model, task: int) -> None:
        changed = 0
        for snapshot in self.snapshots:
            for tensor, mask, values in snapshot:
                changed += int((tensor.detach()[mask] != values).sum())
                self.checked += int(mask.sum())
        self.changed += changed
        self.per_task.append(changed)
        pairs = owned_entries(model, [task])
        self.snapshots.append(
            [(t, m.expand_as(t), t.detach()[m.expand_as(t)].clone()) for t, m in pairs if bool(m.any())]
        )


def run_one(label: str, options: dict, path: Path, log_path: Path) -> dict:
    options = dict(options)
    config = RunConfig(
        method=options.pop("method"),
        options=options.pop("options", {}),
        seed=options.pop("seed", 0),
        **options,
    )
    check = ProtectionCheck()
    start = time.perf_counter()
    with log_path.open("a") as log:
        log.write(f"# {label}: {config.to_dict()}\n")

        def write(line: str) -> None:
            log.write(f"{time.perf_counter() - start:8.1f}s {line}\n")
            log.flush()

        results = run(config, log=write, on_task_end=check)
    record = {
        "label": label,
        "date": str(date.today()),
        "config": config.to_dict(),
        **{key: results[key] for key in KEYS},
        "acc_after_learning": [results["acc_matrix"][t][t] for t in range(len(results["acc_matrix"]))],
        "protected_changed": check.changed,
        "protected_checked": check.checked,
        "protected_changed_per_task": check.per_task,
        "train_seconds": results["timing"]["train_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "threads": results["timing"]["threads"],
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "method_summary": {k: v for k, v in results.items() if k in SUMMARY_KEYS},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    return record


def rank(path: Path, order: list[str]) -> tuple[int, str]:
    """Sort key of a result file: its experiment's place in ``order``, then its name (seeds, reductions)."""
    return next((i for i, label in enumerate(order) if path.stem.startswith(label)), len(order)), path.stem


def table(out: Path) -> None:
    print("| group | run | ACC | BWT | forgetting | protected entries changed | train s | epochs, tasks |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for group, rows in EXPERIMENTS.items():
        order = [label for label, _ in rows]
        for path in sorted((out / group).glob("*.json"), key=lambda path: rank(path, order)):
            r = json.loads(path.read_text())
            c = r["config"]
            tasks = len(r["acc_matrix"])
            bwt = "0.0 (exact)" if r["bwt"] == 0.0 else f"{r['bwt']:+.4f}"
            print(
                f"| {group} | {r['label']} | {r['acc']:.4f} | {bwt} | {r['forgetting']:.4f} | "
                f"{r['protected_changed']:,} of {r['protected_checked']:,} | {r['train_seconds']:.0f} | "
                f"{c['epochs']}, {tasks} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("which", choices=[*EXPERIMENTS, "table"])
    parser.add_argument("--only", default="", help="run only the rows whose label contains this text")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs per task")
    parser.add_argument("--num-tasks", type=int, default=None, help="override the number of tasks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adamw", action="store_true", help="AdamW lr 1e-3, weight decay 0.01 instead")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine 2 threads oversubscribe the cores, up to "
        "15x slower a step)",
    )
    parser.add_argument("--out", default="/tmp/maskcl-methods", help="results folder (one JSON per run)")
    args = parser.parse_args()
    out = Path(args.out)
    torch.set_num_threads(args.threads)
    if args.which == "table":
        table(out)
        return
    folder = out / args.which
    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    print(f"# {date.today()}, torch {torch.__version__}, {platform.machine()}, {threads} threads", flush=True)
    for label, options in EXPERIMENTS[args.which]:
        if args.only not in label:
            continue
        options = {**options, "seed": args.seed}
        if args.epochs is not None:
            options["epochs"] = args.epochs
            label += f"-{args.epochs}ep"
        if args.num_tasks is not None:
            options["num_tasks"] = args.num_tasks
            label += f"-{args.num_tasks}tasks"
        if args.adamw and options["optimizer"] != "adamw":
            options.update(ADAMW)
            label = label.replace("-sgd", "-adamw")
        if args.seed:
            label += f"-seed{args.seed}"
        path = folder / f"{label}.json"
        if path.exists():
            print(f"{label}: done already ({path})", flush=True)
            continue
        r = run_one(label, options, path, folder / f"{label}.log")
        print(
            f"{label}: ACC {r['acc']:.4f} BWT {r['bwt']:+.4f} changed {r['protected_changed']} of "
            f"{r['protected_checked']} train {r['train_seconds']:.0f} s -> {path}",
            flush=True,
        )


if __name__ == "__main__":
    main()
