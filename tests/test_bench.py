"""`imgclf bench --quick`: the whole benchmark on tiny data, so that it cannot rot. It checks that
every figure was measured and is a sane number, never how fast anything was."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from imgclf import bench

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench-output")
    code = bench.main(["--quick", "--output-dir", str(output)], command="bench")
    return code, output, json.loads((output / bench.JSON_FILE).read_text())


def test_quick_bench_writes_json_chart_and_every_figure(quick_run, capsys):
    code, output, results = quick_run
    assert code == 0, results["errors"]
    assert results["errors"] == {}
    assert results["mode"] == "quick" and results["settings"]["epochs"] == bench.QUICK_SETTINGS["epochs"]
    with Image.open(output / bench.CHART_FILE) as chart:
        assert chart.format == "PNG" and chart.width > 400

    keys = [r["key"] for r in results["ratios"]]
    assert keys == ["request_bytes", "serving_rest", "serving_grpc", "training", "extraction", "rollout_p99",
                    "rollout_answer", "client_memory"]
    for ratio in results["ratios"]:
        assert math.isfinite(ratio["value"]) and ratio["value"] > 0, ratio


def test_quick_bench_figures_are_consistent(quick_run):
    _, _, results = quick_run
    # Bytes do not depend on the machine: 299x299x3 JSON floats dwarf a small page's base64.
    sizes = results["request_bytes"]
    assert sizes["b64_request_bytes"] > sizes["file_bytes"] * 4 / 3
    assert sizes["float_request_bytes"] > 299 * 299 * 3 * 3
    assert sizes["times_smaller"] >= 100

    serving = results["serving"]
    assert serving["images"] == bench.QUICK_SETTINGS["serving_images"]
    assert {row["protocol"] for row in serving["sweep"]} == {"rest", "grpc"}
    assert all(row["exit"] == 0 and row["images"] == serving["images"] for row in serving["sweep"])
    assert serving["in_process"]["images_per_second"] > 0

    training = results["training"]
    epochs = bench.QUICK_SETTINGS["epochs"]
    assert {phase: len(seconds) for phase, seconds in training["cached"]["phases"].items()} == {
        "head-texture": epochs, "head-layout": epochs}
    assert {phase: len(seconds) for phase, seconds in training["recomputed"]["phases"].items()} == {
        "head-on-images": epochs}
    assert training["cached"]["features_seconds"] is not None
    assert training["recomputed"]["features_seconds"] is None
    assert training["ratio"] == pytest.approx(training["cached"]["seconds"] / training["recomputed"]["seconds"])
    extraction = training["extraction"]
    assert extraction["ratio"] == pytest.approx(extraction["images_per_second"] /
                                                extraction["in_process_images_per_second"])

    rollout = results["rollout"]
    assert rollout["failures"] == 0 and rollout["requests"] > 0
    assert len(rollout["publish_to_answer_s"]) == bench.QUICK_SETTINGS["publishes"]

    memory = results["client_memory"]
    counts = [int(c) for c in bench.QUICK_SETTINGS["memory_files"].split(",")]
    assert [run["files"] for run in memory["runs"]] == counts
    assert all(5 < run["peak_rss_mib"] < 2000 and run["exit"] == 0 for run in memory["runs"])


def test_table_names_every_figure_and_goal():
    results = {
        "request_bytes": {"pages": 2, "file_bytes": 10.0, "b64_request_bytes": 50.0,
                          "float_request_bytes": 9000.0, "times_smaller": 180.0},
        "training": {"epochs": 10, "images": 30, "ratio": 0.3, "view": "whole",
                     "cached": {"seconds": 3.0}, "recomputed": {"seconds": 10.0},
                     "extraction": {"images_per_second": 45.0, "in_process_images_per_second": 50.0, "ratio": 0.9}},
    }
    found = bench.ratios(results)
    table = bench.format_table(found, {"serving": "skipped: needs model"})
    assert [r.met for r in found] == [True, False, True]
    assert "float JSON / b64 JPEG" in table and ">= 100" in table and "<= 0.25" in table
    assert "FAILED serving: skipped: needs model" in table


def test_missing_data_folder_is_a_usage_error(tmp_path, capsys):
    code = bench.main(["--quick", "--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path)])
    assert code == 2
    assert "nowhere: no such folder" in capsys.readouterr().err


def test_batching_part_on_a_given_model_serves_that_version(trained_model, tmp_path):
    """`imgclf bench --parts batching --model V`: the one entry point for the server's batching
    figures, on a version given rather than trained."""
    output = tmp_path / "out"
    code = bench.main(["--quick", "--parts", "batching", "--model", str(trained_model.version_dir),
                       "--data", str(trained_model.data_dir), "--output-dir", str(output)])
    results = json.loads((output / bench.JSON_FILE).read_text())
    assert code == 0, results["errors"]
    assert [r["key"] for r in results["ratios"]] == ["batching"]
    assert results["model"]["version_dir"].endswith(f"/{trained_model.version}")
    rows = results["batching"]["rows"]
    assert {(r["batching"], r["clients"]) for r in rows} == {(b, c) for b in (False, True) for c in bench.BATCHING_CLIENTS}
    assert all(r["requests"] > 0 and r["failures"] == 0 for r in rows)


def test_parts_and_model_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--parts", "serving,speed"])
    assert "give a comma-separated list of bytes, training" in capsys.readouterr().err
    code = bench.main(["--quick", "--parts", "serving", "--model", str(tmp_path), "--output-dir", str(tmp_path)])
    assert code == 1
    assert "not a version folder" in capsys.readouterr().out


def test_link_tree_from_a_relative_source_links_readable_files(tmp_path, monkeypatch):
    for label in ("other", "research"):
        (tmp_path / "pages" / label).mkdir(parents=True)
        (tmp_path / "pages" / label / f"{label}.jpg").write_bytes(label.encode())
    monkeypatch.chdir(tmp_path)
    tree = bench.link_tree(Path("pages"), tmp_path / "links", 5)
    links = sorted(tree.rglob("*.jpg"))
    assert len(links) == 5
    assert {link.parent.name: link.read_bytes() for link in links} == {"other": b"other", "research": b"research"}
