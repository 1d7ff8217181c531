"""MLflow: each run folder one MLflow run (extra ``maskcl[mlflow]``: mlflow-skinny and SQLAlchemy).

Where the runs go is MLflow's own setting: ``MLFLOW_TRACKING_URI`` (a local database such as
``sqlite:///mlflow.db``, MLflow's default in the working directory, or a tracking server), and the
experiment is ``MLFLOW_EXPERIMENT_NAME`` (default ``maskcl``). The run is named after the run folder, its
parameters are the run's config, its metrics ``task_K/NAME`` at step ``1000 K + epoch``, and at the end
the results' ACC, BWT, forgetting (and FWT, average incremental ACC, class-incremental ACC where
measured) with ``results.json`` as an artifact. A resumed run continues the same MLflow run (its id is
kept in ``run.json``); the rows written after the last checkpoint are logged again, with the same values.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from maskcl.loggers.base import Logger, Row, register_logger, run_name, step_of, summary_of

__all__ = ["MLflowLogger"]

STATUS = {"finished": "FINISHED", "killed": "KILLED", "failed": "FAILED"}


@register_logger("mlflow")
class MLflowLogger(Logger):
    """One MLflow run per run folder, through :class:`mlflow.MlflowClient` (no global active run)."""

    requires = "mlflow"

    def start(self, config: Mapping[str, Any], rows: Sequence[Row], state: dict | None) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        self._client = MlflowClient()
        run_id = (state or {}).get("run_id")
        if run_id is not None:
            try:
                self._client.update_run(run_id, status="RUNNING")
            except MlflowException:  # the run is gone from the store: a new one with every row
                run_id, state = None, None
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "maskcl")
            experiment = self._client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(name)
            tags = {"maskcl.folder": str(self.folder.resolve())}
            run = self._client.create_run(experiment_id, run_name=run_name(self.folder), tags=tags)
            run_id = run.info.run_id
            params = [Param(key, json.dumps(value)) for key, value in config.items()]
            for first in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
                self._client.log_batch(run_id, params=params[first : first + 100])
        self._run_id = run_id
        super().start(config, rows, state)

    def log(self, task: int, epoch: int, values: Mapping[str, float]) -> None:
        self._log({f"task_{task}/{name}": value for name, value in values.items()}, step_of(task, epoch))

    def _log(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        self._client.log_batch(self._run_id, metrics=metrics)

    def finish(self, results: Mapping[str, Any]) -> None:
        self._log(summary_of(results), 0)
        path = self.folder / "results.json"
        if path.is_file():
            self._client.log_artifact(self._run_id, str(path))
        self.close("finished")

    def close(self, status: str) -> None:
        self._client.set_terminated(self._run_id, STATUS[status])

    def state_dict(self) -> dict:
        return {"run_id": self._run_id}
