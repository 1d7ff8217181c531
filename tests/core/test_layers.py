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
