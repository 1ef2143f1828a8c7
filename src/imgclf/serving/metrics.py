"""Prometheus metrics for /monitoring/prometheus/metrics, named as TF Serving names its own:
`:tensorflow:serving:request_count` (a counter, exported without the `_total` suffix that
prometheus_client would add, as the real server does) and `:tensorflow:serving:request_latency`
(a histogram in microseconds), with the model version as an extra label."""

from __future__ import annotations

import threading
from collections import Counter as Tally

import prometheus_client
from prometheus_client import CollectorRegistry, Histogram, generate_latest

prometheus_client.disable_created_metrics()

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
_COUNT_LABELS = ("model_name", "version", "API", "entrypoint", "status")
# Microseconds, growing by 1.8x from 10 us, as TF Serving's latency buckets.
_LATENCY_BUCKETS_US = tuple(10.0 * 1.8 ** i for i in range(33))


class _RequestCounts:
    """Counts per label tuple, written in the text format by hand: prometheus_client always
    names a counter `<name>_total` in its TYPE line, which the real server does not."""

    def __init__(self):
        self._counts: Tally = Tally()
        self._lock = threading.Lock()

    def inc(self, labels: tuple[str, ...]) -> None:
        with self._lock:
            self._counts[labels] += 1

    def text(self) -> str:
        with self._lock:
            counts = sorted(self._counts.items())
        lines = [f"# HELP {REQUEST_COUNT} The total number of requests.", f"# TYPE {REQUEST_COUNT} counter"]
        for labels, value in counts:
            pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(zip(_COUNT_LABELS, labels)))
            lines.append(f"{REQUEST_COUNT}{{{pairs}}} {float(value)}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ServingMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=False)
        self._request_count = _RequestCounts()
        self._request_latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for successful requests.",
            ["model_name", "version", "API", "entrypoint"],
            buckets=_LATENCY_BUCKETS_US,
            registry=self.registry,
        )

    def record(self, model_name: str, version: int | None, api: str, entrypoint: str, status: str,
               seconds: float) -> None:
        version_label = "" if version is None else str(version)
        self._request_count.inc((model_name, version_label, api, entrypoint, status))
        if status == "OK":
            self._request_latency.labels(model_name, version_label, api, entrypoint).observe(seconds * 1e6)

    def page(self) -> bytes:
        return self._request_count.text().encode() + generate_latest(self.registry)
