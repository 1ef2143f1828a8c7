"""The client's parts that need no server: streaming and batching, metrics, output writers, flags."""

from __future__ import annotations

import csv
import itertools
import json
import random
import threading
import time
from collections import Counter

import pytest

from imgclf.client import cli, files
from imgclf.client.base import ClientError, ImageResult, Prediction
from imgclf.client.metrics import RunMetrics, classification_report, latency_percentiles
from imgclf.client.output import check_output_path, open_writer
from imgclf.client.validate import EXIT_UNREACHABLE, EXIT_USAGE, image_lines, run_validation
from imgclf.tf_errors import tf_error_message
from conftest import free_port


# --- streaming and batching ---------------------------------------------------------------------
def test_iter_batches_pulls_lazily_and_keeps_order():
    pulled = []

    def endless():
        for n in itertools.count():
            pulled.append(n)
            yield n

    batches = files.iter_batches(endless(), 3)
    assert next(batches) == [0, 1, 2]
    assert next(batches) == [3, 4, 5]
    assert len(pulled) == 6
    assert list(files.iter_batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError):
        next(files.iter_batches(range(3), 0))


def test_ordered_bounded_map_keeps_input_order_under_random_delays():
    rng = random.Random(3)
    delays = [rng.uniform(0, 0.01) for _ in range(60)]

    def slow_square(index):
        time.sleep(delays[index])
        return index, index * index

    results = list(files.ordered_bounded_map(slow_square, range(60), workers=6))
    assert results == [(i, i * i) for i in range(60)]


def test_ordered_bounded_map_pulls_input_only_as_results_are_taken():
    pulled = []
    in_flight, peak = 0, 0
    lock = threading.Lock()

    def source():
        for n in range(1000):
            pulled.append(n)
            yield n

    def work(item):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.001)
        with lock:
            in_flight -= 1
        return item

    mapped = files.ordered_bounded_map(work, source(), workers=3, window=5)
    taken = [next(mapped) for _ in range(10)]
    assert taken == list(range(10))
    assert len(pulled) <= 10 + 5          # never more than the window ahead of the consumer
    mapped.close()
    assert peak <= 3
    assert len(pulled) < 1000


def test_ordered_bounded_map_raises_and_stops_pulling():
    pulled = []

    def source():
        for n in range(1000):
            pulled.append(n)
            yield n

    def fail_on_five(item):
        if item == 5:
            raise RuntimeError("boom at 5")
        return item

    got = []
    with pytest.raises(RuntimeError, match="boom at 5"):
        for value in files.ordered_bounded_map(fail_on_five, source(), workers=2, window=4):
            got.append(value)
    assert got == [0, 1, 2, 3, 4]
    assert len(pulled) < 20


def test_true_label_and_unreadable_file(tmp_path):
    root = tmp_path
    assert files.true_label(root / "research" / "a.jpg", root) == "research"
    assert files.true_label(root / "research" / "deep" / "a.jpg", root) == "research"
    assert files.true_label(root / "a.jpg", root) is None
    (root / "folder.jpg").mkdir()
    data, problem = files.read_file(root / "folder.jpg")
    assert data is None and "cannot read file" in problem
    (root / "ok.png").write_bytes(b"\x89PNG")
    assert files.read_file(root / "ok.png") == (b"\x89PNG", None)


