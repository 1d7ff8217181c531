"""Data sets and continual-learning scenarios (split and permuted) for maskcl."""

from maskcl.data.cifar import load_cifar10, load_cifar100, read_cifar_file
from maskcl.data.fashion_mnist import default_cache_dir, load_fashion_mnist, read_idx
from maskcl.data.folder import load_image_folder
from maskcl.data.mnist import load_mnist
from maskcl.data.scenarios import (
    BENCHMARKS,
    Scenario,
    Task,
    TaskData,
    data_scenario,
    load_npz,
    permuted_fashion_mnist,
    permuted_scenario,
    prepare_inputs,
    split_cifar100,
    split_fashion_mnist,
    split_scenario,
)

__all__ = [
    "BENCHMARKS",
    "Scenario",
    "Task",
    "TaskData",
    "data_scenario",
    "default_cache_dir",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "permuted_fashion_mnist",
    "permuted_scenario",
    "prepare_inputs",
    "read_cifar_file",
    "read_idx",
    "split_cifar100",
    "split_fashion_mnist",
    "split_scenario",
]
