"""The continual-learning run: a scenario, a model, a method, an optimizer; tasks learned one by one.

:func:`run` is what ``maskcl run`` calls: it trains every task in order, evaluates all tasks after each
one (the accuracy matrix ``R[i][j]``) and returns the results with the full configuration used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskcl.build import (
    build_method,
    build_optimizer,
    check_memory,
    check_tasks_fit,
    load_scenario,
    resolve_device,
)
from maskcl.checkpoint import check_like
from maskcl.config import RunConfig
from maskcl.core.context import set_task
from maskcl.data import EpochBatches, TaskData, check_augment
from maskcl.distributed import world
from maskcl.errors import MaskclError, MaskclWarning, one_line
from maskcl.evaluation import ClassIncremental, evaluate, validate
from maskcl.metrics import (
    AccuracyMatrix,
    forgetting_ratio,
    forward_transfer,
    random_stratified_accuracy,
    validate_accuracy_matrix,
)
from maskcl.predictors import create_predictor
from maskcl.runs import CHECKPOINT, RunFolder, SweepFolder, config_differences, load_model_state, summarize

__all__ = ["Interrupted", "run", "run_seeds"]


class Interrupted(MaskclError):
    """Raised by :func:`run` after it saved a checkpoint because a stop was asked (``folder.stop``);
    ``signum`` is the signal that asked (``maskcl run`` exits with ``128 + signum``: 130 for SIGINT, 143 for
    SIGTERM)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)


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
    best_val_loss: float | None = None  # the task's lowest validation loss so far (patience, early stop)
    stale_epochs: int = 0  # epochs since it
    lr_stale: int = 0  # epochs since it or the last decay of the patience schedule
    decays: int = 0  # the patience schedule's decays in this task


WATCH = {"best_val_loss": None, "stale_epochs": 0, "lr_stale": 0, "decays": 0}
"""The position's validation counters and their values at a task's start (format 5 had none)."""


