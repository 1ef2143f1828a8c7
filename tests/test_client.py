"""The validation client against a live local server serving a real exported model."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from imgclf import contract
from imgclf.client import cli
from imgclf.client.validate import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, Run
from imgclf.data_folders import iter_image_files
from imgclf.tf_errors import tf_error_message
from conftest import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(trained_model):
    from imgclf.serving.process import LocalServer

    with LocalServer(trained_model.base_path, trained_model.model_name) as running:
        yield running


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    """Pages the model never saw, in class folders named after its labels."""
    from imgclf.sample_data import write_sample_dataset

    return write_sample_dataset(tmp_path_factory.mktemp("held-out"), per_class=12, seed=99)


@pytest.fixture(scope="module")
def in_process(trained_model, held_out) -> dict[str, dict[str, float]]:
    """What the exported model gives in this process, file by file: path -> {label: score}."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(trained_model.version_dir)).signatures[contract.SIGNATURE_NAME]
    expected = {}
    for path in iter_image_files(held_out):
        outputs = signature(**{contract.INPUT_NAME: tf.constant([path.read_bytes()])})
        classes = [c.decode() for c in outputs[contract.CLASSES_OUTPUT].numpy()[0]]
        expected[str(path)] = dict(zip(classes, outputs[contract.SCORES_OUTPUT].numpy()[0].tolist()))
    return expected


def validate(folder, server, *flags, protocol="rest"):
    """Runs the client in this process; returns (exit code, Run, stdout, stderr)."""
    target = ["--server", server.rest_url] if protocol == "rest" else ["--grpc-server", server.grpc_target]
    settings = cli.parse_settings([str(folder), "--protocol", protocol, *target, "--wait", "30", *flags])
    out, err = io.StringIO(), io.StringIO()
    run = Run(settings, out, err)
    code = run.execute()
    return code, run, out.getvalue(), err.getvalue()


def scores_by_path(jsonl: Path) -> dict[str, dict[str, float]]:
    return {r["path"]: r["scores"] for r in map(json.loads, jsonl.read_text().splitlines())}


def assert_same_scores(got: dict, expected: dict, tolerance=1e-5):
    assert got.keys() == expected.keys()
    for path, scores in expected.items():
        assert got[path].keys() == scores.keys(), path
        for label, score in scores.items():
            assert got[path][label] == pytest.approx(score, abs=tolerance), (path, label)


def test_rest_accuracy_equals_the_model_in_process(server, held_out, in_process, trained_model, tmp_path):
    code, run, out, err = validate(held_out, server, "--output", str(tmp_path / "r.jsonl"))
    assert code == EXIT_OK, err
    assert_same_scores(scores_by_path(tmp_path / "r.jsonl"), in_process)
    right = sum(max(s, key=s.get) == Path(p).parent.name for p, s in in_process.items())
    report = run.metrics.report()
    assert report.accuracy == pytest.approx(right / len(in_process))
    assert report.labels == list(trained_model.labels)
    assert f"accuracy {right / len(in_process):.4f}" in out
    assert run.versions_from_metadata == [trained_model.version, trained_model.version]
    # one `label score path` line per image, with the top class
    lines = [line for line in out.splitlines() if line.endswith((".jpg", ".png"))]
    assert len(lines) == len(in_process)
    for line in lines:
        label, score, path = line.split(" ", 2)
        assert label == max(in_process[path], key=in_process[path].get)
        assert float(score) == pytest.approx(in_process[path][label], abs=1e-6)


def test_rest_and_grpc_agree(server, held_out, in_process, trained_model, tmp_path):
    code, run, _, err = validate(held_out, server, "--output", str(tmp_path / "g.jsonl"), protocol="grpc")
    assert code == EXIT_OK, err
    assert_same_scores(scores_by_path(tmp_path / "g.jsonl"), in_process)
    assert dict(run.metrics.versions) == {trained_model.version: len(in_process)}   # gRPC names it


