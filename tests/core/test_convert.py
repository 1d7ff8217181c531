"""Conversion of real architectures: each family trains a later task, earlier outputs stay bit-identical."""

import copy
import pickle

import pytest
import torch
from torch import nn

from maskcl import HAT, MaskclError, set_task
from maskcl.core import TaskGate, convert, load_plain_weights, to_plain
from maskcl.core.context import task_state
from maskcl.core.layers import TaskBatchNorm, TaskHeads

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from families import FAMILIES, ResidualCNN  # noqa: E402  (needs timm and torchvision)


def random_labels(x, task, steps=2):
    """``steps`` batches of ``x`` with fixed random binary labels (different per task and step)."""
    return [
        (x, torch.randint(0, 2, (x.shape[0],), generator=torch.Generator().manual_seed(10 * task + step)))
        for step in range(steps)
    ]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_converted_family_protects_learned_tasks_bit_for_bit(family, train_hat):
    torch.manual_seed(0)
    original = FAMILIES[family]()
    model = convert(original, classes_per_task=[2, 2])
    assert model is original  # converted in place: the class and its methods stay
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    hat = HAT(model)

    train_hat(model, hat, optimizer, 0, random_labels(x, 0))
    before = set_task(model.eval(), 0)(x).detach().clone()
    params_before = [p.detach().clone() for p in model.parameters()]
    train_hat(model, hat, optimizer, 1, random_labels(x, 1))
    assert torch.equal(set_task(model.eval(), 0)(x), before)
    changed = sum(int((p != q).sum()) for p, q in zip(model.parameters(), params_before))
    assert changed > 0, "task 1 did not train anything: the test would prove nothing"


def test_conversion_gates_after_batch_norm_and_replaces_head():
    model = convert(timm.create_model("resnet18", num_classes=10), classes_per_task=[3, 2])
    assert isinstance(model.fc, TaskHeads)
    assert isinstance(model.bn1, TaskBatchNorm) and isinstance(model.bn1.hat_gate, TaskGate)
    assert not hasattr(model.conv1, "hat_gate")  # the gate sits after the norm that follows the conv
    assert isinstance(model.layer2[0].downsample[1].hat_gate, TaskGate)  # conv -> bn inside a Sequential
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape[1] == 512  # timm's own methods work
    assert set_task(model, 0)(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert set_task(model, 1)(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    gates = [m for m in model.modules() if isinstance(m, TaskGate)]
    assert len(gates) == len(task_state(model).links) == 20  # one per conv; none on the heads


def test_per_sample_task_ids_match_single_task_outputs():
    torch.manual_seed(0)
    model = convert(ResidualCNN(), classes_per_task=[2, 3]).eval()
    x = torch.randn(4, 3, 8, 8)
    ids = torch.tensor([1, 0, 0, 1])
    mixed = set_task(model, ids)(x)
    for i, t in enumerate(ids.tolist()):
        single = set_task(model, t)(x[i : i + 1])[0]
        torch.testing.assert_close(mixed[i, : single.shape[0]], single)


def test_to_plain_gives_the_task_outputs_without_maskcl_modules(train_hat):
    torch.manual_seed(0)
    model = convert(timm.create_model("efficientnet_b0", num_classes=10), classes_per_task=[2, 2])
    x = torch.randn(3, 3, 32, 32)
    hat = HAT(model)
    train_hat(model, hat, torch.optim.SGD(model.parameters(), lr=0.1), 0, random_labels(x, 0))
    plain = to_plain(model, 0)
    assert type(plain) is type(model)
    leftovers = [
        type(m).__name__ for m in plain.modules() if isinstance(m, TaskGate | TaskHeads | TaskBatchNorm)
    ]
    assert leftovers == []
    assert torch.equal(plain(x), set_task(model.eval(), 0)(x))
    with pytest.raises(MaskclError, match="task 1 is not learned"):
        to_plain(model, 1)


def test_plain_pretrained_weights_load_into_the_converted_model():
    torch.manual_seed(0)
    pretrained = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        pretrained.bn1.running_mean.uniform_()
    model = convert(torchvision.models.resnet18(num_classes=10), classes_per_task=[2, 2, 2])
    skipped = load_plain_weights(model, pretrained.state_dict())
    assert {"fc.weight", "fc.bias"} <= set(skipped)
    assert torch.equal(model.conv1.weight, pretrained.conv1.weight)
    for task in range(3):
        assert torch.equal(model.bn1.running_mean[task], pretrained.bn1.running_mean)
    with pytest.raises(MaskclError, match="has shape"):
        load_plain_weights(model, {"conv1.weight": torch.zeros(1)})
    with pytest.raises(MaskclError, match="no entry 'nope'"):
        load_plain_weights(model, {"nope": torch.zeros(1)})


def test_converted_model_copies_and_pickles_before_its_first_forward():
    model = convert(ResidualCNN(), classes_per_task=[2, 2])
    clone = copy.deepcopy(model)
    restored = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 3, 8, 8)
    for m in (clone, restored, model):
        assert set_task(m.eval(), 1)(x).shape == (2, 2)
    assert torch.equal(set_task(clone, 1)(x), set_task(model, 1)(x))


def test_converted_model_compiles():
    model = convert(ResidualCNN(), classes_per_task=[2, 2]).eval()
    x = torch.randn(2, 3, 8, 8)
    set_task(model, 1)
    expected = model(x)  # the first call checks the conversion and removes its checking hooks
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), expected)


