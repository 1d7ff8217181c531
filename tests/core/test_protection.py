import pytest
import torch

from maskcl.core.protection import Protector


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


def test_restore_is_bit_exact_whatever_the_optimizer_wrote():
    values = torch.tensor([0.0, -0.0, -3.5, 1e-40, 3.4e38, -1e-30, 7.0])
    p = torch.nn.Parameter(values.clone())
    frozen = torch.tensor([True] * 6 + [False])
    protector = Protector([(p, frozen)])
    with torch.no_grad():
        p.copy_(torch.tensor([float("nan"), 0.0, float("inf"), -1.0, float("-inf"), 2.0, 8.0]))
    protector.restore()
    assert torch.equal(p.detach().view(torch.int32)[:6], values.view(torch.int32)[:6])  # same bits, -0.0 too
    assert p[6].item() == 8.0  # the free entry keeps what the optimizer wrote


def test_other_dtypes_and_buffers():
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        buffer = torch.randn(3, 4).to(dtype)
        before = buffer.clone()
        protector = Protector([(buffer, torch.tensor([True, False, True]).unsqueeze(1))])
        buffer.add_(1)
        protector.restore()
        assert torch.equal(buffer[[0, 2]], before[[0, 2]]) and torch.equal(buffer[1], before[1] + 1)


def test_entries_with_nothing_frozen_are_ignored():
    p = torch.nn.Parameter(torch.zeros(3))
    assert Protector([(p, torch.zeros(3, dtype=torch.bool))]).bits == []