@pytest.mark.parametrize("protocol,batch,concurrency", [
    ("rest", 1, 1), ("rest", 5, 3), ("rest", 64, 2), ("grpc", 3, 4)])
def test_batching_and_concurrency_keep_paths_and_predictions_paired(
        server, held_out, in_process, tmp_path, protocol, batch, concurrency):
    output = tmp_path / "r.csv"
    code, run, _, err = validate(held_out, server, "--batch", str(batch), "--concurrency",
                                 str(concurrency), "--output", str(output), protocol=protocol)
    assert code == EXIT_OK, err
    import csv

    rows = list(csv.DictReader(output.open()))
    assert [r["path"] for r in rows] == sorted(in_process, key=lambda p: (Path(p).parent.name, Path(p).name))
    got = {r["path"]: {label: float(r[label]) for label in run.metrics.labels} for r in rows}
    assert_same_scores(got, in_process)
    assert len(run.metrics.latencies) == -(-len(in_process) // batch)   # ceil: one request per batch


def test_corrupt_files_get_their_own_line_and_good_ones_still_get_predictions(
        server, held_out, in_process, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(held_out, folder)
    good_bytes = (folder / "research" / "page-000.jpg").read_bytes()
    bad = {
        folder / "research" / "page-000b-truncated.jpg": good_bytes[: len(good_bytes) // 3],
        folder / "other" / "page-000b-text.jpg": b"this is not an image\n",
        folder / "other" / "page-005b-empty.png": b"",
    }
    for path, data in bad.items():
        path.write_bytes(data)
    code, run, out, err = validate(folder, server, "--batch", "4", "--output", str(tmp_path / "r.jsonl"))
    assert code == EXIT_FAILED
    assert f"{len(bad)} of {len(in_process) + len(bad)} images failed" in err
    records = {r["path"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    reasons = {}
    for path in bad:
        record = records.pop(str(path))
        reasons[path.name] = tf_error_message(record["error"])
        assert record["scores"] is None and record["error"]
        assert not record["error"].startswith("HTTP ")      # the server's own message
        assert f"ERROR - {path}: {tf_error_message(record['error'])}\n" in out
    # TensorFlow's decoders say why; the empty file and the text file fail for different reasons
    assert len(set(reasons.values())) == len(bad), reasons
    # every good file kept its own prediction, even those that shared a batch with a bad one
    expected = {str(folder / Path(p).relative_to(held_out)): s for p, s in in_process.items()}
    assert_same_scores({p: r["scores"] for p, r in records.items()}, expected)
    assert run.metrics.errors == len(bad) and run.metrics.predicted == len(in_process)


def test_min_accuracy_gates_the_exit_code(server, held_out, in_process, tmp_path):
    folder = tmp_path / "relabelled"
    shutil.copytree(held_out, folder)
    for path in list((folder / "research").iterdir())[:4]:   # 4 pages now sit in the wrong folder
        path.rename(folder / "other" / f"moved-{path.name}")
    code, run, out, err = validate(folder, server)
    accuracy = run.metrics.report().accuracy
    assert code == EXIT_OK and accuracy < 1.0
    assert "misclassified (" in out
    assert validate(folder, server, "--min-accuracy", f"{accuracy - 0.01:.4f}")[0] == EXIT_OK
    code, _, _, err = validate(folder, server, "--min-accuracy", f"{accuracy + 0.01:.4f}")
    assert code == EXIT_FAILED and "is below --min-accuracy" in err


def test_version_and_model_that_do_not_exist(server, held_out, trained_model):
    code, run, _, err = validate(held_out, server, "--version", str(trained_model.version), "--batch", "64")
    assert code == EXIT_OK, err
    for protocol in ("rest", "grpc"):
        code, _, _, err = validate(held_out, server, "--version", "12345", "--wait", "0", protocol=protocol)
        assert code == EXIT_UNREACHABLE and "12345" in err and "Traceback" not in err
        code, _, _, err = validate(held_out, server, "--model-name", "no_such_model", "--wait", "0",
                                   protocol=protocol)
        assert code == EXIT_UNREACHABLE and "no_such_model" in err


def test_grpc_server_down(held_out):
    settings = cli.parse_settings([str(held_out), "--protocol", "grpc", "--grpc-server",
                                   f"127.0.0.1:{free_port()}", "--wait", "1"])
    err = io.StringIO()
    assert Run(settings, io.StringIO(), err).execute() == EXIT_UNREACHABLE
    assert "unavailable" in err.getvalue() and "(waited 1 s)" in err.getvalue()


def test_waits_for_a_model_still_loading(trained_model, held_out, tmp_path):
    """The real server opens its ports only once the model has loaded: the client keeps polling
    through "connection refused" until --wait runs out."""
    from imgclf.serving.process import LocalServer

    rest_port = free_port()
    settings = cli.parse_settings([str(held_out), "--server", f"http://127.0.0.1:{rest_port}",
                                   "--wait", "120"])
    out, err, codes = io.StringIO(), io.StringIO(), []
    client = threading.Thread(target=lambda: codes.append(Run(settings, out, err).execute()))
    client.start()
    base_path = tmp_path / trained_model.model_name
    shutil.copytree(trained_model.version_dir, base_path / str(trained_model.version))
    with LocalServer(base_path, trained_model.model_name, rest_port=rest_port):
        client.join(timeout=120)
    assert codes == [EXIT_OK], err.getvalue()
    assert "waiting up to 120 s for the model" in err.getvalue()
    assert f"images {len(list(iter_image_files(held_out)))}" in out.getvalue()


def test_rest_path_imports_no_tensorflow_and_shows_progress(server, held_out):
    script = (
        "import sys\n"
        "from imgclf.cli import main\n"
        f"code = main(['validate', {str(held_out)!r}, '--server', {server.rest_url!r}, '--progress'])\n"
        "print('TENSORFLOW_IMPORTED', 'tensorflow' in sys.modules, file=sys.stderr)\n"
        "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "TENSORFLOW_IMPORTED False" in done.stderr
    assert "img/s" in done.stderr   # tqdm's bar


def test_rest_rides_out_a_server_restart_with_retries(trained_model, held_out, tmp_path):
    """Connection errors during the run are retried with backoff: a server stopped and started
    again on the same ports within the retry budget costs no image."""
    from imgclf.serving.process import LocalServer

    folder = tmp_path / "many"
    for copy in range(40):   # enough requests (one per image) that the restart falls mid-run
        for path in iter_image_files(held_out):
            target = folder / path.parent.name / f"{copy}-{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    first = LocalServer(trained_model.base_path, trained_model.model_name).start()
    settings = cli.parse_settings([str(folder), "--server", first.rest_url, "--batch", "1",
                                   "--concurrency", "1", "--retries", "8", "--wait", "30"])
    out, err, codes = io.StringIO(), io.StringIO(), []
    client = threading.Thread(target=lambda: codes.append(Run(settings, out, err).execute()))
    client.start()
    try:
        while out.getvalue().count("\n") < 10 and client.is_alive():
            threading.Event().wait(0.05)
        first.process.kill()   # abrupt, so the run is still under way when the server is gone
        first.stop()
        lines_before_restart = out.getvalue().count("\n")
        restarted_mid_run = client.is_alive()
        with LocalServer(trained_model.base_path, trained_model.model_name,
                         rest_port=first.rest_port, grpc_port=first.grpc_port):
            client.join(timeout=180)
    finally:
        first.stop()
    total = len(list(iter_image_files(folder)))
    assert restarted_mid_run and lines_before_restart < total
    assert codes == [EXIT_OK], err.getvalue()
    assert f"images {total}   predicted {total}   errors 0" in out.getvalue()
