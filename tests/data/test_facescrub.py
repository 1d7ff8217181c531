"""FaceScrub as a folder of face crops, one folder per person: small JPEG and PNG crops written here."""

import numpy as np
import pytest
from test_folder import as_rows, resized, write_images

from maskcl.data.facescrub import load_facescrub
from maskcl.errors import MaskclError, MaskclWarning

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("torchvision")

PEOPLE = ["Adam_Brody", "Adrien_Brody", "Aaron_Eckhart"]
"""Labels follow the sorted names: Aaron_Eckhart 0, Adam_Brody 1, Adrien_Brody 2."""


def write_faces(folder, seed=0):
    """Three people's crops in ``folder``: colour PNGs of mixed sizes, a grey one and a JPEG; returns
    ``{person: [what the reader must give, channels first]}`` at size 8."""
    written = {}
    for k, person in enumerate(PEOPLE):
        crops = write_images(folder, {person: 3}, shape=(8 + 5 * k, 8 + 3 * k, 3), seed=seed + k)[person]
        written[person] = [resized(crop, 8) for crop in crops]
    grey = np.random.default_rng(seed + 9).integers(0, 256, (10, 10), dtype=np.uint8)
    Image.fromarray(grey).save(folder / PEOPLE[0] / "grey.png")
    written[PEOPLE[0]].append(np.repeat(resized(grey, 8)[None], 3, axis=0))
    colour = np.random.default_rng(seed + 10).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    Image.fromarray(colour).save(folder / PEOPLE[1] / "crop.jpg", quality=90)
    with Image.open(folder / PEOPLE[1] / "crop.jpg") as jpeg:
        written[PEOPLE[1]].append(resized(np.asarray(jpeg), 8))
    return written


def test_crops_are_made_colour_resized_and_split_by_the_seed(tmp_path, monkeypatch, empty_home):
    written = write_faces(tmp_path / "data" / "facescrub")
    monkeypatch.setenv("MASKCL_DATA", str(tmp_path / "data"))
    x_train, y_train, x_test, y_test = load_facescrub(size=8)
    assert x_train.shape[1:] == (3, 8, 8) and x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.bincount(y_test).tolist() == [1, 1, 1] and np.bincount(y_train).tolist() == [2, 3, 3]
    for label, person in enumerate(sorted(PEOPLE)):
        mine = np.concatenate([x_train[y_train == label], x_test[y_test == label]])
        assert as_rows(mine) == as_rows(np.stack(written[person]))
    assert as_rows(load_facescrub(seed=3, size=8)[2]) != as_rows(x_test)
    assert load_facescrub(size=5)[0].shape[1:] == (3, 5, 5)
    assert not (empty_home / ".cache").exists()


def test_train_and_test_folders_and_undecodable_crops(tmp_path, empty_home):
    train = write_images(tmp_path / "facescrub" / "train", {"Zoe": 2, "Amy": 1}, shape=(8, 8, 3))
    test = write_images(tmp_path / "facescrub" / "test", {"Zoe": 1}, shape=(8, 8, 3), seed=1)
    (tmp_path / "facescrub" / "train" / "Amy" / "404.jpg").write_text("<html>Not Found</html>")
    with pytest.warns(MaskclWarning, match=r"left out 1 image\(s\) .*Amy/404\.jpg") as caught:
        x_train, y_train, x_test, y_test = load_facescrub(tmp_path, size=8)
    assert len(caught) == 1 and y_train.tolist() == [0, 1, 1] and y_test.tolist() == [1]
    want = [train["Amy"][0], *train["Zoe"]]
    np.testing.assert_array_equal(x_train, np.stack([crop.transpose(2, 0, 1) for crop in want]))
    np.testing.assert_array_equal(x_test[0], test["Zoe"][0].transpose(2, 0, 1))


def test_a_missing_copy_is_one_line_saying_where_it_looked(tmp_path, empty_home):
    with pytest.raises(MaskclError) as err:
        load_facescrub(tmp_path / "nowhere")
    message = str(err.value)
    assert message.startswith(f"FaceScrub not found in {tmp_path / 'nowhere' / 'facescrub'}, ")
    assert (
        str(empty_home / ".cache" / "maskcl" / "facescrub") in message and "one folder per person" in message
    )
    assert "\n" not in message and not (empty_home / ".cache").exists()


def test_a_person_without_a_readable_crop_left_is_one_line(tmp_path, empty_home):
    write_faces(tmp_path / "facescrub")
    for path in (tmp_path / "facescrub" / PEOPLE[2]).iterdir():
        path.write_bytes(b"\xff\xd8\xff truncated")
    with pytest.warns(MaskclWarning, match=r"left out 3 image\(s\)"), pytest.raises(MaskclError) as err:
        load_facescrub(tmp_path, size=8)
    assert str(err.value) == (
        f"class folder {tmp_path / 'facescrub' / PEOPLE[2]} has 0 image: a class needs 2, one to train "
        "on and one to test on"
    )
