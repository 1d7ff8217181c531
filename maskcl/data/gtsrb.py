"""GTSRB, the German Traffic Sign Recognition Benchmark (Stallkamp, Schlipsing, Salmen & Igel, "Man vs.
computer: Benchmarking machine learning algorithms for traffic sign recognition", Neural Networks 32,
2012), 43 classes of traffic signs, through torchvision's ``GTSRB`` class (extra ``maskcl[datasets]``).

On disk, as torchvision keeps it: ``PLACE/gtsrb/GTSRB/Training/000CC/*.ppm`` (39,209 images, one folder
per class ``CC``, 00000 to 00042, beside its ``GT-000CC.csv``), ``PLACE/gtsrb/GTSRB/Final_Test/Images/
*.ppm`` (12,630 images) and their labels in ``PLACE/gtsrb/GT-final_test.csv`` (``;``-separated, with the
columns ``Filename`` and ``ClassId``). ``PLACE`` is ``root`` (when given), ``$MASKCL_DATA`` or
``~/.cache/maskcl``; with ``download=True`` a missing copy is fetched by torchvision into
``~/.cache/maskcl/gtsrb`` (this needs the internet). The images (15x15 to 250x250 pixels) are resized to
``size x size`` with PIL's bilinear filter; a training image's label is the number of its class folder
(``00042`` is 42), as the test annotations number them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from maskcl.data.fashion_mnist import DATA_ENV
from maskcl.data.folder import image_loader, read_images
from maskcl.data.places import cache_dir, download_or_fail, find_copy, not_found, reason, torchvision_datasets
from maskcl.errors import MaskclError

__all__ = ["CLASSES", "FOLDER", "load_gtsrb"]

FOLDER = "gtsrb"
"""The folder of a data place that torchvision's ``GTSRB`` keeps the set in."""

CLASSES = 43

SOURCE = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
"""Where torchvision's ``GTSRB`` downloads the set's three archives from (named in messages)."""

PARTS = ("GTSRB/Training", "GTSRB/Final_Test/Images", "GT-final_test.csv")
"""What a complete copy holds in :data:`FOLDER`."""


def _complete(folder: Path) -> bool:
    return all((folder / part).exists() for part in PARTS)


def _samples(place: Path, split: str) -> list[tuple[str, int]]:
    """``(path, class)`` of each image of ``split``, listed by torchvision's ``GTSRB``."""
    datasets = torchvision_datasets("GTSRB")
    try:
        samples = datasets.GTSRB(str(place), split=split)._samples
    except KeyError as err:
        raise MaskclError(f"GTSRB test labels {place / FOLDER / PARTS[2]} have no column {err}") from None
    except (RuntimeError, OSError, ValueError, TypeError) as err:
        raise MaskclError(f"GTSRB {split} images in {place / FOLDER} cannot be read: {reason(err)}") from None
    if split == "train":  # torchvision numbers the class folders present; the set numbers them by name
        folders = {Path(path).parent.name for path, _ in samples}
        bad = sorted(name for name in folders if not (name.isdigit() and int(name) < CLASSES))
        if bad:
            where = place / FOLDER / PARTS[0] / bad[0]
            raise MaskclError(f"{where} is not a GTSRB class folder (00000 to {CLASSES - 1:05d})")
        samples = [(path, int(Path(path).parent.name)) for path, _ in samples]
    bad = next((label for _, label in samples if not 0 <= label < CLASSES), None)
    if bad is not None:
        raise MaskclError(
            f"GTSRB test labels {place / FOLDER / PARTS[2]} hold class {bad}, not one of 0 to {CLASSES - 1}"
        )
    return samples


def _read(place: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    samples = _samples(place, split)
    where = place / FOLDER / PARTS[0 if split == "train" else 1]
    x, y, _ = read_images(samples, image_loader(size, "RGB"), where, shape=(3, size, size))
    return x, y


def load_gtsrb(
    root: str | Path | None = None, download: bool = True, size: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train`` uint8 ``[39209, 3, size, size]``, ``y_train`` int64 (0 to 42), ``x_test``
    ``[12630, 3, size, size]``, ``y_test`` of GTSRB, from the first place holding a complete copy (module
    docstring)."""
    image_loader(size)  # a bad size fails before anything is read or downloaded
    folder = find_copy(root, FOLDER, _complete)
    if folder is None:
        if not download:
            raise not_found("GTSRB", root, FOLDER, f"download it (needs the internet) or set {DATA_ENV}")
        datasets = torchvision_datasets("GTSRB")
        for split in ("train", "test"):
            fetch = functools.partial(datasets.GTSRB, str(cache_dir()), split=split, download=True)
            download_or_fail("GTSRB", SOURCE, fetch)
        folder = cache_dir() / FOLDER
    place = folder.parent
    return (*_read(place, "train", size), *_read(place, "test", size))
