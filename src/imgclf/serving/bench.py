"""Requests per second of the local server for single-image REST predict calls, with 1 and 8
concurrent clients, with and without --enable_batching. Prints a table (and writes JSON with
--output); it never asserts a speed.

    python -m imgclf.serving.bench --model_base_path models/image_classifier --image page.jpg
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

from imgclf import contract
from imgclf.serving.process import LocalServer

DEFAULT_BATCHING_FILE = Path(__file__).resolve().parents[3] / "serving" / "batching.config"


def run_clients(url: str, body: dict, clients: int, seconds: float) -> dict:
    """`clients` threads each sending one request at a time for `seconds`."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client():
        session = requests.Session()
        mine, failed = [], 0
        while time.monotonic() < stop_at:
            started = time.monotonic()
            reply = session.post(url, json=body, timeout=60)
            if reply.status_code == 200:
                mine.append(time.monotonic() - started)
            else:
                failed += 1
        with lock:
            latencies.extend(mine)
            failures[0] += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [float("nan")]
    return {
        "clients": clients,
        "requests": len(latencies),
        "failures": failures[0],
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "latency_p50_ms": round(statistics.median(ordered) * 1000, 1),
        "latency_p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
    }


def measure(model_base_path: str | Path, model_name: str, image: bytes, clients=(1, 8), seconds: float = 10.0,
            batching_file: str | Path | None = DEFAULT_BATCHING_FILE) -> list[dict]:
    """One server without batching, one with; every client count against each."""
    rows = []
    body = contract.rest_predict_body([image])
    for batching in (False, True):
        extra = []
        if batching:
            extra.append("--enable_batching")
            if batching_file and Path(batching_file).is_file():
                extra.append(f"--batching_parameters_file={batching_file}")
        with LocalServer(model_base_path, model_name, extra_args=extra, poll_seconds=30) as server:
            url = server.rest_url + contract.rest_model_path(model_name) + ":predict"
            run_clients(url, body, 2, 2.0)           # warm connections and the graph
            for count in clients:
                row = run_clients(url, body, count, seconds)
                row["batching"] = batching
                rows.append(row)
                print(format_row(row), file=sys.stderr, flush=True)
    return rows


def format_row(row: dict) -> str:
    return (f"batching={'on ' if row['batching'] else 'off'} clients={row['clients']:>2}  "
            f"{row['requests_per_second']:>7.1f} req/s  p50 {row['latency_p50_ms']:>6.1f} ms  "
            f"p95 {row['latency_p95_ms']:>6.1f} ms  failures {row['failures']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgclf.serving.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", required=True, help="a model's base path (<models>/<name>)")
    parser.add_argument("--model_name", default=contract.DEFAULT_MODEL_NAME)
    parser.add_argument("--image", required=True, help="image file sent in every request")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--batching_parameters_file", default=str(DEFAULT_BATCHING_FILE))
    parser.add_argument("--output", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = measure(args.model_base_path, args.model_name, Path(args.image).read_bytes(), args.clients,
                   args.seconds, args.batching_parameters_file)
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
