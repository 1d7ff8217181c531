"""The shrunk class-conditional Gaussian predictor against its formula, computed here by hand."""

import pytest
import torch

from maskcl import MaskclError, create_predictor
from maskcl.data import TaskData
from maskcl.models import TaskModel


class Identity(TaskModel):
    """Features = the input (3 numbers); two tasks of 2 classes."""

    def __init__(self) -> None:
        super().__init__(input_shape=(3,), classes_per_task=[2, 2])
        self.build_heads(3)
        self.learned[:] = True

    def forward_features(self, x):
        return x


def shrunk_mahalanobis(x, data: TaskData, gamma: float, per_class: bool) -> torch.Tensor:
    """min_c (x - mu_c)^T Sigma_c'^-1 (x - mu_c), Sigma' = Sigma + gamma (V1 I + V2 (1 - I)), in float64;
    Sigma_c the class's covariance, or (not ``per_class``) the pooled within-class one."""
    v, y = data.x.double(), data.y
    means = torch.stack([v[y == c].mean(0) for c in (0, 1)])
    deviations = v - means[y]
    pooled = deviations.T @ deviations / (len(v) - 2)
    eye = torch.eye(3, dtype=torch.float64)
    d = []
    for c, m in enumerate(means):
        sigma = torch.cov(v[y == c].T) if per_class else pooled
        v1, v2 = sigma.diagonal().mean(), (sigma.sum() - sigma.diagonal().sum()) / 6
        precision = torch.linalg.inv(sigma + gamma * (v1 * eye + v2 * (1 - eye)))
        d.append(((x.double() - m) @ precision * (x.double() - m)).sum(1))
    return torch.stack(d, 1).min(1).values


@pytest.mark.parametrize("per_class", [True, False])
@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_the_distance_and_score_are_the_formula(gamma, per_class):
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.2, 0.0, 2.0]])
    datas = []
    for task in range(2):
        y = torch.randint(0, 2, (300,), generator=generator)
        x = torch.randn(300, 3, generator=generator) @ mixing + y.unsqueeze(1) * 2.0 + task * 3.0
        datas.append(TaskData(x, y))
    model = Identity()
    predictor = create_predictor(
        "gaussian", layers=("input",), per_class=("input",) if per_class else (), shrinkage=gamma
    )
    for task in range(2):
        predictor.fit_task(model, task, datas[task])
    x = torch.randn(50, 3, generator=generator) * 3
    by_hand = torch.stack([shrunk_mahalanobis(x, datas[t], gamma, per_class) for t in range(2)])
    got = torch.stack([predictor._distance(t, "input", x) for t in range(2)]).double()
    assert torch.allclose(got, by_hand, rtol=1e-4, atol=1e-4)
    # the input space is shared: one standardisation for both tasks, so the task is the nearest one
    inferred, _ = predictor.predict(model, x)
    assert torch.equal(inferred, by_hand.argmin(0))


def test_feature_distances_are_standardised_by_each_tasks_own_training_data():
    """score_t = -(d_t - m_t) / s_t: on task t's own training data the features' score has mean 0 and
    standard deviation 1, whatever the task's spread."""
    from maskcl.predictors import task_outputs

    generator = torch.Generator().manual_seed(0)
    model = Identity()
    spreads = (torch.tensor([1.0, 1.0, 1.0]), torch.tensor([5.0, 0.1, 1.0]))
    datas = [
        TaskData(torch.randn(400, 3, generator=generator) ** 3 * s, torch.arange(400) % 2) for s in spreads
    ]
    predictor = create_predictor("gaussian", layers=("features",))
    for task in range(2):
        predictor.fit_task(model, task, datas[task])
    for task in range(2):
        x = datas[task].x
        score = predictor.score(task_outputs(model, x, [task], features=True), x)[0]
        assert abs(float(score.mean())) < 1e-5 and abs(float(score.std(correction=0)) - 1) < 1e-5


@pytest.mark.parametrize(
    "options, message",
    [
        ({"layers": ("pixels",)}, "gaussian layers must be some of input, features"),
        ({"layers": ()}, "gaussian layers must be some of input, features"),
        ({"per_class": ("logits",)}, "gaussian per_class must be some of input, features"),
        ({"shrinkage": 0}, "gaussian shrinkage must be > 0, got 0"),
        ({"feature_weight": -1}, "gaussian feature_weight must be > 0, got -1"),
    ],
)
def test_bad_options_are_one_line(options, message):
    with pytest.raises(MaskclError, match=message):
        create_predictor("gaussian", **options)


def test_too_few_samples_to_fit_is_one_line():
    with pytest.raises(MaskclError, match="task 0 has 2 training samples for 2 classes: too few"):
        create_predictor("gaussian").fit_task(
            Identity(), 0, TaskData(torch.randn(2, 3), torch.tensor([0, 1]))
        )


@pytest.mark.parametrize("per_class", [("input",), ()])
def test_the_memory_checked_before_a_run_covers_the_statistics_kept(per_class):
    generator = torch.Generator().manual_seed(0)
    model = Identity()
    predictor = create_predictor("gaussian", per_class=per_class)
    needed = predictor.memory_needed(model, (3,), [2, 2])
    for task in range(2):
        y = torch.randint(0, 2, (100,), generator=generator)
        predictor.fit_task(
            model, task, TaskData(torch.randn(100, 3, generator=generator) + y.unsqueeze(1), y)
        )
    kept = predictor.memory_bytes()
    # besides the statistics kept, one task's fitting: 2 classes' and 3 more double 3 x 3 matrices a space
    assert kept <= needed <= kept + 2 * 8 * (2 + 3) * 3 * 3
    if not per_class:  # one input covariance a task instead of one a class: less is needed
        assert needed < create_predictor("gaussian").memory_needed(model, (3,), [2, 2])
