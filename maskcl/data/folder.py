"""A folder of images, one subfolder per class, read by torchvision's ``ImageFolder`` (extra
``maskcl[datasets]``).

Two layouts: ``DIR/train/CLASS/*.png`` with ``DIR/test/CLASS/*.png`` (the test classes among the
training ones), or ``DIR/CLASS/*.png``, whose images are split into training and test images per class
(a seeded ``test_fraction`` of each class, at least one). Every image must have the size and the kind
(grey or colour) of the others: grey images give ``[N, H, W]``, colour ones ``[N, 3, H, W]`` (uint8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskcl.errors import MaskclError

__all__ = ["load_image_folder"]

GREY_MODES = ("1", "L", "P;L")


def _image_folder(root: Path):
    try:
        from PIL import Image
        from torchvision.datasets import ImageFolder
    except ImportError as err:
        raise MaskclError(
            "a folder of images is read by torchvision: pip install 'maskcl[datasets]'"
        ) from err

    def load(path: str) -> np.ndarray:
        with Image.open(path) as image:
            grey = image.mode in GREY_MODES
            pixels = np.asarray(image.convert("L" if grey else "RGB"))
        return pixels if grey else pixels.transpose(2, 0, 1)

    try:
        return ImageFolder(str(root), loader=load)
    except (FileNotFoundError, RuntimeError) as err:
        raise MaskclError(
            f"{root} holds no images in class folders ({root}/CLASS/IMAGE.png): {' '.join(str(err).split())}"
        ) from None


def _read(folder) -> tuple[np.ndarray, np.ndarray]:
    images, labels, first = [], [], None
    for path, label in folder.samples:
        try:
            image = folder.loader(path)
        except (OSError, ValueError) as err:
            raise MaskclError(f"{path} cannot be read as an image: {' '.join(str(err).split())}") from None
        if first is None:
            first = (path, image.shape)
        elif image.shape != first[1]:
            raise MaskclError(
                f"{path} is {_size(image.shape)} but {first[0]} is {_size(first[1])}: every image of the "
                "data must have one size and kind (resize them first)"
            )
        images.append(image)
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[-1]}x{shape[-2]} {'grey' if len(shape) == 2 else 'colour'}"


def load_image_folder(
    path: str | Path, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of a folder of images (module docstring); labels are the
    indices of the class folders' names in sorted order."""
    path = Path(path)
    if not path.is_dir():
        raise MaskclError(f"image folder not found: {path} (moved or deleted?)")
    if (path / "train").is_dir() and (path / "test").is_dir():
        train, test = _image_folder(path / "train"), _image_folder(path / "test")
        unknown = sorted(set(test.classes) - set(train.classes))
        if unknown:
            raise MaskclError(f"{path / 'test'} has classes the training images lack: {', '.join(unknown)}")
        x_train, y_train = _read(train)
        x_test, y_test = _read(test)
        y_test = np.asarray([train.class_to_idx[test.classes[i]] for i in y_test], dtype=np.int64)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise MaskclError(
                f"{path}: the training images are {_size(x_train.shape[1:])}, the test images "
                f"{_size(x_test.shape[1:])}: every image must have one size and kind"
            )
        return x_train, y_train, x_test, y_test
    folder = _image_folder(path)
    x, y = _read(folder)
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
