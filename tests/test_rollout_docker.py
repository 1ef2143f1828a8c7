"""`status` shows the serving container's health through the Docker SDK, on a real engine."""

from __future__ import annotations

import time
import uuid

import pytest

from imgclf.rollout.status import gather, render
from imgclf.stack import LOCAL_BASE_IMAGE as BASE_IMAGE   # the stack's locally made base image

docker = pytest.importorskip("docker")


@pytest.fixture
def engine():
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as error:  # no engine here: nothing to test against
        pytest.skip(f"no Docker engine: {error}")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{BASE_IMAGE} is not built here")
    yield client
    client.close()


@pytest.mark.e2e
def test_status_reports_the_health_of_the_serving_container(engine, tmp_path):
    service = f"rollout-status-test-{uuid.uuid4().hex[:8]}"
    container = engine.containers.run(
        BASE_IMAGE, ["sleep", "120"], detach=True, remove=True,
        labels={"com.docker.compose.service": service},
        healthcheck={"test": ["CMD", "true"], "interval": 500_000_000, "start_period": 0})
    try:
        deadline = time.monotonic() + 60
        status = gather(tmp_path, "pages", "http://127.0.0.1:9", tmp_path / "models.config", service)
        while status.containers[0]["health"] != "healthy" and time.monotonic() < deadline:
            time.sleep(0.5)
            status = gather(tmp_path, "pages", "http://127.0.0.1:9", tmp_path / "models.config", service)
        [shown] = status.containers
        assert shown["name"] == container.name and shown["status"] == "running"
        assert shown["health"] == "healthy"
        assert f"docker: {container.name}" in render(status) and "health healthy" in render(status)
    finally:
        container.stop(timeout=1)
