"""A folder of images in class subfolders, read by torchvision's ImageFolder; PNG files written here."""

from pathlib import Path

import numpy as np
import pytest

from maskcl.cli import main
from maskcl.data import data_scenario, load_image_folder
from maskcl.errors import MaskclError, MaskclWarning

Image = pytest.importorskip("PIL.Image")


def write_images(
    folder: Path, per_class: dict[str, int], shape=(8, 8), seed=0
) -> dict[str, list[np.ndarray]]:
    """``per_class[name]`` PNGs of ``shape`` (``(H, W)`` grey or ``(H, W, 3)`` colour) in ``folder/name``."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in per_class.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        written[name] = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]
        for i, pixels in enumerate(written[name]):
            Image.fromarray(pixels).save(folder / name / f"{i:03d}.png")
    return written


def as_rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def test_one_folder_is_split_per_class_by_the_seed(tmp_path):
    written = write_images(tmp_path, {"cat": 10, "ant": 5, "dog": 6})
    x_train, y_train, x_test, y_test = load_image_folder(tmp_path, seed=0)
    assert x_train.shape[1:] == (8, 8) and x_train.dtype == np.uint8
    # labels: the class folders in sorted order (ant 0, cat 1, dog 2); a fifth of each class tested
    assert np.bincount(y_test).tolist() == [1, 2, 1] and np.bincount(y_train).tolist() == [4, 8, 5]
    for label, name in enumerate(["ant", "cat", "dog"]):
        images = np.stack(written[name])
        mine = np.concatenate([x_train[y_train == label], x_test[y_test == label]])
        assert as_rows(mine) == as_rows(images)
    other = load_image_folder(tmp_path, seed=1)
    assert as_rows(other[2]) != as_rows(x_test)


def test_train_and_test_subfolders_are_kept_and_labelled_by_class_name(tmp_path):
    train = write_images(tmp_path / "train", {"a": 3, "b": 3, "c": 2}, shape=(6, 5, 3))
    test = write_images(tmp_path / "test", {"c": 2, "a": 1}, shape=(6, 5, 3), seed=1)
    x_train, y_train, x_test, y_test = load_image_folder(tmp_path)
    assert x_train.shape == (8, 3, 6, 5)  # colour: channels first
    assert np.array_equal(x_train[y_train == 2][0], train["c"][0].transpose(2, 0, 1))
    assert y_test.tolist() == [0, 2, 2]  # a, then c, by the training folders' order
    assert np.array_equal(x_test[0], test["a"][0].transpose(2, 0, 1))


def test_a_run_on_a_folder_of_images(tmp_path, capsys):
    write_images(tmp_path / "digits", {str(c): 12 for c in range(4)})
    out = tmp_path / "run"
    args = ["run", "--data", str(tmp_path / "digits"), "--epochs", "1", "--hidden", "8", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    scenario = data_scenario(tmp_path / "digits")
    assert scenario.name == "split-digits" and [t.classes for t in scenario] == [[0, 1], [2, 3]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root.mkdir(), "holds no images in class folders"),
        (lambda root: (root / "empty").mkdir(parents=True), "holds no images in class folders"),
        (
            lambda root: write_images(root, {"a": 1, "b": 3}),
            r"class folder .*/a has 1 image: a class needs 2",
        ),
        (
            lambda root: (write_images(root, {"a": 2}), write_images(root, {"b": 2}, shape=(9, 8))),
            r"is 8x9 grey but .* is 8x8 grey: every image of the data must have one size",
        ),
        (
            lambda root: (
                write_images(root, {"a": 2, "b": 2}),
                (root / "b" / "bad.png").write_bytes(b"nope"),
            ),
            r"bad\.png cannot be read as an image",
        ),
        (
            lambda root: (write_images(root / "train", {"a": 2}), write_images(root / "test", {"z": 1})),
            "has classes the training images lack: z",
        ),
    ],
)
def test_bad_folders_are_one_line_errors_and_nothing_is_written(tmp_path, capsys, make, message):
    root = tmp_path / "images"
    make(root)
    with pytest.raises(MaskclError, match=message):
        load_image_folder(root)
    out = tmp_path / "out"
    assert main(["run", "--data", str(root), "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists(), err


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """PIL's bilinear resize of ``pixels`` (``[H, W]`` or ``[H, W, 3]``), channels first."""
    out = np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))
    return out if out.ndim == 2 else out.transpose(2, 0, 1)


