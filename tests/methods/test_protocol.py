"""The method protocol: the registry, a user's own method as a plug-in (Python, ``maskcl run``, ``--resume``,
``maskcl eval``), option errors, and exact protection of every exact method on every network family."""

import json
import subprocess
import textwrap

import pytest
import torch
import torch.nn.functional as F

from maskcl import (
    MaskclError,
    Method,
    MethodConfig,
    convert,
    create_method,
    list_methods,
    register_method,
    set_task,
)
from maskcl.cli import main
from maskcl.methods import method_class

PLUGIN = '''
"""A method that lives only in this test: finetune plus an L2 pull towards the weights of task start."""
from dataclasses import dataclass, field

import torch

from maskcl import MaskclError, Method, MethodConfig, register_method


@dataclass(frozen=True)
class PullConfig(MethodConfig):
    strength: float = field(default=0.5, metadata={"help": "weight of the L2 pull"})

    def validate(self) -> None:
        super().validate()
        if self.strength < 0:
            raise MaskclError(f"strength must be >= 0, got {self.strength}")


@register_method("pull")
class Pull(Method):
    config_class = PullConfig

    def start_task(self, task, optimizer, steps_per_epoch=1):
        super().start_task(task, optimizer, steps_per_epoch)
        self.anchor = [p.detach().clone() for p in self.model.parameters()]

    def regularizer(self):
        moved = sum((p - a).pow(2).sum() for p, a in zip(self.model.parameters(), self.anchor))
        return self.config.strength * moved

    def summary(self):
        return {"pull": {"strength": self.config.strength}}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The module ``pull_plugin`` (a method ``pull`` with option ``strength``) on the import path of this
    process and of the processes it starts."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "pull_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    return folder


def test_built_in_methods_are_registered_with_their_config_classes():
    names = list_methods()
    assert {"hat", "adahat", "hypermask", "packnet", "wsn", "finetune", "joint"} <= set(names)
    for name in names:
        cls = method_class(name)
        assert cls.name == name and issubclass(cls.config_class, MethodConfig)
    assert method_class("hat").exact and method_class("packnet").exact and method_class("wsn").exact
    assert not method_class("adahat").exact and not method_class("finetune").exact


def test_registry_errors_are_one_line():
    with pytest.raises(MaskclError, match=r"unknown method 'nope'; known: adahat, .*finetune, hat"):
        create_method("nope", torch.nn.Linear(2, 2))
    with pytest.raises(MaskclError, match="decorates a Method subclass"):
        register_method("bad")(object)
    with pytest.raises(MaskclError, match="a method called 'hat' is registered already"):

        @register_method("hat")
        class Other(Method):
            pass


def test_unknown_and_other_methods_options_are_one_line_errors(data, capsys):
    from maskcl.models import create_model

    model = create_model("mlp", input_shape=(4,), classes_per_task=[2, 2], hidden=(8,))
    with pytest.raises(MaskclError, match=r"method hat has no option 'bogus' \(its options: s_max, c"):
        create_method("hat", model, bogus=1)
    with pytest.raises(MaskclError, match=r"method finetune has no option .c. .it takes no options."):
        create_method("finetune", model, c=1)
    code = main(["run", "--data", data, "--method", "hat", "--sparsity", "30"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--sparsity is an option of hypermask, not of method hat" in err


def test_a_config_file_with_another_methods_option_is_refused(tmp_path, data, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"method": "packnet", "data": data, "density": 0.3}))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'density' is an option of supsup, wsn, not of method packnet" in err
    assert not (tmp_path / "o").exists()


def test_a_run_saves_only_its_own_methods_options(tmp_path, data):
    from conftest import SMALL_RUN

    out = tmp_path / "run"
    assert (
        main(["run", "--data", data, *SMALL_RUN, "--method", "wsn", "--density", "0.3", "--out", str(out)])
        == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"] == "wsn" and saved["density"] == 0.3
    assert not {"s_max", "sparsity", "prune", "alpha"} & set(saved)
    assert "capacity" in json.loads((out / "results.json").read_text())


def test_a_users_method_from_its_own_module_runs_everywhere(plugin, tmp_path, data):
    """Python (create_method), ``maskcl run --plugins ... --method pull`` with its own flag and --help,
    ``--resume`` of the stopped run in a fresh process, and ``maskcl eval``."""
    import pull_plugin  # noqa: F401  (registers "pull" in this process)
    from conftest import SMALL_RUN, maskcl_command

    from maskcl.models import create_model

    method = create_method("pull", create_model("mlp", input_shape=(4,), classes_per_task=[2], hidden=(8,)))
    assert method.config.strength == 0.5
    with pytest.raises(MaskclError, match="strength must be >= 0"):
        create_method("pull", method.model, strength=-1)

    help_text = subprocess.run(
        maskcl_command("run", "--plugins", "pull_plugin", "--method", "pull", "--help"),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "--strength" in help_text and "weight of the L2 pull" in help_text

    out = tmp_path / "run"
    args = ["run", "--plugins", "pull_plugin", "--method", "pull", "--strength", "0.2", "--data", data]
    done = subprocess.run(
        maskcl_command(*args, *SMALL_RUN, "--out", str(out), "--quiet"), capture_output=True
    )
    assert done.returncode == 0, done.stderr
    saved = json.loads((out / "config.json").read_text())
    assert saved["plugins"] == ["pull_plugin"] and saved["strength"] == 0.2
    results = json.loads((out / "results.json").read_text())
    assert results["pull"] == {"strength": 0.2}

    (out / "results.json").unlink()  # as if stopped after its last checkpoint
    again = subprocess.run(maskcl_command("run", "--resume", str(out), "--quiet"), capture_output=True)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "results.json").read_text())["acc_matrix"] == results["acc_matrix"]
    evaluated = subprocess.run(maskcl_command("eval", str(out)), capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"task 1: test acc {results['acc_matrix'][1][1]:.4f}" in evaluated.stdout


def test_a_plugin_that_cannot_be_imported_is_one_line(tmp_path, data, capsys):
    code = main(["run", "--plugins", "no_such_module_here", "--method", "pull", "--data", data])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "cannot import plug-in module 'no_such_module_here'" in err


# ------------------------------------------------------------------------------ exact protection
EXACT = sorted(name for name in list_methods() if method_class(name).exact)
FAST_OPTIONS = {"packnet": {"retrain_epochs": 1}}


def _learn(method, optimizer, task, x, y, epochs=2, steps=2):
    method.start_task(task, optimizer, steps_per_epoch=steps)
    for epoch in range(epochs):
        method.model.train()
        for _ in range(steps):
            loss = F.cross_entropy(set_task(method.model, task)(x), y) + method.regularizer()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        method.end_epoch(epoch + 1, epochs)
    method.end_task()


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize(
    "family",
    [
        "mlp",
        "paper_alexnet",
        "residual_cnn",
        "timm_convnext_atto",
        "timm_efficientnet_b0",
        "timm_mobilenetv3_small_100",
        "timm_resnet18",
        "timm_vit_tiny",
        "torchvision_resnet18",
    ],
)
def test_every_exact_method_keeps_learned_tasks_bit_for_bit_on_every_family(name, family):
    """Each method that promises exactness (``exact``), on each network family HAT's tests cover, under
    AdamW with strong weight decay: task 0's outputs are torch.equal after task 1, and task 1 trained."""
    pytest.importorskip("timm")
    from families import FAMILIES

    torch.manual_seed(0)
    cls = method_class(name)
    model = convert(FAMILIES[family](), classes_per_task=[2, 2], gates=cls.gates)
    method = create_method(name, model, **FAST_OPTIONS.get(name, {}))
    optimizer = torch.optim.AdamW(method.model.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = [torch.tensor([0, 1, 1, 0]), torch.tensor([1, 0, 0, 1])]
    _learn(method, optimizer, 0, x, labels[0])
    before = set_task(method.model.eval(), 0)(x).detach().clone()
    weights = [p.detach().clone() for p in method.model.parameters()]
    _learn(method, optimizer, 1, x, labels[1])
    assert torch.equal(set_task(method.model.eval(), 0)(x), before)
    changed = sum(int((p != q).sum()) for p, q in zip(method.model.parameters(), weights))
    assert changed > 0, "task 1 trained nothing: the test would prove nothing"
