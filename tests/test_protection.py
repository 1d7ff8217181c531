import pytest
import torch

from maskcl.protection import Protector


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
        lambda p: torch.optim.Adam(p, lr=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.5),
        lambda p: torch.optim.RMSprop(p, lr=0.1, momentum=0.5),
    ],
    ids=["sgd-momentum-wd", "adam", "adamw", "rmsprop"],
)
def test_frozen_entries_never_move_and_free_ones_do(make_optimizer):
    weight = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = make_optimizer([weight])
    # build up optimizer state first, as an earlier task would
    for _ in range(3):
        weight.sum().backward()
        optimizer.step()
    mask = torch.tensor([[True], [False], [True], [False]]).expand(4, 3)
    before = weight.detach().clone()
    protector = Protector([(weight, mask)])
    assert protector.num_frozen == 6
    hook = optimizer.register_step_post_hook(lambda *_: protector.restore())
    for _ in range(5):
        optimizer.zero_grad()
        (weight**2).sum().backward()
        optimizer.step()
        assert torch.equal(weight[mask], before[mask])
    assert not torch.equal(weight[1], before[1])
    hook.remove()
    optimizer.step()
    assert not torch.equal(weight[mask], before[mask])  # the hook is gone


def test_restore_is_exact_for_zeros_negatives_and_tiny_values():
    values = torch.tensor([0.0, -0.0, -3.5, 1e-40, 3.4e38, -1e-30])
    p = torch.nn.Parameter(values.clone())
    protector = Protector([(p, torch.ones(6, dtype=torch.bool))])
    with torch.no_grad():
        p.mul_(-0.25).add_(1.0)  # any finite change
    protector.restore()
    assert torch.equal(p.detach(), values)


def test_entries_with_nothing_frozen_are_ignored():
    p = torch.nn.Parameter(torch.zeros(3))
    assert Protector([(p, torch.zeros(3, dtype=torch.bool))]).tensors == []
