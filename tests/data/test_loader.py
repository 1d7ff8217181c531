"""An epoch's training batches: their order (as the lazy per-task streams drew it), augmentation, and
DataLoader workers giving the same batches."""

import pytest
import torch
import torch.nn.functional as F

from maskcl.data import AUGMENTATIONS, EpochBatches, TaskData, augment_batch
from maskcl.errors import MaskclError


def _data(n: int, offset: int = 0, permutation: torch.Tensor | None = None) -> TaskData:
    x = (torch.arange(n * 2 * 6 * 5, dtype=torch.float32) + offset).view(n, 2, 6, 5)
    return TaskData(x, torch.arange(n) % 3, permutation)


def _lazy_streams(datas, tasks, batch_size, generator):
    """The batches as maskcl drew them before EpochBatches: a shuffled pass per task, drawn when the
    stream first needs it, smaller tasks starting a new pass (and drawing a new order) when they run out."""

    def cycle(data):
        while True:
            yield from data.batches(batch_size, shuffle=True, generator=generator)

    steps = max(d.num_batches(batch_size) for d in datas)
    streams = [cycle(d) for d in datas]
    for _ in range(steps):
        parts = [next(s) for s in streams]
        if len(parts) == 1:
            yield parts[0][0], parts[0][1], None
            continue
        ids = torch.cat([torch.full((len(y),), t) for t, (_, y) in zip(tasks, parts)])
        yield torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]), ids


def _equal(a, b) -> bool:
    return all((u is None and v is None) or torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("sizes", [[23], [23, 9, 40]])
def test_the_batches_and_the_generator_state_are_those_the_lazy_streams_drew(sizes):
    permutation = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    datas = [_data(n, 1000 * i, permutation if i == 1 else None) for i, n in enumerate(sizes)]
    tasks = list(range(len(sizes)))
    ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    epoch = EpochBatches(datas, tasks, 8, ours)
    expected = list(_lazy_streams(datas, tasks, 8, theirs))
    got = list(epoch.iterate())
    assert len(got) == len(expected) == max(-(-n // 8) for n in sizes)
    assert all(_equal(a, b) for a, b in zip(got, expected))
    assert torch.equal(ours.get_state(), theirs.get_state())  # the next epoch draws the same


class _Counted(EpochBatches):
    made: list[int]

    def __getitem__(self, step: int):
        self.made.append(step)
        return super().__getitem__(step)


@pytest.mark.parametrize("workers", [0, 1])
def test_starting_at_a_step_gives_the_remaining_batches_without_making_the_others(workers):
    whole = list(EpochBatches([_data(50)], [0], 8, torch.Generator().manual_seed(1), "crop-flip").iterate())
    epoch = _Counted([_data(50)], [0], 8, torch.Generator().manual_seed(1), "crop-flip")
    epoch.made = []
    rest = list(epoch.iterate(start=3, workers=workers))
    assert len(rest) == len(whole) - 3 and all(_equal(a, b) for a, b in zip(rest, whole[3:]))
    assert epoch.made == ([3, 4, 5, 6] if workers == 0 else [])  # a worker's calls are its own


@pytest.mark.parametrize("augment", ["none", "crop-flip"])
def test_workers_make_the_same_batches_and_leave_the_global_generator_alone(augment):
    datas, tasks = [_data(37), _data(20, 500)], [0, 1]
    alone = list(EpochBatches(datas, tasks, 8, torch.Generator().manual_seed(4), augment).iterate())
    before = torch.get_rng_state()
    epoch = EpochBatches(datas, tasks, 8, torch.Generator().manual_seed(4), augment)
    with_workers = list(epoch.iterate(start=1, workers=2))
    assert torch.equal(torch.get_rng_state(), before)
    assert len(with_workers) == len(alone) - 1
    assert all(_equal(a, b) for a, b in zip(with_workers, alone[1:]))


def _reference(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """Each image padded by reflection (torch's F.pad), cropped back at its shift, mirrored if flipped."""
    height, width = x.shape[2:]
    out = []
    for image, (dy, dx), flip in zip(x, shifts.tolist(), flips.tolist()):
        padded = F.pad(image[None], (padding,) * 4, mode="reflect")[0]
        crop = padded[:, padding + dy : padding + dy + height, padding + dx : padding + dx + width]
        out.append(crop.flip(2) if flip else crop)
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["crop", "crop-flip"])
def test_crops_and_flips_are_reflection_padded_random_crops(kind):
    x = torch.randn(64, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    got = augment_batch(x, kind, torch.Generator().manual_seed(5))
    draws = torch.Generator().manual_seed(5)
    shifts = torch.randint(-4, 5, (64, 2), generator=draws)
    flips = (
        torch.rand(64, generator=draws) < 0.5 if kind == "crop-flip" else torch.zeros(64, dtype=torch.bool)
    )
    assert torch.equal(got, _reference(x, shifts, flips, 4))
    assert shifts.abs().max() == 4 and (shifts == 0).any() and (kind == "crop" or 0 < flips.sum() < 64)
    assert not torch.equal(got, x)


def test_no_augmentation_is_the_batch_itself_and_bad_inputs_are_one_line():
    x = torch.randn(4, 1, 6, 6)
    assert augment_batch(x, "none", torch.Generator()) is x
    with pytest.raises(MaskclError, match="unknown augmentation 'rotate'; known: none, crop, crop-flip"):
        augment_batch(x, "rotate", torch.Generator())
    with pytest.raises(MaskclError, match=r"needs images \[C, H, W\]; this data has samples \(36,\)"):
        augment_batch(torch.randn(4, 36), "crop", torch.Generator())
    with pytest.raises(MaskclError, match="up to 4 pixels: 4x4 images are too small"):
        augment_batch(torch.randn(4, 1, 4, 4), "crop", torch.Generator())
    assert AUGMENTATIONS == ("none", "crop", "crop-flip")
