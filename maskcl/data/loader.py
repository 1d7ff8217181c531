"""The training batches of an epoch: their order, augmentation, and loading in worker processes.

:class:`EpochBatches` fixes an epoch's batches when the epoch starts: each task's shuffled order is drawn
from the run's data generator (one ``torch.randperm`` per pass over a task's training data), and, when
the batches are augmented, one seed for the epoch. Batch ``i`` is then a pure function of ``i``, so it is
the same whether it is made in this process or in a ``torch.utils.data.DataLoader`` worker, and a resumed
run skips the batches already trained on without making them.

Augmentations (training batches only; never validation or test data):

* ``crop``: each image shifted by ``(dy, dx)``, both drawn uniformly from ``-padding..padding`` (4
  pixels), the pixels shifted in from outside mirrored at the border (a random crop of the image padded
  by reflection: ``out[i, j] = x[r(i + dy), r(j + dx)]`` with ``r(k) = -k`` below 0 and ``2 (H - 1) - k``
  beyond ``H - 1``), as in the CIFAR training of He et al., CVPR 2016, Sec. 4.2 (which pads with zeros);
* ``crop-flip``: the shift, then the image mirrored left-right with probability 1/2 (Krizhevsky et al.,
  NeurIPS 2012, Sec. 4.1): the CIFAR and TinyImageNet standard. Digits and letters change meaning when
  mirrored: use ``crop`` for them.

Batch ``i`` of an augmented epoch draws its shifts and flips from its own generator, seeded with
``epoch_seed + i``.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from maskcl.data.scenarios import TaskData
from maskcl.errors import MaskclError

__all__ = ["AUGMENTATIONS", "EpochBatches", "augment_batch", "check_augment"]

AUGMENTATIONS = ("none", "crop", "crop-flip")
"""The training-batch augmentations, by name (module docstring)."""


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """The images ``x`` ``[N, C, H, W]`` augmented by ``kind`` (:data:`AUGMENTATIONS`, module docstring)
    with shifts and flips drawn from ``generator``: a new tensor, ``x`` unchanged; ``none`` returns ``x``.

    Every output pixel is an input pixel (a gather), so the result is exact on any device.
    """
    check_augment(kind, tuple(x.shape[1:]), padding)
    if kind == "none":
        return x
    n, _, height, width = x.shape
    shifts = torch.randint(-padding, padding + 1, (n, 2), generator=generator)
    rows = _reflect(shifts[:, :1] + torch.arange(height), height)  # [N, H]
    cols = _reflect(shifts[:, 1:] + torch.arange(width), width)  # [N, W]
    if kind == "crop-flip":
        flip = torch.rand(n, generator=generator) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    rows, cols = rows.to(x.device), cols.to(x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def check_augment(kind: str, input_shape: tuple[int, ...], padding: int = 4) -> None:
    """A one-line error unless augmentation ``kind`` can serve samples of ``input_shape``: images
    ``[C, H, W]`` larger than the shift in both directions."""
    if kind not in AUGMENTATIONS:
        raise MaskclError(f"unknown augmentation {kind!r}; known: {', '.join(AUGMENTATIONS)}")
    if kind == "none":
        return
    if len(input_shape) != 3:
        raise MaskclError(f"--augment {kind} needs images [C, H, W]; this data has samples {input_shape}")
    if min(input_shape[1:]) <= padding:
        height, width = input_shape[1:]
        raise MaskclError(
            f"--augment {kind} shifts images by up to {padding} pixels: {width}x{height} images are too small"
        )


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside ``0..size-1`` mirrored at the border (the border pixel not repeated)."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


class EpochBatches(Dataset):
    """The training batches of one epoch over the training data ``datas`` of ``tasks``: item ``i`` is the
    epoch's step ``i``, ``(x, y, ids)`` on the CPU, with ``ids`` the per-sample task ids when there are
    several tasks (joint training), else None.

    One task: the batches of ``batch_size`` of one shuffled pass (the last one smaller). Several tasks:
    every step takes the next batch of every task, as many steps as the largest task has batches, a
    smaller task's passes starting again, each with a fresh order. The orders are drawn from
    ``generator`` when this object is made, in the order in which steps need them.
    """

    def __init__(
        self,
        datas: Sequence[TaskData],
        tasks: Sequence[int],
        batch_size: int,
        generator: torch.Generator,
        augment: str = "none",
    ) -> None:
        check_augment(augment, datas[0].input_shape)
        self.datas, self.tasks, self.batch_size, self.augment = list(datas), list(tasks), batch_size, augment
        counts = [d.num_batches(batch_size) for d in self.datas]
        self.steps = max(counts)
        self.orders: list[list[torch.Tensor]] = [[] for _ in self.datas]
        for step in range(self.steps):
            for data, count, orders in zip(self.datas, counts, self.orders):
                if step % count == 0:
                    orders.append(torch.randperm(len(data), generator=generator))
        self.seed = 0
        if augment != "none":
            self.seed = int(torch.randint(0, 2**62, (), generator=generator))

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        parts = []
        for data, orders in zip(self.datas, self.orders):
            count = data.num_batches(self.batch_size)
            start = (step % count) * self.batch_size
            parts.append(data.take(orders[step // count][start : start + self.batch_size]))
        if len(parts) == 1:
            (x, y), ids = parts[0], None
        else:
            x, y = torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
            ids = torch.cat([torch.full((len(y),), t) for t, (_, y) in zip(self.tasks, parts)])
        if self.augment != "none":
            x = augment_batch(x, self.augment, torch.Generator().manual_seed(self.seed + step))
        return x, y, ids

    def iterate(
        self, start: int = 0, workers: int = 0, device: torch.device | str | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Steps ``start, start + 1, ...`` of the epoch, on ``device``: made in this process, or (``workers``
        > 0) by that many ``DataLoader`` worker processes, each making whole batches ahead of the training
        step. The batches are the same either way."""
        if workers == 0:
            batches: Iterator = (self[step] for step in range(start, self.steps))
        else:
            batches = iter(
                DataLoader(
                    self,
                    batch_size=None,
                    sampler=range(start, self.steps),
                    num_workers=workers,
                    generator=torch.Generator(),  # the workers' seeds: not from the global generator
                    multiprocessing_context=_fork(),
                    pin_memory=torch.device(device or "cpu").type == "cuda",
                )
            )
        for x, y, ids in batches:
            if device is not None:
                x, y = x.to(device), y.to(device)
                ids = ids.to(device) if ids is not None else None
            yield x, y, ids


def _fork():
    """Fork the workers where the system can (they share the data with this process instead of getting
    a pickled copy each epoch); elsewhere the platform's default start method."""
    if sys.platform != "win32" and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None
