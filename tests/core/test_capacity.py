"""Capacity tools: used, free and shared units by hand; forgetting a task frees exactly its own units."""

import pytest
import torch

from maskcl import HAT, MaskclError, create_model, set_task
from maskcl.core.capacity import capacity, forget


def model_with_masks():
    """Layer 0 (4 units): task 0 uses 0, 1; task 1 uses 1, 2. Layer 1 (3 units): both use unit 0."""
    model = create_model("mlp", input_shape=(2,), classes_per_task=[2, 2, 2], hidden=(4, 3))
    g0, g1 = model.gates
    with torch.no_grad():
        g0.embedding[0] = torch.tensor([1.0, 1.0, -1.0, -1.0])
        g0.embedding[1] = torch.tensor([-1.0, 1.0, 1.0, -1.0])
        g1.embedding[:2] = torch.tensor([1.0, -1.0, -1.0])
    model.learned[:2] = True
    return model


def test_capacity_by_hand():
    summary = capacity(model_with_masks())
    assert summary.tasks == [0, 1]
    first, second = summary.layers
    assert (first.name, first.units, first.used, first.free, first.shared) == (
        "gates.0",
        4,
        {0: 0.5, 1: 0.5},
        0.25,
        0.25,
    )
    assert second.used == {0: pytest.approx(1 / 3), 1: pytest.approx(1 / 3)}
    assert second.free == pytest.approx(2 / 3) and second.shared == pytest.approx(1 / 3)
    table = str(summary).splitlines()
    assert table[0].split() == ["layer", "units", "task", "0", "task", "1", "free", "shared"]
    assert table[1].split() == ["gates.0", "4", "0.500", "0.500", "0.250", "0.250"]


def test_capacity_plot_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "capacity.png"
    capacity(model_with_masks()).plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forget_frees_only_the_forgotten_tasks_units():
    model = model_with_masks()
    forget(model, 1)
    assert model.learned_tasks() == [0]
    summary = capacity(model)
    assert summary.layers[0].free == 0.5 and summary.layers[0].shared == 0.0  # units 2, 3 free again
    with pytest.raises(MaskclError, match="task 1 is not learned"):
        forget(model, 1)


def test_other_tasks_stay_bit_identical_when_a_forgotten_task_is_relearned(train_hat):
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(6,), classes_per_task=[2, 2, 2], hidden=(16, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    hat = HAT(model)
    fixed = torch.randn(8, 6)

    def learn(task):
        train_hat(
            model, hat, optimizer, task, [(torch.randn(16, 6), torch.randint(0, 2, (16,))) for _ in range(10)]
        )

    for task in range(3):
        learn(task)
    outputs = {t: set_task(model.eval(), t)(fixed).detach().clone() for t in range(3)}
    free_before = capacity(model).layers[0].free
    forget(model, 1)
    assert capacity(model).layers[0].free >= free_before
    learn(1)
    for t in (0, 2):
        assert torch.equal(set_task(model.eval(), t)(fixed), outputs[t])
    assert not torch.equal(set_task(model, 1)(fixed), outputs[1])
