"""Tiny ImageNet (Le & Yang, "Tiny ImageNet Visual Recognition Challenge", CS231N course report, Stanford,
2015): 200 ImageNet classes, 500 training and 50 validation images each, 64x64 colour, read from its folder
with torchvision's ``ImageFolder`` (extra ``maskcl[datasets]``).

On disk, as the published ``tiny-imagenet-200.zip`` unpacks: ``PLACE/tiny-imagenet-200/wnids.txt`` (the
200 WordNet ids, one a line), ``train/<wnid>/images/<wnid>_<k>.JPEG`` (with ``train/<wnid>/<wnid>_boxes.txt``,
not read), ``val/images/val_<k>.JPEG`` and ``val/val_annotations.txt`` (tab-separated: file name, wnid
and four box numbers). The labelled ``val`` split is returned as the test set (the ``test`` split has no
labels and is not read); the labels are the ranks of the wnids in sorted order. A few JPEGs are grey:
every image is converted to RGB. ``PLACE`` is ``root`` (when given), ``$MASKCL_DATA`` or
``~/.cache/maskcl``; with ``download=True`` a missing copy is fetched from :data:`URL` (MD5-checked) and
unpacked by torchvision into ``~/.cache/maskcl`` (this needs the internet; the archive is deleted once
unpacked). The images are read into one array allocated beforehand (1.2 GB for the training set).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from maskcl.data.fashion_mnist import DATA_ENV
from maskcl.data.folder import image_loader, read_images
from maskcl.data.places import cache_dir, download_or_fail, find_copy, not_found, reason, torchvision_datasets
from maskcl.errors import MaskclError

__all__ = ["FOLDER", "MD5", "URL", "load_tiny_imagenet"]

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
"""MD5 of the archive at :data:`URL`."""

SHAPE = (3, 64, 64)


def _complete(folder: Path) -> bool:
    return (
        (folder / "wnids.txt").is_file()
        and (folder / "train").is_dir()
        and (folder / "val" / "val_annotations.txt").is_file()
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise MaskclError(f"Tiny ImageNet file {path} cannot be read: {reason(err)}") from None


def _wnids(folder: Path) -> list[str]:
    """The class ids of ``wnids.txt``, sorted: a class's label is its rank."""
    names = _read_text(folder / "wnids.txt").split()
    if not names or len(set(names)) < len(names):
        raise MaskclError(f"{folder / 'wnids.txt'} must list distinct class ids (wnids), one a line")
    return sorted(names)


def _train_samples(folder: Path, wnids: list[str]) -> list[tuple[str, int]]:
    train = folder / "train"
    try:
        found = torchvision_datasets("Tiny ImageNet").ImageFolder(str(train))
    except (FileNotFoundError, RuntimeError) as err:
        raise MaskclError(
            f"Tiny ImageNet training images in {train} cannot be listed: {reason(err)}"
        ) from None
    if found.classes != wnids:
        missing = sorted(set(wnids) - set(found.classes))
        what = (
            f"no folder {missing[0]}" if missing else f"a folder {sorted(set(found.classes) - set(wnids))[0]}"
        )
        raise MaskclError(f"{train} must hold one folder per class of wnids.txt, and has {what}")
    return found.samples


def _val_samples(folder: Path, wnids: list[str]) -> list[tuple[str, int]]:
    path = folder / "val" / "val_annotations.txt"
    label = {wnid: k for k, wnid in enumerate(wnids)}
    samples = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label or Path(fields[0]).name != fields[0]:
            raise MaskclError(
                f"{path} line {number} is not an image's file name and a wnid of wnids.txt, tab-separated"
            )
        samples.append((str(folder / "val" / "images" / fields[0]), label[fields[1]]))
    if not samples:
        raise MaskclError(f"{path} names no image")
    return samples


def load_tiny_imagenet(
    root: str | Path | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train`` uint8 ``[100000, 3, 64, 64]``, ``y_train`` int64 (0 to 199), ``x_test`` (the labelled
    validation split) ``[10000, 3, 64, 64]``, ``y_test`` of Tiny ImageNet, from the first place holding it
    (module docstring)."""
    folder = find_copy(root, FOLDER, _complete)
    if folder is None:
        if not download:
            raise not_found(
                "Tiny ImageNet", root, FOLDER, f"download it (needs the internet) or set {DATA_ENV}"
            )
        utils = torchvision_datasets("Tiny ImageNet").utils
        fetch = functools.partial(
            utils.download_and_extract_archive, URL, str(cache_dir()), md5=MD5, remove_finished=True
        )
        download_or_fail("Tiny ImageNet", URL, fetch)
        folder = cache_dir() / FOLDER
        if not _complete(folder):
            raise MaskclError(f"the archive from {URL} holds no {FOLDER}/wnids.txt, train/ and val/")
    wnids = _wnids(folder)
    load = image_loader(None, "RGB")
    x_train, y_train, _ = read_images(_train_samples(folder, wnids), load, folder / "train", SHAPE)
    x_test, y_test, _ = read_images(_val_samples(folder, wnids), load, folder / "val", SHAPE)
    return x_train, y_train, x_test, y_test
