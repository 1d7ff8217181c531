"""The continual-learning run: a scenario, a model, a method, an optimizer; tasks learned one by one.

:func:`run` is what ``maskcl run`` calls: it trains every task in order, evaluates all tasks after each
one (the accuracy matrix ``R[i][j]``) and returns the results with the full configuration used.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
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
from maskcl.errors import MaskclError, one_line
from maskcl.hat.capacity import capacity
from maskcl.hat.convert import convert
from maskcl.hat.method import MASK_INITS
from maskcl.hat.scale import SCALE_SCHEDULES
from maskcl.inference import infer_task
from maskcl.methods import Method, method_class
from maskcl.metrics import AccuracyMatrix, random_stratified_accuracy
from maskcl.models import create_model, list_models
from maskcl.runs import CHECKPOINT, RunFolder

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
            ("scale-schedule", self.scale_schedule in SCALE_SCHEDULES, f"in {', '.join(SCALE_SCHEDULES)}"),
            ("mask-init", self.mask_init in MASK_INITS, f"in {', '.join(MASK_INITS)}"),
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


def build_method(config: RunConfig, scenario: Scenario, device: torch.device) -> Method:
    """The method of ``config`` around a new network for ``scenario``; ``.model`` is what it trains."""
    method_cls = method_class(config.method)
    model = build_model(config, scenario, gated=method_cls.gated).to(device)
    options = {name: getattr(config, name) for name in method_cls.options}
    if "chunks" in options:
        options["chunks"] = options["chunks"] or None  # 0: unchunked
    return method_cls(model, **options)


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


class Interrupted(MaskclError):
    """Raised by :func:`run` after it saved a checkpoint because a stop was asked (``folder.stop``)."""


@dataclass
class _Position:
    """Where a run stands: ``step`` batches of epoch ``epoch`` of ``task`` are done (``epoch == epochs``:
    the task's training is over); ``generator`` is the data generator's state at that epoch's start."""

    task: int = 0
    epoch: int = 0
    step: int = 0
    in_task: bool = False
    generator: torch.Tensor | None = None
    epoch_loss: torch.Tensor | None = None


class _Run:
    """One run's live objects, and the checkpoint of them from which :func:`run` resumes bit-exactly."""

    def __init__(self, config: RunConfig, folder: RunFolder | None) -> None:
        self.config, self.folder = config, folder
        self.device = resolve_device(config.device)
        self.scenario = load_scenario(config)
        torch.manual_seed(config.seed)
        self.method = build_method(config, self.scenario, self.device)
        self.model = self.method.model
        self.optimizer = build_optimizer(config, self.model)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.matrix = AccuracyMatrix(self.scenario.num_tasks)
        self.position = _Position()
        self.seconds_before, self.started = 0.0, time.perf_counter()

    def seconds(self) -> float:
        """Training time so far, over every session of the run."""
        return self.seconds_before + time.perf_counter() - self.started

    def checkpoint(self, metric_lines: int) -> dict:
        position = dataclasses.asdict(self.position)
        return {
            "config": self.config.to_dict(),
            "position": position,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict() if self.position.in_task else {},
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state(), **_cuda_rng()},
            "matrix": self.matrix.to_list(),
            "metric_lines": metric_lines,
            "seconds": self.seconds(),
        }

    def restore(self, state: dict) -> None:
        """Continue from :meth:`checkpoint`'s ``state``. Inside a task, the method's ``start_task`` runs on
        the saved model (its snapshots of protected weights are taken from it); the model is loaded a
        second time afterwards, since ``start_task`` may initialise the task's own parameters."""
        _check_same_run(state["config"], self.config)
        self.position = _Position(**state["position"])
        if self.position.epoch_loss is not None:
            self.position.epoch_loss = self.position.epoch_loss.to(self.device)
        self.model.load_state_dict(state["model"])
        if self.position.in_task:
            self.start_task()
            self.model.load_state_dict(state["model"])
            self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.matrix = AccuracyMatrix.from_matrix(state["matrix"])
        self.seconds_before = state["seconds"]
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def task_data(self) -> tuple[list[int], list[TaskData], int]:
        tasks = self.method.training_tasks(self.position.task)
        datas = [self.scenario[t].train for t in tasks]
        return tasks, datas, max(d.num_batches(self.config.batch_size) for d in datas)

    def start_task(self) -> None:
        _, _, steps_per_epoch = self.task_data()
        self.method.start_task(self.position.task, self.optimizer, steps_per_epoch)


def _cuda_rng() -> dict:
    return {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}


def _check_same_run(saved: dict, config: RunConfig) -> None:
    """A checkpoint of another method, architecture or data cannot continue this run."""
    ours = json.loads(json.dumps(config.to_dict()))  # tuples as the checkpoint's JSON lists
    for key in ("method", "arch", "benchmark", "data", "scenario", "tasks", "hidden", "channels", "seed"):
        if saved.get(key) != ours[key]:
            raise MaskclError(
                f"the checkpoint is of another run ({key} {saved.get(key)!r}; this run has {ours[key]!r})"
            )


def _batches(run_: _Run, tasks: list[int], datas: list[TaskData]) -> Iterator[tuple]:
    """The epoch's batches ``(x, y, task ids or None)``, drawn from the data generator's current state."""
    config, device = run_.config, run_.device
    if len(tasks) == 1:
        batches = datas[0].batches(config.batch_size, True, run_.generator, device)
        return ((x, y, None) for x, y in batches)
    return _joint_batches(datas, tasks, config.batch_size, run_.generator, device)


