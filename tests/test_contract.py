import time

import pytest

from imgclf import contract


def test_only_integer_folder_names_are_versions(tmp_path):
    for name in ["0042", "7", "1700000000", ".staging-1-2", "1700000000.partial", "abc", "-3"]:
        (tmp_path / name).mkdir()
    (tmp_path / "99").write_text("a file, not a folder")
    assert contract.list_versions(tmp_path) == [7, 42, 1700000000]
    assert contract.parse_version("0042") == 42
    assert contract.parse_version(".staging-1") is None


def test_next_version_is_epoch_or_one_more_than_any_taken(tmp_path):
    now = time.time()
    assert contract.next_version(tmp_path, now=now) == int(now)
    (tmp_path / str(int(now) + 100)).mkdir()
    assert contract.next_version(tmp_path, now=now) == int(now) + 101
    (tmp_path / contract.retired_name(int(now) + 500)).mkdir()
    assert contract.next_version(tmp_path, now=now) == int(now) + 501


def test_retired_and_staged_folders_are_found_and_invisible_as_versions(tmp_path):
    (tmp_path / contract.retired_name(12, at=99)).mkdir()
    (tmp_path / contract.staging_name("x")).mkdir()
    assert contract.list_versions(tmp_path) == []
    assert [v for v, _ in contract.list_retired(tmp_path)] == [12]
    assert [p.name for p in contract.list_staged(tmp_path)] == [".staging-x"]


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
    found = [p.relative_to(tmp_path).as_posix() for p in contract.iter_image_files(tmp_path)]
    assert found == ["z.Png", "a/x.JPG", "a/b/y.jpeg"]
