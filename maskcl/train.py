"""The continual-learning run: a scenario, a model, a method, an optimizer; tasks learned one by one.

:func:`run` is what ``maskcl run`` calls: it trains every task in order, evaluates all tasks after each
one (the accuracy matrix ``R[i][j]``) and returns the results with the full configuration used.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskcl.context import set_task
from maskcl.data import (
    Scenario,
    TaskData,
    npz_scenario,
    permuted_fashion_mnist,
    split_cifar100,
    split_fashion_mnist,
)
from maskcl.errors import MaskclError
from maskcl.hat.capacity import capacity
from maskcl.hat.convert import convert
from maskcl.inference import infer_task
from maskcl.methods import Method, method_class
from maskcl.metrics import AccuracyMatrix, random_stratified_accuracy
from maskcl.models import create_model, list_models

BENCHMARKS: dict[str, tuple[Callable[..., Scenario], int]] = {
    "split-fmnist": (split_fashion_mnist, 5),
    "permuted-fmnist": (permuted_fashion_mnist, 10),
    "split-cifar100": (split_cifar100, 10),
}
OPTIMIZERS = ("sgd", "adam", "adamw")
ARCH_OPTIONS = {
    "mlp": ("hidden", "dropout", "input_dropout"),
    "alexnet": ("hidden", "channels"),
    "resnet20": (),
}
"""The :class:`RunConfig` fields each maskcl model takes."""


@dataclass
class RunConfig:
    """Everything that defines a run; each field is a ``maskcl run`` flag of the same name."""

    method: str = "hat"
    benchmark: str = "split-fmnist"
    data: str | None = None  # a .npz file; replaces the benchmark
    scenario: str = "split"  # how --data is cut into tasks: split or permuted
    tasks: int | None = None  # default: 5 / 10 for the benchmarks; --data: 2 classes each / 10 permuted
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    arch: str = "mlp"  # a maskcl model (mlp, alexnet, resnet20) or timm:NAME, any timm model converted
    hidden: tuple[int, ...] = (400, 400)
    channels: tuple[int, ...] = (64, 128, 256)  # alexnet only
    dropout: float = 0.5  # mlp: after each hidden layer (the HAT paper's MLP)
    input_dropout: float = 0.2  # mlp: on the input (the HAT paper's MLP)
    s_max: float = 400.0
    c: float = 0.75
    scale_schedule: str = "linear"  # HAT-CL's techniques (Duan, 2023); the defaults are the paper's
    mask_init: str = "normal"
    per_layer: bool = False
    quota: float = 0.0
    compensation: float | None = None  # default: s_max
    sparsity: float = 0.0  # HyperMask (Książek & Spurek): % of each masked tensor set to 0
    sparsity_ramp: int = 0  # HyperMask: steps over which the first task's sparsity rises from 0
    beta: float = 0.01  # HyperMask: weight of the hypernetwork-output regulariser
    lam: float = 0.001  # HyperMask: weight of the L1 change of the target's weights
    l1_masked: bool = False  # HyperMask: weigh that L1 change by the task's mask
    embedding_dim: int = 24  # HyperMask: task embedding size
    hyper_hidden: tuple[int, ...] = (100, 100)  # HyperMask: hypernetwork hidden widths
    chunks: int = 1024  # HyperMask: hypernetwork output chunks; 0 = unchunked (the original design)
    task_inference: bool = False  # also evaluate with the task id unknown (maskcl.inference)
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        """Raise a one-line error naming the first flag whose value cannot work."""
        method_class(self.method)
        if self.data is None and self.benchmark not in BENCHMARKS:
            raise MaskclError(f"unknown benchmark {self.benchmark!r}; known: {', '.join(BENCHMARKS)}")
        if self.scenario not in ("split", "permuted"):
            raise MaskclError(f"unknown scenario {self.scenario!r}; known: split, permuted")
        if self.arch not in list_models() and not self.arch.startswith("timm:"):
            raise MaskclError(f"unknown arch {self.arch!r}; known: {', '.join(list_models())}, timm:NAME")
        if self.optimizer not in OPTIMIZERS:
            raise MaskclError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        checks = [
            ("tasks", self.tasks is None or self.tasks >= 1, ">= 1"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch-size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight-decay", self.weight_decay >= 0, ">= 0"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("input-dropout", 0 <= self.input_dropout < 1, "in [0, 1)"),
            ("s-max", self.s_max > 1, "> 1"),
            ("c", self.c >= 0, ">= 0"),
            ("quota", 0 <= self.quota < 1, "in [0, 1)"),
            ("compensation", self.compensation is None or self.compensation > 0, "> 0"),
            ("sparsity", 0 <= self.sparsity < 100, "in [0, 100)"),
            ("sparsity-ramp", self.sparsity_ramp >= 0, ">= 0 steps"),
            ("beta", self.beta >= 0, ">= 0"),
            ("lam", self.lam >= 0, ">= 0"),
            ("embedding-dim", self.embedding_dim >= 1, ">= 1"),
            ("hyper-hidden", len(self.hyper_hidden) >= 1 and min(self.hyper_hidden) >= 1, "positive widths"),
            ("chunks", self.chunks >= 0, ">= 0 (0: unchunked)"),
            ("val-fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
            ("hidden", len(self.hidden) >= 1 and min(self.hidden) >= 1, "a list of positive widths"),
            ("channels", len(self.channels) == 3 and min(self.channels) >= 1, "3 positive channel counts"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise MaskclError(f"--{name} must be {rule}, got {getattr(self, name.replace('-', '_'))}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise MaskclError(f"unknown device {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MaskclError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def load_scenario(config: RunConfig) -> Scenario:
    """The scenario named by the config: a benchmark, or the user's .npz split or permuted."""
    options = {"val_fraction": config.val_fraction, "seed": config.seed}
    if config.data is not None:
        return npz_scenario(config.data, scenario=config.scenario, n_tasks=config.tasks, **options)
    builder, default_tasks = BENCHMARKS[config.benchmark]
    return builder(config.tasks or default_tasks, **options)


