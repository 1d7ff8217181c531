"""GTSRB through torchvision's GTSRB class: tiny .ppm images and the test annotations in its layout."""

from pathlib import Path

import numpy as np
import pytest
from reader_checks import assert_not_found_offline

from maskcl.data.gtsrb import load_gtsrb
from maskcl.errors import MaskclError

Image = pytest.importorskip("PIL.Image")
gtsrb_module = pytest.importorskip("torchvision.datasets.gtsrb")

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def sign(seed: int, height: int, width: int) -> np.ndarray:
    """A colour image ``[H, W, 3]`` whose first pixel tells it apart."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[0, 0] = seed % 256
    return pixels


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """What the reader must make of ``pixels``: PIL's bilinear resize, channels first."""
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)).transpose(
        2, 0, 1
    )


TRAIN = {0: [(8, 8), (11, 9)], 2: [(8, 8), (15, 20)], 42: [(8, 8), (6, 7)]}
"""Class -> the (height, width) of its training images (the 8x8 ones are not resized at size 8)."""
TEST = [(16, (8, 8)), (42, (12, 10)), (0, (8, 8))]
"""(class, (height, width)) of each test image, in the annotation file's order."""


def write_gtsrb(place: Path) -> dict:
    """A small GTSRB in torchvision's layout under ``place/gtsrb``; returns what was written."""
    base = place / "gtsrb"
    written = {"train": [], "test": []}
    for label, shapes in TRAIN.items():
        folder = base / "GTSRB" / "Training" / f"{label:05d}"
        folder.mkdir(parents=True)
        (folder / f"GT-{label:05d}.csv").write_text(HEADER + "\n")
        for k, shape in enumerate(shapes):
            pixels = sign(10 * label + k, *shape)
            Image.fromarray(pixels).save(folder / f"{k:05d}_00000.ppm")
            written["train"].append((pixels, label))
    images = base / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    rows = [HEADER]
    for k, (label, (height, width)) in enumerate(TEST):
        pixels = sign(200 + k, height, width)
        Image.fromarray(pixels).save(images / f"{k:05d}.ppm")
        rows.append(f"{k:05d}.ppm;{width};{height};1;1;{width - 1};{height - 1};{label}")
        written["test"].append((pixels, label))
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return written


def assert_loaded(loaded, written, size: int) -> None:
    x_train, y_train, x_test, y_test = loaded
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        assert x.shape == (len(written[split]), 3, size, size) and x.dtype == np.uint8 and y.dtype == np.int64
        assert y.tolist() == [label for _, label in written[split]]
        for got, (pixels, _) in zip(x, written[split], strict=True):
            np.testing.assert_array_equal(got, resized(pixels, size))
            if pixels.shape[:2] == (size, size):
                np.testing.assert_array_equal(got, pixels.transpose(2, 0, 1))


def test_images_are_resized_and_labelled_by_their_class_number(tmp_path, monkeypatch, empty_home):
    written = write_gtsrb(tmp_path / "data")
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path / "data"))
    loaded = load_gtsrb(download=False, size=8)
    assert loaded[1].tolist() == [0, 0, 2, 2, 42, 42]  # the folder's number, not its rank among the folders
    assert_loaded(loaded, written, 8)
    assert_loaded(load_gtsrb(tmp_path / "data", download=False, size=5), written, 5)
    assert not (empty_home / ".cache").exists()


def test_a_missing_copy_is_one_line_and_not_downloaded(tmp_path, empty_home):
    assert_not_found_offline(load_gtsrb, "GTSRB", "gtsrb", tmp_path / "nowhere", empty_home)


def damage_image(base: Path) -> None:
    (base / "GTSRB" / "Training" / "00002" / "00001_00000.ppm").write_bytes(b"P6\n8 8\n255\n\x00\x01")


def rename_class(base: Path) -> None:
    (base / "GTSRB" / "Training" / "00042").rename(base / "GTSRB" / "Training" / "stop")


def csv_without_labels(base: Path) -> None:
    lines = (base / "GT-final_test.csv").read_text().splitlines()
    (base / "GT-final_test.csv").write_text("\n".join(line.rsplit(";", 1)[0] for line in lines))


def csv_with_label(label: str):
    def change(base: Path) -> None:
        text = (base / "GT-final_test.csv").read_text()
        (base / "GT-final_test.csv").write_text(text.replace(";16\n", f";{label}\n"))

    return change


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (damage_image, r"Training/00002/00001_00000\.ppm cannot be read as an image: "),
        (rename_class, r"Training/stop is not a GTSRB class folder \(00000 to 00042\)"),
        (csv_without_labels, r"GTSRB test labels .*/gtsrb/GT-final_test\.csv have no column 'ClassId'"),
        (csv_with_label("43"), r"/gtsrb/GT-final_test\.csv hold class 43, not one of 0 to 42"),
        (csv_with_label("stop"), r"GTSRB test images in .*/gtsrb cannot be read: invalid literal"),
        (
            lambda base: (base / "GTSRB" / "Final_Test" / "Images" / "00001.ppm").unlink(),
            r"00001\.ppm cannot be read",
        ),
    ],
    ids=["damaged-image", "class-folder", "no-label-column", "label-range", "label-text", "missing-image"],
)
def test_a_damaged_copy_is_one_line(tmp_path, empty_home, damage, message):
    write_gtsrb(tmp_path)
    damage(tmp_path / "gtsrb")
    with pytest.raises(MaskclError, match=message) as err:
        load_gtsrb(tmp_path, download=False, size=8)
    assert "\n" not in str(err.value)


def test_a_bad_size_is_refused_first(tmp_path, empty_home):
    with pytest.raises(
        MaskclError, match="the image size must be a whole number of pixels, at least 1, got 0"
    ):
        load_gtsrb(tmp_path, size=0)


def test_a_missing_copy_is_downloaded_into_the_cache_by_torchvision(monkeypatch, empty_home):
    written, urls = {}, []

    def download_and_extract_archive(url, download_root, md5):
        urls.append(url)
        if not written:
            written.update(write_gtsrb(Path(download_root).parent))

    monkeypatch.setattr(gtsrb_module, "download_and_extract_archive", download_and_extract_archive)
    assert_loaded(load_gtsrb(size=8), written, 8)
    assert (empty_home / ".cache" / "maskcl" / "gtsrb" / "GT-final_test.csv").is_file()
    assert urls and all(url.startswith("https://sid.erda.dk/") for url in urls)


def test_a_failed_download_is_one_line(monkeypatch, empty_home):
    def download_and_extract_archive(url, download_root, md5):
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(gtsrb_module, "download_and_extract_archive", download_and_extract_archive)
    with pytest.raises(
        MaskclError, match=r"^GTSRB could not be downloaded from https://sid\.erda\.dk/.*: File not"
    ):
        load_gtsrb()
