"""Continual-learning scenarios: an ordered list of classification tasks, each with train/val/test splits.

Two constructions are provided:

* **split** (Zenke, Poole & Ganguli, ICML 2017): the sorted classes are cut into consecutive groups, one
  group per task, with labels renumbered ``0..k-1`` inside each task;
* **permuted** (Goodfellow et al., 2013, arXiv:1312.6211; Kirkpatrick et al., PNAS 2017): every task has
  all classes, and task ``t > 0`` sees the features under its own fixed random permutation.

Inputs are prepared once by :func:`prepare_inputs`: ``z = (x - mu) / sigma`` with the scalar mean ``mu``
and standard deviation ``sigma`` of the whole training set.
"""

from __future__ import annotations

import math
import operator
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from maskcl.data.cifar import load_cifar100
from maskcl.data.fashion_mnist import load_fashion_mnist
from maskcl.data.folder import load_image_folder
from maskcl.errors import MaskclError
from maskcl.resources import check_fits

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, Integral) or batch_size < 1:
        raise MaskclError(f"batch size must be a positive integer, got {batch_size!r}")


@dataclass(eq=False)
class TaskData:
    """One split (train/val/test) of one task.

    ``x`` is float32 ``[N, ...]`` (already standardised), ``y`` int64 ``[N]`` with labels local to the
    task (``0..k-1``). When ``permutation`` is set, each batch is returned as
    ``x.flatten(1)[:, permutation].view_as(x)``; the stored ``x`` may be shared with other tasks.

    Large image sets are kept as they are stored, uint8 images ``[N, C, H, W]`` (a quarter of the memory),
    with ``standardise = (mean, std)``, each ``[C]``: every batch is then made float as ``(x / 255 -
    mean) / std`` channel by channel (on the batch's device).
    """

    x: torch.Tensor
    y: torch.Tensor
    permutation: torch.Tensor | None = None
    standardise: tuple[torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise MaskclError(f"task data has {self.x.shape[0]} inputs but {self.y.shape[0]} labels")
        features = math.prod(self.x.shape[1:])
        if self.permutation is not None and self.permutation.shape != (features,):
            raise MaskclError(
                f"permutation has shape {tuple(self.permutation.shape)}, expected ({features},)"
            )
        if self.standardise is not None and (
            self.x.dtype != torch.uint8
            or self.x.dim() != 4
            or any(s.shape != (self.x.shape[1],) for s in self.standardise)
        ):
            raise MaskclError(
                f"standardised task data must be uint8 images [N, C, H, W] with a mean and std per channel, "
                f"got {self.x.dtype} {tuple(self.x.shape)}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample as the model sees it."""
        return tuple(self.x.shape[1:])

    def subset(self, rows: torch.Tensor | slice) -> TaskData:
        """The samples ``rows`` (an index tensor or a slice), with this data's permutation and
        standardisation."""
        return TaskData(self.x[rows], self.y[rows], self.permutation, self.standardise)

    def __len__(self) -> int:
        return self.x.shape[0]

    def num_batches(self, batch_size: int) -> int:
        """Number of batches per epoch, ``ceil(N / batch_size)`` (the last partial batch counts)."""
        _check_batch_size(batch_size)
        return -(-len(self) // batch_size)

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches on ``device`` covering every sample once, the last one possibly smaller.

        With ``shuffle`` the order is ``torch.randperm(N, generator=generator)``, so a seeded generator
        gives a reproducible epoch. Unshuffled CPU batches are views of the stored data: do not modify them
        in place.
        """
        _check_batch_size(batch_size)
        order = torch.randperm(len(self), generator=generator) if shuffle else None
        return self._iterate(batch_size, order, device)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``index`` (a 1-d index tensor) as the model sees them, and their labels."""
        return self._inputs(self.x[index], self.permutation, self.standardise), self.y[index]

    @staticmethod
    def _inputs(
        x: torch.Tensor,
        permutation: torch.Tensor | None,
        standardise: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """Stored samples ``x`` as the model sees them: standardised, then permuted."""
        if standardise is not None:
            mean, std = (s.to(x.device)[:, None, None] for s in standardise)
            x = (x.float() / 255 - mean) / std
        return x if permutation is None else x.flatten(1)[:, permutation].view_as(x)

    def _iterate(
        self, batch_size: int, order: torch.Tensor | None, device: torch.device | str | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        permutation = self.permutation
        if permutation is not None and device is not None:
            permutation = permutation.to(device)
        for start in range(0, len(self), batch_size):
            if order is None:
                x, y = self.x[start : start + batch_size], self.y[start : start + batch_size]
            else:
                index = order[start : start + batch_size]
                x, y = self.x[index], self.y[index]
            if device is not None:
                x, y = x.to(device), y.to(device)
            yield self._inputs(x, permutation, self.standardise), y


@dataclass
class Task:
    """One task: its original class labels (local label ``i`` is ``classes[i]``) and its three splits."""

    task_id: int
    classes: list[int]
    train: TaskData
    val: TaskData
    test: TaskData

    @property
    def num_classes(self) -> int:
        """Number of classes (output units) of the task."""
        return len(self.classes)


@dataclass
class Scenario:
    """A named sequence of tasks sharing one input shape (the shape of one sample, e.g. ``(1, 28, 28)``)."""

    name: str
    tasks: list[Task]
    input_shape: tuple[int, ...]

    @property
    def num_tasks(self) -> int:
        """Number of tasks."""
        return len(self.tasks)

    @property
    def classes_per_task(self) -> list[int]:
        """Number of classes of each task, in task order."""
        return [task.num_classes for task in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        try:
            index = operator.index(i)
        except TypeError:
            raise MaskclError(f"task index must be an integer, got {i!r}") from None
        if not 0 <= index < len(self.tasks):
            raise MaskclError(
                f"task {index} out of range: scenario has {len(self.tasks)} tasks (0-{len(self.tasks) - 1})"
            )
        return self.tasks[index]


def _check_arrays(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> None:
    """Raise :class:`MaskclError` naming the first problem found in the four data arrays."""
    for x_name, x, y_name, y in (
        ("x_train", x_train, "y_train", y_train),
        ("x_test", x_test, "y_test", y_test),
    ):
        if x.dtype.kind not in "biuf":
            raise MaskclError(f"{x_name} has dtype {x.dtype}: expected numbers")
        if x.ndim not in (2, 3, 4):
            raise MaskclError(f"{x_name} has shape {x.shape}: expected [N, D], [N, H, W] or [N, C, H, W]")
        if y.ndim != 1:
            raise MaskclError(f"{y_name} has shape {y.shape}: expected one class label per row")
        if y.dtype.kind not in "iu":
            raise MaskclError(f"{y_name} has dtype {y.dtype}: class labels must be integers")
        if len(x) != len(y):
            raise MaskclError(f"{x_name} has {len(x)} rows but {y_name} has {len(y)}")
        if len(x) == 0:
            raise MaskclError(f"{x_name} is empty")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise MaskclError(f"{x_name} contains NaN or infinite values")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise MaskclError(
            f"x_train samples have shape {x_train.shape[1:]} but x_test samples have shape {x_test.shape[1:]}"
        )


def _check_options(num_tasks: int, val_fraction: float, seed: int) -> None:
    if not isinstance(num_tasks, Integral) or num_tasks < 1:
        raise MaskclError(f"num_tasks must be a positive integer, got {num_tasks!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise MaskclError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not isinstance(seed, Integral) or seed < 0:
        raise MaskclError(f"seed must be a non-negative integer, got {seed!r}")


CLASS_ORDERS = ("sorted", "seeded")


def _check_class_order(class_order: str, scenario: str) -> None:
    if class_order not in CLASS_ORDERS:
        raise MaskclError(f"unknown class order {class_order!r}; known: {', '.join(CLASS_ORDERS)}")
    if class_order == "seeded" and scenario == "permuted":
        raise MaskclError(
            "--class-order seeded shuffles which classes a task has: a permuted task has them all"
        )


def _classes(y_train: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Sorted classes of the training labels; every test label must be one of them."""
    classes = np.unique(y_train)
    unseen = np.setdiff1d(y_test, classes)
    if unseen.size:
        raise MaskclError(f"y_test has class {unseen[0]}, which does not occur in y_train")
    return classes


def _as_float_tensor(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x.astype(np.float32))
    if x.dtype == np.uint8:
        t.div_(255.0)
    return t.unsqueeze(1) if t.ndim == 3 else t


def prepare_inputs(x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Make float32 model inputs from raw arrays, the same way for every scenario.

    uint8 pixels are divided by 255, images ``[N, H, W]`` become ``[N, 1, H, W]`` (``[N, D]`` and
    ``[N, C, H, W]`` are kept), then both sets are standardised with the training set's global statistics:
    ``z = (x - mu) / sigma``, ``mu`` and ``sigma`` scalars over all training values. The inputs are not
    modified.
    """
    train, test = _as_float_tensor(x_train), _as_float_tensor(x_test)
    std, mean = torch.std_mean(train, correction=0)
    if not std > 0:
        raise MaskclError("x_train has the same value everywhere: cannot standardise it")
    for t in (train, test):
        t.sub_(mean).div_(std)
    return train, test


def _split_indices(
    index: np.ndarray, val_fraction: float, rng: np.random.Generator, task_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(val_fraction * len(index))`` random samples; both parts keep the original order."""
    shuffled = rng.permutation(index)
    n_val = round(val_fraction * len(index))
    if n_val == len(index):
        raise MaskclError(f"task {task_id} has no training samples left after the validation split")
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation (population) of each channel of uint8 images ``[N, C, H, W]`` as
    values in ``[0, 1]`` (pixel / 255), float32 ``[C]`` each; summed in float64 a chunk at a time, without
    a float copy of the images."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float64) / 255
        total += part.sum(axis=(0, 2, 3))
        squares += np.square(part).sum(axis=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0))
    if not (std > 0).all():
        raise MaskclError("the training images have a channel with the same value everywhere")
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def _task_data(
    x: torch.Tensor,
    y: np.ndarray,
    index: np.ndarray,
    classes: np.ndarray,
    standardise: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TaskData:
    """Rows ``index`` of ``x``, with labels renumbered to their position in ``classes``."""
    local = np.searchsorted(classes, y[index]).astype(np.int64)
    return TaskData(x[torch.from_numpy(index)], torch.from_numpy(local), standardise=standardise)


def split_scenario(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_tasks: int,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    name: str = "split",
    class_order: str = "sorted",
    per_channel: bool = False,
) -> Scenario:
    """Cut the sorted classes into ``num_tasks`` consecutive groups, one task each.

    Group sizes differ by at most one, earlier tasks getting the extra class (10 classes, 4 tasks:
    3, 3, 2, 2). Each task holds out a random ``val_fraction`` of its training samples for validation,
    drawn with ``numpy.random.default_rng(seed)``. ``class_order="seeded"``: the classes are shuffled
    first, with ``numpy.random.default_rng([seed, 2])`` (each task's classes then sorted), so each seed
    sees its own grouping. ``per_channel`` (uint8 colour images ``[N, C, H, W]``, large sets): the images
    are kept as uint8 and standardised batch by batch with each channel's training mean and standard
    deviation (:func:`channel_stats`), instead of :func:`prepare_inputs`.
    """
    x_train, y_train, x_test, y_test = (np.asarray(a) for a in (x_train, y_train, x_test, y_test))
    _check_arrays(x_train, y_train, x_test, y_test)
    _check_options(num_tasks, val_fraction, seed)
    _check_class_order(class_order, "split")
    classes = _classes(y_train, y_test)
    if len(classes) < 2 * num_tasks:
        raise MaskclError(
            f"data has {len(classes)} classes: too few for {num_tasks} tasks of at least 2 classes"
        )
    stats = None
    if per_channel:
        if x_train.dtype != np.uint8 or x_train.ndim != 4:
            raise MaskclError(
                f"per-channel standardisation needs uint8 images [N, C, H, W], got {x_train.shape}"
            )
        stats = channel_stats(x_train)
        x_tr, x_te = torch.from_numpy(x_train), torch.from_numpy(x_test)
    else:
        x_tr, x_te = prepare_inputs(x_train, x_test)
    rng = np.random.default_rng(seed)
    order = np.random.default_rng([seed, 2]).permutation(classes) if class_order == "seeded" else classes
    tasks = []
    for task_id, group in enumerate(np.sort(g) for g in np.array_split(order, num_tasks)):
        fit, val = _split_indices(np.flatnonzero(np.isin(y_train, group)), val_fraction, rng, task_id)
        test = np.flatnonzero(np.isin(y_test, group))
        tasks.append(
            Task(
                task_id=task_id,
                classes=group.tolist(),
                train=_task_data(x_tr, y_train, fit, group, stats),
                val=_task_data(x_tr, y_train, val, group, stats),
                test=_task_data(x_te, y_test, test, group, stats),
            )
        )
    return Scenario(name=name, tasks=tasks, input_shape=tuple(x_tr.shape[1:]))


def permuted_scenario(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_tasks: int,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    name: str = "permuted",
    class_order: str = "sorted",
) -> Scenario:
    """``num_tasks`` tasks over all classes; task 0 sees the features as they are, task ``t > 0`` permuted.

    The validation samples (the same for every task) come from ``numpy.random.default_rng(seed)``, the
    permutations from ``numpy.random.default_rng([seed, 1])``, so they depend only on ``seed`` and the
    number of features. All tasks share one copy of the data; only :attr:`TaskData.permutation` differs.
    Every task has every class: ``class_order`` must stay ``"sorted"``.
    """
    x_train, y_train, x_test, y_test = (np.asarray(a) for a in (x_train, y_train, x_test, y_test))
    _check_arrays(x_train, y_train, x_test, y_test)
    _check_options(num_tasks, val_fraction, seed)
    _check_class_order(class_order, "permuted")
    classes = _classes(y_train, y_test)
    if len(classes) < 2:
        raise MaskclError(f"data has {len(classes)} class: a task needs at least 2")
    features = math.prod(x_train.shape[1:])
    what = f"{num_tasks} permuted tasks (their {features}-feature permutations)"
    check_fits(8 * num_tasks * features, what)
    x_tr, x_te = prepare_inputs(x_train, x_test)
    fit, val = _split_indices(np.arange(len(y_train)), val_fraction, np.random.default_rng(seed), 0)
    shared = (
        _task_data(x_tr, y_train, fit, classes),
        _task_data(x_tr, y_train, val, classes),
        _task_data(x_te, y_test, np.arange(len(y_test)), classes),
    )
    n_features = math.prod(x_tr.shape[1:])
    permutations = np.random.default_rng([seed, 1])
    tasks = []
    for task_id in range(num_tasks):
        permutation = None if task_id == 0 else torch.from_numpy(permutations.permutation(n_features))
        train, val_data, test = (TaskData(d.x, d.y, permutation) for d in shared)
        tasks.append(Task(task_id, classes.tolist(), train, val_data, test))
    return Scenario(name=name, tasks=tasks, input_shape=tuple(x_tr.shape[1:]))


def split_fashion_mnist(
    num_tasks: int = 5,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    root: str | Path | None = None,
    class_order: str = "sorted",
) -> Scenario:
    """Split Fashion-MNIST ("split-fmnist"): with 5 tasks, classes {0,1}, {2,3}, ..., {8,9}."""
    data = load_fashion_mnist(root)
    options = {"val_fraction": val_fraction, "seed": seed, "class_order": class_order}
    return split_scenario(*data, num_tasks, name="split-fmnist", **options)


def permuted_fashion_mnist(
    num_tasks: int = 10,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    root: str | Path | None = None,
    class_order: str = "sorted",
) -> Scenario:
    """Permuted Fashion-MNIST ("permuted-fmnist"): all 10 classes, one pixel permutation per task."""
    _check_class_order(class_order, "permuted")
    data = load_fashion_mnist(root)
    return permuted_scenario(*data, num_tasks, val_fraction=val_fraction, seed=seed, name="permuted-fmnist")


def split_cifar100(
    num_tasks: int = 10,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    root: str | Path | None = None,
    class_order: str = "sorted",
) -> Scenario:
    """Split CIFAR-100 ("split-cifar100"): with 10 tasks, classes 0-9, 10-19, ..., 90-99. A missing copy
    is downloaded through torchvision."""
    data = load_cifar100(root, download=True)
    options = {"val_fraction": val_fraction, "seed": seed, "class_order": class_order}
    return split_scenario(*data, num_tasks, name="split-cifar100", **options)


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and check ``x_train, y_train, x_test, y_test`` from a user's ``.npz`` file.

    ``x``: features ``[N, D]`` or images ``[N, H, W]`` / ``[N, C, H, W]``, uint8 (0-255) or float, finite;
    ``y``: integer class labels ``[N]``. Train and test samples must have the same shape.
    """
    path = Path(path)
    if not path.is_file():
        raise MaskclError(f"npz file not found: {path} (moved or deleted?)")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise MaskclError(f"{path} is not a valid .npz file (damaged or truncated)") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise MaskclError(f"{path} is not a valid .npz file (it holds a single array, like a .npy file)")
    with data:
        missing = [key for key in NPZ_ARRAYS if key not in data.files]
        if missing:
            raise MaskclError(
                f"{path} is missing arrays: {', '.join(missing)} (needs {', '.join(NPZ_ARRAYS)})"
            )
        try:
            arrays = tuple(data[key] for key in NPZ_ARRAYS)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise MaskclError(f"{path} is not a valid .npz file: an array cannot be read") from exc
    _check_arrays(*arrays)
    return arrays


def data_scenario(
    path: str | Path,
    scenario: str = "split",
    num_tasks: int | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    name: str | None = None,
    class_order: str = "sorted",
) -> Scenario:
    """Build a ``"split"`` or ``"permuted"`` scenario from a user's data: a ``.npz`` file (see
    :func:`load_npz`) or a folder of images (:func:`~maskcl.data.folder.load_image_folder`; without
    ``train/`` and ``test/`` subfolders its images are split by ``seed``).

    ``num_tasks`` defaults to two classes per task for ``"split"`` and to 10 tasks for ``"permuted"``;
    ``name`` defaults to ``"<scenario>-<file stem>"``.
    """
    builders = {"split": split_scenario, "permuted": permuted_scenario}
    if scenario not in builders:
        raise MaskclError(f"unknown scenario {scenario!r}: choose one of {', '.join(map(repr, builders))}")
    _check_class_order(class_order, scenario)
    data = load_image_folder(path, seed=seed) if Path(path).is_dir() else load_npz(path)
    if num_tasks is None:
        num_tasks = max(1, len(np.unique(data[1])) // 2) if scenario == "split" else 10
    name = name if name is not None else f"{scenario}-{Path(path).stem}"
    options = {"val_fraction": val_fraction, "seed": seed, "class_order": class_order}
    return builders[scenario](*data, num_tasks, name=name, **options)
