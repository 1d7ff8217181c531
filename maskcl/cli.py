"""The ``maskcl`` command line.

- ``maskcl run``: trains a continual-learning run into a run folder (``--out DIR``, see
  :mod:`maskcl.runs`) and prints the accuracy matrix with ACC, BWT and forgetting. ``--config FILE``
  sets any flag from a YAML/JSON file, ``key=value`` items (``lr=0.01 hat.s_max=400``) override the file,
  and flags given on the command line win over both; ``--seeds 0,1,2`` runs each
  seed and writes a summary, ``--resume DIR`` continues a stopped run, ``--auto-resume`` makes the same
  command line start, continue or report the run in ``--out DIR`` (for schedulers that requeue).
- ``maskcl eval DIR``: re-evaluates a run's saved model after any of its tasks, on any learned task.
- ``maskcl report DIR``: PNG plots and one self-contained HTML page of a finished run.
- ``maskcl compare DIR...``: a table of the runs' methods by metrics, mean ± std over seeds (Markdown,
  LaTeX or CSV), and with ``--plot FILE`` the average accuracy after each task (:mod:`maskcl.compare`).

Exit status: 0 done; 2 bad input or a failed run, with one line on stderr, ``maskcl: error: ...``, and
nothing written; 130 after SIGINT (Ctrl-C) and 143 after SIGTERM (what schedulers send first): a run
being trained saves a checkpoint at its next step first, so that ``--resume`` or ``--auto-resume``
continues it exactly. A second signal stops at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import signal
import sys
import types
import typing
import warnings
from datetime import datetime
from pathlib import Path

from maskcl.build import resolve_device
from maskcl.checkpoint import write_atomic
from maskcl.compare import FORMATS, compare_runs, format_table, plot_average_accuracy
from maskcl.config import (
    RUN_FIELDS,
    RUN_TYPES,
    RunConfig,
    check_value,
    config_from_dict,
    methods_taking,
    option_types,
    parse_overrides,
    read_config_file,
)
from maskcl.core.context import task_state
from maskcl.distributed import launched_rank
from maskcl.errors import MaskclError, MaskclWarning
from maskcl.evaluation import evaluate
from maskcl.export import export_task
from maskcl.loggers import check_loggers, list_loggers
from maskcl.methods import list_methods, load_plugins, method_class
from maskcl.metrics import AccuracyMatrix, validate_accuracy_matrix
from maskcl.report import write_report
from maskcl.runs import (
    DEFAULT_CHECKPOINT_INTERVAL,
    METRICS,
    OPTIONAL_METRICS,
    SWEEP,
    RunFolder,
    SweepFolder,
    load_run_and_scenario,
    read_json,
    read_run_config,
)
from maskcl.train import Interrupted, run, run_seeds
from maskcl.version import __version__

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
    "loggers": tuple[str, ...] | None,
}
"""``maskcl run`` flags that are not part of a run's config (settable in a config file too)."""
RUN_DEFAULTS = {
    "seeds": None,
    "out": None,
    "checkpoint_interval": DEFAULT_CHECKPOINT_INTERVAL,
    "joint_reference": None,
    "quiet": False,
    "loggers": None,
}


RESUME_OPTIONS = ("quiet", "checkpoint_interval", "loggers")
"""The run options a resumed run may change: how it reports and saves, never what it computes."""


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


FLAG_GROUPS = {
    "data": (
        "benchmark", "data", "scenario", "num_tasks", "class_order", "val_fraction", "augment", "workers",
    ),
    "model": ("arch", "pretrained", "hidden", "channels", "dropout", "input_dropout"),
    "method": ("method", "plugins", "task_inference"),
    "optimisation": (
        "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
        "lr_schedule", "lr_step_epochs", "lr_gamma", "lr_patience", "lr_min", "early_stop", "grad_clip",
    ),
    "run": ("seed", "device"),
}  # fmt: skip
"""``maskcl run --help``'s groups of the config's fields (the run-control flags go in ``run``)."""

