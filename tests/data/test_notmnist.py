"""notMNIST as a folder of 28x28 grey PNGs in class folders A to J, written here."""

import numpy as np
import pytest
from test_folder import as_rows, write_images

from maskcl.data.notmnist import LETTERS, load_notmnist
from maskcl.errors import MaskclError, MaskclWarning

pytest.importorskip("torchvision")


def write_notmnist(folder, per_letter=3, shape=(28, 28), seed=0):
    """``per_letter`` PNGs of each letter in ``folder/A`` to ``folder/J``, and one empty PNG in ``A`` (the
    published archive holds a few)."""
    written = write_images(folder, dict.fromkeys(LETTERS, per_letter), shape=shape, seed=seed)
    (folder / "A" / "RnJlaWdodFRlY2gudHRm.png").write_bytes(b"")
    return written


def test_letters_are_read_split_by_the_seed_and_the_empty_png_left_out(tmp_path, monkeypatch, empty_home):
    written = write_notmnist(tmp_path / "data" / "notMNIST_small")
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path / "data"))
    with pytest.warns(MaskclWarning, match=r"left out 1 image\(s\) .*RnJlaWdodFRlY2gudHRm\.png") as caught:
        x_train, y_train, x_test, y_test = load_notmnist(seed=0)
    assert len(caught) == 1
    assert x_train.shape == (20, 28, 28) and x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.bincount(y_test).tolist() == [1] * 10 and np.bincount(y_train).tolist() == [2] * 10
    for label, letter in enumerate(LETTERS):
        mine = np.concatenate([x_train[y_train == label], x_test[y_test == label]])
        assert as_rows(mine) == as_rows(np.stack(written[letter]))
    with pytest.warns(MaskclWarning):
        other = load_notmnist(seed=1)
    assert as_rows(other[2]) != as_rows(x_test)
    assert not (empty_home / ".cache").exists()


def test_a_train_and_test_copy_named_notmnist_in_root_comes_first(tmp_path, monkeypatch, empty_home):
    train = write_images(tmp_path / "root" / "notMNIST" / "train", dict.fromkeys(LETTERS, 2), shape=(28, 28))
    test = write_images(tmp_path / "root" / "notMNIST" / "test", {"C": 1, "J": 1}, shape=(28, 28), seed=1)
    write_notmnist(tmp_path / "env" / "notMNIST_small", seed=2)
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path / "env"))
    x_train, y_train, x_test, y_test = load_notmnist(tmp_path / "root")
    np.testing.assert_array_equal(x_train, np.stack([image for letter in LETTERS for image in train[letter]]))
    assert y_train.tolist() == [k // 2 for k in range(20)] and y_test.tolist() == [2, 9]
    np.testing.assert_array_equal(x_test, np.stack([test["C"][0], test["J"][0]]))


def test_a_missing_copy_is_one_line_saying_where_it_looked(tmp_path, empty_home):
    with pytest.raises(MaskclError) as err:
        load_notmnist(tmp_path / "nowhere")
    message = str(err.value)
    assert message.startswith(f"notMNIST not found in {tmp_path / 'nowhere' / 'notMNIST_small'}, ")
    assert str(empty_home / ".cache" / "maskcl" / "notMNIST") in message and "class folders A to J" in message
    assert "\n" not in message and not (empty_home / ".cache").exists()


def damage_letter_b(folder):
    for name in ("000.png", "001.png"):
        (folder / "B" / name).write_bytes(b"\x89PNG\r\n\x1a\n cut")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda folder: (folder / "J").rename(folder / "j"),
            r"notMNIST_small must hold the class folders A to J",
        ),
        (damage_letter_b, r"class folder .*notMNIST_small/B has 1 image: a class needs 2"),
        (
            lambda folder: write_images(folder, {"C": 3}, shape=(32, 32)),
            r"notMNIST_small/C/000\.png is 32x32 grey but .* is 28x28 grey",
        ),
    ],
    ids=["class-folders", "damaged-pngs", "image-size"],
)
@pytest.mark.filterwarnings("ignore::maskcl.errors.MaskclWarning")  # the empty PNG, left out
def test_a_bad_copy_is_one_line(tmp_path, empty_home, damage, message):
    write_notmnist(tmp_path / "notMNIST_small")
    damage(tmp_path / "notMNIST_small")
    with pytest.raises(MaskclError, match=message) as err:
        load_notmnist(tmp_path)
    assert "\n" not in str(err.value)


def test_images_of_another_size_everywhere_are_refused(tmp_path, empty_home):
    write_images(tmp_path / "notMNIST_small", dict.fromkeys(LETTERS, 2), shape=(32, 32))
    with pytest.raises(MaskclError, match=r"notMNIST_small holds 32x32 images, not notMNIST's 28x28"):
        load_notmnist(tmp_path)
