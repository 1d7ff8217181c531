"""TensorBoard: the run's metrics as event files in ``DIR/tensorboard/`` (extra ``maskcl[tensorboard]``).

Event files can only be appended to, so each session writes them anew from ``metrics.csv``'s rows: a
resumed run's curves hold no point twice, and the folder does not grow under repeated preemption.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from maskcl.loggers.base import Logger, Row, register_logger, step_of

__all__ = ["TensorBoardLogger"]


@register_logger("tensorboard")
class TensorBoardLogger(Logger):
    """Scalars ``task_K/NAME`` at step ``1000 K + epoch``."""

    requires = "tensorboard"
    files = ("tensorboard",)

    def start(self, config: Mapping[str, Any], rows: Sequence[Row], state: dict | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = self.folder / "tensorboard"
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        self._writer = SummaryWriter(str(folder))
        super().start(config, rows, None)  # always written anew

    def log(self, task: int, epoch: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self._writer.add_scalar(f"task_{task}/{name}", value, step_of(task, epoch))
        self._writer.flush()

    def close(self, status: str) -> None:
        self._writer.close()
