"""`imgclf abuse` / `make abuse`: how the local server holds up under attack, as the client sees it.

Starts the local server on free loopback ports (a marker model, or MODEL: a version folder such as
an EfficientNet export), measures one keep-alive client sending single-image predict requests
back to back on a quiet server, then again while the server is under each attack in turn:
10,000 idle connections, 10,000 connections that never finish their headers, slow bodies, and
oversized requests (a body announced as a gigabyte, 10,000 instances, JSON nested 100,000 deep).
Prints, per attack, the good client's p99 latency as a ratio to the quiet p99, its success rate
and the server's memory. The client never retries: every failure counts. Traffic goes to
loopback only and every attack is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from imgclf import abuse_attacks as attacks
from imgclf import contract
from imgclf.settings import AbuseSettings, settings_parser

MODEL_NAME = contract.DEFAULT_MODEL_NAME


@dataclasses.dataclass
class Measurement:
    attack: str
    held: str                      # what the attack had in force while the client measured
    requests: int
    success_rate: float
    p50_ms: float | None
    p99_ms: float | None
    p99_ratio: float | None        # to the quiet p99
    server_rss_mib: float | None
    recovered_s: float | None      # after the attack stopped: until a fresh connection is answered
    failure_examples: list[str]


def percentile_ms(latencies: list[float], pct: int) -> float | None:
    from imgclf.client.metrics import latency_percentiles

    return round(latency_percentiles(latencies)[pct] * 1000, 2) if latencies else None


def measure(name: str, held, url: str, body: bytes, seconds: float, pid: int | None,
            quiet_p99: float | None) -> Measurement:
    result = attacks.good_client(url, body, seconds)
    p99 = percentile_ms(result.latencies, 99)
    rss = attacks.process_rss_bytes(pid) if pid else None
    return Measurement(name, held() if callable(held) else held, result.requests, round(result.success_rate, 4),
                       percentile_ms(result.latencies, 50), p99,
                       round(p99 / quiet_p99, 2) if p99 and quiet_p99 else None,
                       round(rss / 2**20, 1) if rss else None, None, result.failure_examples)


def recovery_seconds(url: str, body: bytes, timeout: float = 60.0) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if attacks.good_client(url, body, 0, timeout=10, min_requests=1).failures == 0:
            return round(time.monotonic() - started, 3)
    return None


def flood_attack(kind: str, count: int, host: str, port: int):
    """(context manager, description of what it holds) for a connection flood."""
    flood = attacks.FloodProcess(host, port, count, kind)

    @contextlib.contextmanager
    def running():
        with flood:
            flood.wait_until_open(0.95, timeout=120)
            yield

    def held() -> str:
        s = flood.stats
        return f"{s.open} of {count} held, {s.closed_by_server} closed by the server"

    return running(), held


def oversized_attack(url: str, threads: int):
    oversized = attacks.OversizedRequests(url, threads=threads)

    def held() -> str:
        s = oversized.stats
        return f"{s.sent} sent: replies {dict(sorted(s.refused.items()))}, {s.cut_off} cut off"

    return oversized, held


def run_attacks(settings: AbuseSettings, rest_url: str, pid: int | None, say=print) -> list[Measurement]:
    from imgclf.rollout.drill import sample_image
    from urllib.parse import urlsplit

    url = rest_url.rstrip("/") + contract.rest_model_path(MODEL_NAME) + ":predict"
    host, port = urlsplit(rest_url).hostname, urlsplit(rest_url).port
    attacks.check_loopback(host)
    body = json.dumps(contract.rest_predict_body([sample_image()])).encode()
    attacks.good_client(url, body, 2.0)                      # connections and graph warm, not measured
    quiet = measure("quiet", "-", url, body, settings.seconds, pid, None)
    say(format_row(quiet))
    rows = [quiet]
    plan = [(attacks.IDLE, settings.idle), (attacks.HALF_SENT, settings.half_sent),
            (attacks.SLOW_BODY, settings.slow_bodies)]
    for kind, count in plan:
        if count > 0:
            running, held = flood_attack(kind, count, host, port)
            rows.append(_under(f"{count} {kind.replace('_', '-')} connections", running, held, url, body,
                               settings, pid, quiet.p99_ms, say))
    if settings.oversized_threads > 0:
        running, held = oversized_attack(url, settings.oversized_threads)
        rows.append(_under(f"oversized requests x{settings.oversized_threads}", running, held, url, body,
                           settings, pid, quiet.p99_ms, say))
    return rows


def _under(name, running, held, url, body, settings, pid, quiet_p99, say) -> Measurement:
    with running:
        row = measure(name, held, url, body, settings.seconds, pid, quiet_p99)
    row.recovered_s = recovery_seconds(url, body)
    say(format_row(row))
    return row


def format_row(row: Measurement) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.1f} ms"

    ratio = "-" if row.p99_ratio is None else f"{row.p99_ratio:.2f}x"
    rss = "-" if row.server_rss_mib is None else f"{row.server_rss_mib:.0f} MiB"
    return (f"{row.attack:<32} p50 {ms(row.p50_ms):>9}  p99 {ms(row.p99_ms):>9} ({ratio:>6} quiet)  "
            f"success {row.success_rate:.2%} of {row.requests}  server RSS {rss}  [{row.held}]")


@contextlib.contextmanager
def served(settings: AbuseSettings, say=print):
    """The local server over a base path of its own: MODEL copied in, or a marker model."""
    from imgclf.serving.process import LocalServer

    with tempfile.TemporaryDirectory(prefix="imgclf-abuse-") as scratch:
        base = contract.model_base_path(scratch, MODEL_NAME)
        version = contract.version_path(base, 1)
        if settings.model:
            shutil.copytree(settings.model, version)
        else:
            from imgclf.rollout.drill import sample_image
            from imgclf.rollout.markers import write_marker_model

            write_marker_model(version, 1, warmup_images=[sample_image()])
        with LocalServer(base, MODEL_NAME, poll_seconds=30) as server:
            say(f"local server at {server.rest_url} (pid {server.process.pid}), model "
                f"{settings.model or 'a marker model'}")
            yield server


def build_parser(command: str = "abuse") -> argparse.ArgumentParser:
    return settings_parser(AbuseSettings, command, __doc__.split("\n\n")[0])


def main(argv: list[str], command: str = "abuse") -> int:
    settings = AbuseSettings(**vars(build_parser(command).parse_args(argv)))
    say = lambda text: print(text, flush=True)   # noqa: E731
    from imgclf.serving.process import ServerStartError

    load = os.getloadavg()
    try:
        if settings.server:
            rows = run_attacks(settings, settings.server, None, say)
        else:
            with served(settings, say) as server:
                rows = run_attacks(settings, server.rest_url, server.process.pid, say)
    except (attacks.AttackError, ServerStartError, OSError) as error:
        print(f"imgclf {command}: {error}", file=sys.stderr)
        return 1
    say(f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    if settings.output:
        Path(settings.output).write_text(json.dumps({"load_before": load, "load_after": os.getloadavg(),
                                                     "rows": [dataclasses.asdict(r) for r in rows]}, indent=2) + "\n")
    return 0 if all(r.success_rate == 1.0 for r in rows) else 1