def build_model(config: RunConfig, scenario: Scenario, gated: bool) -> nn.Module:
    """The network named by ``config.arch``, sized for the scenario (``timm:NAME``: converted)."""
    if config.arch.startswith("timm:"):
        return _timm_model(config.arch[5:], scenario, gated)
    kwargs = {name: getattr(config, name) for name in ARCH_OPTIONS.get(config.arch, ())}
    return create_model(
        config.arch,
        input_shape=scenario.input_shape,
        classes_per_task=scenario.classes_per_task,
        hat=gated,
        **kwargs,
    )


def _timm_model(name: str, scenario: Scenario, gated: bool) -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise MaskclError("--arch timm:NAME needs timm: pip install 'maskcl[timm]'") from err
    if len(scenario.input_shape) != 3:
        raise MaskclError(f"timm models take images [C, H, W]; this data has samples {scenario.input_shape}")
    try:
        model = timm.create_model(name, in_chans=scenario.input_shape[0], num_classes=2)
    except RuntimeError as err:
        raise MaskclError(f"timm cannot build {name!r}: {err}") from err
    return convert(model, scenario.classes_per_task, gates=gated)


def build_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """One optimizer for the whole run: its state carries over from task to task."""
    params, lr, wd = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: TaskData, task: int, device: torch.device, batch_size: int = 1000
) -> float:
    """Accuracy (fraction in [0, 1]) of ``model`` on ``data`` of ``task``, in evaluation mode."""
    if len(data) == 0:
        return float("nan")
    set_task(model.eval(), task)
    correct = 0
    for x, y in data.batches(batch_size, device=device):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(data)


@torch.no_grad()
def evaluate_task_inference(model: nn.Module, scenario: Scenario, device: torch.device) -> dict:
    """Test accuracy with the task id unknown: per task, how often the task is inferred
    (:func:`maskcl.inference.infer_task`) and how often the class is right as well (class-incremental).
    """
    hits, rights, sizes = [], [], []
    for task in range(scenario.num_tasks):
        hit = right = 0
        for x, y in scenario[task].test.batches(1000, device=device):
            inferred, predicted = infer_task(model, x)
            hit += int((inferred == task).sum())
            right += int(((inferred == task) & (predicted == y)).sum())
        hits.append(hit)
        rights.append(right)
        sizes.append(max(len(scenario[task].test), 1))
    return {
        "task_accuracy": sum(hits) / sum(sizes),
        "class_incremental_acc": sum(rights) / sum(sizes),
        "per_task_task_accuracy": [h / n for h, n in zip(hits, sizes)],
        "per_task_class_incremental_acc": [r / n for r, n in zip(rights, sizes)],
    }