@pytest.mark.parametrize("channels", [(), (3,)], ids=["grey", "colour"])
def test_size_resizes_images_of_mixed_sizes(tmp_path, channels):
    written = write_images(tmp_path / "train", {"a": 2}, shape=(8, 8, *channels))
    written["a"] += write_images(tmp_path / "more", {"a": 1}, shape=(13, 5, *channels), seed=1)["a"]
    (tmp_path / "more" / "a" / "000.png").rename(tmp_path / "train" / "a" / "002.png")
    test = write_images(tmp_path / "test", {"a": 1}, shape=(3, 20, *channels), seed=2)
    with pytest.raises(MaskclError, match="every image of the data must have one size"):
        load_image_folder(tmp_path)  # without size, as before
    x_train, y_train, x_test, y_test = load_image_folder(tmp_path, size=8)
    assert x_train.shape == (3, *channels, 8, 8) and x_test.shape == (1, *channels, 8, 8)
    assert x_train.dtype == np.uint8 and y_train.tolist() == [0, 0, 0] and y_test.tolist() == [0]
    for got, pixels in zip(x_train, written["a"], strict=True):
        np.testing.assert_array_equal(got, resized(pixels, 8))
    np.testing.assert_array_equal(
        x_train[0], written["a"][0].transpose(2, 0, 1) if channels else written["a"][0]
    )
    np.testing.assert_array_equal(x_test[0], resized(test["a"][0], 8))


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "32"])
def test_a_bad_size_is_one_line(tmp_path, size):
    write_images(tmp_path, {"a": 2, "b": 2})
    with pytest.raises(MaskclError, match="the image size must be a whole number of pixels, at least 1"):
        load_image_folder(tmp_path, size=size)


def test_skip_unreadable_leaves_out_damaged_images_with_one_warning(tmp_path):
    clean = tmp_path / "clean"
    write_images(clean, {"a": 6, "b": 5, "c": 4})
    messy = tmp_path / "messy"
    write_images(messy, {"a": 6, "b": 5, "c": 4})
    (messy / "a" / "0001-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    (messy / "c" / "zz.jpg").write_bytes(b"")
    with pytest.raises(MaskclError, match=r"0001-broken\.png cannot be read as an image"):
        load_image_folder(messy)  # without skip_unreadable, as before
    with pytest.warns(MaskclWarning) as caught:
        got = load_image_folder(messy, seed=4, skip_unreadable=True)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "left out 2 image(s) that cannot be decoded; the first, " in message
    assert f"{messy / 'a' / '0001-broken.png'}: " in message and "\n" not in message
    for mine, theirs in zip(got, load_image_folder(clean, seed=4), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_skip_unreadable_warns_once_for_train_and_test_and_refuses_an_empty_split(tmp_path):
    write_images(tmp_path / "train", {"a": 2, "b": 1})
    write_images(tmp_path / "test", {"a": 1, "b": 1}, seed=1)
    (tmp_path / "train" / "b" / "bad.png").write_bytes(b"nope")
    (tmp_path / "test" / "a" / "bad.png").write_bytes(b"nope")
    with pytest.warns(MaskclWarning, match=r"left out 2 image\(s\)") as caught:
        x_train, y_train, x_test, y_test = load_image_folder(tmp_path, skip_unreadable=True)
    assert len(caught) == 1 and y_train.tolist() == [0, 0, 1] and y_test.tolist() == [0, 1]
    assert x_train.shape == (3, 8, 8) and x_test.shape == (2, 8, 8)
    (tmp_path / "test" / "a" / "000.png").unlink()
    (tmp_path / "test" / "b" / "000.png").write_bytes(b"nope too")
    with pytest.raises(
        MaskclError, match=r"none of the 2 images in .*/test can be read; the first, .*/test/a/bad\.png"
    ):
        load_image_folder(tmp_path, skip_unreadable=True)
