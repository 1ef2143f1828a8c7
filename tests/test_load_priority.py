"""A version loads and warms up at a lower priority than requests are served
(--model_load_nice): on a thread of its own, after TensorFlow's pools were made at the server's
priority, so that nothing else in the server inherits the loader's nice value."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from imgclf.polling import poll
from imgclf.serving import LocalServer
from imgclf.serving.priority import MAX_NICE, niced_call, niced_calls, thread_nice
from serving_models import export_toy_model

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def nice_and_thread() -> tuple[int, int]:
    return thread_nice(), threading.get_native_id()


def burn(seconds: float) -> float:
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass
    return seconds


@linux_only
def test_niced_calls_run_on_threads_of_their_own_and_the_caller_keeps_its_priority():
    before = thread_nice()
    with niced_calls(3) as calls:
        nice, thread = niced_call(nice_and_thread)
        niced_call(burn, 0.05)
    assert nice == min(MAX_NICE, before + 3) == calls.nice and thread != threading.get_native_id()
    assert calls.cpu_seconds >= 0.05
    assert thread_nice() == before
    with niced_calls(MAX_NICE + 5):
        assert niced_call(thread_nice) == MAX_NICE


def test_outside_niced_calls_or_at_zero_a_call_runs_here_and_failures_reach_the_caller():
    here = (thread_nice(), threading.get_native_id())
    assert niced_call(nice_and_thread) == here
    with niced_calls(0):
        assert niced_call(nice_and_thread) == here
    with niced_calls(2):
        with niced_calls(0):
            assert niced_call(nice_and_thread) == here
        assert niced_call(nice_and_thread)[1] != here[1]      # the outer request again

    def fail():
        raise ValueError("the export is broken")

    with niced_calls(2), pytest.raises(ValueError, match="the export is broken"):
        niced_call(fail)


def nice_by_thread(pid: int) -> dict[int, int]:
    """Every thread of a process and its nice value (field 19 of /proc/<pid>/task/<tid>/stat)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:       # the thread ended meanwhile
            continue
        found[int(task.name)] = int(fields[16])
    return found


def answer(server: LocalServer) -> float:
    reply = requests.post(f"{server.rest_url}/v1/models/toy:predict", json={"instances": [[1.0, 1.0, 1.0]]},
                          timeout=30)
    reply.raise_for_status()
    return reply.json()["predictions"][0]["y"][0]      # the toy model's scale: its version


@linux_only
def test_the_live_server_loads_every_version_nicer_and_serves_at_its_own_priority(tmp_path):
    base, staging = tmp_path / "toy", tmp_path / "staging"
    export_toy_model(base, 1, warmup=True)
    with LocalServer(base, "toy", poll_seconds=0.2, extra_args=["--model_load_nice=5"]) as server:
        assert answer(server) == 1.0
        export_toy_model(staging, 2, warmup=True)
        (staging / "2").rename(base / "2")        # published whole, as `make publish` does
        assert poll(lambda: answer(server) == 2.0 or None, 60, 0.1), "version 2 never answered"
        pid = server.process.pid
        own = nice_by_thread(pid)[pid]            # the server's priority (its main thread's)
        loads = re.findall(r"Version (\d+) of toy: (?:loaded|restored into a standby session) .*, [1-9]\d* warmup records replayed .* on the loading threads\), at nice (\d+)$",
                           server.log_path.read_text(), re.MULTILINE)
        assert loads == [("1", str(min(MAX_NICE, own + 5))), ("2", str(min(MAX_NICE, own + 5)))]
        # The first session made TensorFlow's pools; they, the HTTP and gRPC threads and the
        # poller run at the server's priority. (The old version's session is freed at nice 19
        # on a thread that ends when done.)
        settled = poll(lambda: (lambda found: found if set(found.values()) == {own} else None)(nice_by_thread(pid)),
                       30, 0.2)
        assert settled, nice_by_thread(pid)
        assert len(settled) > 4
