"""A run's configuration, the schema of ``maskcl run``'s flags, config files and a run folder's config.

:class:`RunConfig` holds what every run has (data, network, optimiser, schedule) and the options of its
one method, which come from the method's own config dataclass (:class:`~maskcl.methods.MethodConfig`):
``RunConfig(method="hat", options={"s_max": 300})``. Flat, as in a config file or a run folder's
``config.json``, the method's options sit next to the run's: ``{"method": "hat", "s_max": 300, ...}``;
a saved config holds exactly the options of its own method.

Config files (``maskcl run --config FILE``): YAML (needs PyYAML, ``pip install 'maskcl[yaml]'``) or JSON.
Keys are the ``maskcl run`` flags without the dashes (``batch-size`` or ``batch_size``); lists are YAML
lists or comma-separated strings. An unknown key, another method's option, a value of the wrong type or
out of range is a one-line error naming the file and the key. A run folder's ``config.json`` is a valid
config file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskcl.checkpoint import parse_json
from maskcl.data import AUGMENTATIONS, BENCHMARKS
from maskcl.errors import MaskclError, one_line
from maskcl.methods import MethodConfig, list_methods, load_plugins, method_class
from maskcl.methods.base import make_config
from maskcl.models import list_models
from maskcl.predictors import RECOMMENDED, list_predictors, predictor_class

__all__ = [
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "RunConfig",
    "check_value",
    "config_from_dict",
    "methods_taking",
    "option_types",
    "parse_overrides",
    "read_config_file",
    "upgrade_config",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step", "patience")


def _option(default: Any, help: str, **metadata: Any) -> Any:
    """A config field with its ``--help`` text (and ``choices``)."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class RunConfig:
    """Everything that defines a run; each field is a ``maskcl run`` flag of the same name, and each of
    ``options`` a flag of the method's (see ``maskcl run --method NAME --help``)."""

    method: str = _option("hat", "the continual-learning method")
    options: dict[str, Any] = field(default_factory=dict, metadata={"flag": False})
    plugins: tuple[str, ...] = _option((), "modules to import first, whose methods register themselves")
    benchmark: str = _option("split-fmnist", "the benchmark", choices=tuple(BENCHMARKS))
    data: str | None = _option(
        None,
        "your own data: a .npz file (x_train, y_train, x_test, y_test), or a folder of images in class "
        "subfolders (with train/ and test/, or split by --seed)",
    )
    scenario: str = _option("split", "how --data is cut into tasks", choices=("split", "permuted"))
    num_tasks: int | None = _option(
        None, "number of tasks (default: the benchmark's; --data: 2 classes a task, or 10 permuted)"
    )
    class_order: str = _option(
        "sorted",
        "split scenarios: the classes cut into tasks in sorted order (the benchmarks' usual split), or "
        "shuffled by --seed first (seeded: each seed its own grouping); 5-datasets and hat-mixture: the "
        "data sets in their listed order, or in one drawn by --seed",
        choices=("sorted", "seeded"),
    )
    epochs: int = _option(5, "epochs per task")
    batch_size: int = _option(64, "batch size")
    lr: float = _option(0.05, "learning rate")
    optimizer: str = _option("sgd", "optimizer", choices=OPTIMIZERS)
    momentum: float = _option(0.0, "SGD momentum")
    weight_decay: float = _option(0.0, "weight decay (AdamW: decoupled)")
    lr_schedule: str = _option(
        "constant",
        "the learning rate within each task, restarted at each task: constant; cosine (from --lr to 0 over "
        "the task's steps); step (times --lr-gamma every --lr-step-epochs epochs); patience (times "
        "--lr-gamma after --lr-patience epochs without a lower validation loss, the task ending below "
        "--lr-min: the HAT paper's, with --lr-gamma 0.3333 --epochs 200)",
        choices=LR_SCHEDULES,
    )
    lr_step_epochs: int = _option(2, "step schedule: epochs between decays")
    lr_gamma: float = _option(0.1, "step and patience schedules: the factor of each decay")
    lr_patience: int = _option(5, "patience schedule: epochs without a lower validation loss before a decay")
    lr_min: float = _option(1e-4, "patience schedule: a task's training ends when the rate falls below this")
    early_stop: int | None = _option(
        None, "end a task's training after this many epochs without a lower validation loss (any schedule)"
    )
    grad_clip: float | None = _option(None, "clip the gradients' total norm to this before each step")
    arch: str = _option("mlp", "mlp, alexnet, resnet20, or timm:NAME (a timm model, converted)")
    pretrained: str | None = _option(
        None,
        "timm:NAME: start from pretrained weights: timm's own (alone: downloaded by timm, or from its cache) "
        "or those in a file (.safetensors, .pth); a network of a fixed input size is built for the data's",
        const="timm",
    )
    hidden: tuple[int, ...] = _option((400, 400), "mlp/alexnet: hidden widths")
    channels: tuple[int, ...] = _option((64, 128, 256), "alexnet: conv channels")
    dropout: float = _option(0.5, "mlp: dropout after each hidden layer (the HAT paper's MLP)")
    input_dropout: float = _option(0.2, "mlp: dropout on the input (the HAT paper's MLP)")
    task_inference: str | None = _option(
        None,
        f"also test with the task unknown, with this task predictor ({', '.join(list_predictors())}; "
        f"without a name: {RECOMMENDED}); adds the class-incremental accuracy matrix",
        const=RECOMMENDED,
    )
    augment: str = _option(
        "none",
        "training batches: none; crop (each image shifted by up to 4 pixels, mirrored at the border); "
        "crop-flip (and mirrored left-right half the time: the CIFAR and TinyImageNet standard)",
        choices=AUGMENTATIONS,
    )
    workers: int = _option(
        0,
        "DataLoader processes making the training batches (0: the training process); the same results",
    )
    val_fraction: float = _option(0.1, "fraction of each task's training data held out")
    seed: int = _option(0, "random seed")
    device: str = _option("auto", "auto, cpu, cuda, cuda:1, mps")

    def method_config(self) -> MethodConfig:
        """The method's options, complete and validated (its config dataclass)."""
        load_plugins(self.plugins)
        cls = method_class(self.method)
        return make_config(cls.config_class, self.options, self.method)

    def validate(self) -> None:
        """Raise a one-line error naming the first flag whose value cannot work."""
        options = self.method_config()
        if self.data is None and self.benchmark not in BENCHMARKS:
            raise MaskclError(f"unknown benchmark {self.benchmark!r}; known: {', '.join(BENCHMARKS)}")
        if self.scenario not in ("split", "permuted"):
            raise MaskclError(f"unknown scenario {self.scenario!r}; known: split, permuted")
        if self.arch not in list_models() and not self.arch.startswith("timm:"):
            raise MaskclError(f"unknown arch {self.arch!r}; known: {', '.join(list_models())}, timm:NAME")
        if self.task_inference is not None:
            predictor_class(self.task_inference)
        if self.pretrained is not None and not self.arch.startswith("timm:"):
            raise MaskclError(
                f"--pretrained loads timm's weights: it needs --arch timm:NAME, not {self.arch!r}"
            )
        if self.pretrained not in (None, "timm") and not os.path.isfile(os.path.expanduser(self.pretrained)):
            raise MaskclError(f"--pretrained file not found: {self.pretrained}")
        if self.optimizer not in OPTIMIZERS:
            raise MaskclError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.augment not in AUGMENTATIONS:
            raise MaskclError(f"unknown augmentation {self.augment!r}; known: {', '.join(AUGMENTATIONS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise MaskclError(
                f"unknown learning-rate schedule {self.lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}"
            )
        checks = [
            ("num_tasks", self.num_tasks is None or self.num_tasks >= 1, ">= 1"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("workers", self.workers >= 0, ">= 0"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("lr_step_epochs", self.lr_step_epochs >= 1, ">= 1"),
            ("lr_gamma", 0 < self.lr_gamma <= 1, "in (0, 1]"),
            ("lr_patience", self.lr_patience >= 1, ">= 1"),
            ("lr_min", 0 <= self.lr_min < self.lr, f"in [0, --lr {self.lr})"),
            ("early_stop", self.early_stop is None or self.early_stop >= 1, ">= 1"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "> 0"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("input_dropout", 0 <= self.input_dropout < 1, "in [0, 1)"),
            ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
            ("hidden", len(self.hidden) >= 1 and min(self.hidden) >= 1, "a list of positive widths"),
            ("channels", len(self.channels) == 3 and min(self.channels) >= 1, "3 positive channel counts"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise MaskclError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")
        watching = "--lr-schedule patience" if self.lr_schedule == "patience" else "--early-stop"
        if (self.lr_schedule == "patience" or self.early_stop is not None) and self.val_fraction == 0:
            raise MaskclError(f"{watching} watches the validation loss: it needs --val-fraction > 0")
        for name, value in {**dataclasses.asdict(self), **options.to_dict()}.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise MaskclError(f"--{name.replace('_', '-')} must be a finite number, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """The flat config: the run's fields with the method's complete options after ``method``."""
        values = dataclasses.asdict(self)
        del values["options"]
        return {"method": values.pop("method"), **self.method_config().to_dict(), **values}

    def resolved(self) -> RunConfig:
        """This config with ``data`` and a ``pretrained`` file as absolute paths (``~`` expanded), so that
        a run folder's config works from any directory."""
        paths = {
            name: os.path.abspath(os.path.expanduser(value))
            for name in ("data", "pretrained")
            if (value := getattr(self, name)) not in (None, "timm")
        }
        return dataclasses.replace(self, **paths) if paths else self


RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig) if f.metadata.get("flag", True)}
"""The run's own fields (not the method's options), each a flag and a config key."""
RUN_TYPES = {name: kind for name, kind in typing.get_type_hints(RunConfig).items() if name in RUN_FIELDS}


def option_types(method: str) -> dict[str, Any]:
    """The options of ``method`` (its config dataclass's fields) and their types."""
    config = method_class(method).config_class
    hints = typing.get_type_hints(config)
    return {f.name: hints[f.name] for f in dataclasses.fields(config)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON file, keys with ``-`` turned into ``_``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise MaskclError(f"cannot read config {path}: {err.strerror or err}") from None
    if path.suffix == ".json":
        values = parse_json(text, path)
    else:
        try:
            import yaml
        except ImportError:
            raise MaskclError(f"{path}: YAML config files need PyYAML: pip install 'maskcl[yaml]'") from None
        try:
            values = yaml.safe_load(text)
        except RecursionError:
            raise MaskclError(f"{path} is nested too deeply to be a maskcl config") from None
        except yaml.YAMLError as err:
            raise MaskclError(f"{path} is not valid YAML ({' '.join(str(err).split())})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise MaskclError(f"{path} must hold a mapping of option: value, not a {type(values).__name__}")
    return _underscored(values)


def _underscored(values: Mapping[Any, Any]) -> dict[str, Any]:
    """``values`` with ``-`` in its keys turned into ``_``."""
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` items as a config mapping, through OmegaConf's dot-list: values are read as YAML
    (``0.01``, ``true``, ``null``, ``[400, 400]``), a dotted key is a section's (``hat.s_max=400`` is
    ``{"hat": {"s_max": 400}}``), ``-`` in keys is ``_``. A one-line error names a malformed item."""
    if not items:
        return {}
    try:
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:
        raise MaskclError("key=value overrides need OmegaConf: pip install 'maskcl[config]'") from None
    values: dict[str, Any] = {}
    for item in items:
        key = item.split("=", 1)[0]
        if not key or key.startswith(".") or key.endswith(".") or ".." in key:
            raise MaskclError(f"override {item!r} must be key=value, e.g. lr=0.01 or hat.s_max=400")
        try:
            parsed = OmegaConf.to_container(OmegaConf.from_dotlist([item]))
        except (OmegaConfBaseException, ValueError) as err:
            raise MaskclError(f"override {item!r} cannot be read ({one_line(err)})") from None
        _merge(values, _underscored(parsed))
    return values


def _merge(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Merge ``values`` into ``into``, sections (mappings) key by key, the later value winning."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], _underscored(value))
        else:
            into[key] = _underscored(value) if isinstance(value, dict) else value


def check_value(key: str, value: Any, kind: Any) -> Any:
    """``value`` as the annotated type ``kind`` of ``key`` (int, float, bool, str, a tuple of ints or of
    strings, or one of them or None); a one-line error naming the key otherwise."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    kind = next(k for k in options if k is not type(None))
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
    if kind is str and isinstance(value, str):
        return value
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        items = ([] if not value else value.split(",")) if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            try:
                return tuple(_item(key, v, item) for v in items)
            except (MaskclError, ValueError):
                pass
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if typing.get_origin(kind) is tuple:
        name = f"a list of {'integers' if typing.get_args(kind)[0] is int else 'names'}"
    else:
        name = names[kind]
    raise MaskclError(f"{key} must be {name}, got {value!r}")


def _item(key: str, value: Any, kind: type) -> Any:
    if kind is int and isinstance(value, str):
        return int(value)
    return check_value(key, value.strip() if isinstance(value, str) else value, kind)


def config_from_dict(
    values: Mapping[str, Any], source: str, base: RunConfig | None = None, complete: bool = False
) -> RunConfig:
    """``base`` (default: the defaults) with the flat ``values`` applied, type-checked and validated; errors
    start with ``source`` (the file) and name the key. The method's options keep ``base``'s when the method
    stays the same. ``complete``: every key of the run and of its method must be given (a run folder's
    ``config.json``, which a missing key would otherwise silently fill with today's defaults)."""
    base = base or RunConfig()
    run = dataclasses.asdict(base)
    options = run.pop("options")
    try:
        for key in ("plugins", "method"):
            if key in values:
                run[key] = check_value(key, values[key], RUN_TYPES[key])
        load_plugins(run["plugins"])
        kinds = option_types(run["method"])
    except MaskclError as err:
        raise MaskclError(f"{source}: {err}") from None
    if run["method"] != base.method:
        options = {}
    try:
        values = _with_method_section(values, run["method"])
    except MaskclError as err:
        raise MaskclError(f"{source}: {err}") from None
    missing = [key for key in [*RUN_FIELDS, *kinds] if key not in values]
    if complete and missing:
        raise MaskclError(
            f"{source} lacks {', '.join(missing)} (edited by hand?): it cannot say how the run ran"
        )
    for key, value in values.items():
        target, kind = (run, RUN_TYPES[key]) if key in RUN_TYPES else (options, kinds.get(key))
        if kind is None:
            raise MaskclError(f"{source}: {_unknown_key(key, run['method'])}")
        if isinstance(value, bool) and key in RUN_FIELDS and "const" in RUN_FIELDS[key].metadata:
            value = RUN_FIELDS[key].metadata["const"] if value else None  # task_inference: true
        try:
            target[key] = check_value(key, value, kind)
        except MaskclError as err:
            raise MaskclError(f"{source}: {err}") from None
    config = RunConfig(**run, options=options)
    try:
        config.validate()
    except MaskclError as err:
        raise MaskclError(f"{source}: {err}") from None
    return config


def _with_method_section(values: Mapping[str, Any], method: str) -> dict[str, Any]:
    """``values`` with the section of ``method`` (a key named after a method, holding a mapping of its
    options, e.g. ``hat: {s_max: 400}``) merged in and every method's section taken out: one file can
    hold the options of several methods, and a run takes its own method's."""
    methods = set(list_methods())
    flat = {k: v for k, v in values.items() if not (k in methods and isinstance(v, dict))}
    section = values.get(method)
    if not isinstance(section, dict):
        return flat
    section = {str(k).replace("-", "_"): v for k, v in section.items()}
    twice = sorted(set(section) & set(flat))
    if twice:
        raise MaskclError(f"{twice[0]!r} is given both at the top and in the {method} section")
    return {**flat, **section}


def methods_taking(key: str, method: str) -> list[str]:
    """The methods other than ``method`` that have an option ``key``."""
    return [name for name in list_methods() if name != method and key in option_types(name)]


def _unknown_key(key: str, method: str) -> str:
    """Why ``key`` is not a key of a ``method`` run: another method's option, or no option at all."""
    others = methods_taking(key, method)
    if others:
        return f"{key!r} is an option of {', '.join(others)}, not of method {method}"
    if key in RENAMED:
        return f"unknown key {key!r} (renamed {RENAMED[key]!r})"
    return f"unknown key {key!r}"


ADDED = {
    5: ("lr_schedule", "lr_step_epochs", "lr_gamma", "grad_clip", "class_order"),
    6: ("lr_patience", "lr_min", "early_stop"),
    7: ("augment", "workers", "pretrained"),
}
"""The keys each format added (their defaults are what earlier runs did)."""

RENAMED = {"tasks": "num_tasks"}
"""Keys of earlier maskcl versions and their names now."""


def upgrade_config(values: dict[str, Any], format_version: int) -> dict[str, Any]:
    """A run folder's saved config of an earlier format in today's keys (format 7 is today's).

    Formats 1-4 had no learning-rate schedule, no gradient clipping and no class order, formats 1-5 no
    patience schedule and no early stopping, formats 1-6 no augmentation, workers or pretrained weights:
    their runs ran with today's defaults of those keys (constant, no clipping, sorted, no early stop, no
    augmentation, no workers, no pretrained weights; see :data:`ADDED`).

    Formats 1 and 2 stored every method's options in every run and ``tasks`` for the number of tasks;
    today a run stores its own method's options only: the others are dropped, and options added since
    take their defaults, which are what those versions did. Formats 1-3 stored ``task_inference`` as
    true or false: true was the lowest-entropy task, today's ``entropy`` predictor."""
    if not isinstance(values, dict):
        return values
    for version, keys in ADDED.items():
        if format_version < version:
            values = {**{key: RUN_FIELDS[key].default for key in keys}, **values}
    if format_version >= 4:
        return values
    if isinstance(values.get("task_inference"), bool):
        values["task_inference"] = "entropy" if values["task_inference"] else None
    if format_version >= 3:
        return values
    values = {RENAMED.get(key, key): value for key, value in values.items()}
    method = values.get("method")
    if method not in list_methods():
        return values  # the one-line error comes when the config is read
    defaults = method_class(method).config_class().to_dict()
    upgraded = {key: value for key, value in values.items() if key in RUN_FIELDS or key in defaults}
    return {"plugins": [], **defaults, **upgraded}
