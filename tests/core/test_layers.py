import torch
import torch.nn.functional as F

from maskcl.core.context import TaskContext
from maskcl.core.layers import TaskBatchNorm, TaskHeads


def test_task_heads_use_only_their_rows():
    heads = TaskHeads(4, [2, 3], TaskContext(2))
    h = torch.randn(5, 4)
    heads.context.select(1)
    torch.testing.assert_close(heads(h), F.linear(h, heads.weight[2:], heads.bias[2:]))
    owned = heads.owned_entries([0])
    assert owned["weight"][:2].all() and not owned["weight"][2:].any()
    assert owned["bias"].tolist() == [True, True, False, False, False]


def test_task_batch_norm_keeps_statistics_per_task():
    norm = TaskBatchNorm(3, TaskContext(2), momentum=1.0)
    x0, x1 = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4) * 5 + 2
    norm.train()
    norm.context.select(0)
    norm(x0)
    norm.context.select(1)
    norm(x1)
    torch.testing.assert_close(norm.running_mean[0], x0.mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_mean[1], x1.mean((0, 2, 3)))
    norm.eval()
    ids = torch.tensor([0, 1] * 4)
    norm.context.select(ids)
    mixed = norm(x1)
    for t in (0, 1):
        norm.context.select(t)
        torch.testing.assert_close(mixed[ids == t], norm(x1)[ids == t])
    assert norm.owned_entries([1])["running_var"][1].all() and not norm.owned_entries([1])["weight"][0].any()


def test_task_batch_norm_trains_a_batch_that_mixes_tasks_as_one_batch_per_task():
    """Per-sample task ids in training mode: each task's samples are normalised with their own batch
    statistics and update only that task's running statistics, exactly as one batch per task would."""
    context = TaskContext(3)
    mixed, single = TaskBatchNorm(4, context), TaskBatchNorm(4, context)
    with torch.no_grad():
        for norm in (mixed, single):
            norm.weight.copy_(torch.arange(12.0).view(3, 4) / 10 + 1)
            norm.bias.copy_(torch.arange(12.0).view(3, 4) / 20)
    x = torch.randn(10, 4, 3, 3)
    task = torch.tensor([0, 2, 0, 2, 2, 0, 0, 2, 2, 0])
    context.select(task)
    out = mixed.train()(x)
    for t in (0, 2):
        context.select(t)
        torch.testing.assert_close(out[task == t], single.train()(x[task == t]))
    torch.testing.assert_close(mixed.running_mean, single.running_mean)
    torch.testing.assert_close(mixed.running_var, single.running_var)
    assert torch.equal(mixed.running_mean[1], torch.zeros(4))  # task 1 had no sample: untouched
    (out * torch.randn_like(out)).sum().backward()
    assert mixed.weight.grad[1].abs().sum() == 0 and mixed.weight.grad[[0, 2]].abs().min() > 0
