"""Tiny ImageNet from its folder layout: a few JPEGs, wnids.txt and val_annotations.txt written here."""

from pathlib import Path

import numpy as np
import pytest
from reader_checks import assert_not_found_offline

from maskcl.data.tinyimagenet import FOLDER, MD5, URL, load_tiny_imagenet
from maskcl.errors import MaskclError

Image = pytest.importorskip("PIL.Image")
datasets = pytest.importorskip("torchvision.datasets")

WNIDS = ["n09256479", "n01443537", "n02094433"]
"""As listed in wnids.txt (not sorted); labels follow the sorted order: n01443537 0, n02094433 1, ..."""


def picture(k: int, grey: bool = False) -> np.ndarray:
    """A 64x64 image of flat 8x8 blocks (JPEG keeps them nearly as they are), unlike every other ``k``."""
    blocks = np.random.default_rng(k).integers(0, 256, (8, 8) if grey else (8, 8, 3), dtype=np.uint8)
    return blocks.repeat(8, axis=0).repeat(8, axis=1)


def decoded(path: Path) -> np.ndarray:
    """The pixels of a written JPEG as an RGB decoder gives them, channels first."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def write_tiny(place: Path, per_class: int = 2, val: int = 4) -> dict:
    """A small Tiny ImageNet under ``place/tiny-imagenet-200``; returns ``{split: [(path, label)]}``."""
    base = place / FOLDER
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    written = {"train": [], "val": []}
    k = 0
    for label, wnid in enumerate(sorted(WNIDS)):
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t1\t2\t60\t61\n")
        for i in range(per_class):
            path = images / f"{wnid}_{i}.JPEG"
            Image.fromarray(picture(k, grey=label == 1 and i == 0)).save(path, quality=98, subsampling=0)
            written["train"].append((path, label))
            k += 1
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(val):
        path = base / "val" / "images" / f"val_{i}.JPEG"
        wnid = WNIDS[i % 3]
        Image.fromarray(picture(k)).save(path, quality=98, subsampling=0)
        lines.append(f"{path.name}\t{wnid}\t0\t3\t62\t60")
        written["val"].append((path, sorted(WNIDS).index(wnid)))
        k += 1
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "test" / "images").mkdir(parents=True)
    Image.fromarray(picture(99)).save(base / "test" / "images" / "test_0.JPEG")  # unlabelled: not read
    return written


def assert_loaded(loaded, written) -> None:
    x_train, y_train, x_test, y_test = loaded
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "val")):
        assert x.shape == (len(written[split]), 3, 64, 64) and x.dtype == np.uint8 and y.dtype == np.int64
        assert y.tolist() == [label for _, label in written[split]]
        for got, (path, _) in zip(x, written[split], strict=True):
            np.testing.assert_array_equal(got, decoded(path))
    assert len({image.tobytes() for image in np.concatenate([x_train, x_test])}) == len(x_train) + len(x_test)


def test_train_and_labelled_val_images_are_read(tmp_path, monkeypatch, empty_home):
    written = write_tiny(tmp_path / "data")
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path / "data"))
    loaded = load_tiny_imagenet(download=False)
    assert_loaded(loaded, written)
    assert loaded[1].tolist() == [0, 0, 1, 1, 2, 2] and loaded[3].tolist() == [2, 0, 1, 2]
    grey = loaded[0][2]  # the grey JPEG, made colour: three equal planes
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()
    near = np.abs(loaded[0][0].astype(int) - picture(0).transpose(2, 0, 1)).mean()
    assert near < 3  # the decoded pixels are those written, up to JPEG's loss
    assert not (empty_home / ".cache").exists()


def test_a_missing_copy_is_one_line_and_not_downloaded(tmp_path, empty_home):
    assert_not_found_offline(load_tiny_imagenet, "Tiny ImageNet", FOLDER, tmp_path / "nowhere", empty_home)


def write_over(relative: str, content: bytes):
    def damage(base: Path) -> None:
        (base / relative).write_bytes(content)

    return damage


def small_image(base: Path) -> None:
    Image.fromarray(picture(7)[:32, :48]).save(base / "val" / "images" / "val_1.JPEG")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            write_over("train/n02094433/images/n02094433_1.JPEG", b"\xff\xd8\xff\xe0 truncated"),
            r"n02094433_1\.JPEG cannot be read as an image: ",
        ),
        (small_image, r"val_1\.JPEG is 48x32 colour, not 64x64 colour like every image here"),
        (write_over("wnids.txt", b"n01443537\nn01443537\n"), r"wnids\.txt must list distinct class ids"),
        (
            write_over("wnids.txt", b"n01443537\nn02094433\nn09256479\nn07749582\n"),
            r"/train must hold one folder per class of wnids\.txt, and has no folder n07749582",
        ),
        (
            write_over("val/val_annotations.txt", b"val_0.JPEG\tn00000001\t0\t0\t1\t1\n"),
            r"val_annotations\.txt line 1 is not an image's file name and a wnid of wnids\.txt",
        ),
        (
            write_over("val/val_annotations.txt", b"val_0.JPEG\tn01443537\nval_9.JPEG\tn01443537\n"),
            r"val/images/val_9\.JPEG cannot be read as an image: .*No such file",
        ),
    ],
    ids=[
        "damaged-jpeg",
        "wrong-size",
        "wnids-twice",
        "class-folder-missing",
        "unknown-wnid",
        "missing-image",
    ],
)
def test_a_damaged_copy_is_one_line(tmp_path, empty_home, damage, message):
    write_tiny(tmp_path)
    damage(tmp_path / FOLDER)
    with pytest.raises(MaskclError, match=message) as err:
        load_tiny_imagenet(tmp_path, download=False)
    assert "\n" not in str(err.value)


def test_a_missing_copy_is_downloaded_and_unpacked_into_the_cache(monkeypatch, empty_home):
    written, calls = {}, []

    def download_and_extract_archive(url, download_root, md5=None, remove_finished=False):
        calls.append((url, md5, remove_finished))
        written.update(write_tiny(Path(download_root)))

    monkeypatch.setattr(datasets.utils, "download_and_extract_archive", download_and_extract_archive)
    assert_loaded(load_tiny_imagenet(), written)
    assert calls == [(URL, MD5, True)]
    assert (empty_home / ".cache" / "maskcl" / FOLDER / "wnids.txt").is_file()


def test_a_failed_download_is_one_line(monkeypatch, empty_home):
    def download_and_extract_archive(url, download_root, md5=None, remove_finished=False):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets.utils, "download_and_extract_archive", download_and_extract_archive)
    with pytest.raises(
        MaskclError, match=r"^Tiny ImageNet could not be downloaded from http://cs231n.*name resolution"
    ):
        load_tiny_imagenet()
