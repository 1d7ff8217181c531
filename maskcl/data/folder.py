"""A folder of images, one subfolder per class, read by torchvision's ``ImageFolder`` (extra
``maskcl[datasets]``).

Two layouts: ``DIR/train/CLASS/*.png`` with ``DIR/test/CLASS/*.png`` (the test classes among the
training ones), or ``DIR/CLASS/*.png``, whose images are split into training and test images per class
(a seeded ``test_fraction`` of each class, at least one). Every image must have the size and the kind
(grey or colour) of the others: grey images give ``[N, H, W]``, colour ones ``[N, 3, H, W]`` (uint8).
With ``size`` every image is resized (PIL's bilinear filter) to ``size x size``, so that sizes may differ;
with ``skip_unreadable`` an image that cannot be decoded is left out with a warning instead of stopping
the read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from maskcl.data.places import reason
from maskcl.errors import MaskclError, MaskclWarning

__all__ = ["image_folder_arrays", "image_loader", "load_image_folder", "read_images"]

GREY_MODES = ("1", "L", "P;L")

Skipped = list[tuple[str, str]]
"""``(path, why)`` of each image left out because it cannot be decoded."""


def image_loader(size: int | None = None, mode: str | None = None) -> Callable[[str], np.ndarray]:
    """A function reading one image file into uint8 ``[H, W]`` (grey) or ``[3, H, W]`` (colour): converted
    to PIL's ``mode`` (``"L"`` or ``"RGB"``; by default grey images stay grey, all else becomes colour),
    then resized to ``size x size`` with PIL's bilinear filter when ``size`` is given."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise MaskclError(f"the image size must be a whole number of pixels, at least 1, got {size!r}")

    def load(path: str) -> np.ndarray:
        from PIL import Image  # comes with torchvision, which lists the images first

        with Image.open(path) as image:
            grey = image.mode in GREY_MODES if mode is None else mode == "L"
            converted = image.convert("L" if grey else "RGB")
        if size is not None:
            converted = converted.resize((size, size), Image.Resampling.BILINEAR)
        pixels = np.asarray(converted)
        return pixels if grey else pixels.transpose(2, 0, 1)

    return load


def _image_folder(root: Path, load: Callable[[str], np.ndarray]):
    try:
        from torchvision.datasets import ImageFolder
    except ImportError as err:
        raise MaskclError(
            "a folder of images is read by torchvision: pip install 'maskcl[datasets]'"
        ) from err
    try:
        return ImageFolder(str(root), loader=load)
    except (FileNotFoundError, RuntimeError) as err:
        raise MaskclError(
            f"{root} holds no images in class folders ({root}/CLASS/IMAGE.png): {' '.join(str(err).split())}"
        ) from None


def read_images(
    samples: Sequence[tuple[str, int]],
    load: Callable[[str], np.ndarray],
    where: str | Path,
    shape: tuple[int, ...] | None = None,
    skip_unreadable: bool = False,
) -> tuple[np.ndarray, np.ndarray, Skipped]:
    """Images (uint8) and labels (int64) of ``samples`` (``(path, label)`` pairs) read by ``load``, into
    one array allocated once: ``[N, *shape]``, or the first image's shape when ``shape`` is None; every
    other image must have it. Also the images left out (``skip_unreadable``); none left is an error
    naming ``where``."""
    x = None if shape is None else np.empty((len(samples), *shape), dtype=np.uint8)
    y = np.empty(len(samples), dtype=np.int64)
    first, skipped, n = None, [], 0
    for path, label in samples:
        try:
            image = load(path)
        except (OSError, ValueError) as err:
            if not skip_unreadable:
                raise MaskclError(f"{path} cannot be read as an image: {reason(err)}") from None
            skipped.append((path, reason(err)))
            continue
        if x is None:
            x = np.empty((len(samples), *image.shape), dtype=np.uint8)
        if first is None:
            first = (path, image.shape)
        if image.shape != x.shape[1:]:
            if shape is not None:
                raise MaskclError(f"{path} is {_size(image.shape)}, not {_size(shape)} like every image here")
            raise MaskclError(
                f"{path} is {_size(image.shape)} but {first[0]} is {_size(first[1])}: every image of the "
                "data must have one size and kind (resize them first)"
            )
        x[n], y[n] = image, label
        n += 1
    if x is None and not skipped:
        raise MaskclError(f"{where} holds no images")
    if n == 0:
        raise MaskclError(
            f"none of the {len(skipped)} images in {where} can be read; the first, {skipped[0][0]}: "
            f"{skipped[0][1]}"
        )
    return x[:n] if n < len(x) else x, y[:n], skipped


def _read(folder, skip_unreadable: bool) -> tuple[np.ndarray, np.ndarray, Skipped]:
    return read_images(folder.samples, folder.loader, folder.root, skip_unreadable=skip_unreadable)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[-1]}x{shape[-2]} {'grey' if len(shape) == 2 else 'colour'}"


def _warn_skipped(path: Path, skipped: Skipped) -> None:
    if skipped:
        first, why = skipped[0]
        warnings.warn(
            f"{path}: left out {len(skipped)} image(s) that cannot be decoded; the first, {first}: {why}",
            MaskclWarning,
            stacklevel=4,
        )


def image_folder_arrays(
    path: str | Path,
    load: Callable[[str], np.ndarray],
    test_fraction: float = 0.2,
    seed: int = 0,
    skip_unreadable: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`load_image_folder` with each image read by ``load`` (an :func:`image_loader`): a data set
    whose kind is known makes every image grey or colour."""
    path = Path(path)
    if not path.is_dir():
        raise MaskclError(f"image folder not found: {path} (moved or deleted?)")
    if (path / "train").is_dir() and (path / "test").is_dir():
        train, test = _image_folder(path / "train", load), _image_folder(path / "test", load)
        unknown = sorted(set(test.classes) - set(train.classes))
        if unknown:
            raise MaskclError(f"{path / 'test'} has classes the training images lack: {', '.join(unknown)}")
        x_train, y_train, skipped = _read(train, skip_unreadable)
        x_test, y_test, skipped_test = _read(test, skip_unreadable)
        _warn_skipped(path, skipped + skipped_test)
        y_test = np.asarray([train.class_to_idx[test.classes[i]] for i in y_test], dtype=np.int64)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise MaskclError(
                f"{path}: the training images are {_size(x_train.shape[1:])}, the test images "
                f"{_size(x_test.shape[1:])}: every image must have one size and kind"
            )
        return x_train, y_train, x_test, y_test
    folder = _image_folder(path, load)
    x, y, skipped = _read(folder, skip_unreadable)
    _warn_skipped(path, skipped)
    rng = np.random.default_rng([seed, 3])
    test = []
    for label, name in enumerate(folder.classes):
        rows = np.flatnonzero(y == label)
        if len(rows) < 2:
            raise MaskclError(
                f"class folder {path / name} has {len(rows)} image: a class needs 2, one to train on and one "
                "to test on"
            )
        test += rng.permutation(rows)[: min(len(rows) - 1, max(1, round(test_fraction * len(rows))))].tolist()
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    return x[~is_test], y[~is_test], x[is_test], y[is_test]


def load_image_folder(
    path: str | Path,
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    size: int | None = None,
    skip_unreadable: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of a folder of images (module docstring); labels are the
    indices of the class folders' names in sorted order. ``size``: resize every image to ``size x size``.
    ``skip_unreadable``: leave out the images that cannot be decoded, with one :class:`MaskclWarning`
    saying how many and naming the first."""
    return image_folder_arrays(path, image_loader(size), test_fraction, seed, skip_unreadable)
