"""SVHN, the Street View House Numbers, cropped digits (Netzer, Wang, Coates, Bissacco, Wu & Ng, "Reading
Digits in Natural Images with Unsupervised Feature Learning", NIPS Workshop on Deep Learning and
Unsupervised Feature Learning, 2011), through torchvision's ``SVHN`` class (extra ``maskcl[datasets]``,
which brings scipy).

On disk: ``PLACE/svhn/train_32x32.mat`` (73,257 digits) and ``PLACE/svhn/test_32x32.mat`` (26,032; the
``extra_32x32.mat`` split is not read). Each is a MATLAB file holding ``X``, uint8 ``[32, 32, 3, N]``
(row, column, channel, image), and ``y``, ``[N, 1]`` labels 1 to 10, where 10 is the digit 0; they are
returned as ``[N, 3, 32, 32]`` images and labels 0 to 9 (the digit). ``PLACE`` is ``root`` (when given),
``$MASKCL_DATA`` or ``~/.cache/maskcl``; with ``download=True`` a missing copy is fetched from the set's
URLs by torchvision into ``~/.cache/maskcl/svhn`` (this needs the internet).

torchvision's class reads a file only when its MD5 is that of the published file, and refuses any
other. A local copy whose MD5 differs (a subset, or a file saved again by another program) is therefore
read with ``scipy.io.loadmat`` here, in the same documented layout, but only after the class has refused
it: the published files keep torchvision's check and its reading, and a damaged file still fails, with
scipy's reason, and the arrays of either way are checked for their shapes and labels.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from maskcl.data.fashion_mnist import DATA_ENV
from maskcl.data.places import cache_dir, download_or_fail, find_copy, not_found, reason, torchvision_datasets
from maskcl.errors import MaskclError

__all__ = ["FILES", "FOLDER", "load_svhn"]

FOLDER = "svhn"
"""The folder of a data place that holds the ``.mat`` files (torchvision's ``root`` for SVHN)."""

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
"""The file of each split, in :data:`FOLDER`."""


def _scipy_io():
    try:
        import scipy.io
    except ImportError as err:
        raise MaskclError("SVHN's .mat files are read by scipy: pip install 'maskcl[datasets]'") from err
    return scipy.io


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` and labels 0..9 of an SVHN ``.mat`` file, read by scipy."""
    try:
        mat = _scipy_io().loadmat(str(path))
    except MaskclError:
        raise
    except Exception as err:  # whatever a damaged file makes scipy raise (ValueError, MatReadError, ...)
        raise MaskclError(f"SVHN file {path} cannot be read: {reason(err)}") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else "none"
        raise MaskclError(f"{path} is not an SVHN file: X must be uint8 [32, 32, 3, N], got {got}")
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer) or y.size != x.shape[3]:
        got = f"{y.dtype} {y.shape}" if isinstance(y, np.ndarray) else "none"
        raise MaskclError(f"{path} is not an SVHN file: y must be {x.shape[3]} whole numbers, got {got}")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise MaskclError(
            f"{path} is not an SVHN file: y must hold labels 1 to 10, got {labels.min()} to {labels.max()}"
        )
    return x.transpose(3, 2, 0, 1), labels % 10


def _read(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = folder / FILES[split]
    datasets = torchvision_datasets("SVHN")
    _scipy_io()
    try:
        data = datasets.SVHN(str(folder), split=split)
    except RuntimeError:  # not the published file's MD5: a local copy, read the same way (docstring)
        x, y = _read_mat(path)
    else:
        x, y = data.data, np.asarray(data.labels, dtype=np.int64).reshape(-1)
    if x.shape[1:] != (3, 32, 32) or len(x) != len(y) or (len(y) and not 0 <= y.min() <= y.max() <= 9):
        raise MaskclError(f"{path} does not hold SVHN images [N, 3, 32, 32] with N digit labels")
    return np.ascontiguousarray(x), y


def _download(folder: Path) -> None:
    datasets = torchvision_datasets("SVHN")
    for split in FILES:
        url, name, md5 = datasets.SVHN.split_list[split]
        fetch = functools.partial(datasets.utils.download_url, url, str(folder), name, md5)
        download_or_fail("SVHN", url, fetch, folder / name)


def load_svhn(
    root: str | Path | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train`` uint8 ``[73257, 3, 32, 32]``, ``y_train`` int64 (the digit), ``x_test``
    ``[26032, 3, 32, 32]``, ``y_test`` of SVHN, from the first place holding both files (module
    docstring)."""
    folder = find_copy(root, FOLDER, lambda f: all((f / name).is_file() for name in FILES.values()))
    if folder is None:
        if not download:
            raise not_found("SVHN", root, FOLDER, f"download it (needs the internet) or set {DATA_ENV}")
        folder = cache_dir() / FOLDER
        _download(folder)
    return (*_read(folder, "train"), *_read(folder, "test"))
