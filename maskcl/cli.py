"""The ``maskcl`` command line.

``maskcl run`` trains a continual-learning run and prints the accuracy matrix with ACC, BWT and
forgetting; with ``--out DIR`` it writes ``DIR/results.json``. Any bad input ends in one line on stderr,
``maskcl: error: ...``, and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from maskcl.errors import MaskclError
from maskcl.hat.method import MASK_INITS
from maskcl.hat.scale import SCALE_SCHEDULES
from maskcl.methods import METHODS
from maskcl.metrics import AccuracyMatrix, forgetting_ratio, validate_accuracy_matrix
from maskcl.train import BENCHMARKS, OPTIMIZERS, RunConfig, run

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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="maskcl", description="Mask-based continual learning (HAT and baselines).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = commands.add_parser("run", help="train a continual-learning run and report its metrics")
    d = DEFAULTS
    p.add_argument("--method", choices=sorted(METHODS), default=d.method)
    p.add_argument("--benchmark", choices=sorted(BENCHMARKS), default=d.benchmark)
    p.add_argument("--data", metavar="FILE.npz", help="your own data (x_train, y_train, x_test, y_test)")
    p.add_argument("--scenario", choices=("split", "permuted"), default=d.scenario, help="how --data is cut")
    p.add_argument("--tasks", type=int, help="number of tasks (default: 5 split, 10 permuted)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs per task")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--arch", default=d.arch, help="mlp, alexnet, or timm:NAME (a timm model, converted)")
    p.add_argument("--hidden", type=_int_list, default=d.hidden, help="hidden widths, e.g. 400,400")
    p.add_argument("--channels", type=_int_list, default=d.channels, help="alexnet conv channels")
    p.add_argument("--dropout", type=float, default=d.dropout, help="mlp: dropout after hidden layers")
    p.add_argument("--input-dropout", type=float, default=d.input_dropout, help="mlp: dropout on the input")
    p.add_argument("--s-max", type=float, default=d.s_max, help="HAT's final gate scale")
    p.add_argument("--c", type=float, default=d.c, help="HAT's regulariser weight")
    p.add_argument("--scale-schedule", choices=sorted(SCALE_SCHEDULES), default=d.scale_schedule)
    p.add_argument("--mask-init", choices=MASK_INITS, default=d.mask_init, help="HAT task embedding start")
    p.add_argument("--per-layer", action="store_true", help="HAT regulariser normalised per layer")
    p.add_argument("--quota", type=float, default=d.quota, help="units a task may take unpenalised")
    p.add_argument("--compensation", type=float, default=d.compensation, help="default: --s-max")
    p.add_argument("--sparsity", type=float, default=d.sparsity, help="HyperMask: %% of each mask set to 0")
    p.add_argument(
        "--sparsity-ramp", type=int, default=d.sparsity_ramp, help="HyperMask: first task's ramp, in steps"
    )
    p.add_argument("--beta", type=float, default=d.beta, help="HyperMask: hypernetwork-output regulariser")
    p.add_argument("--lam", type=float, default=d.lam, help="HyperMask: lambda, L1 change of target weights")
    p.add_argument("--l1-masked", action="store_true", help="HyperMask: L1 change weighted by the mask")
    p.add_argument(
        "--embedding-dim", type=int, default=d.embedding_dim, help="HyperMask: task embedding size"
    )
    p.add_argument(
        "--hyper-hidden", type=_int_list, default=d.hyper_hidden, help="HyperMask: hypernet widths"
    )
    p.add_argument("--chunks", type=int, default=d.chunks, help="HyperMask: output chunks (0: unchunked)")
    p.add_argument(
        "--task-inference", action="store_true", help="also test with the task unknown (lowest entropy)"
    )
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--joint-reference", metavar="RESULTS.json", help="a joint run's results: adds HAT's forgetting ratio"
    )
    p.add_argument(
        "--out", metavar="DIR", help="folder for results.json (default: runs/<benchmark>-<method>-<time>)"
    )
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    return parser


def _config(args: argparse.Namespace) -> RunConfig:
    fields = {f: getattr(args, f) for f in RunConfig.__dataclass_fields__}
    return RunConfig(**fields)


def _out_dir(args: argparse.Namespace, config: RunConfig) -> Path:
    if args.out:
        out = Path(args.out)
    else:
        name = Path(config.data).stem if config.data else config.benchmark
        out = Path("runs") / f"{name}-{config.method}-{datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MaskclError(f"--out {out} already exists and is not an empty folder; choose another")
    return out


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


def _staging_dir(out: Path) -> Path:
    """A fresh folder beside ``out`` for the results; creating it first proves ``out`` is writable."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise MaskclError(f"--out {out}: cannot write there ({err.strerror or err})") from None


def _publish(staging: Path, out: Path, results: dict) -> None:
    """Write ``results.json`` into ``staging``, fsync it, and move the folder into place as ``out``.

    If that fails (disk full, folder gone), the results are saved to a file in the system's temporary
    folder instead and the one-line error names it: a finished run is never lost.
    """
    text = json.dumps(results, indent=2)
    try:
        with open(staging / "results.json", "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if out.exists():
            out.rmdir()  # empty, checked before the run
        os.replace(staging, out)
    except OSError as err:
        fd, rescue = tempfile.mkstemp(prefix="maskcl-results-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        raise MaskclError(
            f"could not write {out / 'results.json'} ({err.strerror}); saved to {rescue}"
        ) from None


def command_run(args: argparse.Namespace) -> None:
    config = _config(args)
    config.validate()
    out = _out_dir(args, config)
    joint = _joint_reference(args.joint_reference)
    staging = _staging_dir(out)
    try:
        results = run(config, log=(lambda _: None) if args.quiet else print)
        reference_error = None
        if joint is not None:
            try:
                results["forgetting_ratio"] = forgetting_ratio(
                    results["acc_matrix"], joint, results["random_acc"]
                )
            except MaskclError as err:  # e.g. a reference with another number of tasks
                reference_error = err
        print(AccuracyMatrix.from_matrix(results["acc_matrix"]).to_table())
        summary = (
            f"ACC {results['acc']:.4f}  BWT {results['bwt']:+.4f}  forgetting {results['forgetting']:.4f}"
        )
        if "forgetting_ratio" in results:
            summary += f"  forgetting ratio {results['forgetting_ratio']:+.4f}"
        print(summary)
        if "task_inference" in results:
            inference = results["task_inference"]
            print(
                f"task unknown at test time: task inferred {inference['task_accuracy']:.4f}, "
                f"class-incremental ACC {inference['class_incremental_acc']:.4f}"
            )
        _publish(staging, out, results)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"results: {out / 'results.json'}")
    if reference_error is not None:
        raise MaskclError(f"--joint-reference: {reference_error}; the results were written without it")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        command_run(args)
    except MaskclError as err:
        print(f"maskcl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maskcl: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
