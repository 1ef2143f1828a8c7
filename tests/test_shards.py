"""One validation job split over several client processes (`--shard i/N`) and merged back
(`imgclf merge-results`): the assignment, and real sharded runs against a live local server whose
merged output must equal the unsharded run's, row for row."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from pathlib import Path

import pytest

from imgclf.client import merge, shards
from imgclf.client.base import ClientError
from imgclf.client.cli import parse_settings
from imgclf.client.validate import run_validation


def test_parse_shard_takes_i_of_n_and_names_the_rule_otherwise():
    assert shards.parse_shard("2/8") == (2, 8) and shards.parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("8/8", "1/0", "-1/4", "a/4", "3", ""):
        with pytest.raises(ClientError, match="0 <= i < N"):
            shards.parse_shard(bad)
    with pytest.raises(SystemExit):
        parse_settings(["somewhere", "--shard", "4/4"])


def test_every_file_is_in_exactly_one_shard_spread_evenly_wherever_dir_is_mounted(tmp_path):
    paths = [f"class{c}/page-{i:05d}.jpg" for c in range(4) for i in range(2500)]
    per_shard = Counter(shards.shard_of(p, 4) for p in paths)
    assert sum(per_shard.values()) == 10_000 and set(per_shard) == {0, 1, 2, 3}
    assert all(2250 <= n <= 2750 for n in per_shard.values()), per_shard
    for root in (tmp_path / "a", tmp_path / "mnt" / "b"):
        selected = [set(shards.select((root / p for p in paths[:200]), root, f"{i}/4")) for i in range(4)]
        assert sum(map(len, selected)) == 200 and not set.intersection(*selected)
        assert [len(s) for s in selected] == [sum(shards.shard_of(p, 4) == i for p in paths[:200]) for i in range(4)]


def test_shard_outputs_are_named_beside_output_and_found_only_when_all_are_complete(tmp_path):
    output = str(tmp_path / "results.csv")
    assert shards.shard_output(output, "") == output
    names = [shards.shard_output(output, f"{i}/3") for i in range(3)]
    assert [Path(n).name for n in names] == [f"results.shard-{i}-of-3.csv" for i in range(3)]
    Path(names[0]).write_text("x")
    Path(names[2]).write_text("x")
    Path(names[1] + ".partial").write_text("x")
    with pytest.raises(ClientError, match=r"shards \[1\] of 3 are missing \(incomplete: .*partial\)"):
        shards.shard_files(output)
    Path(names[1]).write_text("x")
    assert shards.shard_files(output) == [Path(n) for n in names]
    (tmp_path / "results.shard-0-of-2.csv").write_text("x")
    with pytest.raises(ClientError, match="different counts"):
        shards.shard_files(output)


def test_walk_key_orders_as_the_folder_walk():
    paths = ["d/b/x.jpg", "d/a.jpg", "d/b.jpg", "d/a/z.jpg", "d/c.png"]
    assert sorted(paths, key=merge.walk_key) == ["d/a.jpg", "d/b.jpg", "d/c.png", "d/a/z.jpg", "d/b/x.jpg"]


# --- real runs against a live server -------------------------------------------------------------
@pytest.fixture(scope="module")
def server(trained_model):
    from imgclf.serving.process import LocalServer

    with LocalServer(trained_model.base_path, trained_model.model_name) as running:
        yield running


@pytest.fixture(scope="module")
def folder(trained_model, tmp_path_factory) -> Path:
    """The training pages plus a file that is not an image, in class sub-folders and one deeper."""
    root = tmp_path_factory.mktemp("to-classify")
    shutil.copytree(trained_model.data_dir, root, dirs_exist_ok=True)
    (root / "other" / "deeper").mkdir()
    for page in sorted((root / "research").iterdir())[:3]:
        shutil.copy(page, root / "other" / "deeper" / page.name)
    (root / "research" / "broken.jpg").write_bytes(b"not an image")
    return root


def validate(server, folder: Path, output: Path, *extra: str) -> int:
    settings = parse_settings([str(folder), "--server", server.rest_url, "--output", str(output),
                               "--batch", "4", "--no-progress", *extra])
    return run_validation(settings, io.StringIO(), io.StringIO())


def rows_of(path: Path) -> list:
    return list(merge.READERS[path.suffix](path)[1])


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_sharded_runs_merge_into_the_unsharded_output(server, folder, tmp_path, suffix, capsys):
    whole = tmp_path / f"whole{suffix}"
    assert validate(server, folder, whole) == 1                      # the broken file fails
    output = tmp_path / f"results{suffix}"
    for index in range(3):
        assert validate(server, folder, output, "--shard", f"{index}/3") in (0, 1)
    assert not output.exists()
    files = shards.shard_files(output)
    rows = [len(f.read_text().splitlines()) for f in files]
    assert all(rows) and len(set(rows)) > 1 or rows                  # three real, different shares

    assert merge.main(["--output", str(output)]) == 1                            # merged; one image had failed
    merged, unsharded = rows_of(output), rows_of(whole)
    # The same files in the same order with the same answers; scores agree to float noise (a batch
    # of other images changes the last digits).
    assert [(r.path, r.folder, r.error, r.prediction and r.prediction.top[0]) for r in merged] == \
        [(r.path, r.folder, r.error, r.prediction and r.prediction.top[0]) for r in unsharded]
    for a, b in zip(merged, unsharded):
        if a.prediction:
            assert a.prediction.classes == b.prediction.classes
            assert a.prediction.scores == pytest.approx(b.prediction.scores, abs=1e-5)
    printed = capsys.readouterr().out
    assert "errors 1" in printed and "accuracy" in printed and "merged 3 shard outputs" in printed


@pytest.mark.slow
def test_merge_refuses_overlapping_shards_and_different_labels(server, folder, tmp_path):
    output = tmp_path / "results.csv"
    for index in range(2):
        validate(server, folder, output, "--shard", f"{index}/2")
    first, second = shards.shard_files(output)
    with pytest.raises(ClientError, match="in two shards"):
        merge.merge(str(tmp_path / "twice.csv"), [first, first])
    assert not (tmp_path / "twice.csv").exists() and (tmp_path / "twice.csv.partial").exists()
    header, *body = second.read_text().splitlines()
    second.write_text("\n".join([header.replace("other", "else"), *body]) + "\n")
    with pytest.raises(ClientError, match="different labels"):
        merge.merge(str(tmp_path / "mixed.csv"), [first, second])