RUN_EXAMPLES = """examples:
  maskcl run                                           # HAT on Split Fashion-MNIST, the paper's MLP
  maskcl run --method packnet --optimizer adamw --lr 1e-3 --weight-decay 0.01
  maskcl run --benchmark permuted-fmnist --num-tasks 10 --hidden 1000,1000 --lr-schedule cosine
  maskcl run --data images/ --arch resnet20 --task-inference --seeds 0,1,2 --out runs/mine
  maskcl run --benchmark split-cifar10 --arch timm:resnet18 --pretrained --augment crop-flip --workers 4
  maskcl run --config experiment.yaml --lr 0.01 --print-config
  maskcl run --config experiment.yaml epochs=10 hat.s_max=800       # key=value overrides (OmegaConf)

methods: {methods}; maskcl run --method NAME --help lists NAME's options"""


def _add_flag(group, name: str, kind, default, help_text: str, choices=None, const=None) -> None:
    """``--name`` for a config field of type ``kind`` (see :func:`maskcl.config.check_value`); with
    ``const``, the value may be left out (``--name`` alone means ``const``)."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    optional = type(None) in options
    base = next(k for k in options if k is not type(None))
    flag = "--" + name.replace("_", "-")
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    if default in (None, ()):
        shown = "none"
    text = help_text if "default" in help_text else f"{help_text} (default: {shown})"
    text = text.replace("%", "%%")
    if base is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        return
    if typing.get_origin(base) is tuple:
        convert = _int_list if typing.get_args(base)[0] is int else _name_list
    else:
        convert = base
    if optional:
        convert = _or_none(convert)
    if const is not None:
        group.add_argument(flag, type=convert, choices=choices, help=text, nargs="?", const=const)
        return
    group.add_argument(flag, type=convert, choices=choices, help=text)


def _or_none(convert):
    def parse(text: str):
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def build_parser(method: str = DEFAULTS.method) -> argparse.ArgumentParser:
    """The command line; ``maskcl run``'s method flags are those of ``method``."""
    parser = _Parser(prog="maskcl", description="Mask-based continual learning: " + ", ".join(list_methods()))
    parser.add_argument("--version", action="version", version=f"maskcl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = commands.add_parser(
        "run",
        help="train a continual-learning run and report its metrics",
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=RUN_EXAMPLES.format(methods=", ".join(list_methods())),
    )
    groups = {name: p.add_argument_group(name) for name in FLAG_GROUPS}
    run_group = groups["run"]
    run_group.add_argument("--config", metavar="FILE", help="a YAML or JSON file of these options; flags win")
    run_group.add_argument("--print-config", action="store_true", help="print the complete config and exit")
    run_group.add_argument(
        "--resume", metavar="DIR", help="continue the stopped run in DIR with its own config"
    )
    run_group.add_argument(
        "--auto-resume",
        action="store_true",
        help="start, continue or report the run of these options in --out DIR (one line for requeues)",
    )
    run_group.add_argument("--seeds", type=_int_list, help="run each seed, e.g. 0,1,2, and summarise them")
    for name, field in RUN_FIELDS.items():
        choices = list_methods() if name == "method" else field.metadata.get("choices")
        default, help_text = getattr(DEFAULTS, name), field.metadata["help"]
        group = groups[next((g for g, names in FLAG_GROUPS.items() if name in names), "run")]
        _add_flag(group, name, RUN_TYPES[name], default, help_text, choices, field.metadata.get("const"))
    config_class = method_class(method).config_class
    group = p.add_argument_group(f"options of method {method}")
    for field, kind in zip(dataclasses.fields(config_class), option_types(method).values()):
        help_text = field.metadata.get("help", field.name)
        _add_flag(group, field.name, kind, field.default, help_text, field.metadata.get("choices"))
    run_group.add_argument(
        "--joint-reference", metavar="RESULTS.json", help="a joint run's results: adds HAT's forgetting ratio"
    )
    run_group.add_argument(
        "--out", metavar="DIR", help="run folder (default: runs/<benchmark>-<method>-<time>)"
    )
    run_group.add_argument(
        "--checkpoint-interval",
        type=float,
        help=f"seconds between checkpoints in a task; 0: every step, inf: at task ends only "
        f"(default: {DEFAULT_CHECKPOINT_INTERVAL})",
    )
    run_group.add_argument("--quiet", action="store_true", help="print only the final table; no progress bar")
    run_group.add_argument(
        "--loggers",
        type=_name_list,
        metavar="NAME,...",
        help=f"where the metrics also go, besides metrics.csv: {', '.join(list_loggers())}, or none "
        "(default: tensorboard when installed; a resumed run keeps its own)",
    )

    e = commands.add_parser("eval", help="re-evaluate a run's saved model")
    e.add_argument("dir", metavar="DIR", help="a run folder")
    e.add_argument("--after-task", type=int, help="the model saved after this task (default: the last)")
    e.add_argument("--tasks", type=_int_list, help="task ids to evaluate (default: every learned one)")
    e.add_argument("--device", default="cpu")

    x = commands.add_parser(
        "export",
        help="one learned task as a plain network (safetensors, and a torch.export program)",
        description="Writes OUT.safetensors (the task's plain weights: masks folded in, no task state) and "
        "OUT.pt2 (torch.export; torch.export.load(path).module()(x)) where the network traces.",
    )
    x.add_argument("dir", metavar="DIR", help="a run folder")
    x.add_argument("--task", type=int, required=True, help="the task to export")
    x.add_argument("--after-task", type=int, help="the model saved after this task (default: the last)")
    x.add_argument("--compact", action="store_true", help="only the units the task uses (HAT mlp, alexnet)")
    x.add_argument("--out", metavar="OUT", help="the files' path without suffix (default: DIR/export/task-K)")

    r = commands.add_parser("report", help="plots and an HTML page of a finished run")
    r.add_argument("dir", metavar="DIR", help="a run folder or a multi-seed folder")

    c = commands.add_parser(
        "compare",
        help="a table of methods by metrics (mean ± std over seeds) across finished runs",
        description="Rows: the experiments (runs differing only in the seed are one row); columns: ACC, "
        "BWT, forgetting, FWT, average incremental ACC, and task inference where measured.",
    )
    c.add_argument("dirs", metavar="DIR", nargs="+", help="run folders or multi-seed folders, one benchmark")
    c.add_argument(
        "--format", choices=FORMATS, default="markdown", help="the table's format (default markdown)"
    )
    c.add_argument("--out", metavar="FILE", help="write the table to FILE instead of printing it")
    c.add_argument(
        "--plot", metavar="FILE", help="also plot the average accuracy after each task (.png, .pdf or .svg)"
    )
    return parser


