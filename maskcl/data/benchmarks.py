"""The benchmarks by name (``maskcl run --benchmark NAME``): each a builder of its scenario and its
default number of tasks.

=====================  ==============================================================  =============
name                   tasks                                                           default tasks
=====================  ==============================================================  =============
split-fmnist           Fashion-MNIST's 10 classes cut into groups                      5
permuted-fmnist        Fashion-MNIST, one pixel permutation a task                     10
split-mnist            MNIST's 10 classes cut into groups                              5
permuted-mnist         MNIST, one pixel permutation a task                             10
split-cifar10          CIFAR-10's 10 classes cut into groups                           5
split-cifar100         CIFAR-100's 100 classes cut into groups (20 tasks: 5 classes)   10
split-tinyimagenet     Tiny ImageNet's 200 classes cut into groups (64x64 colour)      10
5-datasets             MNIST, notMNIST, Fashion-MNIST, SVHN, CIFAR-10 (32x32 colour)   5
hat-mixture            the HAT paper's 8 data sets (32x32 colour)                      8
=====================  ==============================================================  =============

A builder takes ``(num_tasks, *, val_fraction, seed, class_order)``. A new benchmark is a builder (one
function, in its own module where it needs a new reader) and an entry in :data:`BENCHMARKS`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from maskcl.data.cifar import load_cifar10
from maskcl.data.mnist import load_mnist
from maskcl.data.multi import FIVE_DATASETS, HAT_MIXTURE, datasets_scenario
from maskcl.data.scenarios import (
    Scenario,
    _check_class_order,
    permuted_fashion_mnist,
    permuted_scenario,
    split_cifar100,
    split_fashion_mnist,
    split_scenario,
)
from maskcl.data.tinyimagenet import load_tiny_imagenet

__all__ = ["BENCHMARKS"]


def _benchmark(load: Callable[[], tuple], kind: str, name: str, **options) -> Callable[..., Scenario]:
    """A benchmark's builder ``(num_tasks, *, val_fraction, seed, class_order)``: the ``kind`` scenario
    (split or permuted) of the arrays ``load()`` reads, named ``name`` (``options``: the scenario's
    others)."""
    builder = {"split": split_scenario, "permuted": permuted_scenario}[kind]

    def build(
        num_tasks: int, *, val_fraction: float = 0.1, seed: int = 0, class_order: str = "sorted"
    ) -> Scenario:
        _check_class_order(class_order, kind)
        run = {"val_fraction": val_fraction, "seed": seed, "class_order": class_order}
        return builder(*load(), num_tasks, name=name, **run, **options)

    build.__doc__ = (
        f"{name}: the {kind} scenario of the data that {getattr(load, 'func', load).__name__} reads."
    )
    return build


def _datasets(sets: tuple, name: str) -> Callable[..., Scenario]:
    """A benchmark's builder whose tasks are the data sets ``sets``
    (:func:`~maskcl.data.multi.datasets_scenario`)."""
    build = functools.partial(datasets_scenario, sets, name=name)
    build.__doc__ = f"{name}: one task a data set, of {', '.join(n for n, _ in sets)}."
    return build


BENCHMARKS: dict[str, tuple[Callable[..., Scenario], int]] = {
    "split-fmnist": (split_fashion_mnist, 5),
    "permuted-fmnist": (permuted_fashion_mnist, 10),
    "split-mnist": (_benchmark(load_mnist, "split", "split-mnist"), 5),
    "permuted-mnist": (_benchmark(load_mnist, "permuted", "permuted-mnist"), 10),
    "split-cifar10": (
        _benchmark(functools.partial(load_cifar10, download=True), "split", "split-cifar10"),
        5,
    ),
    "split-cifar100": (split_cifar100, 10),
    "split-tinyimagenet": (
        _benchmark(load_tiny_imagenet, "split", "split-tinyimagenet", per_channel=True),
        10,
    ),
    "5-datasets": (_datasets(FIVE_DATASETS, "5-datasets"), 5),
    "hat-mixture": (_datasets(HAT_MIXTURE, "hat-mixture"), 8),
}
"""The benchmarks by name: the scenario's builder ``(num_tasks, *, val_fraction, seed, class_order)`` and
its default number of tasks (module docstring)."""
