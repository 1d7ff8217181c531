"""``maskcl export``: a learned task as a plain network whose outputs are the run's, bit for bit, loaded
without maskcl (torch.export's program, safetensors' weights); compact export; the one-line errors."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_config import assert_one_line_error, cli

from maskcl import RunConfig, run, set_task
from maskcl.core import to_plain
from maskcl.runs import RunFolder, load_run_and_scenario

METHODS = {
    "hat": {},
    "packnet": {},
    "wsn": {},
    "supsup": {},
    "hypermask": {"optimizer": "adam", "lr": 1e-3},
    "finetune": {},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    folders = {}
    for method, options in METHODS.items():
        folder = tmp_path_factory.mktemp("export") / method
        config = RunConfig(method=method, data=data, num_tasks=2, epochs=2, batch_size=32, hidden=(16, 16))
        run(RunConfig(**{**config.__dict__, **options}), log=lambda _: None, folder=RunFolder(folder))
        folders[method] = folder
    return folders


@pytest.mark.parametrize("method", list(METHODS))
def test_an_exported_task_computes_the_runs_outputs_bit_for_bit(runs, method, capsys):
    model, scenario = load_run_and_scenario(runs[method])
    x = scenario[0].test.x[:64]
    for task in (0, 1):
        code, out, err = cli(["export", str(runs[method]), "--task", str(task)], capsys)
        assert code == 0, err
        files = runs[method] / "export"
        assert f"task {task}: {files / f'task-{task}.pt2'}" in out
        set_task(model, task)
        expected = model(x)
        program = torch.export.load(files / f"task-{task}.pt2").module()
        assert torch.equal(program(x), expected)
        weights = load_file(files / f"task-{task}.safetensors")
        plain = to_plain(model, task)
        assert weights.keys() == plain.state_dict().keys()
        assert all(torch.equal(weights[k], v) for k, v in plain.state_dict().items())
        with safe_open(files / f"task-{task}.safetensors", "pt") as file:
            metadata = file.metadata()
        assert metadata["task"] == str(task) and metadata["kind"] == "plain" and metadata["arch"] == "mlp"
        assert json.loads(metadata["input_shape"]) == list(x.shape[1:])


def test_compact_export_of_a_hat_task_keeps_its_outputs(runs, tmp_path, capsys):
    out = tmp_path / "small"
    code, _, err = cli(["export", str(runs["hat"]), "--task", "0", "--compact", "--out", str(out)], capsys)
    assert code == 0, err
    model, scenario = load_run_and_scenario(runs["hat"])
    x = scenario[0].test.x[:64]
    set_task(model, 0)
    program = torch.export.load(tmp_path / "small.pt2").module()
    assert torch.allclose(program(x), model(x), atol=1e-5)
    dense = sum(p.numel() for p in to_plain(model, 0).parameters())
    assert sum(t.numel() for t in load_file(tmp_path / "small.safetensors").values()) < dense


@pytest.mark.parametrize(
    ("method", "args", "fragments"),
    [
        (
            "hat",
            ["--task", "1", "--after-task", "0"],
            ["task 1 was never trained in this model (learned: [0])"],
        ),
        ("hat", ["--task", "5"], ["task 5 out of range"]),
        ("packnet", ["--task", "0", "--compact"], ["cannot be compacted", "without --compact"]),
    ],
)
def test_bad_exports_are_one_line_and_write_nothing(runs, tmp_path, capsys, method, args, fragments):
    out = tmp_path / "nothing" / "task"
    code, _, err = cli(["export", str(runs[method]), *args, "--out", str(out)], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not out.parent.exists()


def test_export_of_a_folder_without_a_finished_task(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = cli(["export", str(tmp_path / "empty"), "--task", "0"], capsys)
    assert_one_line_error(code, err, "empty")
