"""MLflow with real local tracking stores (SQLite and files, what ``mlflow ui`` reads): one MLflow run per
run folder, its params, per-epoch metric histories and summary, and a stopped run continued as the same
MLflow run."""

import json

import pytest
from conftest import SMALL_RUN
from test_config import cli
from test_loggers import csv_rows
from test_runs import _StopAfter

from maskcl.runs import RunFolder
from maskcl.train import Interrupted, RunConfig, run

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")  # SQLAlchemy's, about MLflow

FAST = [*SMALL_RUN, "--quiet"]


@pytest.fixture(scope="module", params=["sqlite", "file"])
def store(tmp_path_factory, request):
    """A local SQLite database (MLflow 3's default kind of store) or a local file store (MLflow 3 takes one
    only with ``MLFLOW_ALLOW_FILE_STORE=true``)."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}" if request.param == "sqlite" else (folder / "mlruns").as_uri()


@pytest.fixture
def client(store, monkeypatch, request, tmp_path):
    """The store, and an experiment of the test's name whose artifacts go to the test's folder (MLflow
    puts them in ``./mlruns`` otherwise)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name[:60])
    client = mlflow.MlflowClient(store)
    client.create_experiment(request.node.name[:60], artifact_location=(tmp_path / "artifacts").as_uri())
    return client


def runs_of(client, name):
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def history(client, run_id, rows):
    """``{key: [(step, value), ...]}`` of the MLflow run for every metric name of ``rows``."""
    keys = {f"task_{task}/{name}" for task, _, name, _ in rows}
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in keys}


def expected(rows):
    keys = {f"task_{task}/{name}" for task, _, name, _ in rows}
    return {
        key: sorted(
            (task * 1000 + epoch, value) for task, epoch, name, value in rows if f"task_{task}/{name}" == key
        )
        for key in keys
    }


def test_a_run_is_one_mlflow_run_with_its_config_metrics_and_results(tmp_path, data, capsys, client, request):
    out = tmp_path / "split-hat"
    code, _, err = cli(["run", "--data", data, *FAST, "--loggers", "mlflow", "--out", str(out)], capsys)
    assert code == 0, err
    [mlflow_run] = runs_of(client, request.node.name[:60])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "split-hat"
    config = json.loads((out / "config.json").read_text())
    assert {k: json.loads(v) for k, v in mlflow_run.data.params.items()} == config
    rows = csv_rows(out)
    assert history(client, mlflow_run.info.run_id, rows) == expected(rows)
    results = json.loads((out / "results.json").read_text())
    assert mlflow_run.data.metrics["acc"] == pytest.approx(results["acc"])
    assert mlflow_run.data.metrics["bwt"] == pytest.approx(results["bwt"])
    assert [a.path for a in client.list_artifacts(mlflow_run.info.run_id)] == ["results.json"]
    assert json.loads((out / "run.json").read_text())["loggers"] == {
        "mlflow": {"run_id": mlflow_run.info.run_id}
    }


def test_a_stopped_run_continues_its_mlflow_run(tmp_path, data, client, request):
    config = RunConfig(data=data, num_tasks=2, epochs=3, batch_size=16, hidden=(32, 32))
    _StopAfter.steps = 130
    with pytest.raises(Interrupted):
        run(config, log=lambda _: None, folder=_StopAfter(tmp_path / "run", 0, loggers=["mlflow"]))
    [stopped] = runs_of(client, request.node.name[:60])
    assert stopped.info.status == "KILLED"
    run(config, log=lambda _: None, folder=RunFolder(tmp_path / "run", mode="resume"))
    [finished] = runs_of(client, request.node.name[:60])
    assert finished.info.run_id == stopped.info.run_id and finished.info.status == "FINISHED"
    rows = csv_rows(tmp_path / "run")
    logged = history(client, finished.info.run_id, rows)
    # rows after the last checkpoint are logged again on resume, with the same values
    assert {key: sorted(set(points)) for key, points in logged.items()} == expected(rows)


def test_seeds_are_runs_named_after_their_folder(tmp_path, data, capsys, client, request):
    out = tmp_path / "sweep"
    args = ["run", "--data", data, *FAST, "--seeds", "0,1", "--loggers", "mlflow", "--out", str(out)]
    assert cli(args, capsys)[0] == 0
    names = sorted(r.info.run_name for r in runs_of(client, request.node.name[:60]))
    assert names == ["sweep/seed-0", "sweep/seed-1"]
