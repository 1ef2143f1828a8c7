"""Client figures: images/second by protocol, batch size and concurrency, request bytes per image,
and the client's peak memory as the number of files grows (it must stay flat).

    python -m imgclf.client.benchmark --models MODELS --images DIR [--memory-files 1000,10000,100000]

Starts the local server on MODELS/<model_name> (or uses --server/--grpc-server), validates DIR
with each setting and prints a table. The memory part runs the real `imgclf validate` in a fresh
process per size over symbolic links to DIR's files (no extra disk) and reads its peak RSS."""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from imgclf import contract
from imgclf.data_folders import iter_image_files
from imgclf.client.validate import Run
from imgclf.settings import ValidateSettings

# (protocol, batch, concurrency)
THROUGHPUT_SETTINGS = [("rest", 1, 1), ("rest", 1, 4), ("rest", 16, 1), ("rest", 16, 4), ("rest", 64, 2),
                       ("grpc", 1, 1), ("grpc", 1, 4), ("grpc", 16, 1), ("grpc", 16, 4), ("grpc", 64, 2)]


def measure(images: Path, rest_url: str, grpc_target: str, protocol: str, batch: int,
            concurrency: int, model_name: str) -> dict:
    settings = ValidateSettings(dir=str(images), server=rest_url, grpc_server=grpc_target,
                                protocol=protocol, batch=batch, concurrency=concurrency,
                                model_name=model_name, progress=False)
    run = Run(settings, io.StringIO(), io.StringIO())
    code = run.execute()
    m = run.metrics
    return {"protocol": protocol, "batch": batch, "concurrency": concurrency, "exit": code,
            "images": m.images, "images_per_second": m.throughput,
            "p50_ms": m.latency_percentiles()[50] * 1000, "p99_ms": m.latency_percentiles()[99] * 1000,
            "request_bytes_per_image": m.request_bytes / max(1, m.predicted),
            "file_bytes_per_image": m.file_bytes / max(1, m.predicted)}


def link_tree(source: Path, target: Path, count: int) -> Path:
    """`count` symbolic links to source's images, cycling, in class folders like the source's.
    Links point at absolute paths: a relative one would be read from the link's own folder."""
    originals = list(iter_image_files(source))
    for index, original in zip(range(count), itertools.cycle(originals)):
        folder = target / original.parent.relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(original.resolve(), folder / f"{index:07d}{original.suffix}")
    return target


def memory_by_file_count(images: Path, rest_url: str, model_name: str, counts: list[int],
                         batch: int, concurrency: int) -> list[dict]:
    rows = []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="imgclf-bench-") as scratch:
            tree = link_tree(images, Path(scratch), count)
            # One wrapper process per size so RUSAGE_CHILDREN's maximum is this run's alone.
            script = ("import resource, subprocess, sys\n"
                      "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
                      "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)\n")
            command = [sys.executable, "-m", "imgclf", "validate", str(tree), "--server", rest_url,
                       "--model-name", model_name, "--batch", str(batch),
                       "--concurrency", str(concurrency), "--no-progress"]
            reply = subprocess.run([sys.executable, "-c", script, *command], capture_output=True,
                                   text=True, check=True).stdout.split()
            rows.append({"files": count, "peak_rss_mib": int(reply[0]) / 1024, "exit": int(reply[1])})
    return rows


def print_table(rows: list[dict]) -> None:
    columns = list(rows[0])
    formatted = [[f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
                 for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in formatted)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in formatted:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgclf.client.benchmark", description=__doc__)
    parser.add_argument("--images", required=True, help="folder of images to send")
    parser.add_argument("--models", help="models folder to serve locally (else --server/--grpc-server)")
    parser.add_argument("--model-name", default=contract.DEFAULT_MODEL_NAME)
    parser.add_argument("--server", help="REST endpoint of a running server")
    parser.add_argument("--grpc-server", help="gRPC host:port of a running server")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (best is kept)")
    parser.add_argument("--memory-files", default="", help="comma-separated file counts, e.g. 1000,10000")
    parser.add_argument("--no-throughput", action="store_true", help="only the memory part")
    args = parser.parse_args(argv)
    images = Path(args.images).resolve()

    with contextlib.ExitStack() as stack:
        if args.models:
            from imgclf.serving.process import LocalServer

            server = stack.enter_context(LocalServer(
                contract.model_base_path(args.models, args.model_name), args.model_name))
            rest_url, grpc_target = server.rest_url, server.grpc_target
        else:
            rest_url, grpc_target = args.server, args.grpc_server
        if not args.no_throughput:
            rows = []
            for protocol, batch, concurrency in THROUGHPUT_SETTINGS:
                runs = [measure(images, rest_url, grpc_target, protocol, batch, concurrency,
                                args.model_name) for _ in range(args.repeat)]
                rows.append(max(runs, key=lambda r: r["images_per_second"]))
            print_table(rows)
        if args.memory_files:
            counts = [int(c) for c in args.memory_files.split(",")]
            print()
            print_table(memory_by_file_count(images, rest_url, args.model_name, counts, 16, 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
