"""Task inference by lowest entropy: by hand on a model whose heads are set, and through a HAT model."""

import pytest
import torch

from maskcl import HAT, MaskclError, create_model
from maskcl.inference import infer_task
from maskcl.models import TaskModel


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


@pytest.mark.parametrize("max_rows", [8192, 3])
def test_lowest_entropy_task_and_its_class_by_hand(max_rows):
    model = HeadsOnly()
    x = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, -5.0], [0.0, 5.0], [0.0, 0.0]])
    tasks, classes = infer_task(model, x, max_rows=max_rows)
    # rows 0, 1: task 0 is certain, task 1 uniform over 3; rows 2, 3: the reverse; row 4: both uniform,
    # task 0's entropy log 2 is the lower one
    assert tasks.tolist() == [0, 0, 1, 1, 0]
    assert classes.tolist() == [0, 1, 1, 0, 0]
    assert model.task == 0  # the selected task is restored


def test_task_inference_on_a_hat_model_finds_tasks_with_distinct_inputs(train_hat):
    torch.manual_seed(0)
    model = create_model(
        "mlp", input_shape=(4,), classes_per_task=[2, 2], hidden=(32,), dropout=0, input_dropout=0
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    hat = HAT(model)
    centres = [torch.tensor([6.0, 0, 0, 0]), torch.tensor([0, 0, 6.0, 0])]

    def sample(task, n=64):
        y = torch.randint(0, 2, (n,))
        x = centres[task] + torch.randn(n, 4) * 0.3
        x[:, 2 * task + 1] += torch.where(y == 1, 2.0, -2.0)  # the class is in the next coordinate
        return x, y

    for task in range(2):
        train_hat(model, hat, optimizer, task, [sample(task) for _ in range(60)])
    for task in range(2):
        x, y = sample(task, 200)
        inferred, predicted = infer_task(model, x)
        assert (inferred == task).float().mean() > 0.8
        assert ((inferred == task) & (predicted == y)).float().mean() > 0.75


def test_task_inference_needs_a_learned_task():
    model = create_model("mlp", input_shape=(4,), classes_per_task=[2, 2], hidden=(8,))
    with pytest.raises(MaskclError, match="at least one learned task"):
        infer_task(model, torch.randn(3, 4))
