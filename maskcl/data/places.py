"""Where maskcl's readers look for a data set, and the torchvision they read it with.

A data set's folder is looked for in the *data places*, in order: ``root`` (when given), ``$MASKCL_DATA``
(:data:`~maskcl.data.fashion_mnist.DATA_ENV`) and the download cache ``~/.cache/maskcl``
(:func:`cache_dir`); the first that holds a complete copy is read.
"""

from __future__ import annotations

import http.client
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from maskcl.data.fashion_mnist import DATA_ENV
from maskcl.errors import MaskclError

__all__ = [
    "DOWNLOAD_ERRORS",
    "cache_dir",
    "data_places",
    "download_or_fail",
    "find_copy",
    "local_copy",
    "not_found",
    "reason",
    "torchvision_datasets",
]

DOWNLOAD_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    EOFError,
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    http.client.HTTPException,
)
"""What torchvision's downloaders raise for a failed or damaged download."""


def cache_dir() -> Path:
    """The download folder, ``~/.cache/maskcl`` (it receives ``cifar-100-python/`` and the others), at call
    time."""
    return Path.home() / ".cache" / "maskcl"


def data_places(root: str | Path | None = None) -> list[Path]:
    """``root`` (when given), ``$MASKCL_DATA`` (when set) and ``~/.cache/maskcl``, in this order."""
    return [*(Path(p).expanduser() for p in (root, os.environ.get(DATA_ENV)) if p), cache_dir()]


def _names(folder: str | Sequence[str]) -> tuple[str, ...]:
    return (folder,) if isinstance(folder, str) else tuple(folder)


def find_copy(
    root: str | Path | None, folder: str | Sequence[str], complete: Callable[[Path], bool]
) -> Path | None:
    """``PLACE/folder`` of the first data place where ``complete`` says it holds the whole set (with
    several names of ``folder``, each is tried in a place before the next place)."""
    candidates = (place / name for place in data_places(root) for name in _names(folder))
    return next((candidate for candidate in candidates if complete(candidate)), None)


def not_found(name: str, root: str | Path | None, folder: str | Sequence[str], advice: str) -> MaskclError:
    """The one-line error for a set found in none of the data places, naming where it was looked for."""
    where = ", ".join(str(place / each) for place in data_places(root) for each in _names(folder))
    return MaskclError(f"{name} not found in {where}; {advice}")


def local_copy(name: str, root: str | Path | None, folder: str | Sequence[str], what: str, why: str) -> Path:
    """``PLACE/folder`` of the first data place that has it, for a set that is not downloaded (``why``);
    else a one-line error saying where it was looked for and that ``what`` goes there."""
    found = find_copy(root, folder, Path.is_dir)
    if found is None:
        raise not_found(
            name,
            root,
            folder,
            f"put {what} there, or set {DATA_ENV} to the folder holding it (it is not downloaded: {why})",
        )
    return found


def reason(err: BaseException) -> str:
    """``err``'s message on one line (its type's name when it has none)."""
    return " ".join(str(err).split()) or type(err).__name__


def torchvision_datasets(name: str):
    """The ``torchvision.datasets`` module, or a MaskclError saying how to install it for ``name``."""
    try:
        import torchvision.datasets
    except ImportError as err:
        raise MaskclError(f"{name} is read by torchvision: pip install 'maskcl[datasets]'") from err
    return torchvision.datasets


def download_or_fail(name: str, url: str, fetch: Callable[[], object], partial: Path | None = None) -> None:
    """Run ``fetch`` (a torchvision download of ``name`` from ``url``); a failure is a one-line MaskclError,
    and the ``partial`` file it may leave is removed (it would pass for a complete copy)."""
    try:
        fetch()
    except DOWNLOAD_ERRORS as err:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise MaskclError(f"{name} could not be downloaded from {url}: {reason(err)}") from err
