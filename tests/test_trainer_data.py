"""Data discovery: class folders, stable hash splits, unusable files skipped and counted."""

import logging
import os
import shutil
from collections import Counter

import pytest
from PIL import Image

from imgclf.images import Preprocessing
from imgclf.trainer.data import DataError, discover, find_class_folders, split_of
from imgclf.trainer.features import FileProbe


@pytest.fixture(scope="module")
def probe():
    return FileProbe(Preprocessing(16))


def test_split_depends_only_on_the_name_and_follows_the_percentages():
    names = [f"page-{i}.jpg" for i in range(4000)]
    splits = [split_of(name, 15, 15) for name in names]
    assert splits == [split_of(name, 15, 15) for name in names]
    share = Counter(splits)
    assert 0.12 < share["validation"] / len(names) < 0.18
    assert 0.12 < share["test"] / len(names) < 0.18
    with pytest.raises(DataError, match="validation_percent"):
        split_of("a.jpg", 60, 40)


def test_adding_images_never_moves_old_ones(sample_dataset, tmp_path, probe):
    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    before = {e.path.name: e.split for e in discover(data, 15, 15, probe).examples}
    for index in range(30):
        Image.new("RGB", (20, 20), "white").save(data / "research" / f"new-{index}.jpg")
    after = {e.path.name: e.split for e in discover(data, 15, 15, probe).examples}
    assert {name: after[name] for name in before} == before
    assert len(after) == len(before) + 30


def test_classes_are_sorted_folders_and_extensions_any_case(tmp_path, probe):
    for label, name in [("zebra", "A.JPG"), ("zebra", "b.Png"), ("apple", "c.jpeg"), ("apple", "d.jpg")]:
        (tmp_path / label).mkdir(exist_ok=True)
        fmt = "PNG" if name.lower().endswith("png") else "JPEG"
        Image.new("RGB", (12, 12), "white").save(tmp_path / label / name, format=fmt)
    (tmp_path / "apple" / "notes.txt").write_text("not an image file name, ignored")
    dataset = discover(tmp_path, 0, 0, probe)
    assert dataset.labels == ["apple", "zebra"]
    assert sorted(e.path.name for e in dataset.examples) == ["A.JPG", "b.Png", "c.jpeg", "d.jpg"]
    assert all(len(e.digest) == 64 for e in dataset.examples)


def test_unusable_files_are_skipped_with_one_warning_each(sample_dataset, tmp_path, probe, caplog):
    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    good = (data / "research" / "page-000.jpg").read_bytes()
    bad = {
        data / "research" / "empty.jpg": b"",
        data / "research" / "truncated.jpg": good[: len(good) // 3],
        data / "other" / "text.png": b"this is a text file with an image name",
    }
    for path, content in bad.items():
        path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="imgclf"):
        dataset = discover(data, 15, 15, probe)
    assert sorted(p for p, _ in dataset.skipped) == sorted(bad)
    assert dict(dataset.skipped)[data / "research" / "empty.jpg"] == "empty file"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3 and all(any(str(p) in w for w in warned) for p in bad)
    assert dataset.counts()["skipped"] == 3
    assert len(dataset.examples) == 80


def test_fewer_than_two_classes_is_an_error_naming_the_folder(tmp_path, probe):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (12, 12)).save(tmp_path / "only" / "a.jpg")
    (tmp_path / "empty-class").mkdir()
    with pytest.raises(DataError, match=r"found 1 class folder.*two or more") as error:
        discover(tmp_path, 0, 0, probe)
    assert str(tmp_path) in str(error.value)


def test_class_with_only_unusable_images_is_an_error(tmp_path, probe):
    for label in ("good", "broken"):
        (tmp_path / label).mkdir()
    Image.new("RGB", (12, 12)).save(tmp_path / "good" / "a.jpg")
    (tmp_path / "broken" / "b.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no usable images in class 'broken'"):
        discover(tmp_path, 0, 0, probe)


def test_an_unreadable_data_folder_is_a_clear_error(tmp_path):
    """As a container's user meets a DATA folder it may not read (root reads anything, so as root
    the check runs in a child that became `nobody`)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir(mode=0o000)
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:   # the child: never returns into pytest
        try:
            if os.geteuid() == 0:
                os.setuid(65534)
            find_class_folders(tmp_path)
            os.write(writing, b"no error")
        except Exception as error:  # noqa: BLE001 - whatever it is, the parent shows it
            os.write(writing, f"{type(error).__name__}: {error}".encode())
        finally:
            os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    with os.fdopen(reading) as said:
        message = said.read()
    (tmp_path / "b").chmod(0o755)
    assert message.startswith("DataError: ") and "cannot be read (Permission denied)" in message, message