def _train_task(run_: _Run, log: Callable[[str], None], progress: bool) -> None:
    """Learn ``run_.position.task`` from where the position stands, checkpointing as the folder asks."""
    config, model, position, folder = run_.config, run_.model, run_.position, run_.folder
    task = position.task
    tasks, datas, steps_per_epoch = run_.task_data()
    if not position.in_task:
        run_.start_task()
        position.in_task, position.epoch, position.step = True, 0, 0
    while position.epoch < config.epochs:
        model.train()
        if position.step == 0:
            position.generator = run_.generator.get_state()
            position.epoch_loss = torch.zeros((), device=run_.device)
        else:  # resuming inside the epoch: draw its order again, skip the batches done
            run_.generator.set_state(position.generator)
        set_task(model, task)
        stream = itertools.islice(_batches(run_, tasks, datas), position.step, None)
        label = f"task {task} epoch {position.epoch + 1}"
        bar = _progress_bar(progress, steps_per_epoch, position.step, label)
        for x, y, ids in stream:
            if ids is not None:
                set_task(model, ids)
            loss = F.cross_entropy(model(x), y) + run_.method.penalty()
            run_.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run_.optimizer.step()
            position.epoch_loss += loss.detach()
            position.step += 1
            if bar is not None:
                bar.update()
            if folder is not None and folder.checkpoint_due():
                _save(run_, interrupted=folder.stop)
        if bar is not None:
            bar.close()
        mean_loss = float(position.epoch_loss) / steps_per_epoch
        if not torch.isfinite(position.epoch_loss):
            raise MaskclError(
                f"the loss became {mean_loss} in task {task}, epoch {position.epoch + 1}: "
                "lower --lr or check the data"
            )
        val = evaluate(model, run_.scenario[task].val, task, run_.device)
        epoch = f"{position.epoch + 1}/{config.epochs}"
        log(f"task {task} epoch {epoch}: loss {mean_loss:.4f}, val acc {val:.4f}")
        if folder is not None:
            folder.log_metrics(task, position.epoch + 1, {"train_loss": mean_loss, "val_acc": val})
        position.epoch, position.step = position.epoch + 1, 0
    run_.method.end_task(task)


def _progress_bar(enabled: bool, total: int, done: int, description: str):
    """A tqdm bar on the terminal when asked for and tqdm is installed, else None."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, desc=description, leave=False)


def _save(run_: _Run, interrupted: bool = False) -> None:
    run_.folder.save_training_state(run_.checkpoint(run_.folder.metric_lines))
    if interrupted:
        raise Interrupted(f"stopped; checkpoint saved: continue with maskcl run --resume {run_.folder.path}")


def run(
    config: RunConfig,
    log: Callable[[str], None] = print,
    on_task_end: Callable[[nn.Module, int], None] | None = None,
    folder: RunFolder | None = None,
    progress: bool = False,
) -> dict:
    """Run the continual-learning experiment ``config`` and return its results (see ``maskcl run``).

    ``log`` receives one line per epoch and per task; ``on_task_end(model, task)`` is called after each
    task is learned and evaluated. With a :class:`~maskcl.runs.RunFolder`, the run creates it (once the
    data and model are built) and writes its metrics and checkpoints there; with a folder reopened by
    :meth:`~maskcl.runs.RunFolder.open`, it continues from the folder's last checkpoint, and the results
    are the same as those of a run never stopped. ``progress`` shows a bar per epoch (needs tqdm).

    The results are deterministic for a config on a machine; timings are kept apart in ``timing``.
    """
    config.validate()
    run_ = _Run(config, folder)
    if folder is None:
        return _run(run_, None, log, on_task_end, progress)
    if not folder.resuming:
        folder.create(config.to_dict())
    folder.lock()
    try:
        return _run(
            run_, folder.load_training_state() if folder.resuming else None, log, on_task_end, progress
        )
    finally:
        folder.unlock()


def _run(run_: _Run, saved: dict | None, log, on_task_end, progress: bool) -> dict:
    """:func:`run`'s body: continue ``run_`` from the training state ``saved`` (None: from the start)."""
    config, folder = run_.config, run_.folder
    if saved is not None:
        try:
            run_.restore(saved)
        except (MaskclError, RuntimeError, KeyError, TypeError, ValueError) as err:
            path = folder.path / CHECKPOINT
            raise MaskclError(f"{path}: cannot continue this run from it: {one_line(err)}") from None
        where = run_.position
        log(f"resumed at task {where.task}, epoch {where.epoch + 1}, step {where.step}")
    scenario, model, device = run_.scenario, run_.model, run_.device
    while run_.position.task < scenario.num_tasks:
        task = run_.position.task
        _train_task(run_, log, progress)
        for other in range(scenario.num_tasks):
            run_.matrix.update(task, other, evaluate(model, scenario[other].test, other, device))
        log(f"after task {task}: " + " ".join(f"{a:.4f}" for a in run_.matrix.row(task)))
        if on_task_end is not None:
            on_task_end(model, task)
        run_.position = _Position(task=task + 1)
        if folder is not None:
            row = {f"test_acc_task_{j}": run_.matrix.row(task)[j] for j in range(task + 1)}
            folder.log_metrics(task, config.epochs, row)
            folder.save_task_model(task, model.state_dict())
            _save(run_, interrupted=folder.stop)
    results = run_.matrix.compute()
    results.update(
        random_acc=[random_stratified_accuracy(t.test.y.numpy()) for t in scenario.tasks],
        scenario={"name": scenario.name, "classes": [t.classes for t in scenario.tasks]},
        device=str(device),
        config=config.to_dict(),
    )
    if config.task_inference:
        results["task_inference"] = evaluate_task_inference(model, scenario, device)
    if method_class(config.method).gated:
        results["capacity"] = [dataclasses.asdict(layer) for layer in capacity(model).layers]
    results["timing"] = {
        "train_seconds": run_.seconds(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    return results
