"""Weights & Biases: each run folder one W&B run (extra ``maskcl[wandb]``).

Offline unless ``WANDB_MODE`` says otherwise: the run's records go to ``DIR/wandb/`` and ``wandb sync
DIR/wandb/offline-run-*`` uploads them later (``WANDB_MODE=online`` with a logged-in ``wandb`` logs live).
The project is ``WANDB_PROJECT`` (default ``maskcl``), the run is named after the run folder, its config
is the run's, its metrics ``task_K/NAME`` at step ``1000 K + epoch`` and the results' figures in the
summary. A resumed run continues under the same run id (kept in ``run.json``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from maskcl.loggers.base import Logger, Row, register_logger, run_name, step_of, summary_of

__all__ = ["WandbLogger"]


@register_logger("wandb")
class WandbLogger(Logger):
    """One W&B run per run folder (``resume="allow"`` with the kept id)."""

    requires = "wandb"
    files = ("wandb",)

    def start(self, config: Mapping[str, Any], rows: Sequence[Row], state: dict | None) -> None:
        import wandb

        self._id = (state or {}).get("run_id") or secrets.token_hex(4)  # not torch's, numpy's or random's
        self._run = wandb.init(
            dir=str(self.folder),
            id=self._id,
            resume="allow",
            name=run_name(self.folder),
            project=os.environ.get("WANDB_PROJECT", "maskcl"),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=dict(config),
            settings=wandb.Settings(silent=True, console="off", save_code=False),
            reinit="create_new",
        )
        super().start(config, rows, state)

    def log(self, task: int, epoch: int, values: Mapping[str, float]) -> None:
        metrics = {f"task_{task}/{name}": value for name, value in values.items()}
        self._run.log(metrics, step=step_of(task, epoch))

    def finish(self, results: Mapping[str, Any]) -> None:
        self._run.summary.update(summary_of(results))
        self.close("finished")

    def close(self, status: str) -> None:
        self._run.finish(exit_code=0 if status == "finished" else 1)

    def state_dict(self) -> dict:
        return {"run_id": self._id}
