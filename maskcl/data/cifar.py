"""CIFAR-100 (Krizhevsky, 2009), read from its own files: ``cifar-100-python/train`` and ``.../test``.

Each file is a Python pickle of a dict with ``b"data"`` (``[N, 3072]`` uint8, the red, green and blue
32x32 planes of each image in turn) and ``b"fine_labels"`` (the 100 classes). The folder is looked for
in ``root`` (when given), in ``$MASKCL_DATA`` and in ``~/.cache/maskcl``; with ``download=True`` a missing
copy is fetched by torchvision into ``~/.cache/maskcl`` (this needs the ``timm`` extra and the internet).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from maskcl.data.fashion_mnist import DATA_ENV
from maskcl.errors import MaskclError

FOLDER = "cifar-100-python"
CACHE = Path.home() / ".cache" / "maskcl"


def read_cifar_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` uint8 and fine labels ``[N]`` int64 of one CIFAR-100 file."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = batch[b"data"], batch[b"fine_labels"]
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as err:
        raise MaskclError(f"{path} is not a CIFAR-100 file: {err!r}") from err
    x = np.asarray(data, dtype=np.uint8)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
        raise MaskclError(f"{path}: expected [N, 3072] images and N labels, got {x.shape} and {y.shape}")
    return x.reshape(-1, 3, 32, 32), y


def load_cifar100(
    root: str | Path | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of CIFAR-100 (50,000 and 10,000 images of 100 classes)."""
    places = [*(Path(p) for p in (root, os.environ.get(DATA_ENV)) if p), CACHE]
    for place in places:
        folder = place / FOLDER
        if (folder / "train").is_file() and (folder / "test").is_file():
            return (*read_cifar_file(folder / "train"), *read_cifar_file(folder / "test"))
    if not download:
        where = ", ".join(str(p / FOLDER) for p in places)
        raise MaskclError(
            f"CIFAR-100 not found in {where}; download it (needs the internet) or set {DATA_ENV}"
        )
    try:
        from torchvision.datasets import CIFAR100

        CIFAR100(str(CACHE), train=True, download=True)
    except ImportError as err:
        raise MaskclError("downloading CIFAR-100 needs torchvision: pip install 'maskcl[timm]'") from err
    except (OSError, RuntimeError) as err:
        raise MaskclError(f"CIFAR-100 could not be downloaded: {err}") from err
    return load_cifar100(CACHE, download=False)
