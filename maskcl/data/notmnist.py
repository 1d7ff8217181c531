"""notMNIST (Bulatov, "notMNIST dataset", 2011, yaroslavvb.blogspot.com): the letters A to J in many
fonts, 28x28 grey, read as a folder of images by :func:`~maskcl.data.folder.load_image_folder`.

On disk, as ``notMNIST_small.tar.gz`` unpacks: ``PLACE/notMNIST_small/A/*.png`` to ``.../J/*.png`` (about
18,700 images; ``PLACE/notMNIST/`` is read too, for a copy named so), or that folder with ``train/A`` to
``train/J`` and ``test/A`` to ``test/J``. Without ``train/`` and ``test/`` a seeded fifth of each letter
is the test set. The labels are the letters' ranks (A is 0, J is 9). The published archives hold a few
PNGs that cannot be decoded: they are left out, with one warning. ``PLACE`` is ``root`` (when given),
``$MASKCL_DATA`` or ``~/.cache/maskcl``. The set is not downloaded (it has no stable official URL).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskcl.data.folder import image_folder_arrays, image_loader
from maskcl.data.places import local_copy
from maskcl.errors import MaskclError

__all__ = ["FOLDERS", "LETTERS", "load_notmnist"]

FOLDERS = ("notMNIST_small", "notMNIST")
"""The names of notMNIST's folder in a data place, in the order they are tried."""

LETTERS = tuple("ABCDEFGHIJ")


def _class_folders(folder: Path) -> list[str]:
    split = (folder / "train").is_dir() and (folder / "test").is_dir()
    return sorted(entry.name for entry in (folder / "train" if split else folder).iterdir() if entry.is_dir())


def load_notmnist(
    root: str | Path | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train`` uint8 ``[N, 28, 28]``, ``y_train`` int64 (A is 0, J is 9), ``x_test``, ``y_test`` of
    notMNIST, from the first place holding its folder, split by ``seed`` when it has no ``train/`` and
    ``test/`` (module docstring)."""
    what = "its class folders A to J (from notMNIST_small.tar.gz)"
    folder = local_copy("notMNIST", root, FOLDERS, what, "there is no stable official URL")
    classes = _class_folders(folder)
    if classes != list(LETTERS):
        held = ", ".join(classes) or "none"
        raise MaskclError(f"{folder} must hold the class folders A to J of notMNIST, and holds {held}")
    x_train, y_train, x_test, y_test = image_folder_arrays(
        folder, image_loader(mode="L"), seed=seed, skip_unreadable=True
    )
    if x_train.shape[1:] != (28, 28):
        raise MaskclError(
            f"{folder} holds {x_train.shape[2]}x{x_train.shape[1]} images, not notMNIST's 28x28"
        )
    return x_train, y_train, x_test, y_test