class MisorderedNorm(nn.Module):
    """The BatchNorm registered right after ``conv`` normalises something else."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.other = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc((self.conv(x) + self.bn(self.other(x))).mean((2, 3)))


class UnusedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused, self.fc = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.used(x))


def test_conversion_errors_name_the_module():
    with pytest.raises(MaskclError, match="already task-aware"):
        convert(convert(ResidualCNN(), [2]), [2])
    with pytest.raises(MaskclError, match=r"'stem' must be an nn\.Linear"):
        convert(ResidualCNN(), [2], head="stem")
    with pytest.raises(MaskclError, match="skip names 'nope'"):
        convert(ResidualCNN(), [2], skip=["nope"])
    model = ResidualCNN()
    model.bn = nn.SyncBatchNorm(8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MaskclError, match=r"bn \(SyncBatchNorm\)"):
        convert(model, [2])
    assert isinstance(model.fc, nn.Linear) and not hasattr(model.stem, "hat_gate")  # left as it was
    assert model.state_dict().keys() == before.keys()
    with pytest.raises(MaskclError, match="bn does not normalise the output of conv"):
        convert(MisorderedNorm(), [2])(torch.randn(2, 3, 4, 4))
    with pytest.raises(MaskclError, match="unused was not called"):
        convert(UnusedLayer(), [2])(torch.randn(2, 4))
    model = convert(UnusedLayer(), [2], skip=["unused"])
    assert model(torch.randn(2, 4)).shape == (2, 2)


def test_skipped_and_unknown_parameters_are_frozen_whole(train_hat):
    torch.manual_seed(0)
    # conv ungated and bn left a plain BatchNorm: their weights and running statistics freeze whole
    model = convert(MisorderedNorm(), [2, 2], skip=["conv", "bn"])
    assert type(model.bn) is nn.BatchNorm2d
    x = torch.randn(4, 3, 4, 4)
    hat = HAT(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    train_hat(model, hat, optimizer, 0, random_labels(x, 0))
    frozen = [t.detach().clone() for t in (model.conv.weight, model.bn.running_mean, model.bn.weight)]
    before = set_task(model.eval(), 0)(x).detach().clone()
    train_hat(model, hat, optimizer, 1, random_labels(x, 1))
    for tensor, value in zip((model.conv.weight, model.bn.running_mean, model.bn.weight), frozen):
        assert torch.equal(tensor, value)
    assert torch.equal(set_task(model.eval(), 0)(x), before)
