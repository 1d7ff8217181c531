"""Every registered model, through the registry: the uniform API holds for each."""

import pytest
import torch

from maskcl.core.gate import TaskGate
from maskcl.errors import MaskclError
from maskcl.methods.hat import HAT
from maskcl.models import create_model, list_models

SMALL = {
    "mlp": {"hidden": (16, 12)},
    "alexnet": {"channels": (4, 6, 8), "hidden": (16, 12)},
    "resnet20": {"width": 4},
}
SHAPE = (3, 16, 16)


def build(name, **kw):
    return create_model(name, input_shape=SHAPE, classes_per_task=[2, 3, 4], **SMALL[name], **kw)


def test_every_registered_model_has_small_test_sizes():
    assert set(list_models()) == set(SMALL)


@pytest.mark.parametrize("name", list_models())
def test_output_has_the_selected_tasks_classes(name):
    model = build(name).eval()
    x = torch.randn(5, *SHAPE)
    for task, k in enumerate([2, 3, 4]):
        assert model.set_task(task)(x).shape == (5, k)


@pytest.mark.parametrize("name", list_models())
def test_per_sample_task_ids_equal_single_task_outputs(name):
    model = build(name).eval()
    x = torch.randn(6, *SHAPE)
    ids = torch.tensor([0, 1, 2, 2, 1, 0])
    with torch.no_grad():
        mixed = model.set_task(ids)(x)
        assert mixed.shape == (6, 4)
        for i, t in enumerate(ids.tolist()):
            k = [2, 3, 4][t]
            single = model.set_task(t)(x[i : i + 1])[0]
            torch.testing.assert_close(mixed[i, :k], single)
            assert torch.isinf(mixed[i, k:]).all()


@pytest.mark.parametrize("name", list_models())
def test_hat_false_is_the_same_network_without_gates(name):
    gated, plain = build(name), build(name, gates=False)
    assert any(isinstance(m, TaskGate) for m in gated.modules())
    assert not any(isinstance(m, TaskGate) for m in plain.modules())
    assert plain.gate_links() == []
    gate_params = sum(g.embedding.numel() for g in gated.task_gates())
    assert (
        sum(p.numel() for p in gated.parameters()) == sum(p.numel() for p in plain.parameters()) + gate_params
    )


@pytest.mark.parametrize("name", list_models())
def test_gate_links_cover_every_shared_parameter(name):
    """HAT knows, for every weight, which entries a task uses: nothing is frozen whole by default."""
    model = build(name)
    known = {id(p) for link in model.gate_links() for p in link.module.parameters(recurse=False)}
    known |= {
        id(p) for m in model.modules() if hasattr(m, "owned_entries") for p in m.parameters(recurse=False)
    }
    assert {id(p) for p in model.parameters()} == known


@pytest.mark.parametrize("name", list_models())
def test_wrong_input_shape_is_a_one_line_error(name):
    model = build(name)
    with pytest.raises(MaskclError, match=r"does not fit the model, which takes \[batch, 3, 16, 16\]"):
        model(torch.randn(2, 1, 16, 16))


def test_unknown_model_names_the_known_ones():
    with pytest.raises(MaskclError, match="known models: alexnet, mlp"):
        create_model("resnet", input_shape=SHAPE, classes_per_task=[2])


def test_alexnet_refuses_images_too_small_and_feature_vectors():
    with pytest.raises(MaskclError, match="too small"):
        create_model("alexnet", input_shape=(1, 6, 6), classes_per_task=[2])
    with pytest.raises(MaskclError, match="takes images"):
        create_model("alexnet", input_shape=(20,), classes_per_task=[2])


def test_alexnet_has_the_paper_kernel_sizes_for_28x28():
    model = create_model("alexnet", input_shape=(1, 28, 28), classes_per_task=[2])
    assert [c.kernel_size[0] for c in model.convs] == [3, 2, 2]
    assert model.fcs[0].in_features == 256 * 2 * 2


@pytest.mark.parametrize("name", list_models())
def test_learned_task_stays_bit_identical_under_adamw(name, train_hat):
    model = build(name, **({"dropout": (0.0, 0.0)} if name == "alexnet" else {}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    hat = HAT(model)
    x = torch.randn(8, *SHAPE)
    batches = [[(x, torch.randint(0, k, (8,))) for _ in range(3)] for k in (2, 3)]
    train_hat(model, hat, optimizer, 0, batches[0])
    before = model.eval().set_task(0)(x).detach().clone()
    train_hat(model, hat, optimizer, 1, batches[1])
    assert torch.equal(model.eval().set_task(0)(x), before)
