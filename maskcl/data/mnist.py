"""MNIST (LeCun, Bottou, Bengio & Haffner, 1998) through torchvision's ``MNIST`` dataset class (extra
``maskcl[datasets]``).

torchvision keeps the four idx files in ``PLACE/MNIST/raw/`` (``train-images-idx3-ubyte`` and the
others, unpacked). The place is looked for in ``root`` (when given), in ``$MASKCL_DATA`` and in
``~/.cache/maskcl``; with ``download=True`` a missing copy is fetched by torchvision into
``~/.cache/maskcl`` (this needs the internet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskcl.data.fashion_mnist import DATA_ENV
from maskcl.data.places import cache_dir, find_copy, not_found
from maskcl.errors import MaskclError

__all__ = ["RAW_FILES", "load_mnist"]

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The files torchvision's ``MNIST`` reads from ``PLACE/MNIST/raw/``."""


def _torchvision_mnist():
    try:
        from torchvision.datasets import MNIST
    except ImportError as err:
        raise MaskclError("MNIST is read by torchvision: pip install 'maskcl[datasets]'") from err
    return MNIST


def _read(place: Path, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mnist = _torchvision_mnist()
    arrays = []
    try:
        for train in (True, False):
            data = mnist(str(place), train=train, download=download)
            arrays += [data.data.numpy(), data.targets.numpy().astype(np.int64)]
    except (RuntimeError, AssertionError, ValueError, OSError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise MaskclError(f"MNIST in {place / 'MNIST' / 'raw'} cannot be read: {reason}") from None
    x_train, y_train, x_test, y_test = arrays
    if x_train.ndim != 3 or len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise MaskclError(f"MNIST in {place / 'MNIST' / 'raw'} does not hold images [N, H, W] with N labels")
    return x_train, y_train, x_test, y_test


def load_mnist(
    root: str | Path | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train`` uint8 ``[60000, 28, 28]``, ``y_train`` int64, ``x_test`` ``[10000, 28, 28]``,
    ``y_test`` of MNIST, from the first place that holds its four raw files (module docstring)."""
    raw = find_copy(root, "MNIST/raw", lambda folder: all((folder / name).is_file() for name in RAW_FILES))
    if raw is not None:
        return _read(raw.parent.parent, download=False)
    if not download:
        raise not_found("MNIST", root, "MNIST/raw", f"download it (needs the internet) or set {DATA_ENV}")
    return _read(cache_dir(), download=True)
