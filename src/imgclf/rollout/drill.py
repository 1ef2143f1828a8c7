"""`imgclf drill`: prove that publishing and rolling back never drop a request.

The drill starts the local server on free loopback ports over a model base path of its own, keeps
several clients sending predict requests non-stop, publishes new versions and rolls some back, and
then reports: requests, failures, which version answered each request, p50/p99 latency while a
version is being swapped against steady state, and the time from a change on disk to the new
version answering. The versions are marker models (see markers.py), so that every reply says which
version produced it. Exit status 0 only when no request failed and every change reached traffic.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from imgclf import contract
from imgclf.client.base import ClientError
from imgclf.client.metrics import latency_percentiles
from imgclf.client.rest import RestClient
from imgclf.model_store import ModelStore, open_store
from imgclf.polling import poll
from imgclf.progress import track
from imgclf.rollout.markers import DEFAULT_LABELS, marker_of, write_marker_model
from imgclf.settings import DrillSettings, session_config_file, settings_parser

MODEL_NAME = contract.DEFAULT_MODEL_NAME
# After a change first reaches traffic the old version is still being unloaded: requests this
# long after the switch still count as "during the swap".
SWAP_GRACE_SECONDS = 1.0


class DrillError(RuntimeError):
    """The drill could not run (as opposed to a drill that ran and found failures)."""


@dataclass
class Reply:
    client: int
    started: float           # time.monotonic()
    ended: float
    marker: int | None       # which marker model answered; None when the request failed
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Change:
    kind: str                # publish | rollback
    version: int             # the version published, or the one rolled back
    expected_marker: int     # the marker that must answer once the change is served
    at: float                # when the folder was renamed
    answered_at: float | None = None   # end of the first reply from the expected marker

    @property
    def seconds_to_answer(self) -> float | None:
        return None if self.answered_at is None else self.answered_at - self.at


@dataclass
class Figures:
    requests: int
    failures: int
    failure_examples: list[str]
    answers_by_version: dict[str, int]
    stale_answers: int        # answered by an older version after the new one had answered
    p50_steady_ms: float | None
    p99_steady_ms: float | None
    p50_swap_ms: float | None
    p99_swap_ms: float | None
    swap_requests: int
    steady_requests: int
    publish_to_answer_s: list[float | None]
    rollback_to_answer_s: list[float | None]
    duration_s: float
    changes: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        answered = all(c["seconds_to_answer"] is not None for c in self.changes)
        return self.failures == 0 and self.stale_answers == 0 and answered and self.requests > 0


# --- traffic -----------------------------------------------------------------------------------
def sample_image(seed: int = 7) -> bytes:
    """One page-like JPEG, as a user would send."""
    from imgclf.sample_data import make_page

    buffer = io.BytesIO()
    make_page("research", random.Random(seed)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class Traffic:
    """Client threads sending one-image predict requests until stopped; every reply is kept.
    No retries: a request that fails counts as a failure."""

    def __init__(self, rest_url: str, clients: int, image: bytes, timeout: float = 30.0):
        self.client = RestClient(rest_url, MODEL_NAME, timeout=timeout, retries=0, pool_size=clients)
        self.image = image
        self.replies: list[Reply] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> "Traffic":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join()
        self.client.close()

    def _run(self, client: int) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            marker, error = None, ""
            try:
                marker = marker_of(self.client.predict([self.image]).predictions[0].scores)
            except (ClientError, requests.RequestException) as exc:   # any failure counts; none ends the drill
                error = f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.replies.append(Reply(client, started, time.monotonic(), marker, error))

    def snapshot(self) -> list[Reply]:
        with self.lock:
            return list(self.replies)

    def wait_for_marker(self, marker: int, since: float, timeout: float) -> float | None:
        """End time of the first reply from `marker` that ended after `since`, or None."""
        seen = [0]

        def answered() -> float | None:
            replies = self.snapshot()
            found = next((r.ended for r in replies[seen[0]:] if r.marker == marker and r.ended >= since), None)
            seen[0] = len(replies)
            return found

        return poll(answered, timeout, 0.01)


# --- figures -----------------------------------------------------------------------------------
def percentile_ms(seconds: list[float], pct: int) -> float | None:
    """The client's p50/p95/p99 of `seconds`, in milliseconds; None when there are none."""
    if not seconds:
        return None
    return round(latency_percentiles(seconds)[pct] * 1000, 2)