OVERRIDE = re.compile(r"[A-Za-z_][\w.-]*=")
"""A ``maskcl run`` argument that is a ``key=value`` override (``lr=0.01``, ``hat.s_max=400``)."""
OVERRIDES = "the key=value overrides"


def _split_overrides(extras: list[str]) -> tuple[list[str], list[str]]:
    """``extras`` as (the ``key=value`` overrides, the rest)."""
    overrides = [item for item in extras if OVERRIDE.match(item)]
    return overrides, [item for item in extras if not OVERRIDE.match(item)]


def _method_of(argv: list[str]) -> str:
    """The method a ``maskcl run`` command line is for (its ``--method``, else its ``method=`` override,
    else its config file's, else the default), once the plug-in modules it names are imported: its flags
    are that method's."""
    if not argv or argv[0] != "run":
        return DEFAULTS.method
    peek = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS, allow_abbrev=False)
    for flag in ("--method", "--config", "--plugins", "--resume"):
        peek.add_argument(flag)
    known, extras = peek.parse_known_args(argv[1:])
    known = vars(known)
    if "resume" in known:  # the run's own config says; a flag besides is refused later
        return DEFAULTS.method
    file_values = read_config_file(known["config"]) if "config" in known else {}
    overrides = _split_overrides(extras)[0]
    file_values |= {k: v for k, v in parse_overrides(overrides).items() if k in ("method", "plugins")}
    try:
        plugins = check_value("plugins", file_values.get("plugins", ()), RUN_TYPES["plugins"])
        if "plugins" in known:
            plugins = _name_list(known["plugins"])
        method = check_value("method", known.get("method", file_values.get("method", DEFAULTS.method)), str)
    except MaskclError as err:
        raise MaskclError(f"{known.get('config', 'the command line')}: {err}") from None
    load_plugins(plugins)
    return method if method in list_methods() else DEFAULTS.method  # an unknown one: argparse says so


