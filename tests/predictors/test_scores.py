"""Task predictors from the heads (entropy, calibrated max-logit and energy), and what every predictor
must do: find the task where the inputs tell it, not pretend to where they cannot, keep its state."""

import pytest
import torch
from conftest import blobs

from maskcl import HAT, MaskclError, create_model, create_predictor, list_predictors
from maskcl.data import TaskData
from maskcl.models import TaskModel
from maskcl.predictors import predictor_class

# the predictors that serve any model as trained: one-shot is SupSup's, ood-head changes training (their
# own tests)
ANY_MODEL = [n for n in list_predictors() if n != "one-shot" and not predictor_class(n).trains]


class HeadsOnly(TaskModel):
    """Features = the input; task 0 has 2 classes read from x[0], task 1 has 3 classes read from x[1]."""

    def __init__(self) -> None:
        super().__init__(input_shape=(2,), classes_per_task=[2, 3])
        self.build_heads(2)
        with torch.no_grad():
            self.heads.weight.copy_(torch.tensor([[10.0, 0], [-10, 0], [0, 10], [0, -10], [0, 0]]))
            self.heads.bias.zero_()
        self.learned[:] = True

    def forward_features(self, x):
        return x


def test_lowest_entropy_task_and_its_class_by_hand():
    model = HeadsOnly()
    x = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, -5.0], [0.0, 5.0], [0.0, 0.0]])
    tasks, classes = create_predictor("entropy").predict(model, x)
    # rows 0, 1: task 0 is certain, task 1 uniform over 3; rows 2, 3: the reverse; row 4: both uniform,
    # task 0's entropy log 2 is the lower one
    assert tasks.tolist() == [0, 0, 1, 1, 0]
    assert classes.tolist() == [0, 1, 1, 0, 0]
    assert model.task == 0  # the selected task is restored


@pytest.mark.parametrize("name", ["max-logit", "energy"])
def test_calibrated_scores_are_standardised_on_the_tasks_own_training_data(name):
    model = HeadsOnly()
    predictor = create_predictor(name)
    data = [TaskData(torch.randn(200, 2) * 3, torch.zeros(200, dtype=torch.long)) for _ in range(2)]
    for task in range(2):
        predictor.fit_task(model, task, data[task])
    from maskcl.predictors import task_outputs

    for task in range(2):
        outputs = task_outputs(model, data[task].x, [task])
        score = predictor.score(outputs, data[task].x)[0]
        assert abs(float(score.mean())) < 1e-4 and abs(float(score.std()) - 1) < 1e-4


def learn(train_hat, shared: bool):
    torch.manual_seed(0)
    model = create_model(
        "mlp", input_shape=(6,), classes_per_task=[2, 2, 2], hidden=(32,), dropout=0, input_dropout=0
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    hat = HAT(model)
    generator = torch.Generator().manual_seed(1)
    train = [blobs(t, 400, generator, shared=shared) for t in range(3)]
    for task in range(3):
        batches = [(train[task][0][i : i + 40], train[task][1][i : i + 40]) for i in range(0, 400, 40)] * 4
        train_hat(model, hat, optimizer, task, batches)
    test = [blobs(t, 300, generator, shared=shared) for t in range(3)]
    return model, [TaskData(*t) for t in train], test


@pytest.mark.parametrize("name", ANY_MODEL)
def test_every_predictor_finds_tasks_whose_inputs_differ(train_hat, name):
    model, train, test = learn(train_hat, shared=False)
    predictor = create_predictor(name)
    for task in range(3):
        predictor.fit_task(model, task, train[task])
    for task, (x, y) in enumerate(test):
        inferred, predicted = predictor.predict(model, x)
        assert (inferred == task).float().mean() > 0.9, (name, task)
        assert ((inferred == task) & (predicted == y)).float().mean() > 0.85, (name, task)


@pytest.mark.parametrize("name", ["gaussian", "energy"])
def test_a_predictor_does_not_find_tasks_whose_inputs_are_alike(train_hat, name):
    """Every task's inputs come from one distribution, so no predictor can know the task: each task is
    found for a share of its inputs near a third, not for all of them (a predictor that always picks one
    task would find that one's all and the others' none)."""
    model, train, test = learn(train_hat, shared=True)
    predictor = create_predictor(name)
    for task in range(3):
        predictor.fit_task(model, task, train[task])
    rates = [
        float((predictor.predict(model, x)[0] == task).float().mean()) for task, (x, _) in enumerate(test)
    ]
    assert all(rate < 0.75 for rate in rates), rates


@pytest.mark.parametrize("name", ANY_MODEL)
def test_a_fitted_state_loaded_into_a_new_predictor_predicts_the_same(train_hat, name):
    model, train, test = learn(train_hat, shared=False)
    predictor = create_predictor(name)
    for task in range(3):
        predictor.fit_task(model, task, train[task])
    again = create_predictor(name)
    again.load_state_dict({k: v.clone() for k, v in predictor.state_dict().items()})
    x = torch.cat([x for x, _ in test])
    for a, b in zip(predictor.predict(model, x), again.predict(model, x)):
        assert torch.equal(a, b)
    assert again.memory_bytes() == predictor.memory_bytes()


def test_task_inference_needs_a_learned_task():
    model = create_model("mlp", input_shape=(4,), classes_per_task=[2, 2], hidden=(8,))
    for name in ANY_MODEL:
        with pytest.raises(MaskclError, match="at least one learned task"):
            create_predictor(name).predict(model, torch.randn(3, 4))


def test_a_predictor_not_fitted_on_a_learned_task_says_which():
    model = HeadsOnly()
    with pytest.raises(MaskclError, match=r"has not been fitted on task\(s\) \[0, 1\]"):
        create_predictor("energy").predict(model, torch.randn(3, 2))


def test_an_unknown_predictor_names_the_known_ones():
    with pytest.raises(MaskclError, match="unknown task predictor 'oracle'; known: energy, entropy"):
        create_predictor("oracle")
