"""Task predictors with the task id unknown at test time: task-found rate, class-incremental ACC and
cost per test image of every predictor, on the same trained run of each method.

    python benchmarks/task_inference.py split --methods hat,packnet,wsn,hypermask
    python benchmarks/task_inference.py permuted --methods hat
    python benchmarks/task_inference.py split --methods hat --train-with ood-head   # a predictor that trains
    python benchmarks/task_inference.py split --methods supsup --predictors one-shot-batch --tag batch

Each method trains once with ``maskcl run``'s defaults for the scenario (Split Fashion-MNIST: 5 tasks,
the HAT paper's MLP, 5 epochs; Permuted: 10 tasks, MLP 1000-1000 without dropout); after each task every
predictor fits on that task's training data and classifies every learned task's test data among the
learned tasks (:class:`maskcl.evaluation.ClassIncremental`), so all predictors see the same network.
The cost: seconds per test image of ``predict`` over the whole test set after the last task, and the
statistics kept. Results go to ``/tmp/maskcl-inference/<scenario>-<method>.json`` as each run ends.
``--train-with NAME``: the run trains with a predictor that changes training (``maskcl run
--task-inference NAME``), and every predictor is measured on that network
(``<scenario>-<method>-<NAME>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from maskcl import RunConfig, run
from maskcl.build import load_scenario
from maskcl.data import TaskData
from maskcl.errors import MaskclError
from maskcl.evaluation import ClassIncremental
from maskcl.predictors import create_predictor, list_predictors

OUT = Path("/tmp/maskcl-inference")
SCENARIOS = {
    "split": {"benchmark": "split-fmnist"},
    "permuted": {
        "benchmark": "permuted-fmnist",
        "hidden": (1000, 1000),
        "dropout": 0.0,
        "input_dropout": 0.0,
    },
}


VARIANTS = {"one-shot-batch": ("one-shot", {"per_batch": True}, 128)}
"""Measured predictors that are a registered one with options: name, options, test batch (SupSup's
one-shot deciding once for a batch of 128 images of one task, the paper's setting)."""


def make_record(name: str, pooled: bool, num_tasks: int) -> ClassIncremental:
    """The predictor ``name`` (or variant) in a fresh class-incremental record; ``--pooled``: the Gaussian
    keeps one input covariance a task (10-class tasks of 784 pixels: a tenth of the memory and time)."""
    registered, options, batch = VARIANTS.get(name, (name, {}, 1000))
    if pooled and registered == "gaussian":
        options = {"per_class": ()}
    return ClassIncremental(create_predictor(registered, **options), num_tasks, batch)


def measure(
    scenario: str,
    method: str,
    predictors: list[str],
    epochs: int,
    images: int,
    pooled: bool,
    train_with: str | None = None,
) -> dict:
    config = RunConfig(method=method, epochs=epochs, task_inference=train_with, **SCENARIOS[scenario])
    data = load_scenario(config)
    if images:  # the first IMAGES test images of each task (the run's own evaluation keeps them all)
        for task in data.tasks:
            task.test = TaskData(task.test.x[:images], task.test.y[:images], task.test.permutation)
    records = {name: make_record(name, pooled, data.num_tasks) for name in predictors}
    device = torch.device("cpu")

    def after(model, task):
        for name, record in list(records.items()):
            try:
                record.predictor.check_model(model)
                if record.predictor.trains and record.predictor.name != train_with:
                    raise MaskclError(f"{name} needs a run trained with it (--train-with {name})")
            except MaskclError:  # e.g. one-shot needs supsup's superposed masks
                del records[name]
                continue
            record.after_task(model, data, task, device)

    results = run(config, log=lambda line: print(line, flush=True), on_task_end=after)
    rows = {}
    for name, record in records.items():
        row = record.results(data)
        rows[name] = {
            k: row[k] for k in ("task_accuracy", "class_incremental_acc", "acc", "bwt", "memory_bytes")
        }
    out = {
        "scenario": scenario,
        "method": method,
        "trained_with": train_with,
        "acc": results["acc"],
        "bwt": results["bwt"],
        "predictors": rows,
    }
    return out


def timing(scenario: str, method: str, predictors: list[str], epochs: int) -> dict:
    """Seconds per test image of each predictor on a run's final model (retrained: 1 epoch, same shapes)."""
    config = RunConfig(method=method, epochs=epochs, **SCENARIOS[scenario])
    data = load_scenario(config)
    records = {name: create_predictor(name) for name in predictors}
    box = {}

    def after(model, task):
        box["model"] = model
        for name, predictor in list(records.items()):
            try:
                predictor.check_model(model)
                if predictor.trains:
                    raise MaskclError(f"{name} needs a run trained with it")
            except MaskclError:
                del records[name]
                continue
            predictor.fit_task(model, task, data[task].train)

    run(config, log=lambda _: None, on_task_end=after)
    x = torch.cat([data[t].test.x[:500] for t in range(data.num_tasks)])
    seconds = {}
    for _ in range(2):  # alternate, keep the faster of two rounds each
        for name, predictor in records.items():
            start = time.perf_counter()
            for i in range(0, len(x), 1000):
                predictor.predict(box["model"], x[i : i + 1000])
            seconds[name] = min(seconds.get(name, float("inf")), (time.perf_counter() - start) / len(x))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "table"])
    parser.add_argument("--methods", default="hat")
    parser.add_argument("--predictors", default=",".join(list_predictors()))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--timing", action="store_true", help="seconds per test image (a 1-epoch run)")
    parser.add_argument(
        "--test-images", type=int, default=0, help="test images a task for the predictors (0: all)"
    )
    parser.add_argument("--pooled", action="store_true", help="gaussian with one input covariance a task")
    parser.add_argument("--train-with", default=None, help="a predictor that changes training (ood-head)")
    parser.add_argument("--tag", default="", help="appended to the results file's name")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("MASKCL_THREADS", "1")))
    OUT.mkdir(parents=True, exist_ok=True)
    if args.scenario == "table":
        head = ["scenario", "method", "ACC task known", "BWT", "predictor", "task found", "CI ACC", "CI BWT"]
        print("| " + " | ".join(head) + " |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for path in sorted(OUT.glob("*.json")):
            r = json.loads(path.read_text())
            if "predictors" not in r:
                continue
            method = r["method"] + (f" (trained with {r['trained_with']})" if r.get("trained_with") else "")
            for name, p in r["predictors"].items():
                bwt = "-" if p["bwt"] is None else f"{p['bwt']:+.4f}"
                print(
                    f"| {r['scenario']} | {method} | {r['acc']:.4f} | {r['bwt']} | {name} | "
                    f"{p['task_accuracy']:.4f} | {p['class_incremental_acc']:.4f} | {bwt} |"
                )
        return
    predictors = args.predictors.split(",")
    for method in args.methods.split(","):
        if args.timing:
            result = {
                "scenario": args.scenario,
                "method": method,
                "seconds_per_image": timing(args.scenario, method, predictors, 1),
            }
            (OUT / f"{args.scenario}-{method}-timing.json").write_text(json.dumps(result, indent=1))
        else:
            result = measure(
                args.scenario, method, predictors, args.epochs, args.test_images, args.pooled, args.train_with
            )
            suffix = (f"-{args.train_with}" if args.train_with else "") + (f"-{args.tag}" if args.tag else "")
            (OUT / f"{args.scenario}-{method}{suffix}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
