"""Data sets and continual-learning scenarios (split and permuted) for maskcl."""

from maskcl.data.benchmarks import BENCHMARKS
from maskcl.data.cifar import load_cifar10, load_cifar100, read_cifar_file
from maskcl.data.facescrub import load_facescrub
from maskcl.data.fashion_mnist import default_cache_dir, load_fashion_mnist, read_idx
from maskcl.data.folder import load_image_folder
from maskcl.data.gtsrb import load_gtsrb
from maskcl.data.loader import AUGMENTATIONS, EpochBatches, augment_batch, check_augment
from maskcl.data.mnist import load_mnist
from maskcl.data.multi import datasets_scenario
from maskcl.data.notmnist import load_notmnist
from maskcl.data.scenarios import (
    Scenario,
    Task,
    TaskData,
    channel_stats,
    data_scenario,
    load_npz,
    permuted_fashion_mnist,
    permuted_scenario,
    prepare_inputs,
    split_cifar100,
    split_fashion_mnist,
    split_scenario,
)
from maskcl.data.svhn import load_svhn
from maskcl.data.tinyimagenet import load_tiny_imagenet

__all__ = [
    "AUGMENTATIONS",
    "BENCHMARKS",
    "EpochBatches",
    "Scenario",
    "Task",
    "TaskData",
    "augment_batch",
    "channel_stats",
    "check_augment",
    "data_scenario",
    "datasets_scenario",
    "default_cache_dir",
    "load_cifar10",
    "load_cifar100",
    "load_facescrub",
    "load_fashion_mnist",
    "load_gtsrb",
    "load_image_folder",
    "load_mnist",
    "load_notmnist",
    "load_npz",
    "load_svhn",
    "load_tiny_imagenet",
    "permuted_fashion_mnist",
    "permuted_scenario",
    "prepare_inputs",
    "read_cifar_file",
    "read_idx",
    "split_cifar100",
    "split_fashion_mnist",
    "split_scenario",
]