class _Run:
    """One run's live objects, and the checkpoint of them from which :func:`run` resumes bit-exactly."""

    def __init__(self, config: RunConfig, folder: RunFolder | None) -> None:
        self.config, self.folder = config, folder
        self.world, device = world(config.device)
        self.writer = folder if self.world.main else None  # only rank 0 writes the folder
        self.device = resolve_device(device)
        if config.batch_size < self.world.size:
            raise MaskclError(
                f"--batch-size {config.batch_size} is the global batch: it cannot be shared by "
                f"{self.world.size} ranks"
            )
        if config.num_tasks is not None:  # before the scenario is built: its permutations, heads, ...
            check_tasks_fit(config.num_tasks)
        self.scenario = load_scenario(config)
        check_augment(config.augment, self.scenario.input_shape)
        if config.num_tasks is None:
            check_tasks_fit(self.scenario.num_tasks)
        torch.manual_seed(config.seed)
        check_memory(config, self.scenario, self.device)
        self.method = build_method(config, self.scenario, self.device)
        self.model = self.method.model
        self.net = self.world.parallel(self.model, self.device)  # what the training steps call
        self.optimizer = build_optimizer(config, self.model)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.matrix = AccuracyMatrix(self.scenario.num_tasks)
        self.initial: list[float] | None = None  # each task's test accuracy before any training
        self.inference: ClassIncremental | None = None
        if config.task_inference is not None:
            predictor = create_predictor(config.task_inference)
            predictor.check_model(self.model)
            self.inference = ClassIncremental(predictor, self.scenario.num_tasks)
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
            "initial": self.initial,
            "inference": self.inference.state_dict() if self.inference is not None else {},
            "metric_lines": metric_lines,
            "seconds": self.seconds(),
        }

    def restore(self, state: dict) -> None:
        """Continue from :meth:`checkpoint`'s ``state``, once every part of it is checked against this run
        (config, position, tensors' dtypes and shapes). Inside a task, the method's ``start_task`` runs on
        the saved model (its snapshots of protected weights are taken from it); the model is loaded a
        second time afterwards, since ``start_task`` may initialise the task's own parameters."""
        _check_same_run(state["config"], self.config)
        if isinstance(state["position"], dict):
            state["position"] = {**WATCH, **state["position"]}
        self._check_position(state["position"])
        self._check_rest(state)
        model_state = state["model"]
        load_model_state(self.model, model_state, "its model", self.config.arch)
        self.position = _Position(**state["position"])
        if self.position.epoch_loss is not None:
            self.position.epoch_loss = self.position.epoch_loss.to(self.device)
        if self.position.in_task:
            self.start_task()
            self.model.load_state_dict(model_state)
            check_like(state["method"], self.method.state_dict(), "its method state")
            self.method.load_state_dict(state["method"])
        scheduled = ("lr",) if self.config.lr_schedule != "constant" else ()  # set at every step
        _check_optimizer_state(state["optimizer"], self.optimizer, scheduled)
        self.optimizer.load_state_dict(state["optimizer"])
        self.matrix = AccuracyMatrix.from_matrix(state["matrix"])
        self.initial = state.get("initial")  # checkpoints before format 4's FWT kept none
        if self.inference is not None and state.get("inference"):  # format 3 kept none
            self.inference.load_state_dict(state["inference"])
        self.seconds_before = state["seconds"]
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["generator"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def _check_position(self, position: dict) -> None:
        """The saved position lies in this run: task ``0..T`` (``T``: done), epoch ``0..E``, step within the
        epoch, and the generator state and loss sum of the right kind."""
        names = [field.name for field in dataclasses.fields(_Position)]
        if not isinstance(position, dict) or sorted(position) != sorted(names):
            raise MaskclError(f"its position is damaged (it needs {', '.join(names)})")
        task, epoch, step, in_task = (position[k] for k in ("task", "epoch", "step", "in_task"))
        tasks, epochs = self.scenario.num_tasks, self.config.epochs
        if type(task) is not int or not 0 <= task <= tasks:
            raise MaskclError(f"its position is task {task!r}, but this run has tasks 0-{tasks - 1}")
        if type(epoch) is not int or not 0 <= epoch <= epochs:
            raise MaskclError(f"its position is epoch {epoch!r}, but this run has {epochs} epochs a task")
        if type(in_task) is not bool or (in_task and task == tasks):
            raise MaskclError(f"its position is damaged (in_task {in_task!r} at task {task})")
        steps = max(d.num_batches(self.config.batch_size) for d in self._datas(task)) if task < tasks else 0
        if type(step) is not int or not 0 <= step <= steps:
            raise MaskclError(f"its position is step {step!r}, but an epoch of task {task} has {steps} steps")
        for name, like in (("generator", self.generator.get_state()), ("epoch_loss", torch.zeros(()))):
            if position[name] is not None:
                check_like(position[name], like, f"its position's {name}")
            elif step > 0:
                raise MaskclError(f"its position is damaged (no {name} in the middle of an epoch)")
        best = position["best_val_loss"]
        counts = [position[k] for k in WATCH if k != "best_val_loss"]
        counted = all(type(c) is int and c >= 0 for c in counts)
        if not (best is None or isinstance(best, float)) or not counted:
            raise MaskclError("its position's validation counters are damaged")

    def _check_rest(self, state: dict) -> None:
        """The random generators' states, the accuracy matrix and the time are of this run's kind."""
        rng = state["rng"]
        if not isinstance(rng, dict):
            raise MaskclError("its random generator states are damaged")
        check_like(rng.get("torch"), torch.get_rng_state(), "its torch generator state")
        check_like(rng.get("generator"), self.generator.get_state(), "its data generator state")
        if "cuda" in rng and torch.cuda.is_available():
            check_like(rng["cuda"], torch.cuda.get_rng_state_all(), "its CUDA generator states")
        matrix = state["matrix"]
        if not isinstance(matrix, list) or len(matrix) != self.scenario.num_tasks:
            raise MaskclError(
                f"its accuracy matrix is not {self.scenario.num_tasks} x {self.scenario.num_tasks}"
            )
        AccuracyMatrix.from_matrix(matrix)  # fractions or None
        initial = state.get("initial")
        if initial is not None and (
            not isinstance(initial, list)
            or len(initial) != self.scenario.num_tasks
            or not all(a is None or (isinstance(a, float) and 0 <= a <= 1) for a in initial)
        ):
            raise MaskclError(f"its initial accuracies are not {self.scenario.num_tasks} fractions or null")
        seconds = state["seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise MaskclError(f"its training time {seconds!r} is not a number of seconds")

    def _datas(self, task: int) -> list[TaskData]:
        return [self.scenario[t].train for t in self.method.training_tasks(task)]

    def task_data(self) -> tuple[list[int], list[TaskData], int]:
        tasks = self.method.training_tasks(self.position.task)
        datas = self._datas(self.position.task)
        return tasks, datas, max(d.num_batches(self.config.batch_size) for d in datas)

    def start_task(self) -> None:
        _, _, steps_per_epoch = self.task_data()
        self.method.start_task(self.position.task, self.optimizer, steps_per_epoch)


def _cuda_rng() -> dict:
    return {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}


def _check_same_run(saved: dict, config: RunConfig) -> None:
    """A checkpoint of another configuration (any key) cannot continue this run."""
    if not isinstance(saved, dict):
        raise MaskclError("its config is damaged")
    differences = config_differences(saved, config.to_dict(), ("in the checkpoint", "in the run's config"))
    if differences:
        raise MaskclError(f"the checkpoint is of another configuration ({'; '.join(differences)})")


def _check_optimizer_state(
    saved: dict, optimizer: torch.optim.Optimizer, ignore: tuple[str, ...] = ()
) -> None:
    """The saved optimizer state is this optimizer's: the same parameter groups and hyperparameters (but
    ``ignore``), and per-parameter tensors of the parameter's dtype and shape (torch would convert another
    dtype silently)."""
    ours = optimizer.state_dict()
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list):
        raise MaskclError("its optimizer state is damaged")
    groups = saved["param_groups"]
    if len(groups) != len(ours["param_groups"]):
        raise MaskclError(
            f"its optimizer has {len(groups)} parameter groups, this run's has {len(ours['param_groups'])}"
        )
    for theirs, mine in zip(groups, ours["param_groups"]):
        if not isinstance(theirs, dict):
            raise MaskclError("its optimizer state is damaged")
        differences = config_differences(
            {k: v for k, v in theirs.items() if k in mine and k not in ignore},
            {k: v for k, v in mine.items() if k in theirs and k not in ignore},
            ("in the checkpoint", "in this run"),
        )
        if differences:
            raise MaskclError(f"its optimizer differs from this run's ({'; '.join(differences)})")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = saved.get("state")
    if not isinstance(state, dict):
        raise MaskclError("its optimizer state is damaged")
    for index, entries in state.items():
        if type(index) is not int or not 0 <= index < len(params) or not isinstance(entries, dict):
            raise MaskclError(f"its optimizer state has an entry {index!r} for no parameter of this run")
        param = params[index]
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                check_like(value, param.detach(), f"its optimizer's {name} of parameter {index}")
            elif isinstance(value, torch.Tensor) and not value.is_floating_point():
                raise MaskclError(f"its optimizer's {name} of parameter {index} is {value.dtype}")


def _train_task(run_: _Run, log: Callable[[str], None], progress: bool) -> None:
    """Learn ``run_.position.task`` from where the position stands, checkpointing as the folder asks."""
    config, model, position = run_.config, run_.model, run_.position
    task = position.task
    tasks, datas, steps_per_epoch = run_.task_data()
    if not position.in_task:
        run_.start_task()
        position.in_task, position.epoch, position.step = True, 0, 0
        for name, value in WATCH.items():
            setattr(position, name, value)
    while position.epoch < config.epochs:
        model.train()
        if position.step == 0:
            position.generator = run_.generator.get_state()
            position.epoch_loss = torch.zeros((), device=run_.device)
        else:  # resuming inside the epoch: draw its order again, skip the batches done
            run_.generator.set_state(position.generator)
        set_task(model, task)
        epoch = EpochBatches(datas, tasks, config.batch_size, run_.generator, config.augment)
        stream = epoch.iterate(position.step, config.workers, run_.device)
        label = f"task {task} epoch {position.epoch + 1}"
        bar = _progress_bar(progress, steps_per_epoch, position.step, label)
        for x, y, ids in stream:
            _set_lr(run_, steps_per_epoch)
            loss = _step(run_, x, y, ids)
            position.step += 1
            if bar is not None:
                bar.update()
            _end_step(run_, loss)
        if bar is not None:
            bar.close()
        mean_loss = float(position.epoch_loss) / steps_per_epoch
        if not torch.isfinite(position.epoch_loss):
            raise MaskclError(
                f"the loss became {mean_loss} in task {task}, epoch {position.epoch + 1}: "
                "lower --lr or check the data"
            )
        run_.method.end_epoch(position.epoch + 1, config.epochs)
        run_.world.sync_buffers(model)
        val, val_loss = validate(model, run_.scenario[task].val, task, run_.device, world=run_.world)
        epoch = f"{position.epoch + 1}/{config.epochs}"
        log(f"task {task} epoch {epoch}: loss {mean_loss:.4f}, val acc {val:.4f}")
        metrics = {"train_loss": mean_loss, "val_acc": val}
        watched = config.lr_schedule == "patience" or config.early_stop is not None
        if watched:  # what the schedule sees, and the rate it gave the epoch's last step
            metrics |= {"val_loss": val_loss, "lr": run_.optimizer.param_groups[0]["lr"]}
        if run_.writer is not None:
            run_.writer.log_metrics(task, position.epoch + 1, metrics)
        position.epoch, position.step = position.epoch + 1, 0
        ended = _watch(config, position, val_loss) if watched else None
        if ended is not None and position.epoch < config.epochs:
            log(f"task {task}: training ends after epoch {position.epoch} ({ended})")
            position.epoch = config.epochs
    run_.method.end_task()


def _watch(config: RunConfig, position: _Position, val_loss: float) -> str | None:
    """Count the epoch's validation loss; why the task's training ends now, or None.

    A lower loss than the task's best resets the counts. Otherwise, with the patience schedule (Serrà et
    al., ICML 2018, Sec. 4: lr 0.05 divided by 3 after 5 epochs without a lower validation loss, training
    ending below 1e-4), ``lr_patience`` such epochs since the best or the last decay make a decay (factor
    ``lr_gamma``), and a rate below ``lr_min`` ends the task; ``early_stop`` such epochs since the best end
    it under any schedule."""
    if position.best_val_loss is None or val_loss < position.best_val_loss:
        position.best_val_loss, position.stale_epochs, position.lr_stale = val_loss, 0, 0
        return None
    position.stale_epochs += 1
    position.lr_stale += 1
    if config.lr_schedule == "patience" and position.lr_stale >= config.lr_patience:
        position.decays, position.lr_stale = position.decays + 1, 0
        rate = config.lr * config.lr_gamma**position.decays
        if rate < config.lr_min:
            return f"learning rate {rate:.3g} below --lr-min"
    if config.early_stop is not None and position.stale_epochs >= config.early_stop:
        return f"{position.stale_epochs} epochs without a lower validation loss"
    return None


def lr_factor(
    schedule: str, done: int, total: int, epoch: int, step_epochs: int, gamma: float, decays: int = 0
) -> float:
    """The learning rate's factor on ``--lr`` for a task's step after ``done`` of its ``total`` steps, in
    its epoch ``epoch`` (from 0): ``constant`` 1; ``cosine`` ``(1 + cos(pi done / total)) / 2`` (Loshchilov
    & Hutter, ICLR 2017, "SGDR", eq. 5 without restarts: from 1 to 0 over the task); ``step``
    ``gamma ** floor(epoch / step_epochs)``; ``patience`` ``gamma ** decays`` (the decays the validation
    loss called for so far, :func:`_watch`)."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done / total))
    if schedule == "step":
        return gamma ** (epoch // step_epochs)
    if schedule == "patience":
        return gamma**decays
    return 1.0


def _set_lr(run_: _Run, steps_per_epoch: int) -> None:
    """Every parameter group's learning rate for the next step, from the schedule and the position (so a
    resumed run continues on the same schedule: nothing to save)."""
    config, position = run_.config, run_.position
    done = position.epoch * steps_per_epoch + position.step
    factor = lr_factor(
        config.lr_schedule,
        done,
        config.epochs * steps_per_epoch,
        position.epoch,
        config.lr_step_epochs,
        config.lr_gamma,
        position.decays,
    )
    for group in run_.optimizer.param_groups:
        group["lr"] = config.lr * factor


def _progress_bar(enabled: bool, total: int, done: int, description: str):
    """A tqdm bar on the terminal when asked for and tqdm is installed, else None."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, desc=description, leave=False)


