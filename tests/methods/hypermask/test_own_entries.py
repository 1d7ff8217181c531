"""HyperMask keeps what each learned task owns bit-for-bit (its head rows, its per-task BatchNorm rows, its
task embedding) under optimizers that move zero-gradient entries (AdamW and SGD with momentum, both with
weight decay), and nothing more: the shared target weights and the hypernetwork keep training, and they
are the only way a learned task's outputs can move."""

import pytest
import torch
import torch.nn.functional as F

from maskcl import create_model, set_task
from maskcl.core.layers import TaskBatchNorm, TaskHeads
from maskcl.methods.hypermask import HyperMask

OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.1),
}
X = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1] * 4)


def batch_norm_method(**options) -> HyperMask:
    torch.manual_seed(0)
    target = create_model(
        "alexnet", input_shape=(3, 16, 16), classes_per_task=[2, 2], channels=(4, 4, 4), hidden=(8, 8),
        gates=False, batch_norm=True,
    )  # fmt: skip
    return HyperMask(target, **options)


def learn(hm: HyperMask, optimizer: torch.optim.Optimizer, task: int, steps: int = 6) -> None:
    hm.model.train()
    hm.start_task(task, optimizer)
    for _ in range(steps):
        loss = F.cross_entropy(set_task(hm.model, task)(X), Y) + hm.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hm.end_task()


def owned(hm: HyperMask, task: int) -> dict[str, torch.Tensor]:
    """Copies of what ``task`` owns: its head's weight and bias rows, its rows of every per-task BatchNorm
    (affine and running statistics) and its task embedding."""
    net = hm.model
    heads = next(m for m in net.modules() if isinstance(m, TaskHeads))
    rows = slice(heads.offsets[task], heads.offsets[task + 1])
    entries = {"heads.weight": heads.weight[rows], "heads.bias": heads.bias[rows]}
    norms = [(n, m) for n, m in net.named_modules() if isinstance(m, TaskBatchNorm)]
    for name, norm in norms:
        for key in ("weight", "bias", "running_mean", "running_var"):
            entries[f"{name}.{key}"] = getattr(norm, key)[task]
    entries["task_embedding"] = net.hypernetwork.task_embeddings[task]
    assert len(norms) == 3  # the three conv blocks
    return {k: v.detach().clone() for k, v in entries.items()}


def shared(hm: HyperMask) -> dict[str, torch.Tensor]:
    """Copies of the target's parameters that no task owns (conv and linear weights and biases)."""
    own = {
        id(p) for m in hm.model.modules() if isinstance(m, TaskHeads | TaskBatchNorm) for p in m.parameters()
    }
    return {n: p.detach().clone() for n, p in hm.model.target.named_parameters() if id(p) not in own}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_learned_tasks_own_entries_are_kept_bit_for_bit_and_nothing_else_is_frozen(optimizer):
    hm = batch_norm_method(beta=0.01, lam=0.001)
    net = hm.model
    opt = OPTIMIZERS[optimizer](net.parameters())
    learn(hm, opt, 0)
    task0, task1, weights = owned(hm, 0), owned(hm, 1), shared(hm)
    hyper = {n: p.detach().clone() for n, p in net.hypernetwork.named_parameters()}
    before = set_task(net.eval(), 0)(X)
    learn(hm, opt, 1)
    after = owned(hm, 0)
    kept = [name for name in task0 if torch.equal(task0[name], after[name])]
    assert kept == list(task0)  # every entry task 0 owns, to the bit
    moved = owned(hm, 1)  # not overreaching: task 1's own entries trained ...
    assert [n for n in task1 if torch.equal(task1[n], moved[n])] == []
    now = dict(net.target.named_parameters())
    assert [n for n in weights if torch.equal(weights[n], now[n])] == []  # ... every shared weight moved ...
    hyper_now = dict(net.hypernetwork.named_parameters())
    assert [n for n in hyper if n != "task_embeddings" and torch.equal(hyper[n], hyper_now[n])] == []
    drifted = set_task(net.eval(), 0)(X)
    assert not torch.equal(drifted, before)  # ... so task 0's outputs move (HyperMask is not exact) ...
    with torch.no_grad():
        for name, value in weights.items():
            now[name].copy_(value)
    assert torch.equal(set_task(net, 0)(X), before)  # ... but through the shared weights alone


def test_protected_names_exactly_the_learned_tasks_rows():
    hm = batch_norm_method()
    net = hm.model
    assert hm.protected([]) == []
    pairs = hm.protected([0])
    frozen = {id(t): m.expand_as(t) for t, m in pairs}
    tensors = {id(t): n for n, t in [*net.named_parameters(), *net.named_buffers()]}
    names = sorted(tensors[i] for i in frozen if frozen[i].any())
    norm_keys = ("bias", "running_mean", "running_var", "weight")
    expected = ["hypernetwork.task_embeddings", "target.heads.bias", "target.heads.weight"]
    expected += [f"target.norms.{i}.{k}" for i in range(3) for k in norm_keys]
    assert names == sorted(expected)
    for t, m in pairs:
        m = m.expand_as(t)
        if t.dim() == 1:  # a head's bias: task 0's two classes
            assert m.tolist() == [True, True, False, False]
        else:  # one row per task (BatchNorm, embeddings) or per class (head weight)
            rows = m.all(dim=1).tolist()
            assert rows == [True, False] or rows == [True, True, False, False]
            assert not m[~m.all(dim=1)].any()
    assert set_task(net.train(), 0)(X).shape == (8, 2)
