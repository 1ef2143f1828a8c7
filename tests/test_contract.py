import time

import pytest

from imgclf import contract
from imgclf.data_folders import iter_image_files


def test_only_integer_folder_names_are_versions():
    assert contract.parse_version("0042") == 42
    assert contract.parse_version(".staging-1") is None
    assert contract.parse_version("1700000000.partial") is None
    assert contract.parse_retired(contract.retired_name(12, at=99)) == 12
    assert contract.is_staging_name(contract.staging_name("x"))


def test_next_version_is_epoch_or_one_more_than_any_taken():
    now = time.time()
    assert contract.next_version([], now=now) == int(now)
    assert contract.next_version([int(now) + 100, 7], now=now) == int(now) + 101


def test_label_rules():
    assert contract.label_order(["research", "other"]) == ["other", "research"]
    assert contract.parse_labels_file(contract.format_labels_file(["a", "b"])) == ["a", "b"]
    for bad in (["only"], ["a", "a"], ["a", ""], ["a", " b"], ["a", "b\nc"]):
        with pytest.raises(contract.ContractError):
            contract.validate_labels(bad)


def test_rest_paths_and_body():
    assert contract.rest_model_path("m") == "/v1/models/m"
    assert contract.rest_model_path("m", version=3) == "/v1/models/m/versions/3"
    assert contract.rest_model_path("m", label="stable") == "/v1/models/m/labels/stable"
    with pytest.raises(contract.ContractError):
        contract.rest_model_path("m", version=3, label="stable")
    with pytest.raises(contract.ContractError):
        contract.rest_model_path("../etc")
    assert contract.rest_predict_body([b"\xff\xd8"]) == {"instances": [{"b64": "/9g="}]}


def test_image_files_are_found_recursively_in_any_case(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/x.JPG", "a/b/y.jpeg", "z.Png", "notes.txt", ".hidden.jpg", "a/b/w.gif"]:
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert found == ["z.Png", "a/x.JPG", "a/b/y.jpeg"]