def compute_figures(replies: list[Reply], changes: list[Change], version_of_marker: dict[int, int],
                    duration: float) -> Figures:
    windows = [(c.at, (c.answered_at or c.at) + SWAP_GRACE_SECONDS) for c in changes]

    def during_swap(reply: Reply) -> bool:
        return any(reply.started <= end and reply.ended >= start for start, end in windows)

    failed = [r for r in replies if r.marker is None]
    answered = [r for r in replies if r.marker is not None]
    swap = [r.seconds for r in answered if during_swap(r)]
    steady = [r.seconds for r in answered if not during_swap(r)]

    # Once a change has answered, every request started later (until the next change) must be
    # answered by it: an older version answering then would be a step back for that client.
    stale = 0
    bounds = [c.at for c in changes[1:]] + [float("inf")]
    for change, next_at in zip(changes, bounds):
        if change.answered_at is not None:
            stale += sum(1 for r in answered if change.answered_at < r.started < next_at
                         and r.marker != change.expected_marker)

    by_version = Counter(str(version_of_marker.get(r.marker, f"marker {r.marker}")) for r in answered)
    return Figures(
        requests=len(replies), failures=len(failed),
        failure_examples=[r.error for r in failed[:5]],
        answers_by_version=dict(sorted(by_version.items())),
        stale_answers=stale,
        p50_steady_ms=percentile_ms(steady, 50), p99_steady_ms=percentile_ms(steady, 99),
        p50_swap_ms=percentile_ms(swap, 50), p99_swap_ms=percentile_ms(swap, 99),
        swap_requests=len(swap), steady_requests=len(steady),
        publish_to_answer_s=[_round(c.seconds_to_answer) for c in changes if c.kind == "publish"],
        rollback_to_answer_s=[_round(c.seconds_to_answer) for c in changes if c.kind == "rollback"],
        duration_s=round(duration, 2),
        changes=[{"kind": c.kind, "version": c.version, "expected_version": version_of_marker[c.expected_marker],
                  "seconds_to_answer": _round(c.seconds_to_answer)} for c in changes],
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def format_figures(figures: Figures) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.1f} ms"

    def seconds(values):
        return ", ".join("never" if v is None else f"{v:.2f}s" for v in values) or "-"

    lines = [
        f"requests {figures.requests}, failed {figures.failures}, stale answers {figures.stale_answers}, "
        f"in {figures.duration_s:.1f}s",
        f"latency steady: p50 {ms(figures.p50_steady_ms)}, p99 {ms(figures.p99_steady_ms)} "
        f"({figures.steady_requests} requests)",
        f"latency during swaps: p50 {ms(figures.p50_swap_ms)}, p99 {ms(figures.p99_swap_ms)} "
        f"({figures.swap_requests} requests)",
        f"publish -> new version answering: {seconds(figures.publish_to_answer_s)}",
        f"rollback -> previous version answering: {seconds(figures.rollback_to_answer_s)}",
        "answers by version: " + ", ".join(f"{v}: {n}" for v, n in figures.answers_by_version.items()),
    ]
    lines += [f"failure: {error}" for error in figures.failure_examples]
    lines.append("DRILL PASSED" if figures.passed else "DRILL FAILED")
    return "\n".join(lines)


# --- the drill ---------------------------------------------------------------------------------
def stage_markers(store: ModelStore, count: int, warmup: list[bytes], carry: str = "") -> list[Path]:
    """Marker models 1..count, staged and sealed (invisible to the server) before any traffic
    starts, so that building them does not weigh on the latencies measured."""
    labels = DEFAULT_LABELS
    if carry:
        labels = contract.parse_labels_file(
            (Path(carry) / contract.ASSETS_DIR / contract.LABELS_FILE).read_text())
    staged = []
    for index in track(range(1, count + 1), desc="marker models", unit="model"):
        staged.append(write_marker_model(store.stage(), index, labels, warmup_images=warmup, carry=carry or None))
        store.seal(staged[-1])
    return staged


