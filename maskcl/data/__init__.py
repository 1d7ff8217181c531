"""Data sets and continual-learning scenarios (split and permuted) for maskcl."""

from maskcl.data.fashion_mnist import default_cache_dir, load_fashion_mnist, read_idx
from maskcl.data.scenarios import (
    Scenario,
    Task,
    TaskData,
    load_npz,
    npz_scenario,
    permuted_fashion_mnist,
    permuted_scenario,
    prepare_inputs,
    split_fashion_mnist,
    split_scenario,
)

__all__ = [
    "Scenario",
    "Task",
    "TaskData",
    "default_cache_dir",
    "load_fashion_mnist",
    "load_npz",
    "npz_scenario",
    "permuted_fashion_mnist",
    "permuted_scenario",
    "prepare_inputs",
    "read_idx",
    "split_fashion_mnist",
    "split_scenario",
]