def _step(run_: _Run, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    """One optimizer step on the global batch ``(x, y)`` (task ids ``ids`` or None); returns its loss,
    detached: the batch's mean cross-entropy plus the method's regulariser. A task predictor that trains
    makes the batch first (:meth:`~maskcl.predictors.TaskPredictor.training_batch`). With several ranks
    each computes its shard's summed cross-entropy over the global batch size, times the number of ranks,
    so that the gradients ``DistributedDataParallel`` averages are the global batch's; the loss returned
    is then this rank's share of it (the shares sum to the loss)."""
    world, model = run_.world, run_.model
    if run_.inference is not None and run_.inference.predictor.trains:
        x, y, ids = run_.inference.predictor.training_batch(model, x, y, ids)
    size = len(y)
    if world.size > 1:
        x, y, *rest = world.shard(x, y, *([] if ids is None else [ids]))
        ids = rest[0] if rest else None
    if ids is not None:
        set_task(model, ids)
    regularizer = run_.method.regularizer
    if world.size == 1:
        loss = F.cross_entropy(run_.net(x), y) + regularizer()
        share = loss
    else:
        cross_entropy = F.cross_entropy(run_.net(x), y, reduction="sum") / size
        penalty = regularizer()
        loss = cross_entropy * world.size + penalty
        share = cross_entropy + penalty / world.size
    run_.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run_.config.grad_clip is not None:  # after DDP's reduction: the same on every rank
        torch.nn.utils.clip_grad_norm_(model.parameters(), run_.config.grad_clip)
    run_.optimizer.step()
    return share.detach()


def _end_step(run_: _Run, loss: torch.Tensor) -> None:
    """Add the step's loss to the epoch's (summed over the ranks), and checkpoint if the folder asks; with
    several ranks, rank 0's folder (and a stop asked on any rank) decides for all."""
    world, folder, position = run_.world, run_.folder, run_.position
    if world.size == 1:
        position.epoch_loss += loss
        if folder is not None and folder.checkpoint_due():
            _save(run_)
        return
    position.epoch_loss += world.sum(loss)
    if folder is None:  # on every rank alike
        return
    stop = int(folder.stop)
    due = folder.checkpoint_due() if world.main else bool(stop)
    flags = world.max(torch.tensor([int(due), stop], device=run_.device)).tolist()
    if flags[0]:
        _save(run_, flags[1])


def _save(run_: _Run, stop: int | None = None) -> None:
    """Checkpoint (rank 0 writes it); then stop with :class:`Interrupted` if a stop was asked (``stop``:
    the ranks' decision, else the folder's)."""
    folder = run_.folder
    if run_.writer is not None:
        folder.save_training_state(run_.checkpoint(folder.metric_lines))
    stop = folder.stop if stop is None else stop
    if stop:
        signum = signal.SIGINT if stop is True else stop
        raise Interrupted(
            f"stopped; checkpoint saved: continue with maskcl run --resume {folder.path} "
            "(or the same command with --auto-resume)",
            signum,
        )


def run(
    config: RunConfig,
    log: Callable[[str], None] = print,
    on_task_end: Callable[[nn.Module, int], None] | None = None,
    folder: RunFolder | None = None,
    progress: bool = False,
    joint_reference: list[list[float]] | None = None,
) -> dict:
    """Run the continual-learning experiment ``config`` and return its results (see ``maskcl run``).

    ``log`` receives one line per epoch and per task; ``on_task_end(model, task)`` is called after each
    task is learned and evaluated. With a :class:`~maskcl.runs.RunFolder`, the run claims the folder
    (once the data and model are built and checked, so bad input writes nothing) and begins, continues or
    reports the run there as the folder's mode says; it writes metrics, checkpoints and models as it
    goes and ``results.json`` at the end, and the results are the same as those of a run never stopped.
    ``progress`` shows a bar per epoch (needs tqdm). ``joint_reference``: a joint run's accuracy matrix
    (``T x T``, checked before training), from which ``forgetting_ratio`` is added.

    The results are deterministic for a config on a machine with a thread count; timings are kept apart
    in ``timing``. ``data`` is stored as an absolute path.
    """
    config = config.resolved()
    config.validate()
    with _memory_errors():
        run_ = _Run(config, folder)
        if joint_reference is not None:
            tasks = run_.scenario.num_tasks
            if len(validate_accuracy_matrix(joint_reference)) != tasks:
                raise MaskclError(
                    f"the joint reference has {len(joint_reference)} tasks, this run {tasks}: it cannot serve"
                )
        if not run_.world.main:
            log, progress = (lambda _: None), False
        if folder is None:
            return _with_ratio(_run(run_, None, log, on_task_end, progress), joint_reference)
        if run_.world.size > 1:
            return _run_ranks(run_, log, on_task_end, progress, joint_reference)
        with folder.session(config.to_dict(), str(run_.device)) as opened:
            if opened.results is not None:
                return opened.results
            results = _with_ratio(_run(run_, opened.state, log, on_task_end, progress), joint_reference)
            folder.finish(results)
            return results


def _run_ranks(run_: _Run, log, on_task_end, progress: bool, joint_reference) -> dict:
    """:func:`run` with a folder and several ranks: rank 0 claims the folder and tells the others what it
    holds (the training state to continue from, the results of a finished run, or why it cannot be used);
    every rank trains, and rank 0 writes."""
    world, folder, config = run_.world, run_.folder, run_.config
    if not world.main:
        folder.active = True  # a signal here asks to stop at a step, as on rank 0 (see _end_step)
    try:
        with _claimed_by_rank_0(world, lambda: folder.session(config.to_dict(), str(run_.device))) as opened:
            if opened.results is not None:
                return opened.results
            results = _with_ratio(_run(run_, opened.state, log, on_task_end, progress), joint_reference)
            if world.main:
                folder.finish(results)
            return results
    finally:
        if not world.main:
            folder.active = False


@contextlib.contextmanager
def _claimed_by_rank_0(world, session: Callable[[], contextlib.AbstractContextManager]) -> Iterator:
    """Rank 0 enters ``session()`` (claiming a folder) and every rank gets what it yields; a one-line
    error in entering it is raised on every rank."""
    if not world.main:
        told = world.share(None)
        if told[0] == "error":
            raise MaskclError(told[1])
        yield told[1]
        return
    told = False
    try:
        with session() as opened:
            world.share(("ok", opened))
            told = True
            yield opened
    except MaskclError as err:
        if not told:
            world.share(("error", str(err)))
        raise


def run_seeds(
    config: RunConfig,
    seeds: Sequence[int],
    sweep: SweepFolder,
    checkpoint_interval: float,
    run_one: Callable[[RunConfig, RunFolder], dict] | None = None,
) -> dict:
    """Run ``config`` once per seed in the multi-seed folder ``sweep`` (``seed-S/`` each) and write its
    ``summary.json``: per metric the mean and standard deviation over the seeds; returns the summary.

    ``run_one(config, folder)`` trains, continues or reports one seed's run (default: :func:`run` with
    the folder); a finished seed is not trained again, so a stopped sweep continues where it stopped.
    """
    run_one = run_one or (lambda seed_config, folder: run(seed_config, folder=folder))
    seeds = list(seeds)
    ranks, _ = world(config.device)

    def runs() -> dict:
        results = [
            run_one(dataclasses.replace(config, seed=seed), sweep.run_folder(seed, checkpoint_interval))
            for seed in seeds
        ]
        summary = {"method": config.method, "seeds": seeds}
        return summary | {"runs": [f"seed-{s}" for s in seeds], **summarize(results)}

    with _claimed_by_rank_0(ranks, lambda: sweep.session(config.to_dict(), seeds)):
        summary = runs()  # rank 0 claims the sweep folder and writes it; the others train with it
        if ranks.main:
            sweep.write_summary(summary)
    return summary


@contextlib.contextmanager
def _memory_errors() -> Iterator[None]:
    """An allocation that fails anyway (activations, or a network :func:`check_memory` could not size)
    ends in one line, not a traceback."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as err:
        raise MaskclError(f"out of memory: {one_line(err)}") from None
    except RuntimeError as err:
        if "allocate" not in str(err):
            raise
        raise MaskclError(f"out of memory: {one_line(err)}") from None


def _with_ratio(results: dict, joint_reference: list[list[float]] | None) -> dict:
    """``results`` with HAT's forgetting ratio against the joint run (a warning where it is undefined)."""
    if joint_reference is not None:
        try:
            results["forgetting_ratio"] = forgetting_ratio(
                results["acc_matrix"], joint_reference, results["random_acc"]
            )
        except MaskclError as err:
            warnings.warn(f"--joint-reference: {err}; the results are written without it", MaskclWarning, 2)
    return results


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
    if saved is None:  # the network as initialised: FWT's reference
        initial = [evaluate(model, t.test, i, device, world=run_.world) for i, t in enumerate(scenario.tasks)]
        run_.initial = [a if a == a else None for a in initial]  # None: an empty test split
    while run_.position.task < scenario.num_tasks:
        task = run_.position.task
        _train_task(run_, log, progress)
        run_.world.sync_buffers(model)
        for other in range(scenario.num_tasks):
            accuracy = evaluate(model, scenario[other].test, other, device, world=run_.world)
            run_.matrix.update(task, other, accuracy)
        log(f"after task {task}: " + " ".join(f"{a:.4f}" for a in run_.matrix.row(task)))
        if run_.inference is not None:
            run_.inference.after_task(model, scenario, task, device)
            row = run_.inference.acc.row(task)[: task + 1]
            log(f"after task {task}, task unknown: " + " ".join(f"{a:.4f}" for a in row))
        if on_task_end is not None:
            on_task_end(model, task)
        run_.position = _Position(task=task + 1)
        if folder is not None:
            if run_.writer is not None:
                row = {f"test_acc_task_{j}": run_.matrix.row(task)[j] for j in range(task + 1)}
                run_.writer.log_metrics(task, config.epochs, row)
                run_.writer.save_task_model(task, model.state_dict())
            _save(run_)
    results = run_.matrix.compute()
    if run_.initial is not None and None not in run_.initial:
        results.update(initial_acc=run_.initial, fwt=forward_transfer(results["acc_matrix"], run_.initial))
    results.update(
        random_acc=[random_stratified_accuracy(t.test.y.numpy()) for t in scenario.tasks],
        scenario={"name": scenario.name, "classes": [t.classes for t in scenario.tasks]},
        device=str(device),
        config=config.to_dict(),
    )
    if run_.inference is not None:
        results["task_inference"] = run_.inference.results(scenario)
    results.update(run_.method.summary())
    results["timing"] = {
        "train_seconds": run_.seconds(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    return results
