"""The ood-head predictor: a "not this task" output per task, trained on rotated copies of the task's own
inputs; it changes training, so its tests train with its batches."""

import pytest
import torch
import torch.nn.functional as F

from maskcl import HAT, MaskclError, create_model, create_predictor, set_task
from maskcl.core import owned_entries
from maskcl.data import TaskData
from maskcl.predictors import task_outputs
from maskcl.predictors.oodhead import OODHead, rotated


def test_each_input_is_turned_by_one_to_three_quarter_turns_in_turn():
    x = torch.arange(4.0).reshape(1, 1, 2, 2).repeat(4, 1, 1, 1)  # [[0, 1], [2, 3]]
    out = rotated(x)
    assert out[0, 0].tolist() == [[1, 3], [0, 2]]  # a quarter turn anticlockwise
    assert out[1, 0].tolist() == [[3, 2], [1, 0]]  # a half turn
    assert out[2, 0].tolist() == [[2, 0], [3, 1]]  # three quarters
    assert torch.equal(out[3], out[0])


def small_model(classes=(2, 3)):
    torch.manual_seed(0)
    model = create_model(
        "mlp", input_shape=(1, 8, 8), classes_per_task=list(classes), hidden=(64,), dropout=0, input_dropout=0
    )
    predictor = create_predictor("ood-head")
    predictor.check_model(model)
    predictor.prepare(model, (1, 8, 8))
    return model, predictor


def test_the_training_batch_adds_rotated_copies_labelled_not_this_task_after_the_classes():
    model, predictor = small_model()
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    set_task(model.train(), 1)
    x2, y2, ids = predictor.training_batch(model, x, y)
    assert ids is None and torch.equal(x2[:6], x) and torch.equal(x2[6:], rotated(x))
    assert y2.tolist() == [0, 1, 2, 0, 1, 2] + [3] * 6  # task 1 has 3 classes: column 3 is "not task 1"
    assert model(x2).shape == (12, 4)  # in training mode the heads give the reject column too
    assert model.eval()(x).shape == (6, 3)  # in evaluation mode the classes alone
    # one task id per sample (joint): the reject column follows the widest task's classes
    set_task(model.train(), torch.tensor([0, 1]))
    x2, y2, ids = predictor.training_batch(model, x[:2], torch.tensor([1, 2]), torch.tensor([0, 1]))
    assert y2.tolist() == [1, 2, 3, 3] and ids.tolist() == [0, 1, 0, 1]
    set_task(model, ids)
    out = model(x2)
    assert out.shape == (4, 4) and out[0, 2] == float("-inf") and torch.isfinite(out[:, 3]).all()


def bars(task: int, n: int, generator: torch.Generator, shared: bool = False):
    """8x8 images with one bright half-bar: task 0's are vertical in the top half, the class the half of
    the columns it is in; task 1's horizontal in the left half, the class the half of the rows, so that
    turned copies of one task's images look like the other task's or like neither. ``shared``: both tasks
    see the same kind of images (task 0's), each reading its class from its own pixel."""
    y = torch.randint(0, 2, (n,), generator=generator)
    where = torch.randint(0, 4, (n,), generator=generator) + 4 * y
    x = torch.rand(n, 1, 8, 8, generator=generator) * 0.3
    vertical = shared or task == 0
    for i in range(n):
        if vertical:
            x[i, 0, :4, where[i]] += 1.0
        else:
            x[i, 0, where[i], :4] += 1.0
    if shared:
        y = (x[:, 0, task, 0] > x[:, 0, 7 - task, 7]).long()
    return x, y


def learn(shared: bool, optimizer="adam"):
    model, predictor = small_model((2, 2))
    hat = HAT(model)
    opt = (
        torch.optim.Adam(model.parameters(), lr=1e-2)
        if optimizer == "adam"
        else torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    )
    generator = torch.Generator().manual_seed(1)
    train = [bars(t, 400, generator, shared) for t in range(2)]
    snapshots = []
    for task in range(2):
        batches = [(train[task][0][i : i + 40], train[task][1][i : i + 40]) for i in range(0, 400, 40)] * 8
        model.train()
        hat.start_task(task, opt, steps_per_epoch=len(batches))
        for x, y in batches:
            set_task(model, task)
            x, y, _ = predictor.training_batch(model, x, y)
            loss = F.cross_entropy(model(x), y) + hat.regularizer()
            opt.zero_grad()
            loss.backward()
            opt.step()
        hat.end_task()
        predictor.fit_task(model, task, TaskData(*train[task]))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    test = [bars(t, 300, generator, shared) for t in range(2)]
    return model, predictor, test, snapshots


def test_it_finds_the_task_when_shifted_copies_of_one_task_look_like_the_other():
    model, predictor, test, _ = learn(shared=False)
    for task, (x, y) in enumerate(test):
        inferred, predicted = predictor.predict(model, x)
        assert (inferred == task).float().mean() > 0.9, task
        assert ((inferred == task) & (predicted == y)).float().mean() > 0.85, task


def test_the_reject_output_tells_a_tasks_own_inputs_from_turned_copies_of_them():
    """What the rotated batches teach: each own test image's in-task log-odds is above its turned copy's
    (trained on the task's inputs alone, the reject output does this for about 0.83 of them)."""
    model, _, test, _ = learn(shared=False)
    for task, (x, _) in enumerate(test):
        own = OODHead._margins(task_outputs(model, x, [task], True))[0]
        turned = OODHead._margins(task_outputs(model, rotated(x), [task], True))[0]
        assert (own > turned).float().mean() > 0.95, task


def test_it_does_not_find_tasks_whose_inputs_are_alike():
    """Both tasks see the same images, so no predictor can know the task: each is found for a share of
    its inputs well under all of them (always choosing one task would find it for all)."""
    model, predictor, test, _ = learn(shared=True)
    rates = [
        float((predictor.predict(model, x)[0] == task).float().mean()) for task, (x, _) in enumerate(test)
    ]
    assert all(rate < 0.8 for rate in rates), rates


def test_the_reject_outputs_are_their_tasks_own_and_stay_bit_exact_under_adamw_with_weight_decay():
    model, _, _, snapshots = learn(shared=False, optimizer="adamw")
    owned = dict(
        (id(t), m)
        for t, m in owned_entries(model, [0])
        if t is model.heads.reject_weight or t is model.heads.reject_bias
    )
    assert owned[id(model.heads.reject_weight)][:, 0].tolist() == [True, False]
    assert owned[id(model.heads.reject_bias)].tolist() == [True, False]
    after_0, after_1 = snapshots
    for key in ("heads.reject_weight", "heads.reject_bias"):
        assert torch.equal(after_1[key][0], after_0[key][0])  # task 0's row, after task 1 trained
        assert not torch.equal(after_1[key][1], after_0[key][1])  # task 1's row learned


def test_inputs_that_cannot_be_rotated_are_one_line_errors():
    model = create_model("mlp", input_shape=(6,), classes_per_task=[2, 2], hidden=(8,))
    with pytest.raises(MaskclError, match=r"it needs square images, got inputs of shape \(6,\)"):
        create_predictor("ood-head").prepare(model, (6,))
    with pytest.raises(MaskclError, match="call prepare"):
        set_task(model, 0)
        create_predictor("ood-head").training_batch(model, torch.randn(2, 6), torch.tensor([0, 1]))
