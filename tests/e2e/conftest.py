"""What the tests on a real Docker engine share: the engine, and running a Make target whose
summary is shown in the test output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imgclf import stack

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def docker_engine():
    client = stack.connect(timeout=300)
    if client is None:
        if os.environ.get("IMGCLF_REQUIRE_DOCKER") == "1":  # CI starts an engine: its absence is a failure
            pytest.fail("IMGCLF_REQUIRE_DOCKER=1 but no Docker engine is reachable")
        pytest.skip("no Docker engine is reachable")
    yield client
    client.close()


@pytest.fixture()
def run_make(capsys):
    """run_make(target, summary_title): `make <target>` as a user runs it; returns the result and
    its summary (from summary_title on), which the test output shows. Fails the test, with the
    output's tail, unless it exited 0."""
    def run(target: str, summary_title: str) -> tuple[subprocess.CompletedProcess, str]:
        result = subprocess.run(["make", target], cwd=REPO, capture_output=True, text=True, timeout=3600)
        summary = result.stdout[result.stdout.find(summary_title):]
        with capsys.disabled():
            print("\n" + summary)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
        return result, summary
    return run