def _joint_batches(
    datas: list[TaskData], tasks: list[int], batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One batch of every task per step, concatenated, with per-sample task ids; shorter tasks cycle."""
    steps = max(d.num_batches(batch_size) for d in datas)
    streams = [_cycle(d, batch_size, generator, device) for d in datas]
    for _ in range(steps):
        parts = [next(s) for s in streams]
        ids = torch.cat([torch.full((len(y),), t, device=device) for t, (_, y) in zip(tasks, parts)])
        yield torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]), ids


def _cycle(data: TaskData, batch_size: int, generator: torch.Generator, device: torch.device):
    while True:
        yield from data.batches(batch_size, shuffle=True, generator=generator, device=device)


def train_task(
    model: nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    scenario: Scenario,
    task: int,
    config: RunConfig,
    generator: torch.Generator,
    device: torch.device,
    log: Callable[[str], None],
) -> None:
    """Learn ``task`` for ``config.epochs`` epochs with ``method``."""
    tasks = method.training_tasks(task)
    datas = [scenario[t].train for t in tasks]
    steps_per_epoch = max(d.num_batches(config.batch_size) for d in datas)
    method.start_task(task, optimizer, steps_per_epoch)
    for epoch in range(config.epochs):
        model.train()
        total = torch.zeros((), device=device)
        if len(tasks) == 1:
            set_task(model, task)
            stream = ((x, y, None) for x, y in datas[0].batches(config.batch_size, True, generator, device))
        else:
            stream = _joint_batches(datas, tasks, config.batch_size, generator, device)
        for x, y, ids in stream:
            if ids is not None:
                set_task(model, ids)
            loss = F.cross_entropy(model(x), y) + method.penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        mean_loss = float(total) / steps_per_epoch
        if not torch.isfinite(total):
            raise MaskclError(
                f"the loss became {mean_loss} in task {task}, epoch {epoch + 1}: lower --lr or check the data"
            )
        val = evaluate(model, scenario[task].val, task, device)
        log(f"task {task} epoch {epoch + 1}/{config.epochs}: loss {mean_loss:.4f}, val acc {val:.4f}")
    method.end_task(task)


def run(
    config: RunConfig,
    log: Callable[[str], None] = print,
    on_task_end: Callable[[nn.Module, int], None] | None = None,
) -> dict:
    """Run the continual-learning experiment ``config`` and return its results (see ``maskcl run``).

    ``log`` receives one line per epoch and per task; ``on_task_end(model, task)`` is called after each
    task is learned and evaluated.
    """
    config.validate()
    device = resolve_device(config.device)
    scenario = load_scenario(config)
    torch.manual_seed(config.seed)
    method_cls = method_class(config.method)
    model = build_model(config, scenario, gated=method_cls.gated).to(device)
    options = {name: getattr(config, name) for name in method_cls.options}
    if "chunks" in options:
        options["chunks"] = options["chunks"] or None  # 0: unchunked
    method = method_cls(model, **options)
    model = method.model
    optimizer = build_optimizer(config, model)
    generator = torch.Generator().manual_seed(config.seed)
    matrix = AccuracyMatrix(scenario.num_tasks)
    started = time.perf_counter()
    for task in range(scenario.num_tasks):
        train_task(model, method, optimizer, scenario, task, config, generator, device, log)
        for other in range(scenario.num_tasks):
            matrix.update(task, other, evaluate(model, scenario[other].test, other, device))
        log(f"after task {task}: " + " ".join(f"{a:.4f}" for a in matrix.row(task)))
        if on_task_end is not None:
            on_task_end(model, task)
    results = matrix.compute()
    results.update(
        random_acc=[random_stratified_accuracy(t.test.y.numpy()) for t in scenario.tasks],
        scenario={"name": scenario.name, "classes": [t.classes for t in scenario.tasks]},
        train_seconds=time.perf_counter() - started,
        device=str(device),
        threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        config=config.to_dict(),
    )
    if config.task_inference:
        results["task_inference"] = evaluate_task_inference(model, scenario, device)
    if method_cls.gated:
        results["capacity"] = [dataclasses.asdict(layer) for layer in capacity(model).layers]
    return results
