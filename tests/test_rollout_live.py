"""The rollout commands against a running local server that polls the model config file, on the
trainer's real export: gate -> publish -> pin/canary -> unpin -> rollback, checked through the
server's own REST status."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import requests

from imgclf import contract
from imgclf.rollout import cli
from imgclf.model_store import LocalModelStore
from imgclf.rollout.gate import labelled_examples
from imgclf.rollout.publish import promote
from imgclf.serving.process import LocalServer

POLL = "0.2"


def served(server: LocalServer, model_name: str) -> dict[int, str]:
    reply = requests.get(server.rest_url + contract.rest_model_path(model_name), timeout=5)
    return {int(s["version"]): s["state"] for s in reply.json().get("model_version_status", [])}


def available(server, model_name) -> set[int]:
    return {v for v, state in served(server, model_name).items() if state == "AVAILABLE"}


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def status_json(common, server, capsys) -> dict:
    capsys.readouterr()
    assert cli.main(common + ["--server", server.rest_url, "--docker-service", "", "--json"], command="status") == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def live(trained_model, tmp_path_factory):
    """A copy of the trained model's base path, served by a local server that reads models.config."""
    models = tmp_path_factory.mktemp("live-models")
    base = contract.model_base_path(models, trained_model.model_name)
    shutil.copytree(trained_model.version_dir, contract.version_path(base, trained_model.version))
    config = tmp_path_factory.mktemp("serving") / "models.config"
    common = ["--models", str(models), "--model-name", trained_model.model_name, "--models-config", str(config)]
    assert cli.main(common, command="unpin") == 0
    server = LocalServer(None, trained_model.model_name, poll_seconds=float(POLL), extra_args=[
        f"--models={models}", f"--model_config_file={config}", f"--model_config_file_poll_wait_seconds={POLL}"])
    with server:
        yield server, base, common


@pytest.mark.slow
def test_publish_pin_unpin_rollback_against_a_running_server(live, trained_model, capsys):
    server, base, common = live
    name = trained_model.model_name
    first = trained_model.version
    assert available(server, name) == {first}

    # The gate measures both on the held-out pages, lets an equal candidate through; the server
    # swaps to it by itself.
    store = LocalModelStore(base)
    staged = store.stage()
    shutil.copytree(trained_model.version_dir, staged, dirs_exist_ok=True)
    store.seal(staged)
    second = promote(store, staged, labelled_examples(trained_model.data_dir), tolerance=0.0, force=False)
    wait_for(lambda: available(server, name) == {second}, f"version {second} alone AVAILABLE")

    # Pin the old version as stable with the new one as canary: both served, labels answered.
    assert cli.main(common + ["--server", server.rest_url, "--version", str(first),
                              "--canary", str(second), "--wait", "60"], command="pin") == 0
    assert available(server, name) == {first, second}
    for label, version in (("stable", first), ("canary", second)):
        metadata = requests.get(server.rest_url + contract.rest_model_path(name, label=label) + "/metadata",
                                timeout=5).json()
        assert metadata["model_spec"]["version"] == str(version)
        reply = requests.post(server.rest_url + contract.rest_model_path(name, label=label) + ":predict",
                              json=contract.rest_predict_body([next(trained_model.data_dir.rglob("*.jpg")).read_bytes()]),
                              timeout=30)
        assert reply.status_code == 200 and reply.json()["predictions"][0][contract.CLASSES_OUTPUT] == trained_model.labels

    status = status_json(common, server, capsys)
    assert status["pinned"] == [first, second] and not status["server_error"]
    rows = {(r["on_disk"], r["version"]): r for r in status["rows"]}
    assert rows[("published", first)]["state"] == "AVAILABLE" and rows[("published", first)]["labels"] == ["stable"]
    assert rows[("published", second)]["state"] == "AVAILABLE" and rows[("published", second)]["labels"] == ["canary"]
    assert rows[("published", first)]["accuracy"] is not None   # recorded by the trainer

    # Unpin: back to the highest version only.
    assert cli.main(common, command="unpin") == 0
    wait_for(lambda: available(server, name) == {second}, "only the highest version after unpin")

    # Roll back: the server goes back to the first version; the second is retired, not deleted.
    assert cli.main(common, command="rollback") == 0
    wait_for(lambda: available(server, name) == {first}, f"fallback to version {first}")
    assert [v for v, _ in store.retired()] == [second]
    rows = {(r["on_disk"], r["version"]): r for r in status_json(common, server, capsys)["rows"]}
    assert rows[("published", first)]["state"] == "AVAILABLE"
    assert ("retired", second) in rows and ("published", second) not in rows