def _unrecognised(extras: list[str], method: str) -> str:
    """argparse's complaint about ``extras``, or, for another method's option, which method takes it."""
    for extra in extras:
        flag = extra.split("=")[0]
        others = methods_taking(flag.removeprefix("--").replace("-", "_"), method) if flag[:2] == "--" else []
        if others:
            return f"{flag} is an option of {', '.join(others)}, not of method {method}"
    return f"unrecognized arguments: {' '.join(extras)}"


def _settings(args: argparse.Namespace) -> tuple[RunConfig, dict]:
    """The run's config and run options: defaults, then the config file, then the ``key=value``
    overrides, then the flags given."""
    given = vars(args)
    file = given.get("config", "")
    layers = [
        (file, read_config_file(file) if file else {}),
        (OVERRIDES, parse_overrides(given.get("overrides", []))),
    ]
    options = dict(RUN_DEFAULTS)
    for key in RUN_OPTIONS:
        for source, values in layers:
            if key in values:
                try:
                    options[key] = _run_option(key, check_value(key, values.pop(key), RUN_OPTIONS[key]))
                except MaskclError as err:
                    raise MaskclError(f"{source}: {err}") from None
        if key in given:
            options[key] = _run_option(key, given[key])
    for key in ("method", "plugins"):  # the later layers choose the method whose options the earlier hold
        chosen = given.get(key, layers[1][1].get(key))
        for _, values in layers:
            if chosen is not None and values:
                values[key] = chosen
    config = RunConfig()
    for source, values in layers:
        if values:
            config = config_from_dict(values, source=source, base=config)
    method = given.get("method", config.method)
    other = next((k for k, v in layers[1][1].items() if k != method and k in list_methods() and v), None)
    if other:  # a file may hold several methods' sections; a command line's are for its run
        raise MaskclError(f"{OVERRIDES}: {other}.* sets options of {other}, but the run's method is {method}")
    run_flags = {k: v for k, v in given.items() if k in RUN_FIELDS}
    kinds = option_types(run_flags.get("method", config.method))
    method_flags = {k: v for k, v in given.items() if k in kinds}
    if run_flags.get("method", config.method) == config.method:
        method_flags = {**config.options, **method_flags}
    config = dataclasses.replace(config, **run_flags, options=method_flags).resolved()
    config.validate()
    return config, options


def _run_option(key: str, value):
    """``value`` of a run option, checked."""
    if key == "checkpoint_interval" and not value >= 0:  # NaN too
        raise MaskclError(f"--checkpoint-interval must be a number >= 0 seconds, got {value}")
    if key == "seeds" and value is not None and not value:
        raise MaskclError("--seeds must list at least one seed")
    if key == "seeds" and value is not None and len(set(value)) < len(value):
        repeated = sorted({s for s in value if value.count(s) > 1})
        raise MaskclError(f"--seeds lists seed {repeated[0]} more than once")
    if key == "loggers" and value is not None:
        value = check_loggers(() if tuple(value) == ("none",) else tuple(value))
    return value


def _default_out(config: RunConfig) -> Path:
    name = Path(config.data).stem if config.data else config.benchmark
    return Path("runs") / f"{name}-{config.method}-{datetime.now():%Y%m%d-%H%M%S}"


