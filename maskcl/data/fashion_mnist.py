"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017, arXiv:1708.07747) read from its original idx files.

The four files are looked for, in order, in ``root`` (when given), in ``$MASKCL_DATA``, in
``~/.cache/maskcl/fashion-mnist`` and in ``/usr/share/datasets/fashion-mnist`` (Debian package
``dataset-fashion-mnist``); if none has them they are downloaded from Zalando Research's server.
"""

from __future__ import annotations

import functools
import gzip
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from maskcl.errors import MaskclError

OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
"""Where Zalando Research publishes the four ``.gz`` files."""

URL_ENV = "MASKCL_FASHION_MNIST_URL"
DATA_ENV = "MASKCL_DATA"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""Base names of x_train, y_train, x_test, y_test; each may be stored gzipped (``.gz``) or raw."""

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (LeCun's MNIST format), gzipped or raw, into a native-endian array.

    Layout: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions ``n``, then ``n`` big-endian uint32 sizes and the data in
    C order. Gzip is recognised by its magic bytes, not by the file name.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MaskclError(f"cannot read idx file {path}: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise MaskclError(f"idx file {path} is a corrupt or truncated gzip file") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise MaskclError(f"{path} is not an idx file: bad magic number {raw[:4].hex() or '(empty)'}")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MaskclError(f"idx file {path} is truncated: header declares {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise MaskclError(
            f"idx file {path} is {state}: {len(raw)} bytes, expected {expected} for shape {shape}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def default_cache_dir() -> Path:
    """The download folder used when no ``root`` is given: ``~/.cache/maskcl/fashion-mnist``."""
    return Path.home() / ".cache" / "maskcl" / "fashion-mnist"


def _file_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _complete(folder: Path) -> bool:
    return all(_file_in(folder, name) is not None for name in FILES)


def _candidates(root: str | Path | None) -> list[Path]:
    """Folders to search, in order; a data root is tried with and without a ``fashion-mnist/`` subfolder."""
    if root is not None:
        return [Path(root) / "fashion-mnist", Path(root)]
    found = []
    if os.environ.get(DATA_ENV):
        env_root = Path(os.environ[DATA_ENV]).expanduser()
        found += [env_root / "fashion-mnist", env_root]
    return [*found, default_cache_dir(), DEBIAN_DIR]


def _download(base_url: str, folder: Path) -> None:
    """Fetch the four ``.gz`` files into ``folder``; each goes to a temporary file first, then is renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = folder / f"{name}.gz"
        if target.is_file():
            continue
        url = f"{base_url.rstrip('/')}/{name}.gz"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp_name, target)
        except (OSError, urllib.error.URLError) as exc:
            Path(tmp_name).unlink(missing_ok=True)
            reason = " ".join(str(getattr(exc, "reason", exc)).split())
            raise MaskclError(f"could not download Fashion-MNIST file {url}: {reason}") from exc


@functools.lru_cache(maxsize=4)
def _load_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train, x_test, y_test = (read_idx(_file_in(folder, name)) for name in FILES)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise MaskclError(
                f"Fashion-MNIST {split} files in {folder} do not hold uint8 images [N, H, W] with N labels"
            )
    arrays = (x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64))
    for array in arrays:
        array.setflags(write=False)
    return arrays


def load_fashion_mnist(
    root: str | Path | None = None, download: bool = True, base_url: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``x_train`` uint8 [60000, 28, 28], ``y_train`` int64, ``x_test`` [10000, 28, 28], ``y_test``.

    ``root`` (or ``$MASKCL_DATA``) may hold the four files directly or in a ``fashion-mnist/`` subfolder.
    Missing files are downloaded (when ``download``) from ``base_url``, else ``$MASKCL_FASHION_MNIST_URL``,
    else :data:`OFFICIAL_URL`, into ``root/fashion-mnist`` or :func:`default_cache_dir`. Decoded arrays
    are cached per folder for the life of the process and are read-only.
    """
    candidates = _candidates(root)
    folder = next((c for c in candidates if _complete(c)), None)
    if folder is None:
        if not download:
            looked = ", ".join(str(c) for c in candidates)
            raise MaskclError(
                f"Fashion-MNIST not found (looked in {looked}): run `apt-get install dataset-fashion-mnist`,"
                f" set {DATA_ENV}, or pass download=True with internet access"
            )
        folder = Path(root) / "fashion-mnist" if root is not None else default_cache_dir()
        _download(base_url or os.environ.get(URL_ENV) or OFFICIAL_URL, folder)
    return _load_folder(folder.resolve())
