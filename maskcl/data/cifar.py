"""CIFAR-100 and CIFAR-10 (Krizhevsky, 2009), read from their own files: ``cifar-100-python/train`` and
``.../test``; ``cifar-10-batches-py/data_batch_1`` to ``_5`` and ``.../test_batch``.

Each file is a Python pickle (Python 2's cPickle, protocol 2) of a dict with ``b"data"`` (``[N, 3072]``
uint8, the red, green and blue 32x32 planes of each image in turn) and the labels (``b"fine_labels"``,
the 100 classes; CIFAR-10's ``b"labels"``). It is unpickled by :class:`CifarUnpickler`, which loads no
global but the three a numpy array needs, so a poisoned file cannot run code (torchvision's ``CIFAR10``
class would ``pickle.load`` it). The folder is looked for in ``root`` (when given), in ``$MASKCL_DATA``
and in ``~/.cache/maskcl``; with ``download=True`` a missing copy is fetched from the set's official URL
(or ``$MASKCL_CIFAR100_URL`` / ``$MASKCL_CIFAR10_URL``) by torchvision's ``download_url`` into
``~/.cache/maskcl`` and unpacked with tarfile's ``data`` filter (this needs torchvision and the
internet).
"""

from __future__ import annotations

import http.client
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskcl.data.fashion_mnist import DATA_ENV
from maskcl.data.places import cache_dir, find_copy, not_found
from maskcl.errors import MaskclError


@dataclass(frozen=True)
class CifarSet:
    """One of the CIFAR sets: its folder and files, its labels' key and count, where it is published (the
    archive's MD5: a download from another URL is not checked)."""

    name: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    labels: bytes
    classes: int
    url: str
    md5: str
    url_env: str

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[1]


CIFAR100 = CifarSet(
    "CIFAR-100",
    "cifar-100-python",
    ("train",),
    ("test",),
    b"fine_labels",
    100,
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85",
    "MASKCL_CIFAR100_URL",
)
CIFAR10 = CifarSet(
    "CIFAR-10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    b"labels",
    10,
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
    "MASKCL_CIFAR10_URL",
)

_RECONSTRUCT = np.empty(0).__reduce__()[0]
"""The installed numpy's ``multiarray._reconstruct``, taken from an array's own pickle recipe."""

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 1.x names (the published files)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2 names
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
"""``(module, name)`` of every global a CIFAR file may load: what pickling a numpy array names."""


def _shown(name: str, limit: int = 100) -> str:
    """``name`` as it can go in a one-line message: printable and at most ``limit`` characters."""
    shown = name if name.isprintable() else ascii(name)
    return shown if len(shown) <= limit else f"{shown[:limit]}..."


class CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS`, imports nothing, and refuses all else."""

    def __init__(self, file, path: str | Path, name: str = CIFAR100.name) -> None:
        super().__init__(file, encoding="bytes")
        self.path, self.name = path, name

    def find_class(self, module: str, name: str):
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise MaskclError(
                f"{self.path} is not a {self.name} file: it asks to load {_shown(f'{module}.{name}')},"
                " which a CIFAR file never needs"
            )
        return found


def _check_batch(path: str | Path, batch: object, cifar: CifarSet) -> tuple[np.ndarray, list[int]]:
    """``b"data"`` and the labels of ``batch`` when it is a dict of ``cifar``'s, else a MaskclError."""

    def refuse(reason: str) -> MaskclError:
        return MaskclError(f"{path} is not a {cifar.name} file: {reason}")

    if type(batch) is not dict:
        raise refuse(f"it holds a {type(batch).__name__}, not a dict")
    for key in (b"data", cifar.labels):
        if key not in batch:
            raise refuse(f"its dict has no {key!r}")
    data, labels = batch[b"data"], batch[cifar.labels]
    if type(data) is not np.ndarray or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} array {data.shape}" if type(data) is np.ndarray else type(data).__name__
        raise refuse(f"b'data' must be a uint8 array [N, 3072], got {_shown(got)}")
    if type(labels) is not list or len(labels) != len(data):
        got = f"{len(labels)} labels" if type(labels) is list else f"a {type(labels).__name__}"
        raise refuse(f"{cifar.labels!r} must be a list of {len(data)} ints (one per image), got {got}")
    bad = next((label for label in labels if type(label) is not int or not 0 <= label < cifar.classes), None)
    if bad is not None:
        raise refuse(f"{cifar.labels!r} must hold ints in 0..{cifar.classes - 1}, got {_shown(repr(bad))}")
    return data, labels


def read_cifar_file(path: str | Path, cifar: CifarSet = CIFAR100) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` int64 of one file of ``cifar`` (CIFAR-100's
    fine labels by default).

    The pickle may load only :data:`ALLOWED_GLOBALS`; the result must be a dict whose ``b"data"`` is a
    uint8 ndarray ``[N, 3072]`` and whose labels are a list of ``N`` ints in ``0..classes - 1``.
    """
    try:
        with open(path, "rb") as f:
            batch = CifarUnpickler(f, path, cifar.name).load()
    except MaskclError:
        raise
    except OSError as err:
        raise MaskclError(f"cannot read {cifar.name} file {path}: {err.strerror or err}") from err
    except Exception as err:  # whatever a damaged or hostile pickle makes the unpickler or numpy raise
        raise MaskclError(f"{path} is not a {cifar.name} file: {_shown(repr(err), 200)}") from err
    data, labels = _check_batch(path, batch, cifar)
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _download(cache: Path, cifar: CifarSet) -> None:
    """Fetch and unpack ``cifar``'s URL variable or its official URL (md5-checked) into ``cache``."""
    url = os.environ.get(cifar.url_env) or cifar.url
    if not url.startswith(("http://", "https://")):  # torchvision's downloader reads no file://, ftp://...
        raise MaskclError(
            f"{cifar.url_env} must be an http(s) URL, got {_shown(url)}; to use a copy on disk, set "
            f"{DATA_ENV} to the folder holding {cifar.folder}/"
        )
    try:
        from torchvision.datasets.utils import download_url
    except ImportError as err:
        raise MaskclError(
            f"downloading {cifar.name} needs torchvision: pip install 'maskcl[datasets]'"
        ) from err
    md5 = cifar.md5 if url == cifar.url else None
    archive = cifar.archive
    try:
        download_url(url, str(cache), filename=archive, md5=md5)
        _extract(cache / archive, cache)
    except (
        OSError,
        RuntimeError,
        ValueError,
        EOFError,
        tarfile.TarError,
        zlib.error,
        http.client.HTTPException,
    ) as err:
        (cache / archive).unlink(missing_ok=True)  # a partial archive would pass for a complete one
        reason = " ".join(str(getattr(err, "reason", err) or type(err).__name__).split())
        raise MaskclError(f"{cifar.name} could not be downloaded from {url}: {reason}") from err


def _extract(archive: Path, folder: Path) -> None:
    """Unpack ``archive`` into ``folder``, refusing members that would land outside it, links and device
    files (tarfile's ``data`` filter): a mirror's archive is not trusted."""
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")


def load_cifar(
    cifar: CifarSet, root: str | Path | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of ``cifar`` (50,000 and 10,000 images), its training files
    concatenated in order."""

    def complete(folder: Path) -> bool:
        return all((folder / name).is_file() for name in (*cifar.train, *cifar.test))

    folder = find_copy(root, cifar.folder, complete)
    if folder is None:
        if not download:
            raise not_found(
                cifar.name, root, cifar.folder, f"download it (needs the internet) or set {DATA_ENV}"
            )
        cache = cache_dir()
        _download(cache, cifar)
        folder = cache / cifar.folder
        if not complete(folder):
            url = os.environ.get(cifar.url_env) or cifar.url
            names = " and ".join(f"{cifar.folder}/{name}" for name in (*cifar.train[:1], *cifar.test))
            raise MaskclError(f"the archive from {url} holds no {names}")
    splits = []
    for names in (cifar.train, cifar.test):
        parts = [read_cifar_file(folder / name, cifar) for name in names]
        splits += [np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])]
    return tuple(splits)


def load_cifar100(
    root: str | Path | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of CIFAR-100 (50,000 and 10,000 images of 100 classes)."""
    return load_cifar(CIFAR100, root, download)


def load_cifar10(
    root: str | Path | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of CIFAR-10 (50,000 and 10,000 images of 10 classes)."""
    return load_cifar(CIFAR10, root, download)
