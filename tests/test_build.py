"""Building a run's network: timm's networks with pretrained weights (a file the test writes; timm's own
where the Hub cannot be reached), built for the data's input."""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from test_cli import write_npz

from maskcl import RunConfig
from maskcl.build import build_model, load_scenario
from maskcl.cli import main


@pytest.fixture
def images(tmp_path):
    return str(write_npz(tmp_path / "images.npz", n=240, shape=(12, 12)))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No Hugging Face Hub and an empty cache: timm finds no weights of its own (huggingface_hub reads
    its environment when imported, so its settings are set where it keeps them)."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def _weights(tmp_path, name: str, **options) -> tuple[dict, str]:
    """A file of ``name``'s weights, the normalisation layers' statistics drawn at random too."""
    torch.manual_seed(1)
    state = timm.create_model(name, **options).state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var")):
            value.copy_(torch.rand_like(value) + 0.5)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state, str(path)


def _model(config: RunConfig):
    torch.manual_seed(0)
    return build_model(config, load_scenario(config), gates=False)


def test_a_file_of_weights_is_loaded_and_adapted_to_one_channel(tmp_path, images):
    state, path = _weights(tmp_path, "resnet18")  # 3 channels, 1000 classes
    config = RunConfig(arch="timm:resnet18", data=images, num_tasks=2, pretrained=path)
    model, fresh = _model(config), _model(RunConfig(arch="timm:resnet18", data=images, num_tasks=2))
    loaded = model.state_dict()
    assert torch.equal(loaded["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    for task in (0, 1):  # each task's BatchNorm starts from the pretrained one
        assert torch.equal(loaded["layer1.0.bn1.running_var"][task], state["layer1.0.bn1.running_var"])
    assert not torch.equal(fresh.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    # the data's one channel: timm sums the pretrained first layer over its three
    assert torch.allclose(loaded["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 2)


def test_a_network_of_fixed_input_size_is_built_for_the_data_and_its_weights_resized(tmp_path):
    data = str(write_npz(tmp_path / "colour.npz", n=120, shape=(3, 32, 32)))
    state, path = _weights(tmp_path, "vit_tiny_patch16_224")  # position embeddings of 14 x 14 patches
    config = RunConfig(arch="timm:vit_tiny_patch16_224", data=data, num_tasks=2, pretrained=path)
    model = _model(config)
    loaded = model.state_dict()
    assert loaded["pos_embed"].shape == (1, 1 + 2 * 2, 192) and state["pos_embed"].shape == (
        1,
        1 + 14 * 14,
        192,
    )
    assert torch.equal(loaded["blocks.11.mlp.fc2.weight"], state["blocks.11.mlp.fc2.weight"])
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    unloaded = _model(RunConfig(arch="timm:vit_tiny_patch16_224", data=data, num_tasks=2))
    assert unloaded(torch.randn(2, 3, 32, 32)).shape == (2, 2)  # built for 32x32 without weights too


def test_a_run_from_a_file_keeps_its_absolute_path(tmp_path, images, monkeypatch):
    _, path = _weights(tmp_path, "resnet18")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    args = ["run", "--data", images, "--arch", "timm:resnet18", "--pretrained", "resnet18.safetensors"]
    assert main([*args, "--num-tasks", "2", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["pretrained"] == path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--arch", "timm:resnet18", "--pretrained"],
            "cannot load pretrained weights for 'resnet18' (timm's, ",
        ),
        (["--arch", "mlp", "--pretrained"], "--pretrained loads timm's weights: it needs --arch timm:NAME"),
        (["--arch", "timm:resnet18", "--pretrained", "NOWHERE"], "--pretrained file not found: "),
        (
            ["--arch", "timm:resnet18", "--pretrained", "DAMAGED"],
            "cannot load pretrained weights for 'resnet18' (",
        ),
    ],
)
def test_weights_that_cannot_serve_are_one_line_and_nothing_is_written(
    tmp_path, images, capsys, offline, args, message
):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    args = [{"NOWHERE": str(tmp_path / "none.pth"), "DAMAGED": str(damaged)}.get(a, a) for a in args]
    out = tmp_path / "run"
    assert main(["run", "--data", images, *args, "--epochs", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskcl: error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()