def _joint_reference(path: str | None) -> list[list[float]] | None:
    """The accuracy matrix of a joint run's results.json, checked before any training (its size against
    the run's tasks by :func:`maskcl.train.run`)."""
    if path is None:
        return None
    try:
        matrix = read_json(Path(path))["acc_matrix"]
        validate_accuracy_matrix(matrix)
    except KeyError:
        raise MaskclError(f"--joint-reference {path}: not a results.json with an acc_matrix") from None
    except MaskclError as err:
        raise MaskclError(f"--joint-reference {path}: {err}") from None
    return matrix


class Stopped(BaseException):
    """A signal stopped the command at once (before any run folder was written, or a second signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Stopper:
    """SIGINT (Ctrl-C) and SIGTERM ask the run folder being trained to checkpoint at its next step and stop;
    while no folder is being written, or at a second signal, they stop at once (:class:`Stopped`)."""

    signals = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.folder: RunFolder | None = None
        self.requested = 0  # the signal that asked to stop, if any: no further seed starts

    def __enter__(self) -> _Stopper:
        self._previous = {number: signal.signal(number, self._handle) for number in self.signals}
        return self

    def __exit__(self, *_) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, signum: int, _frame) -> None:
        folder, first = self.folder, not self.requested
        self.requested = self.requested or signum
        if first and folder is not None and folder.active:
            folder.stop = signum
            return
        raise Stopped(signum)


def _print_results(results: dict) -> None:
    print(AccuracyMatrix.from_matrix(results["acc_matrix"]).to_table())
    summary = f"ACC {results['acc']:.4f}  BWT {results['bwt']:+.4f}  forgetting {results['forgetting']:.4f}"
    if "fwt" in results:
        summary += f"  FWT {results['fwt']:+.4f}"
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
    """Train, continue or report one run in ``folder`` (as its mode says); its results are written there."""
    results = folder.finished_results(config.to_dict())
    if results is None:
        quiet = options["quiet"]
        progress = not quiet and sys.stderr.isatty()
        log = (lambda _: None) if quiet else _progress_log if progress else print
        stopper.folder = folder
        results = run(config, log=log, folder=folder, progress=progress, joint_reference=joint)
        if "timing" not in results:  # another process finished it meanwhile
            print(f"{folder.path} has finished already")
    else:
        print(f"{folder.path} has finished already")
    if launched_rank() != 0:  # rank 0 prints for all
        return results
    _print_results(results)
    print(f"results: {folder.path / 'results.json'}")
    return results


def _progress_log(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line)


def command_run(args: argparse.Namespace, stopper: _Stopper) -> None:
    given = vars(args)
    if "resume" in given:
        out = Path(args.resume)
        clashes = [k for k in given if k not in ("command", "resume", *RESUME_OPTIONS)]
        if clashes:
            flag = given["overrides"][0] if clashes[0] == "overrides" else "--" + clashes[0].replace("_", "-")
            raise MaskclError(f"--resume continues {out} with its own config: drop {flag}")
        if (out / SWEEP).exists():
            config_values, seeds = SweepFolder(out, "resume").read()
            config = config_from_dict(config_values, source=str(out / SWEEP), complete=True)
        else:
            config, seeds = read_run_config(out), None
        options = {**RUN_DEFAULTS, "seeds": seeds, "out": str(out)}
        options |= {k: _run_option(k, given[k]) for k in RESUME_OPTIONS if k in given}
        mode = "resume"
    else:
        config, options = _settings(args)
        if "print_config" in given:  # the complete config these flags and files make; nothing runs
            print(json.dumps(config.to_dict(), indent=2))
            return
        if "auto_resume" in given and not options["out"]:
            raise MaskclError("--auto-resume needs --out DIR: the folder the command starts or continues")
        out = Path(options["out"]) if options["out"] else _default_out(config)
        mode = "auto" if "auto_resume" in given else "new"
        if mode == "new" and launched_rank() == 0:  # under torchrun rank 0 alone looks at the folder
            RunFolder(out).check_new()
    joint = _joint_reference(options["joint_reference"])
    interval = options["checkpoint_interval"]
    try:
        if options["seeds"] is None:
            folder = RunFolder(out, interval, mode, loggers=options["loggers"])
            _run_one(config, folder, options, stopper, joint)
            return

        def run_one(seed_config: RunConfig, folder: RunFolder) -> dict:
            if stopper.requested:  # asked while the last seed's run was finishing anyway
                raise Interrupted("stopped between seeds", stopper.requested)
            if launched_rank() == 0:
                print(f"seed {seed_config.seed}: {folder.path}")
            return _run_one(seed_config, folder, options, stopper, joint)

        sweep = SweepFolder(out, mode, options["loggers"])
        summary = run_seeds(config, options["seeds"], sweep, interval, run_one)
        if launched_rank() != 0:
            return
        stats = [(k, summary[k]) for k in [*METRICS, *OPTIONAL_METRICS] if k in summary]
        inference = summary.get("task_inference", {})
        stats += [
            (f"task unknown {k}", inference[k])
            for k in ("task_accuracy", "class_incremental_acc")
            if k in inference
        ]
        print("over seeds " + ", ".join(f"{k} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in stats))
    except Interrupted as stop:
        message = f"stopped; checkpoint saved: continue with maskcl run --resume {out}"
        raise Interrupted(f"{message} (or the same command with --auto-resume)", stop.signum) from None


def command_eval(args: argparse.Namespace, _stopper: _Stopper) -> None:
    model, scenario = load_run_and_scenario(args.dir, args.after_task, device=args.device)
    learned = task_state(model).learned_tasks()
    tasks = list(args.tasks) if args.tasks else learned
    for task in tasks:
        if task not in learned:
            raise MaskclError(f"task {task} was never trained in this model (learned: {learned})")
    device = resolve_device(args.device)
    for task in tasks:
        print(f"task {task}: test acc {evaluate(model, scenario[task].test, task, device):.4f}")


def command_export(args: argparse.Namespace, _stopper: _Stopper) -> None:
    for path in export_task(args.dir, args.task, args.out, args.after_task, args.compact):
        print(f"task {args.task}: {path}")


def command_report(args: argparse.Namespace, _stopper: _Stopper) -> None:
    print(f"report: {write_report(args.dir)}")


def command_compare(args: argparse.Namespace, _stopper: _Stopper) -> None:
    rows = compare_runs(args.dirs)
    table = format_table(rows, args.format)
    if args.plot:
        print(f"plot: {plot_average_accuracy(rows, args.plot)}")
    if args.out:
        write_atomic(Path(args.out), table.encode())
        print(f"table: {args.out}")
    else:
        print(table, end="")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """maskcl's warnings as one line, ``maskcl: warning: ...``; others as Python shows them."""
    if issubclass(category, MaskclWarning):
        print(f"maskcl: warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (see the module docstring)."""
    with _Stopper() as stopper, warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.simplefilter("always", MaskclWarning)
        try:
            argv = sys.argv[1:] if argv is None else list(argv)
            method = _method_of(argv)
            args, extras = build_parser(method).parse_known_args(argv)
            if args.command == "run":
                overrides, extras = _split_overrides(extras)
                if overrides:
                    args.overrides = overrides
            if extras:
                raise MaskclError(_unrecognised(extras, method))
            commands = {
                "run": command_run,
                "eval": command_eval,
                "export": command_export,
                "report": command_report,
                "compare": command_compare,
            }
            commands[args.command](args, stopper)
        except Interrupted as stop:
            if launched_rank() == 0:  # under torchrun rank 0 says it for all
                print(f"maskcl: {stop}", file=sys.stderr)
            return 128 + stop.signum
        except MaskclError as err:
            print(f"maskcl: error: {err}", file=sys.stderr)
            return 2
        except (Stopped, KeyboardInterrupt) as stop:
            number = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
            print(f"maskcl: stopped by {signal.Signals(number).name}", file=sys.stderr)
            return 128 + number
    return 0
