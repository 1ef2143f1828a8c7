"""Versions coming and going under a live server (with --enable_batching), with traffic running:
no request may fail while a version is published, rolled back, or breaks."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from imgclf.serving import LocalServer, ServerStartError
from serving_models import export_toy_model, publish, write_broken_version

pytestmark = pytest.mark.slow
POLL = 0.3


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    for version in (1, 2):
        export_toy_model(root, version)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, exports):
    base = tmp_path_factory.mktemp("served") / "toy"
    base.mkdir()
    shutil.copytree(exports / "1", base / "1")
    batching = tmp_path_factory.mktemp("cfg") / "batching.config"
    batching.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 1000 }")
    with LocalServer(base, "toy", poll_seconds=POLL,
                     extra_args=["--enable_batching", f"--batching_parameters_file={batching}"]) as running:
        running.base_path = base
        yield running


class Traffic:
    """Background clients sending predict requests until stopped; records every answer."""

    def __init__(self, url: str, clients: int = 2):
        self.url, self.stop_event = url + "/v1/models/toy:predict", threading.Event()
        self.scales, self.failures = [], []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self):
        session = requests.Session()
        while not self.stop_event.is_set():
            try:
                reply = session.post(self.url, json={"instances": [[1, 1, 1]]}, timeout=30)
                if reply.status_code != 200:
                    self.failures.append(reply.text)
                else:
                    self.scales.append(reply.json()["predictions"][0]["y"][0])
            except requests.RequestException as error:
                self.failures.append(repr(error))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for thread in self.threads:
            thread.join()


def served_scale(server) -> float:
    reply = requests.post(server.rest_url + "/v1/models/toy:predict", json={"instances": [[1, 1, 1]]}, timeout=30)
    return reply.json()["predictions"][0]["y"][0]


def wait_for(condition, seconds: float = 20 * POLL + 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL / 2)
    pytest.fail(f"condition not met within {seconds:.0f}s")


def states(server) -> dict[str, tuple[str, str]]:
    body = requests.get(server.rest_url + "/v1/models/toy", timeout=30).json()
    return {s["version"]: (s["state"], s["status"]["error_code"]) for s in body["model_version_status"]}


def test_a_published_version_is_served_and_removing_it_falls_back_with_no_failed_request(server, exports, tmp_path):
    ignored = server.base_path / ".staging-77"
    shutil.copytree(exports / "2", ignored)
    with Traffic(server.rest_url) as traffic:
        time.sleep(4 * POLL)
        assert served_scale(server) == 1.0, "a non-numeric folder is never served"
        staged = tmp_path / "staged"
        shutil.copytree(exports / "2", staged)
        publish(staged, server.base_path, 2)
        wait_for(lambda: served_scale(server) == 2.0)
        assert states(server) == {"2": ("AVAILABLE", "OK"), "1": ("END", "OK")}
        shutil.rmtree(server.base_path / "2")
        wait_for(lambda: served_scale(server) == 1.0)
        time.sleep(2 * POLL)
    assert not traffic.failures, traffic.failures[:3]
    assert {1.0, 2.0} <= set(traffic.scales) and len(traffic.scales) > 20
    assert states(server)["1"] == ("AVAILABLE", "OK")
    shutil.rmtree(ignored)


def test_a_broken_version_shows_its_error_while_the_old_one_serves(server):
    with Traffic(server.rest_url) as traffic:
        write_broken_version(server.base_path, 5)
        wait_for(lambda: "5" in states(server))
        time.sleep(2 * POLL)
    assert states(server)["5"] == ("END", "DATA_LOSS")
    assert not traffic.failures and set(traffic.scales) == {1.0}
    status = requests.get(server.rest_url + "/v1/models/toy/versions/5", timeout=30).json()
    assert "saved_model.pb" in status["model_version_status"][0]["status"]["error_message"]
    shutil.rmtree(server.base_path / "5")


def test_batching_answers_every_concurrent_request_with_its_own_result(server):
    url = server.rest_url + "/v1/models/toy:predict"

    def ask(i: int):
        reply = requests.post(url, json={"instances": [[i, 0, 0]] * (1 + i % 3)}, timeout=30)
        return i, reply.json()["predictions"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(ask, range(48)))
    for i, predictions in results:
        assert len(predictions) == 1 + i % 3
        assert all(p["y"] == [float(i), 0.0, 0.0] for p in predictions)


def test_the_server_refuses_to_start_when_no_version_loads(tmp_path):
    write_broken_version(tmp_path / "toy", 3)
    with pytest.raises(ServerStartError) as caught:
        LocalServer(tmp_path / "toy", "toy", startup_timeout=60).start()
    message = str(caught.value)
    assert "no version could be loaded" in message and "version 3" in message


def test_a_stopped_server_leaves_no_log_behind_but_one_that_died_keeps_it(tmp_path, exports, caplog):
    base = tmp_path / "toy"
    shutil.copytree(exports / "1", base / "1")
    with LocalServer(base, "toy") as server:
        log = server.log_path
        assert log.is_file()
    assert not log.exists()

    server = LocalServer(base, "toy").start()
    server.process.kill()
    server.process.wait()
    server.stop()
    assert server.log_path.is_file() and str(server.log_path) in caplog.text
    server.log_path.unlink()