def session_config_args(path: str) -> list[str]:
    """The drill's server reads the sessions' ConfigProto as compose's serving does
    (settings.session_config_file: the default file where present, a named one must exist)."""
    try:
        found = session_config_file(path)
    except ValueError as error:
        raise ValueError(f"--session-config {error}") from None
    return [f"--tensorflow_session_config_file={found}"] if found else []


def run_drill(settings: DrillSettings, say=print) -> Figures:
    from imgclf.rollout.publish import rollback
    from imgclf.serving.process import LocalServer

    if settings.clients < 1:
        raise ValueError(f"--clients {settings.clients}: need at least one client")
    if settings.rollbacks > settings.publishes:
        raise ValueError(f"--rollbacks {settings.rollbacks}: cannot exceed --publishes {settings.publishes}")
    if settings.model and not (Path(settings.model) / "saved_model.pb").is_file():
        raise ValueError(f"--model {settings.model}: not a SavedModel folder (no saved_model.pb)")
    server_args = session_config_args(settings.session_config)
    with tempfile.TemporaryDirectory(prefix="imgclf-drill-") as scratch:
        models = Path(settings.workdir or scratch)
        base = contract.model_base_path(models, MODEL_NAME)
        store = open_store(base)
        if store.versions() or store.retired() or store.staged():
            raise DrillError(f"{base} is not empty: the drill needs a base path of its own")
        image = sample_image()
        say(f"building {settings.publishes + 1} marker models in {base}"
            + (f", each carrying {settings.model}" if settings.model else ""))
        first, *staged = stage_markers(store, settings.publishes + 1, warmup=[image], carry=settings.model)
        version_of_marker = {1: store.publish(first)}
        marker_of_version = {version_of_marker[1]: 1}

        with LocalServer(base, MODEL_NAME, poll_seconds=settings.poll_seconds,
                         extra_args=server_args) as server:
            say(f"local server at {server.rest_url}; {settings.clients} clients sending traffic")
            changes: list[Change] = []
            started = time.monotonic()
            with Traffic(server.rest_url, settings.clients, image) as traffic:
                if traffic.wait_for_marker(1, started, settings.switch_timeout) is None:
                    raise DrillError(f"the first version never answered within {settings.switch_timeout:g}s")
                time.sleep(settings.steady_seconds)

                def observe(kind: str, version: int, expected: int, at: float) -> None:
                    change = Change(kind, version, expected, at)
                    change.answered_at = traffic.wait_for_marker(expected, at, settings.switch_timeout)
                    changes.append(change)
                    took = "never" if change.answered_at is None else f"{change.seconds_to_answer:.2f}s"
                    say(f"{kind} {version}: version {version_of_marker[expected]} answering after {took}")
                    time.sleep(SWAP_GRACE_SECONDS + settings.poll_seconds)

                for marker, folder in enumerate(staged, start=2):
                    at = time.monotonic()
                    version = store.publish(folder)
                    version_of_marker[marker] = version
                    marker_of_version[version] = marker
                    observe("publish", version, marker, at)
                for _ in range(settings.rollbacks):
                    at = time.monotonic()
                    version, _ = rollback(store)
                    observe("rollback", version, marker_of_version[store.latest()], at)
                time.sleep(settings.steady_seconds)
            duration = time.monotonic() - started
        return compute_figures(traffic.snapshot(), changes, version_of_marker, duration)


def build_parser(command: str = "drill") -> argparse.ArgumentParser:
    return settings_parser(DrillSettings, command, __doc__.split("\n\n")[0])


def main(argv: list[str], command: str = "drill") -> int:
    settings = DrillSettings(**vars(build_parser(command).parse_args(argv)))
    from imgclf.serving.process import ServerStartError

    try:
        figures = run_drill(settings, say=lambda text: print(text, file=sys.stderr, flush=True))
    except (ServerStartError, DrillError, ValueError) as error:
        print(f"imgclf {command}: {error}", file=sys.stderr)
        return 1
    print(format_figures(figures))
    if settings.output:
        Path(settings.output).write_text(json.dumps(dataclasses.asdict(figures), indent=2) + "\n")
    return 0 if figures.passed else 1
