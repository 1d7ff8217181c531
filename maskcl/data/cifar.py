"""CIFAR-100 (Krizhevsky, 2009), read from its own files: ``cifar-100-python/train`` and ``.../test``.

Each file is a Python pickle (Python 2's cPickle, protocol 2) of a dict with ``b"data"`` (``[N, 3072]``
uint8, the red, green and blue 32x32 planes of each image in turn) and ``b"fine_labels"`` (the 100
classes). It is unpickled by :class:`CifarUnpickler`, which loads no global but the three a numpy array
needs, so a poisoned file cannot run code. The folder is looked for in ``root`` (when given), in
``$MASKCL_DATA`` and in ``~/.cache/maskcl``; with ``download=True`` a missing copy is fetched from
:data:`OFFICIAL_URL` (or ``$MASKCL_CIFAR100_URL``) by torchvision's ``download_url`` into
``~/.cache/maskcl`` and unpacked with tarfile's ``data`` filter (this needs the ``timm`` extra and the
internet).
"""

from __future__ import annotations

import http.client
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from maskcl.data.fashion_mnist import DATA_ENV
from maskcl.errors import MaskclError

FOLDER = "cifar-100-python"
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
"""Where Alex Krizhevsky publishes the archive of ``cifar-100-python/{train,test,meta}``."""

OFFICIAL_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
"""MD5 of :data:`OFFICIAL_URL`'s archive; a download from another URL is not checked."""

URL_ENV = "MASKCL_CIFAR100_URL"
ARCHIVE = "cifar-100-python.tar.gz"

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

    def __init__(self, file, path: str | Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise MaskclError(
                f"{self.path} is not a CIFAR-100 file: it asks to load {_shown(f'{module}.{name}')},"
                " which a CIFAR file never needs"
            )
        return found


def _check_batch(path: str | Path, batch: object) -> tuple[np.ndarray, list[int]]:
    """``b"data"`` and ``b"fine_labels"`` of ``batch`` when it is a CIFAR-100 dict, else a MaskclError."""

    def refuse(reason: str) -> MaskclError:
        return MaskclError(f"{path} is not a CIFAR-100 file: {reason}")

    if type(batch) is not dict:
        raise refuse(f"it holds a {type(batch).__name__}, not a dict")
    for key in (b"data", b"fine_labels"):
        if key not in batch:
            raise refuse(f"its dict has no {key!r}")
    data, labels = batch[b"data"], batch[b"fine_labels"]
    if type(data) is not np.ndarray or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} array {data.shape}" if type(data) is np.ndarray else type(data).__name__
        raise refuse(f"b'data' must be a uint8 array [N, 3072], got {_shown(got)}")
    if type(labels) is not list or len(labels) != len(data):
        got = f"{len(labels)} labels" if type(labels) is list else f"a {type(labels).__name__}"
        raise refuse(f"b'fine_labels' must be a list of {len(data)} ints (one per image), got {got}")
    bad = next((label for label in labels if type(label) is not int or not 0 <= label < 100), None)
    if bad is not None:
        raise refuse(f"b'fine_labels' must hold ints in 0..99, got {_shown(repr(bad))}")
    return data, labels


def read_cifar_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` uint8 and fine labels ``[N]`` int64 of one CIFAR-100 file.

    The pickle may load only :data:`ALLOWED_GLOBALS`; the result must be a dict whose ``b"data"`` is a
    uint8 ndarray ``[N, 3072]`` and whose ``b"fine_labels"`` is a list of ``N`` ints in 0..99.
    """
    try:
        with open(path, "rb") as f:
            batch = CifarUnpickler(f, path).load()
    except MaskclError:
        raise
    except OSError as err:
        raise MaskclError(f"cannot read CIFAR-100 file {path}: {err.strerror or err}") from err
    except Exception as err:  # whatever a damaged or hostile pickle makes the unpickler or numpy raise
        raise MaskclError(f"{path} is not a CIFAR-100 file: {_shown(repr(err), 200)}") from err
    data, labels = _check_batch(path, batch)
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def cache_dir() -> Path:
    """The download folder, ``~/.cache/maskcl`` (it receives ``cifar-100-python/``), at call time."""
    return Path.home() / ".cache" / "maskcl"


def _download(cache: Path) -> None:
    """Fetch and unpack ``$MASKCL_CIFAR100_URL`` or :data:`OFFICIAL_URL` (md5-checked) into ``cache``."""
    url = os.environ.get(URL_ENV) or OFFICIAL_URL
    if not url.startswith(("http://", "https://")):  # torchvision's downloader reads no file://, ftp://...
        raise MaskclError(
            f"{URL_ENV} must be an http(s) URL, got {_shown(url)}; to use a copy on disk, set {DATA_ENV}"
            f" to the folder holding {FOLDER}/"
        )
    try:
        from torchvision.datasets.utils import download_url
    except ImportError as err:
        raise MaskclError("downloading CIFAR-100 needs torchvision: pip install 'maskcl[timm]'") from err
    md5 = OFFICIAL_MD5 if url == OFFICIAL_URL else None
    try:
        download_url(url, str(cache), filename=ARCHIVE, md5=md5)
        _extract(cache / ARCHIVE, cache)
    except (
        OSError,
        RuntimeError,
        ValueError,
        EOFError,
        tarfile.TarError,
        zlib.error,
        http.client.HTTPException,
    ) as err:
        (cache / ARCHIVE).unlink(missing_ok=True)  # a partial archive would pass for a complete one
        reason = " ".join(str(getattr(err, "reason", err) or type(err).__name__).split())
        raise MaskclError(f"CIFAR-100 could not be downloaded from {url}: {reason}") from err


def _extract(archive: Path, folder: Path) -> None:
    """Unpack ``archive`` into ``folder``, refusing members that would land outside it, links and device
    files (tarfile's ``data`` filter): a mirror's archive is not trusted."""
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")


def load_cifar100(
    root: str | Path | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of CIFAR-100 (50,000 and 10,000 images of 100 classes)."""
    cache = cache_dir()
    places = [*(Path(p) for p in (root, os.environ.get(DATA_ENV)) if p), cache]
    for place in places:
        folder = place / FOLDER
        if (folder / "train").is_file() and (folder / "test").is_file():
            return (*read_cifar_file(folder / "train"), *read_cifar_file(folder / "test"))
    if not download:
        where = ", ".join(str(p / FOLDER) for p in places)
        raise MaskclError(
            f"CIFAR-100 not found in {where}; download it (needs the internet) or set {DATA_ENV}"
        )
    _download(cache)
    folder = cache / FOLDER
    if not ((folder / "train").is_file() and (folder / "test").is_file()):
        url = os.environ.get(URL_ENV) or OFFICIAL_URL
        raise MaskclError(f"the archive from {url} holds no {FOLDER}/train and {FOLDER}/test")
    return (*read_cifar_file(folder / "train"), *read_cifar_file(folder / "test"))