def test_count_image_files_matches_discovery(tmp_path):
    for name in ("a/x.JPG", "a/y.jpeg", "b/z.png", "b/notes.txt", ".hidden/w.jpg", "top.Png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert files.count_image_files(tmp_path) == 4


# --- metrics ------------------------------------------------------------------------------------
def test_classification_report_by_hand():
    # true research: 8 right, 2 called other; true other: 5 right, 1 called research
    confusion = Counter({("research", "research"): 8, ("research", "other"): 2,
                         ("other", "other"): 5, ("other", "research"): 1,
                         ("misc", "other"): 4})   # not a label: left out
    report = classification_report(confusion, ["other", "research"])
    assert report.scored == 16
    assert report.matrix == [[5, 1], [2, 8]]
    assert report.accuracy == pytest.approx(13 / 16)
    research = report.per_class["research"]
    assert research.precision == pytest.approx(8 / 9)
    assert research.recall == pytest.approx(8 / 10)
    assert research.f1 == pytest.approx(2 * (8 / 9) * 0.8 / ((8 / 9) + 0.8))
    assert research.support == 10
    other = report.per_class["other"]
    assert (other.precision, other.recall, other.support) == (pytest.approx(5 / 7), pytest.approx(5 / 6), 6)
    assert classification_report(Counter({("misc", "other"): 3}), ["other", "research"]) is None


def test_latency_percentiles_interpolate_like_numpy():
    values = [float(v) for v in range(1, 102)]          # 1..101
    random.Random(0).shuffle(values)
    assert latency_percentiles(values) == {50: 51.0, 95: 96.0, 99: 100.0}
    assert latency_percentiles([0.25]) == {50: 0.25, 95: 0.25, 99: 0.25}


def test_run_metrics_counts_misclassified_and_unlabelled():
    metrics = RunMetrics()
    classes = ("other", "research")
    metrics.add_prediction("d/research/a.jpg", "research", classes, "research", 0.9, 100, 7)
    metrics.add_prediction("d/research/b.jpg", "research", classes, "other", 0.6, 100, 7)
    metrics.add_prediction("d/misc/c.jpg", "misc", classes, "other", 0.8, 100, 7)
    metrics.add_error()
    assert (metrics.images, metrics.predicted, metrics.errors, metrics.unlabelled) == (4, 3, 1, 1)
    assert metrics.misclassified == [("d/research/b.jpg", "research", "other", 0.6)]
    assert metrics.report().accuracy == 0.5
    assert metrics.versions == Counter({7: 3})


# --- output -------------------------------------------------------------------------------------
def _results():
    failed = ImageResult("d/other/bad.jpg", "other", error="Invalid JPEG data")
    good = ImageResult("d/research/p.jpg", "research", Prediction(("other", "research"), (0.25, 0.75)),
                       version=12, file_bytes=10)
    return [failed, good]


def test_csv_writer_names_score_columns_after_labels_even_when_a_failure_comes_first(tmp_path):
    writer = open_writer(str(tmp_path / "out" / "results.csv"))
    for result in _results():
        writer.write(result)
    assert not (tmp_path / "out" / "results.csv").exists()   # only .partial until complete
    saved = writer.close(complete=True)
    rows = list(csv.DictReader(saved.open()))
    assert saved == tmp_path / "out" / "results.csv"
    assert [r["path"] for r in rows] == ["d/other/bad.jpg", "d/research/p.jpg"]
    assert rows[0]["error"] == "Invalid JPEG data" and rows[0]["predicted"] == ""
    assert rows[1]["predicted"] == "research" and float(rows[1]["research"]) == 0.75
    assert float(rows[1]["other"]) == 0.25 and rows[1]["version"] == "12"


def test_jsonl_writer_and_incomplete_run_keeps_partial_name(tmp_path):
    writer = open_writer(str(tmp_path / "results.jsonl"))
    for result in _results():
        writer.write(result)
    saved = writer.close(complete=False)
    assert saved.name == "results.jsonl.partial" and not (tmp_path / "results.jsonl").exists()
    records = [json.loads(line) for line in saved.read_text().splitlines()]
    assert records[0]["error"] == "Invalid JPEG data" and records[0]["scores"] is None
    assert records[1]["scores"] == {"other": 0.25, "research": 0.75}
    assert records[1]["true_label"] == "research"


def test_output_extension_is_checked(tmp_path):
    with pytest.raises(ClientError, match=r"\.csv or \.jsonl"):
        check_output_path(str(tmp_path / "results.txt"))
    check_output_path(str(tmp_path / "Results.CSV"))


def test_image_lines_like_the_original_tool():
    good = _results()[1]
    assert image_lines(good, all_classes=False) == ["research 0.7500000 d/research/p.jpg"]
    assert image_lines(good, all_classes=True) == ["research 0.7500000 d/research/p.jpg",
                                                   "other 0.2500000 d/research/p.jpg"]
    assert image_lines(_results()[0], False) == ["ERROR - d/other/bad.jpg: Invalid JPEG data"]


# --- flags and failures without a server ----------------------------------------------------------
def test_flags_map_onto_settings():
    settings = cli.parse_settings(["imgs", "--protocol", "grpc", "--batch", "8", "--label", "stable",
                                   "--min-accuracy", "0.9", "--all", "--no-progress"])
    assert (settings.dir, settings.protocol, settings.batch, settings.label) == ("imgs", "grpc", 8, "stable")
    assert settings.min_accuracy == 0.9 and settings.all_classes and settings.progress is False
    for bad in (["d", "--min-accuracy", "90"], ["d", "--version", "3", "--label", "stable"],
                ["d", "--batch", "0"], ["d", "--protocol", "soap"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_settings(bad)
        assert exit_info.value.code == 2


def test_server_down_gives_clear_message_and_exit_code(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"not used")
    port = free_port()   # nothing listens there
    code = cli.main([str(tmp_path), "--server", f"http://127.0.0.1:{port}", "--wait", "1"])
    err = capsys.readouterr().err
    assert code == EXIT_UNREACHABLE
    assert f"cannot reach http://127.0.0.1:{port}: connection refused (waited 1 s)" in err
    assert "Traceback" not in err


def test_missing_folder_and_bad_output_are_usage_errors(tmp_path, capsys):
    settings = cli.parse_settings([str(tmp_path / "nope")])
    assert run_validation(settings) == EXIT_USAGE
    assert "no such folder" in capsys.readouterr().err
    settings = cli.parse_settings([str(tmp_path), "--output", str(tmp_path / "r.txt")])
    assert run_validation(settings) == EXIT_USAGE
    assert ".csv or .jsonl" in capsys.readouterr().err


def test_server_messages_print_on_one_line_without_tensorflow_decorations():
    eager = ("Graph execution error:\n\nDetected at node decode_image/DecodeImage defined at (most recent "
             "call last):\n<stack traces unavailable>\nInput is empty.\n\t [[{{node decode_image/DecodeImage}}]]"
             " [Op:__inference_signature_wrapper_serve_578]")
    assert tf_error_message(eager) == "Input is empty."
    assert tf_error_message("Unknown image file format.\n\t [[{{node DecodeImage}}]]") == "Unknown image file format."
    assert tf_error_message("first\nsecond") == "first second"
