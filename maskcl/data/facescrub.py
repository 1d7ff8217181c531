"""FaceScrub (Ng & Winkler, "A data-driven approach to cleaning large face datasets", ICIP 2014): face
crops of 530 people, read as a folder of images by :func:`~maskcl.data.folder.load_image_folder`.

On disk: ``PLACE/facescrub/<person>/*.jpg`` (one folder per person, the crops as the published tools
save them), or ``PLACE/facescrub/train/<person>/`` with ``PLACE/facescrub/test/<person>/``. Without
``train/`` and ``test/`` a seeded fifth of each person's crops is the test set. The labels are the ranks
of the people's folder names in sorted order. Every crop is made colour (RGB) and resized to
``size x size`` with PIL's bilinear filter; crops that cannot be decoded (a failed download saved as an
image) are left out, with one warning. ``PLACE`` is ``root`` (when given), ``$MASKCL_DATA`` or
``~/.cache/maskcl``. The set is not downloaded: it is published as a list of image URLs, which its own
tools fetch and crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskcl.data.folder import image_folder_arrays, image_loader
from maskcl.data.places import local_copy

__all__ = ["FOLDER", "load_facescrub"]

FOLDER = "facescrub"
"""The folder of a data place that holds FaceScrub's crops."""


def load_facescrub(
    root: str | Path | None = None, seed: int = 0, size: int = 32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train`` uint8 ``[N, 3, size, size]``, ``y_train`` int64 (the person), ``x_test``, ``y_test``
    of FaceScrub, from the first place holding its folder, split by ``seed`` when it has no ``train/``
    and ``test/`` (module docstring)."""
    load = image_loader(size, "RGB")
    what, why = "its face crops, one folder per person,", "the published set is a list of image URLs"
    folder = local_copy("FaceScrub", root, FOLDER, what, why)
    return image_folder_arrays(folder, load, seed=seed, skip_unreadable=True)
