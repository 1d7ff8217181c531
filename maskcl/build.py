"""Building a run's parts from its :class:`~maskcl.config.RunConfig`: the device, the scenario, the
network, the method around it and the optimizer; and the memory checks made before allocating them."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from maskcl.config import RunConfig
from maskcl.core.convert import convert
from maskcl.data import BENCHMARKS, Scenario, data_scenario
from maskcl.errors import MaskclError, one_line
from maskcl.methods import Method, method_class
from maskcl.models import create_model
from maskcl.predictors import create_predictor
from maskcl.resources import check_fits

__all__ = [
    "ARCH_OPTIONS",
    "DEVICES",
    "build_method",
    "build_model",
    "build_optimizer",
    "check_memory",
    "check_tasks_fit",
    "load_scenario",
    "resolve_device",
]

ARCH_OPTIONS = {
    "mlp": ("hidden", "dropout", "input_dropout"),
    "alexnet": ("hidden", "channels"),
    "resnet20": (),
}
"""The :class:`RunConfig` fields each maskcl model takes."""

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""What ``--device`` takes; ``auto`` is CUDA when available, else the CPU."""


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (one of :data:`DEVICES`), available here, or a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise MaskclError(f"unknown device {name!r}; known: {', '.join(DEVICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MaskclError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MaskclError(
                f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} GPUs"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MaskclError(f"device {name!r} asked for, but MPS (Apple's GPU) is not available here")
    return device


def load_scenario(config: RunConfig) -> Scenario:
    """The scenario named by the config: a benchmark, or the user's .npz file or image folder, split or
    permuted."""
    options = {"val_fraction": config.val_fraction, "seed": config.seed, "class_order": config.class_order}
    if config.data is not None:
        return data_scenario(config.data, scenario=config.scenario, num_tasks=config.num_tasks, **options)
    builder, default_tasks = BENCHMARKS[config.benchmark]
    return builder(config.num_tasks or default_tasks, **options)


def build_model(config: RunConfig, scenario: Scenario, gates: bool) -> nn.Module:
    """The network named by ``config.arch``, sized for the scenario (``timm:NAME``: converted)."""
    if config.arch.startswith("timm:"):
        return _timm_model(config.arch[5:], scenario, gates, config.pretrained)
    kwargs = {name: getattr(config, name) for name in ARCH_OPTIONS.get(config.arch, ())}
    return create_model(
        config.arch,
        input_shape=scenario.input_shape,
        classes_per_task=scenario.classes_per_task,
        gates=gates,
        **kwargs,
    )


def _timm_model(name: str, scenario: Scenario, gates: bool, pretrained: str | None = None) -> nn.Module:
    """timm's ``name`` for the scenario's images, converted: ``in_chans`` the data's channels, and a network
    of a fixed input size (timm's ``fixed_input_size``: ViTs) built for the data's (``img_size``);
    ``pretrained``: ``"timm"`` (timm's weights, from the Hub or its cache) or a file of them. timm adapts
    the pretrained first layer to the channels and the position embeddings to the input size."""
    try:
        import timm
    except ImportError as err:
        raise MaskclError("--arch timm:NAME needs timm: pip install 'maskcl[timm]'") from err
    if len(scenario.input_shape) != 3:
        raise MaskclError(f"timm models take images [C, H, W]; this data has samples {scenario.input_shape}")
    options: dict = {"in_chans": scenario.input_shape[0], "num_classes": 2}
    cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    if getattr(cfg, "fixed_input_size", False):
        options["img_size"] = tuple(scenario.input_shape[1:])
    if pretrained is not None:
        options["pretrained"] = True
        if pretrained != "timm":
            options["pretrained_cfg_overlay"] = {"file": pretrained}
    try:
        model = timm.create_model(name, **options)
    except Exception as err:  # timm and the Hub raise many kinds for weights that cannot serve
        if pretrained is not None and "Unknown model" not in str(err):
            source = "timm's, from the Hugging Face Hub or its cache" if pretrained == "timm" else pretrained
            raise MaskclError(
                f"cannot load pretrained weights for {name!r} ({source}): {one_line(err)}"
            ) from None
        if isinstance(err, RuntimeError):
            raise MaskclError(f"timm cannot build {name!r}: {one_line(err)}") from err
        raise
    return convert(model, scenario.classes_per_task, gates=gates)


def build_method(config: RunConfig, scenario: Scenario, device: torch.device) -> Method:
    """The method of ``config`` around a new network for ``scenario``; ``.model`` is what it trains, with
    what the run's task predictor trains besides (:meth:`~maskcl.predictors.TaskPredictor.prepare`)."""
    method_cls = method_class(config.method)
    model = build_model(config, scenario, gates=method_cls.gates).to(device)
    method = method_cls(model, **config.method_config().to_dict())
    method.check_epochs(config.epochs)
    if config.task_inference is not None:
        predictor = create_predictor(config.task_inference)
        predictor.check_model(method.model)
        predictor.prepare(method.model, scenario.input_shape)
    return method


def build_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """One optimizer for the whole run: its state carries over from task to task."""
    params, lr, wd = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


OPTIMIZER_SLOTS = {"sgd": 0, "adam": 2, "adamw": 2}
"""Tensors the optimizer keeps per parameter (SGD: one more with momentum)."""


def check_memory(config: RunConfig, scenario: Scenario, device: torch.device) -> None:
    """Refuse in one line, before allocating it, a network that cannot fit on ``device``.

    The network is built on the meta device (sizes, no memory) and what training needs at least is
    ``P (2 + k) + B + M``: the parameters' bytes ``P`` for the weights, their gradients and the optimizer's
    ``k`` tensors each, the buffers ``B``, and what the method keeps besides (``M``,
    :meth:`~maskcl.methods.Method.extra_memory`), then with the run's task predictor's statistics
    (:meth:`~maskcl.predictors.TaskPredictor.memory_needed`). Activations come on top. A network that
    cannot be built on the meta device is not checked.
    """
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # sizes: no pretrained weights
            method = build_method(
                dataclasses.replace(config, pretrained=None), scenario, torch.device("meta")
            )
    except MaskclError:
        raise
    except Exception:  # e.g. a model that reads its own values while being built
        return
    model = method.model
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    slots = OPTIMIZER_SLOTS[config.optimizer] + (config.optimizer == "sgd" and config.momentum > 0)
    need = params * (2 + slots) + buffers + method.extra_memory()
    count = sum(p.numel() for p in model.parameters())
    check_fits(need, f"the {config.method} {config.arch} network ({count:,} parameters)", device)
    if config.task_inference is not None:
        classes = scenario.classes_per_task
        predictor = create_predictor(config.task_inference)
        check_fits(
            need + predictor.memory_needed(model, scenario.input_shape, classes),
            f"--task-inference {config.task_inference}: its statistics of {len(classes)} tasks of "
            f"{math.prod(scenario.input_shape):,} input numbers, with the network",
            device,
        )


def check_tasks_fit(num_tasks: int) -> None:
    """``num_tasks`` tasks' accuracy matrix (``T x T`` numbers, also as lists in each checkpoint) must fit."""
    t = num_tasks
    check_fits(40 * t * t, f"--num-tasks {t}: the {t} x {t} accuracy matrix")
