"""The ``maskcl`` command line.

- ``maskcl run``: trains a continual-learning run into a run folder (``--out DIR``, see
  :mod:`maskcl.runs`) and prints the accuracy matrix with ACC, BWT and forgetting. ``--config FILE``
  sets any flag from a YAML/JSON file (flags given on the command line win), ``--seeds 0,1,2`` runs each
  seed and writes a summary, ``--resume DIR`` continues a stopped run. Ctrl-C saves a checkpoint first.
- ``maskcl eval DIR``: re-evaluates a run's saved model after any of its tasks, on any learned task.
- ``maskcl report DIR``: PNG plots and one self-contained HTML page of a finished run.

Any bad input ends in one line on stderr, ``maskcl: error: ...``, and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from maskcl.checkpoint import FORMAT_VERSION, write_json
from maskcl.config import FIELD_TYPES, check_value, config_from_dict, read_config_file
from maskcl.context import task_state
from maskcl.errors import MaskclError
from maskcl.hat.method import MASK_INITS
from maskcl.hat.scale import SCALE_SCHEDULES
from maskcl.methods import METHODS
from maskcl.metrics import AccuracyMatrix, forgetting_ratio, validate_accuracy_matrix
from maskcl.report import write_report
from maskcl.runs import (
    CHECKPOINT,
    DEFAULT_CHECKPOINT_INTERVAL,
    METRICS,
    SWEEP,
    RunFolder,
    load_run_and_scenario,
    read_json,
    read_run_config,
    read_sweep,
    summarize,
)
from maskcl.train import (
    BENCHMARKS,
    OPTIMIZERS,
    Interrupted,
    RunConfig,
    evaluate,
    resolve_device,
    run,
)

DEFAULTS = RunConfig()


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return values


class _Parser(argparse.ArgumentParser):
    """argparse with maskcl's one-line error format."""

    def error(self, message: str) -> None:
        raise MaskclError(message)


