"""Scenarios whose tasks are whole data sets, one set a task: 5-datasets and the HAT paper's mixture.

* **5-datasets** (Ebrahimi et al., "Adversarial Continual Learning", ECCV 2020): MNIST, notMNIST,
  Fashion-MNIST, SVHN and CIFAR-10, 10 classes each;
* **the HAT mixture** (Serrà et al., ICML 2018, Sec. 4.1 and Appendix): CIFAR-10, CIFAR-100, MNIST,
  SVHN, Fashion-MNIST, TrafficSigns (GTSRB, 43 classes), FaceScrub (100 people) and notMNIST.

Every set is brought to one input shape, ``[3, 32, 32]``: grey images get their one channel three times,
smaller images (the 28x28 digits and letters) are padded with black evenly on every side; the readers of
TrafficSigns and FaceScrub resize their images of any size to 32x32. Each set keeps its own
preprocessing: its images are standardised with its own training images' mean and standard deviation per
channel (:func:`~maskcl.data.scenarios.channel_stats`), so a task's inputs are centred whatever the
others'. The images are kept as uint8 and standardised batch by batch (:class:`~maskcl.data.TaskData`'s
``standardise``): the mixture's 370,000 images take 1.1 GB instead of 4.5 GB.

The sets come in the order listed, or (``class_order="seeded"``) in an order shuffled by the seed, as the
HAT paper draws one order per run. A task's classes are numbered after the earlier tasks' (its local label
``i`` is ``offset + i``), so that class-incremental evaluation tells them apart. notMNIST and FaceScrub,
which have no test split of their own, are split with seed 0 whatever the run's seed, so every run of a
benchmark is tested on the same images.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from maskcl.data.cifar import load_cifar10, load_cifar100
from maskcl.data.facescrub import load_facescrub
from maskcl.data.fashion_mnist import load_fashion_mnist
from maskcl.data.gtsrb import load_gtsrb
from maskcl.data.mnist import load_mnist
from maskcl.data.notmnist import load_notmnist
from maskcl.data.scenarios import (
    Scenario,
    Task,
    _check_class_order,
    _check_options,
    _classes,
    _split_indices,
    _task_data,
    channel_stats,
)
from maskcl.data.svhn import load_svhn
from maskcl.errors import MaskclError
from maskcl.resources import check_fits

__all__ = ["FIVE_DATASETS", "HAT_MIXTURE", "as_colour_images", "datasets_scenario"]

Loader = Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]

FIVE_DATASETS: tuple[tuple[str, Loader], ...] = (
    ("mnist", load_mnist),
    ("notmnist", functools.partial(load_notmnist, seed=0)),
    ("fashion-mnist", load_fashion_mnist),
    ("svhn", load_svhn),
    ("cifar10", functools.partial(load_cifar10, download=True)),
)
"""5-datasets' sets in order, each with the function that reads it."""

HAT_MIXTURE: tuple[tuple[str, Loader], ...] = (
    ("cifar10", functools.partial(load_cifar10, download=True)),
    ("cifar100", functools.partial(load_cifar100, download=True)),
    ("mnist", load_mnist),
    ("svhn", load_svhn),
    ("fashion-mnist", load_fashion_mnist),
    ("trafficsigns", load_gtsrb),
    ("facescrub", functools.partial(load_facescrub, seed=0)),
    ("notmnist", functools.partial(load_notmnist, seed=0)),
)
"""The HAT paper's mixture of 8 sets, in the paper's order."""


def as_colour_images(x: np.ndarray, size: int = 32) -> np.ndarray:
    """uint8 images ``[N, H, W]`` (grey) or ``[N, C, H, W]`` as ``[N, 3, size, size]``: one channel given
    three times, a smaller image padded with black (0) evenly on each side (the odd pixel after)."""
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise MaskclError(f"expected uint8 images [N, H, W] or [N, C, H, W], got {x.dtype} {x.shape}")
    if x.ndim == 3:
        x = x[:, None]
    channels, height, width = x.shape[1:]
    if channels not in (1, 3):
        raise MaskclError(f"expected grey or colour images, got {channels} channels")
    if height > size or width > size:
        raise MaskclError(f"images of {width}x{height} are larger than {size}x{size}: resize them first")
    top, left = (size - height) // 2, (size - width) // 2
    out = np.zeros((len(x), 3, size, size), dtype=np.uint8)
    out[:, :, top : top + height, left : left + width] = x
    return out


def datasets_scenario(
    sets: Sequence[tuple[str, Loader]],
    num_tasks: int | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    name: str = "datasets",
    class_order: str = "sorted",
    size: int = 32,
) -> Scenario:
    """One task per set of ``sets`` (``(name, reader)`` pairs, each reader giving ``x_train, y_train,
    x_test, y_test``), in their order or (``class_order="seeded"``) shuffled with
    ``numpy.random.default_rng([seed, 2])``; the first ``num_tasks`` of them (default all) are read. Each
    task holds out a random ``val_fraction`` of its training images for validation
    (``numpy.random.default_rng(seed)``); images as in the module docstring."""
    _check_options(num_tasks if num_tasks is not None else len(sets), val_fraction, seed)
    _check_class_order(class_order, "datasets")
    num_tasks = len(sets) if num_tasks is None else num_tasks
    if num_tasks > len(sets):
        raise MaskclError(f"{name} has {len(sets)} data sets: it cannot make {num_tasks} tasks")
    order = (
        np.random.default_rng([seed, 2]).permutation(len(sets))
        if class_order == "seeded"
        else range(len(sets))
    )
    chosen = [sets[i] for i in order][:num_tasks]
    rng = np.random.default_rng(seed)
    tasks, offset = [], 0
    for task_id, (set_name, load) in enumerate(chosen):
        x_train, y_train, x_test, y_test = load()
        check_fits(3 * size * size * (len(x_train) + len(x_test)), f"{set_name}'s images at {size}x{size}")
        x_train, x_test = as_colour_images(x_train, size), as_colour_images(x_test, size)
        classes = _classes(y_train, y_test)
        stats = channel_stats(x_train)
        fit, val = _split_indices(np.arange(len(y_train)), val_fraction, rng, task_id)
        x_tr, x_te = torch.from_numpy(x_train), torch.from_numpy(x_test)
        tasks.append(
            Task(
                task_id,
                (offset + np.arange(len(classes))).tolist(),
                _task_data(x_tr, y_train, fit, classes, stats),
                _task_data(x_tr, y_train, val, classes, stats),
                _task_data(x_te, y_test, np.arange(len(y_test)), classes, stats),
            )
        )
        offset += len(classes)
    return Scenario(name=name, tasks=tasks, input_shape=(3, size, size))
