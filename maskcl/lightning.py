"""Any maskcl method in a PyTorch Lightning training script: :class:`MethodCallback` (extra
``maskcl[lightning]``).

    method = maskcl.create_method("hat", net)            # net: a task-aware network
    module = MyLightningModule(method.model)              # trains method.model; its training_step adds
    callback = MethodCallback(method)                     #   callback.regularizer() to the loss
    for task in range(num_tasks):
        callback.task = task
        trainer = L.Trainer(max_epochs=5, callbacks=[callback])
        trainer.fit(module, loaders[task])                # one fit per task

The method's lifecycle follows Lightning's hooks: ``start_task`` when training starts (with the fit's one
optimizer and its optimizer steps per epoch, ``ceil(batches / accumulate_grad_batches)``, so HAT's gate
scale follows the optimizer steps under gradient accumulation), ``end_epoch`` after each training epoch,
``end_task`` when the fit ends (after ``max_epochs``, or early stopping), not when it was interrupted. The
method's hooks on the optimizer run after every optimizer step (after Lightning's gradient reduction under
``ddp``), so the learned tasks' entries are kept bit-for-bit whatever the optimizer and precision. The
callback's ``state_dict`` (the task and the method's state inside it) goes into Lightning's checkpoints:
``trainer.fit(..., ckpt_path=...)`` resumes inside a task.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from maskcl.core.context import set_task
from maskcl.errors import MaskclError
from maskcl.methods.base import Method

__all__ = ["MethodCallback"]


class MethodCallback(pl.Callback):
    """Drives ``method`` through a Lightning ``fit`` of task ``task`` (set it before each fit).

    Args:
        method: the maskcl method; the LightningModule trains ``method.model``.
        task: the task the next ``fit`` learns.
    """

    def __init__(self, method: Method, task: int | None = None) -> None:
        self.method, self.task = method, task
        self._resumed: dict | None = None

    def regularizer(self) -> torch.Tensor | float:
        """The method's term to add to the training step's loss (after the step's forward pass)."""
        return self.method.regularizer()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse the settings the methods cannot serve, in one line, before anything trains."""
        strategy = trainer.strategy
        sharded = (
            pl.strategies.FSDPStrategy,
            pl.strategies.DeepSpeedStrategy,
            pl.strategies.ModelParallelStrategy,
        )
        if isinstance(strategy, sharded):
            raise MaskclError(
                f"MethodCallback: {type(strategy).__name__} is not supported (the exact protection and the "
                "masks need each rank's full parameters): use strategy='ddp'"
            )
        if getattr(strategy, "_layer_sync", None) is not None:
            raise MaskclError(
                "MethodCallback: sync_batchnorm is not supported (a per-task BatchNorm keeps its own "
                "statistics per task and normalises with each rank's batch): set sync_batchnorm=False"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.task is None:
            raise MaskclError("MethodCallback: set callback.task before trainer.fit")
        if len(trainer.optimizers) != 1:
            raise MaskclError(f"MethodCallback needs one optimizer, the fit has {len(trainer.optimizers)}")
        if self.method.task is None:
            if trainer.max_epochs is None or trainer.max_epochs < 1:
                raise MaskclError(
                    f"MethodCallback needs max_epochs >= 1 (a task's epochs), got {trainer.max_epochs}"
                )
            self.method.check_epochs(trainer.max_epochs)
            batches = trainer.num_training_batches
            if not math.isfinite(batches) or batches < 1:
                raise MaskclError(f"MethodCallback needs a finite number of training batches, got {batches}")
            steps = math.ceil(batches / trainer.accumulate_grad_batches)
            if self._resumed is None:
                self.method.start_task(self.task, trainer.optimizers[0], steps)
            else:  # the checkpoint's network, as start_task may set the task's own entries (PackNet's claim)
                saved = {k: v.clone() for k, v in self.method.model.state_dict().items()}
                self.method.start_task(self.task, trainer.optimizers[0], steps)
                self.method.model.load_state_dict(saved)
                self.method.load_state_dict(self._resumed)
                self._resumed = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the network trains in training mode (an evaluation before the fit may have left it in eval mode)
        # on the task in training (validation may have selected another)
        set_task(self.method.model.train(), self.task)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.method.end_epoch(trainer.current_epoch + 1, trainer.max_epochs)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.method.task is not None and not trainer.interrupted:
            self.method.end_task()

    def state_dict(self) -> dict[str, Any]:
        inside = self.method.task is not None
        return {"task": self.task, "method": self.method.state_dict() if inside else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.task = state_dict["task"]
        self._resumed = state_dict["method"]