RUN_OPTIONS = {
    "seeds": tuple[int, ...] | None,
    "out": str | None,
    "checkpoint_interval": float,
    "joint_reference": str | None,
    "quiet": bool,
}
"""``maskcl run`` flags that are not part of a run's config (settable in a config file too)."""
RUN_DEFAULTS = {
    "seeds": None,
    "out": None,
    "checkpoint_interval": DEFAULT_CHECKPOINT_INTERVAL,
    "joint_reference": None,
    "quiet": False,
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="maskcl", description="Mask-based continual learning (HAT, HyperMask, baselines).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = commands.add_parser(
        "run",
        help="train a continual-learning run and report its metrics",
        argument_default=argparse.SUPPRESS,
    )
    d = DEFAULTS
    p.add_argument("--config", metavar="FILE", help="a YAML or JSON file of these options; flags win")
    p.add_argument("--resume", metavar="DIR", help="continue the stopped run in DIR with its own config")
    p.add_argument("--seeds", type=_int_list, help="run each seed, e.g. 0,1,2, and summarise them")
    p.add_argument("--method", choices=sorted(METHODS), help=f"default: {d.method}")
    p.add_argument("--benchmark", choices=sorted(BENCHMARKS), help=f"default: {d.benchmark}")
    p.add_argument("--data", metavar="FILE.npz", help="your own data (x_train, y_train, x_test, y_test)")
    p.add_argument("--scenario", choices=("split", "permuted"), help="how --data is cut")
    p.add_argument("--tasks", type=int, help="number of tasks (default: 5 split, 10 permuted)")
    p.add_argument("--epochs", type=int, help=f"epochs per task (default: {d.epochs})")
    p.add_argument("--batch-size", type=int, help=f"default: {d.batch_size}")
    p.add_argument("--lr", type=float, help=f"default: {d.lr}")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default: {d.optimizer}")
    p.add_argument("--momentum", type=float, help="SGD momentum")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--arch", help="mlp, alexnet, resnet20, or timm:NAME (a timm model, converted)")
    p.add_argument("--hidden", type=_int_list, help="hidden widths, e.g. 400,400")
    p.add_argument("--channels", type=_int_list, help="alexnet conv channels")
    p.add_argument("--dropout", type=float, help=f"mlp: dropout after hidden layers (default: {d.dropout})")
    p.add_argument(
        "--input-dropout", type=float, help=f"mlp: dropout on the input (default: {d.input_dropout})"
    )
    p.add_argument("--s-max", type=float, help=f"HAT's final gate scale (default: {d.s_max})")
    p.add_argument("--c", type=float, help=f"HAT's regulariser weight (default: {d.c})")
    p.add_argument("--scale-schedule", choices=sorted(SCALE_SCHEDULES))
    p.add_argument("--mask-init", choices=MASK_INITS, help="HAT task embedding start")
    p.add_argument("--per-layer", action="store_true", help="HAT regulariser normalised per layer")
    p.add_argument("--quota", type=float, help="units a task may take unpenalised")
    p.add_argument("--compensation", type=float, help="default: --s-max")
    p.add_argument("--sparsity", type=float, help="HyperMask: %% of each mask set to 0")
    p.add_argument("--sparsity-ramp", type=int, help="HyperMask: first task's ramp, in steps")
    p.add_argument("--beta", type=float, help=f"HyperMask: hypernetwork-output regulariser ({d.beta})")
    p.add_argument("--lam", type=float, help=f"HyperMask: lambda, L1 change of target weights ({d.lam})")
    p.add_argument("--l1-masked", action="store_true", help="HyperMask: L1 weighted by earlier masks")
    p.add_argument("--embedding-dim", type=int, help="HyperMask: task embedding size")
    p.add_argument("--hyper-hidden", type=_int_list, help="HyperMask: hypernet widths")
    p.add_argument("--chunks", type=int, help=f"HyperMask: output chunks, 0: unchunked ({d.chunks})")
    p.add_argument("--task-inference", action="store_true", help="also test with the task unknown")
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--joint-reference", metavar="RESULTS.json", help="a joint run's results: adds HAT's forgetting ratio"
    )
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<benchmark>-<method>-<time>)")
    p.add_argument(
        "--checkpoint-interval",
        type=float,
        help=f"seconds between checkpoints in a task, 0: every step ({DEFAULT_CHECKPOINT_INTERVAL})",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final table; no progress bar")

    e = commands.add_parser("eval", help="re-evaluate a run's saved model")
    e.add_argument("dir", metavar="DIR", help="a run folder")
    e.add_argument("--after-task", type=int, help="the model saved after this task (default: the last)")
    e.add_argument("--tasks", type=_int_list, help="tasks to evaluate (default: every learned one)")
    e.add_argument("--device", default="cpu")

    r = commands.add_parser("report", help="plots and an HTML page of a finished run")
    r.add_argument("dir", metavar="DIR", help="a run folder or a multi-seed folder")
    return parser


def _settings(args: argparse.Namespace) -> tuple[RunConfig, dict]:
    """The run's config and run options: defaults, then the config file, then the flags given."""
    given = vars(args)
    file_values = read_config_file(args.config) if "config" in given else {}
    options = dict(RUN_DEFAULTS)
    for key in RUN_OPTIONS:
        if key in file_values:
            try:
                options[key] = _run_option(key, check_value(key, file_values.pop(key), RUN_OPTIONS[key]))
            except MaskclError as err:
                raise MaskclError(f"{args.config}: {err}") from None
        if key in given:
            options[key] = _run_option(key, given[key])
    config = config_from_dict(file_values, source=args.config) if file_values else RunConfig()
    flags = {k: v for k, v in given.items() if k in FIELD_TYPES}
    config = dataclasses.replace(config, **flags)
    config.validate()
    return config, options


def _run_option(key: str, value):
    """``value`` of a run option, checked."""
    if key == "checkpoint_interval" and value < 0:
        raise MaskclError(f"--checkpoint-interval must be >= 0 seconds, got {value}")
    if key == "seeds" and value is not None and not value:
        raise MaskclError("--seeds must list at least one seed")
    if key == "seeds" and value is not None and len(set(value)) < len(value):
        repeated = sorted({s for s in value if value.count(s) > 1})
        raise MaskclError(f"--seeds lists seed {repeated[0]} more than once")
    return value


def _default_out(config: RunConfig) -> Path:
    name = Path(config.data).stem if config.data else config.benchmark
    return Path("runs") / f"{name}-{config.method}-{datetime.now():%Y%m%d-%H%M%S}"


def _joint_reference(path: str | None) -> list[list[float]] | None:
    """The accuracy matrix of a joint run's results.json, checked before any training."""
    if path is None:
        return None
    try:
        matrix = json.loads(Path(path).read_text())["acc_matrix"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MaskclError(
            f"--joint-reference {path}: not a results.json with an acc_matrix ({err})"
        ) from None
    try:
        validate_accuracy_matrix(matrix)
    except MaskclError as err:
        raise MaskclError(f"--joint-reference {path}: {err}") from None
    return matrix


class _Stopper:
    """SIGINT (Ctrl-C) asks the current run folder to checkpoint and stop; a second one stops at once."""

    def __init__(self) -> None:
        self.folder: RunFolder | None = None

    def __enter__(self) -> _Stopper:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, *_) -> None:
        if self.folder is None or self.folder.stop:
            raise KeyboardInterrupt
        self.folder.stop = True


def _print_results(results: dict) -> None:
    print(AccuracyMatrix.from_matrix(results["acc_matrix"]).to_table())
    summary = f"ACC {results['acc']:.4f}  BWT {results['bwt']:+.4f}  forgetting {results['forgetting']:.4f}"
    if "forgetting_ratio" in results:
        summary += f"  forgetting ratio {results['forgetting_ratio']:+.4f}"
    print(summary)
    if "task_inference" in results:
        inference = results["task_inference"]
        print(
            f"task unknown at test time: task inferred {inference['task_accuracy']:.4f}, "
            f"class-incremental ACC {inference['class_incremental_acc']:.4f}"
        )


def _run_one(config: RunConfig, folder: RunFolder, options: dict, stopper: _Stopper, joint) -> dict:
    """Train (or continue) one run in ``folder`` and write its results there."""
    if folder.path.joinpath("results.json").exists():
        print(f"{folder.path} has finished already")
        return read_json(folder.path / "results.json")
    quiet = options["quiet"]
    progress = not quiet and sys.stderr.isatty()
    log = (lambda _: None) if quiet else _progress_log if progress else print
    stopper.folder = folder
    created = not folder.resuming
    try:
        results = run(config, log=log, folder=folder, progress=progress)
    except Interrupted:
        raise
    except MaskclError:
        if created and not (folder.path / CHECKPOINT).exists():
            shutil.rmtree(folder.path, ignore_errors=True)  # nothing to resume: leave nothing behind
        raise
    reference_error = None
    if joint is not None:
        try:
            results["forgetting_ratio"] = forgetting_ratio(
                results["acc_matrix"], joint, results["random_acc"]
            )
        except MaskclError as err:  # e.g. a reference with another number of tasks
            reference_error = err
    _print_results(results)
    try:
        folder.finish(results)
    except MaskclError as err:  # a finished run is never lost
        fd, rescue = tempfile.mkstemp(prefix="maskcl-results-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=2)
        raise MaskclError(f"{err}; the results were saved to {rescue}") from None
    print(f"results: {folder.path / 'results.json'}")
    if reference_error is not None:
        raise MaskclError(f"--joint-reference: {reference_error}; the results were written without it")
    return results


def _progress_log(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line)


def command_run(args: argparse.Namespace) -> None:
    given = vars(args)
    if "resume" in given:
        out = Path(args.resume)
        clashes = [k for k in given if k not in ("command", "resume", "quiet", "checkpoint_interval")]
        if clashes:
            flag = "--" + clashes[0].replace("_", "-")
            raise MaskclError(f"--resume continues {out} with its own config: drop {flag}")
        if (out / SWEEP).exists():
            config_values, seeds = read_sweep(out)
            config = config_from_dict(config_values, source=str(out / SWEEP))
        else:
            config, seeds = read_run_config(out), None
        options = {**RUN_DEFAULTS, "seeds": seeds, "out": str(out)}
        options |= {k: given[k] for k in ("quiet", "checkpoint_interval") if k in given}
    else:
        config, options = _settings(args)
        out = Path(options["out"]) if options["out"] else _default_out(config)
        RunFolder(out).check_new()
    joint = _joint_reference(options["joint_reference"])
    interval = options["checkpoint_interval"]
    with _Stopper() as stopper:
        try:
            if options["seeds"] is None:
                folder = RunFolder(out, interval)
                if "resume" in given:
                    folder.open()
                _run_one(config, folder, options, stopper, joint)
                return
            if "resume" not in given:
                _create_sweep(out, config, options["seeds"])
            results = []
            for seed in options["seeds"]:
                folder = RunFolder(out / f"seed-{seed}", interval)
                if folder.path.exists():
                    folder.open()
                print(f"seed {seed}: {folder.path}")
                results.append(
                    _run_one(dataclasses.replace(config, seed=seed), folder, options, stopper, joint)
                )
            summary = {"method": config.method, "seeds": list(options["seeds"])}
            summary |= {"runs": [f"seed-{s}" for s in options["seeds"]], **summarize(results)}
            write_json(out / "summary.json", summary)
            print(
                "over seeds "
                + ", ".join(f"{k} {summary[k]['mean']:.4f} +- {summary[k]['std']:.4f}" for k in METRICS)
            )
        except Interrupted:
            raise Interrupted(f"stopped; checkpoint saved: continue with maskcl run --resume {out}") from None


def _create_sweep(out: Path, config: RunConfig, seeds: tuple[int, ...]) -> None:
    RunFolder(out).check_new()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MaskclError(f"cannot create {out}: {err.strerror or err}") from None
    write_json(
        out / SWEEP, {"format_version": FORMAT_VERSION, "seeds": list(seeds), "config": config.to_dict()}
    )


def command_eval(args: argparse.Namespace) -> None:
    model, scenario = load_run_and_scenario(args.dir, args.after_task, device=args.device)
    learned = task_state(model).learned_tasks()
    tasks = list(args.tasks) if args.tasks else learned
    for task in tasks:
        if task not in learned:
            raise MaskclError(f"task {task} was never trained in this model (learned: {learned})")
    device = resolve_device(args.device)
    for task in tasks:
        print(f"task {task}: test acc {evaluate(model, scenario[task].test, task, device):.4f}")


def command_report(args: argparse.Namespace) -> None:
    print(f"report: {write_report(args.dir)}")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        {"run": command_run, "eval": command_eval, "report": command_report}[args.command](args)
    except Interrupted as stop:
        print(f"maskcl: {stop}", file=sys.stderr)
        return 130
    except MaskclError as err:
        print(f"maskcl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maskcl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
