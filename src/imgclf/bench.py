"""`imgclf bench` / `make bench`: measures what the product exists for.

1. Request bytes per image: the project's REST request (the file as base64) against the JSON floats
   of the same page resized to 299x299x3, which the pdf_trio client sent.
2. Serving throughput: images/second of `imgclf validate` through the local server (REST, gRPC; the
   best of a small sweep of batch size and concurrency) over the same SavedModel called in-process.
3. Training: wall time of N epochs on the feature cache over the same N epochs recomputing the
   frozen backbone on every image every epoch.
4. Rollout: publish to the new version answering, p99 latency during swaps over steady p99 (the
   rollout drill, every version carrying the trained model).
5. Client memory: peak RSS of `imgclf validate` over many small files against few.
6. Batching (only when PARTS names it): single-image REST requests/second of the local server with
   --enable_batching (serving/batching.config) over without, at 1 and 8 concurrent clients.

All timings are ratios of runs made side by side in one run: these machines are noisy, so absolute
numbers are context only. Writes OUTPUT_DIR/bench.json and OUTPUT_DIR/bench.png and prints a table.
`--quick` uses tiny pages and a tiny model so that CI runs it in about a minute. `--parts` picks
figures (bytes, training, serving, rollout, memory, batching); `--model` serves a given version
instead of training one. This is the one benchmark entry point: its parts measure the trainer, the
server and the client through their public functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from imgclf import contract
from imgclf.data_folders import iter_image_files
from imgclf.model_store import open_model
from imgclf.settings import (
    SCRATCH_MODULE,
    BenchSettings,
    DrillSettings,
    TrainSettings,
    ValidateSettings,
    session_config_file,
    settings_parser,
)

JSON_FILE, CHART_FILE = "bench.json", "bench.png"
PDF_TRIO_SIZE = 299            # pdf_trio resized every page to 299x299x3 floats before sending it
BYTES_SAMPLE_PAGES = 16        # pages whose two request bodies are compared
QUICK_IMAGE_SIZE = 32          # the quick mode's scratch model sees tiny images
MEMORY_BATCH, MEMORY_CONCURRENCY = 16, 4   # `imgclf validate`'s defaults
DRILL_STEADY_SECONDS = 5.0
SWAP_P99_GOAL = 1.5             # p99 while a version is swapped in, over steady p99 (issue 12, item 7)
SWAP_SECONDS_GOAL = 2.0         # rename of a new version -> that version answering

# (protocol, batch, requests in flight). Two cores: beyond this the cores are the limit.
SERVING_SWEEP = [("rest", 16, 1), ("rest", 16, 2), ("rest", 32, 2), ("rest", 16, 4),
                 ("grpc", 16, 1), ("grpc", 16, 2), ("grpc", 32, 2), ("grpc", 16, 4)]
QUICK_SERVING_SWEEP = [("rest", 8, 2), ("grpc", 8, 2)]
BATCHING_CLIENTS = (1, 8)       # concurrent single-image clients, with and without batching
BATCHING_SECONDS = 10.0         # per measurement
BATCHING_CONFIG = Path("serving/batching.config")   # the checkout's BatchingParameters, when there
# Fields that --quick shrinks, unless given on the command line.
QUICK_SETTINGS = {"epochs": 2, "serving_images": 24, "memory_files": "40,400", "publishes": 1}

def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- inputs ------------------------------------------------------------------------------------
@dataclass
class Inputs:
    train_dir: Path        # class folders the trainer learns from
    serving_dir: Path      # class folders sent to the server (never trained on when possible)
    module: str            # module folder, or SCRATCH_MODULE
    image_size: int        # 0 = the module's own


def resolve_inputs(settings: BenchSettings, workdir: Path) -> Inputs:
    """The given data and module, or generated pages and the scratch backbone."""
    module = settings.module or SCRATCH_MODULE
    image_size = QUICK_IMAGE_SIZE if settings.quick and module == SCRATCH_MODULE else 0
    if settings.data:
        data = Path(settings.data)
        if not data.is_dir():
            raise ValueError(f"--data {data}: no such folder")
        if (data / "train").is_dir():
            held_out = data / "validation"
            return Inputs(data / "train", held_out if held_out.is_dir() else data / "train", module, image_size)
        return Inputs(data, data, module, image_size)
    from imgclf.sample_data import write_sample_dataset

    per_class = 12 if settings.quick else 60
    train_dir = write_sample_dataset(workdir / "pages" / "train", per_class=per_class, seed=0)
    held_out = write_sample_dataset(workdir / "pages" / "held-out", per_class=per_class // 3, seed=1)
    return Inputs(train_dir, held_out, module, image_size)


# --- 1. request bytes --------------------------------------------------------------------------
def measure_request_bytes(pages: list[Path]) -> dict:
    """Body sizes of one-page predict requests: ours (exactly what RestClient sends) and pdf_trio's
    (the page resized to 299x299x3 float32 in 0..255, as JSON numbers)."""
    import tensorflow as tf

    from imgclf import images

    old_client_view = images.Preprocessing(PDF_TRIO_SIZE, grayscale=False)
    ours, floats, files = [], [], []
    for page in pages:
        data = page.read_bytes()
        files.append(len(data))
        ours.append(len(json.dumps(contract.rest_predict_body([data]))))
        pixels = images.decode_and_resize(tf.constant(data), old_client_view) * 255.0
        floats.append(len(json.dumps({"signature_name": contract.SIGNATURE_NAME,
                                      "instances": pixels.numpy()[None].tolist()})))
    return {"pages": len(pages), "file_bytes": statistics.mean(files),
            "b64_request_bytes": statistics.mean(ours), "float_request_bytes": statistics.mean(floats),
            "times_smaller": statistics.mean(floats) / statistics.mean(ours)}


# --- 3. training -------------------------------------------------------------------------------
def frozen_backbone(inputs: Inputs, settings: TrainSettings):
    from imgclf.trainer.backbone import load_backbone, with_parts

    if inputs.module != SCRATCH_MODULE:
        return load_backbone(inputs.module, inputs.image_size, view=settings.view, layout_grid=settings.layout_grid)
    # A frozen, randomly initialised scratch network stands in for a pretrained module: what the
    # cache saves depends on the backbone's cost, not on its weights.
    backbone = load_backbone(SCRATCH_MODULE, inputs.image_size)
    backbone.network.trainable = False
    backbone = dataclasses.replace(backbone, fingerprint="frozen-scratch")
    return with_parts(backbone, "whole", settings.layout_grid)


def measure_training(inputs: Inputs, epochs: int, workdir: Path) -> dict:
    """The trainer's own fit_classifier, twice on the same split and backbone: on the feature cache
    (starting cold, so computing every feature once is counted) and on images, which runs the
    backbone over every image in every epoch. Early stopping is off so both run `epochs` epochs."""
    import tf_keras as keras

    from imgclf import images
    from imgclf.trainer.data import discover
    from imgclf.trainer.features import FeatureCache, FileProbe
    from imgclf.trainer.fitting import fit_classifier

    # The document recipe with the epoch-trained softmax head: what the cache saves is epochs.
    settings = TrainSettings(data=str(inputs.train_dir), module=inputs.module, image_size=inputs.image_size,
                             epochs=epochs, patience=epochs, progress=False, head="softmax", calibrate=False,
                             grayscale=True, view="whole+quadrants", layout_grid=32)
    backbone = frozen_backbone(inputs, settings)
    options = images.Preprocessing(backbone.image_size, settings.grayscale)
    dataset = discover(settings.data, settings.validation_percent, settings.test_percent, FileProbe(options))
    runs = {}
    for name, cache in (("cached", FeatureCache(workdir / "feature-cache", backbone, options)),
                        ("recomputed", None)):
        note(f"  training {epochs} epochs {'on the feature cache' if cache else 'on images'}")
        keras.utils.set_random_seed(settings.seed)
        started = time.perf_counter()
        trained = fit_classifier(dataset, backbone, options, cache, settings, log_dir=None)
        # On the cache each head (texture, layout) is its own phase of `epochs`; on images one.
        runs[name] = {"seconds": time.perf_counter() - started, "features_seconds": trained.features_seconds,
                      "phases": {phase: figures["epoch_seconds"] for phase, figures in trained.phases.items()}}
    extraction = len(dataset.examples) / runs["cached"]["features_seconds"]
    in_process = backbone_images_per_second(backbone, [str(e.path) for e in dataset.examples], options)
    return {"epochs": epochs, "images": len(dataset.examples), "train_images": len(dataset.split("train")),
            "backbone": inputs.module, "image_size": backbone.image_size, "view": settings.view,
            "layout_grid": settings.layout_grid,
            **runs, "ratio": runs["cached"]["seconds"] / runs["recomputed"]["seconds"],
            "extraction": {"images_per_second": extraction, "in_process_images_per_second": in_process,
                           "ratio": extraction / in_process}}


def backbone_images_per_second(backbone, paths: list[str], options, batch_size: int = 32) -> float:
    """The backbone's own rate in this process, on images decoded beforehand (at most 512): what
    feature extraction, which also reads, decodes and caches, can at best reach."""
    from imgclf.trainer import inputs as trainer_inputs

    batches = list(trainer_inputs.image_dataset(paths[:512], options).batch(batch_size))
    backbone.layer(batches[0], training=False)       # first call: tracing and allocation, not speed
    started = time.perf_counter()
    for batch in batches:
        backbone.layer(batch, training=False).numpy()
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


@dataclass
class Served:
    version_dir: Path      # the version the server answers with
    base_path: Path        # its model base path (that version is the highest there)


def given_model(version_dir: str, workdir: Path) -> Served:
    """A copy of a given version folder as the only version of a base path of its own, so that the
    server answers with that version and no later one."""
    source = Path(version_dir)
    if not (source / "saved_model.pb").is_file() or contract.parse_version(source.name) is None:
        raise ValueError(f"--model {source}: not a version folder (MODELS/<name>/<version>/saved_model.pb)")
    target = workdir / "served" / contract.DEFAULT_MODEL_NAME / source.name
    shutil.copytree(source, target)
    return Served(target, target.parent)


def train_served_model(inputs: Inputs, epochs: int, workdir: Path):
    """A published version through the product's own `train` (gate and all), for serving."""
    from imgclf.rollout.training import train_and_publish

    settings = TrainSettings(data=str(inputs.train_dir), module=inputs.module, image_size=inputs.image_size,
                             epochs=epochs, models=str(workdir / "models"), progress=False,
                             cache_dir=str(workdir / "train-cache"), log_dir=str(workdir / "logs"))
    return train_and_publish(settings)


# --- 2. serving throughput ---------------------------------------------------------------------
IN_PROCESS_CALLERS = (1, 2)    # threads calling the model at once: two cores, two callers


def in_process_throughput(version_dir: Path, files: list[Path], settings: list[tuple[int, int]]) -> list[dict]:
    """Images/second of the SavedModel's serving signature called in this process, files read and
    sent in batches by one or more threads: what the cores can do with no server or client in
    between. One row per (batch, callers)."""
    import tensorflow as tf

    from imgclf.client.files import iter_batches, ordered_bounded_map

    predict = tf.saved_model.load(str(version_dir)).signatures[contract.SIGNATURE_NAME]

    def call(batch: list[Path]) -> None:
        images = tf.constant([path.read_bytes() for path in batch])
        predict(**{contract.INPUT_NAME: images})[contract.SCORES_OUTPUT].numpy()

    rows = []
    for size, callers in settings:
        call(files[:size])                    # first call at this size: allocation, not speed
        started = time.perf_counter()
        for _ in ordered_bounded_map(call, iter_batches(files, size), callers):
            pass
        rows.append({"batch": size, "callers": callers,
                     "images_per_second": len(files) / (time.perf_counter() - started)})
    return rows


def fastest(rows: list[dict]) -> dict:
    return max(rows, key=lambda row: row["images_per_second"])


def link_tree(source: Path, target: Path, count: int) -> Path:
    """`count` symbolic links to source's images, cycling, in class folders like the source's.
    Links point at absolute paths: a relative one would be read from the link's own folder."""
    originals = list(iter_image_files(source))
    for index, original in zip(range(count), itertools.cycle(originals)):
        folder = target / original.parent.relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(original.resolve(), folder / f"{index:07d}{original.suffix}")
    return target


def measure(images: Path, rest_url: str, grpc_target: str, protocol: str, batch: int,
            concurrency: int, model_name: str) -> dict:
    """One `imgclf validate` run (in this process) and its figures."""
    from imgclf.client.validate import Run

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


def measure_serving(trained, serving_dir: Path, count: int, sweep: list[tuple], workdir: Path) -> dict:
    from imgclf.serving import LocalServer

    tree = link_tree(serving_dir, workdir / "serving-images", count)
    warm_tree = link_tree(serving_dir, workdir / "warmup-images", 2 * sweep[0][1])
    files = list(iter_image_files(tree))
    batch_sizes = sorted({batch for _, batch, _ in sweep})
    note(f"  in-process: batches of {batch_sizes}, {' or '.join(map(str, IN_PROCESS_CALLERS))} callers")
    in_process = in_process_throughput(trained.version_dir, files,
                                       [(b, c) for b in batch_sizes for c in IN_PROCESS_CALLERS])
    rows = []
    model_name = contract.DEFAULT_MODEL_NAME
    with LocalServer(trained.base_path, model_name, poll_seconds=30) as server:
        for protocol in ("rest", "grpc"):     # connections and graph warm, not measured
            measure(warm_tree, server.rest_url, server.grpc_target, protocol, sweep[0][1], 1, model_name)
        for protocol, batch, concurrency in sweep:
            row = measure(tree, server.rest_url, server.grpc_target, protocol, batch, concurrency, model_name)
            note(f"  {protocol} batch {batch} x{concurrency}: {row['images_per_second']:.1f} img/s")
            rows.append(row)
    # The fastest in-process setting again, now that the server is gone: drift on a shared
    # machine then lowers the ratio rather than flattering it.
    best = fastest(in_process)
    in_process += in_process_throughput(trained.version_dir, files, [(best["batch"], best["callers"])])
    best_in_process = fastest(in_process)
    note(f"  in-process best: {best_in_process['images_per_second']:.1f} img/s "
         f"(batch {best_in_process['batch']}, {best_in_process['callers']} callers)")
    failed = [row for row in rows if row["exit"] != 0 or row["images"] != len(files)]
    if failed:
        raise RuntimeError(f"validate did not predict every image: {failed}")
    result = {"images": len(files), "in_process": best_in_process, "in_process_runs": in_process, "sweep": rows}
    for protocol in ("rest", "grpc"):
        best = fastest([row for row in rows if row["protocol"] == protocol])
        result[protocol] = {**best, "ratio": best["images_per_second"] / best_in_process["images_per_second"]}
    return result


# --- 4. rollout --------------------------------------------------------------------------------
def measure_rollout(trained, publishes: int, quick: bool) -> dict:
    from imgclf.rollout.drill import run_drill

    settings = DrillSettings(publishes=publishes, rollbacks=min(1, publishes - 1), model=str(trained.version_dir),
                             steady_seconds=1.0 if quick else DRILL_STEADY_SECONDS)
    figures = run_drill(settings, say=lambda text: note(f"  {text}"))
    answered = [s for s in figures.publish_to_answer_s if s is not None]
    if not figures.passed or not answered or not figures.p99_swap_ms or not figures.p99_steady_ms:
        raise RuntimeError(f"the rollout drill did not pass: {dataclasses.asdict(figures)}")
    return {**dataclasses.asdict(figures), "poll_seconds": settings.poll_seconds,
            "session_config": session_config_file(settings.session_config),
            "publish_to_answer_median_s": statistics.median(answered),
            "publish_to_answer_max_s": max(answered), "p99_ratio": figures.p99_swap_ms / figures.p99_steady_ms}


# --- 5. client memory --------------------------------------------------------------------------
def memory_by_file_count(images: Path, rest_url: str, model_name: str, counts: list[int],
                         batch: int, concurrency: int) -> list[dict]:
    """Peak RSS of the real `imgclf validate` over `count` files (links to images), per count."""
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


def measure_client_memory(counts: list[int], workdir: Path) -> dict:
    """The real `imgclf validate`, one fresh process per file count, against a server whose model
    only decodes the images (a marker model), so that many files take seconds."""
    from imgclf.rollout.markers import write_marker_model
    from imgclf.sample_data import write_sample_dataset
    from imgclf.serving import LocalServer

    small_pages = write_sample_dataset(workdir / "small-pages", per_class=20, size=(48, 64), seed=5)
    store = open_model(workdir / "marker-models")
    base = Path(store.location)
    staged = write_marker_model(store.stage(), 1)
    store.seal(staged)
    store.publish(staged)
    with LocalServer(base, contract.DEFAULT_MODEL_NAME) as server:
        rows = memory_by_file_count(small_pages, server.rest_url, contract.DEFAULT_MODEL_NAME, counts,
                                    MEMORY_BATCH, MEMORY_CONCURRENCY)
    if any(row["exit"] != 0 for row in rows):
        raise RuntimeError(f"imgclf validate failed: {rows}")
    file_bytes = [p.stat().st_size for p in iter_image_files(small_pages)]
    first, last = rows[0], rows[-1]
    growth = (last["peak_rss_mib"] - first["peak_rss_mib"]) * 2**20 / max(1, last["files"] - first["files"])
    return {"runs": rows, "file_bytes": statistics.mean(file_bytes), "batch": MEMORY_BATCH,
            "concurrency": MEMORY_CONCURRENCY, "bytes_per_extra_file": growth,
            "ratio": last["peak_rss_mib"] / first["peak_rss_mib"]}


# --- 6. batching -------------------------------------------------------------------------------
def single_image_clients(rest_url: str, image: bytes, clients: int, seconds: float) -> dict:
    """`clients` threads, each sending one single-image predict request at a time for `seconds`."""
    from imgclf.client.base import ClientError
    from imgclf.client.metrics import latency_percentiles
    from imgclf.client.rest import RestClient

    client = RestClient(rest_url, contract.DEFAULT_MODEL_NAME, timeout=60, retries=0, pool_size=clients)
    latencies, failures, lock = [], [0], threading.Lock()
    stop_at = time.monotonic() + seconds

    def send() -> None:
        mine, failed = [], 0
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                client.predict([image])
                mine.append(time.monotonic() - started)
            except ClientError:
                failed += 1
        with lock:
            latencies.extend(mine)
            failures[0] += failed

    threads = [threading.Thread(target=send) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    client.close()
    pct = latency_percentiles(latencies)
    return {"clients": clients, "requests": len(latencies), "failures": failures[0],
            "requests_per_second": len(latencies) / elapsed, "p50_ms": pct[50] * 1000, "p99_ms": pct[99] * 1000}


def measure_batching(trained, image: bytes, seconds: float) -> dict:
    """The local server without and with --enable_batching: single-image requests/second."""
    from imgclf.serving import LocalServer

    rows = []
    for batching in (False, True):
        extra = []
        if batching:
            extra.append("--enable_batching")
            if BATCHING_CONFIG.is_file():
                extra.append(f"--batching_parameters_file={BATCHING_CONFIG.resolve()}")
        with LocalServer(trained.base_path, contract.DEFAULT_MODEL_NAME, extra_args=extra, poll_seconds=30) as server:
            single_image_clients(server.rest_url, image, 2, 2.0)     # warm connections and the graph
            for clients in BATCHING_CLIENTS:
                row = {**single_image_clients(server.rest_url, image, clients, seconds), "batching": batching}
                note(f"  batching {'on ' if batching else 'off'} {clients} clients: "
                     f"{row['requests_per_second']:.1f} req/s, p99 {row['p99_ms']:.1f} ms, {row['failures']} failed")
                rows.append(row)
    if any(row["failures"] or not row["requests"] for row in rows):
        raise RuntimeError(f"single-image requests failed: {rows}")
    most = max(BATCHING_CLIENTS)
    on, off = (next(r for r in rows if r["clients"] == most and r["batching"] == b) for b in (True, False))
    return {"rows": rows, "clients": most, "config": str(BATCHING_CONFIG) if BATCHING_CONFIG.is_file() else "",
            "ratio": on["requests_per_second"] / off["requests_per_second"]}


# --- the summary -------------------------------------------------------------------------------
@dataclass
class Ratio:
    key: str
    title: str
    value: float
    goal: float | None
    at_least: bool          # the goal is a floor (else a ceiling)
    context: str

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    @property
    def goal_text(self) -> str:
        return "-" if self.goal is None else f"{'>=' if self.at_least else '<='} {self.goal:g}"


def ratios(results: dict) -> list[Ratio]:
    found = []
    if "request_bytes" in results:
        r = results["request_bytes"]
        found.append(Ratio("request_bytes", "request bytes: float JSON / b64 JPEG", r["times_smaller"], 100, True,
                           f"{r['b64_request_bytes']:,.0f} B vs {r['float_request_bytes']:,.0f} B per page "
                           f"({r['pages']} pages)"))
    if "serving" in results:
        s = results["serving"]
        base = s["in_process"]
        for protocol, name in (("rest", "REST"), ("grpc", "gRPC")):
            p = s[protocol]
            found.append(Ratio(f"serving_{protocol}", f"throughput {name} / in-process", p["ratio"], 0.8, True,
                               f"{p['images_per_second']:.1f} img/s (batch {p['batch']} x{p['concurrency']}) vs "
                               f"{base['images_per_second']:.1f} img/s (batch {base['batch']} x{base['callers']})"))
    if "training" in results:
        t = results["training"]
        found.append(Ratio("training", f"training {t['epochs']} epochs: cached / recomputed", t["ratio"],
                           0.25, False, f"{t['cached']['seconds']:.1f} s vs {t['recomputed']['seconds']:.1f} s "
                                        f"({t['images']} images)"))
        e = t["extraction"]
        found.append(Ratio("extraction", "feature extraction / in-process backbone", e["ratio"], 0.8, True,
                           f"{e['images_per_second']:.1f} img/s (read, decode, {t['view']} view, cache) vs "
                           f"{e['in_process_images_per_second']:.1f} img/s (decoded images, backbone only)"))
    if "rollout" in results:
        r = results["rollout"]
        found.append(Ratio("rollout_p99", "rollout: p99 during swap / steady", r["p99_ratio"], SWAP_P99_GOAL, False,
                           f"{r['p99_swap_ms']:.0f} ms vs {r['p99_steady_ms']:.0f} ms ({r['swap_requests']} vs "
                           f"{r['steady_requests']} requests, {r['failures']} failed)"))
        found.append(Ratio("rollout_answer", "rollout: publish -> answering, slowest (s)", r["publish_to_answer_max_s"],
                           SWAP_SECONDS_GOAL, False, f"median {r['publish_to_answer_median_s']:.2f} s of "
                           f"{len(r['publish_to_answer_s'])} publishes (poll {r['poll_seconds']:g} s, "
                           f"session config {r.get('session_config') or 'none'})"))
    if "client_memory" in results:
        m = results["client_memory"]
        first, last = m["runs"][0], m["runs"][-1]
        found.append(Ratio("client_memory", f"client peak RSS: {last['files']} / {first['files']} files",
                           m["ratio"], 1.1, False,
                           f"{last['peak_rss_mib']:.1f} MiB vs {first['peak_rss_mib']:.1f} MiB "
                           f"({m['bytes_per_extra_file']:.0f} B per extra file)"))
    if "batching" in results:
        b = results["batching"]
        on, off = (next(r for r in b["rows"] if r["clients"] == b["clients"] and r["batching"] == x)
                   for x in (True, False))
        found.append(Ratio("batching", f"single-image req/s, {b['clients']} clients: batching on / off",
                           b["ratio"], None, True,
                           f"{on['requests_per_second']:.1f} vs {off['requests_per_second']:.1f} req/s; "
                           f"p99 {on['p99_ms']:.0f} vs {off['p99_ms']:.0f} ms"))
    return found


def format_table(found: list[Ratio], errors: dict) -> str:
    rows = [("figure", "value", "goal", "met", "context")]
    for r in found:
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        rows.append((r.title, f"{r.value:.3g}", r.goal_text, met, r.context))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines += [f"FAILED {phase}: {message}" for phase, message in errors.items()]
    return "\n".join(lines)


def format_load(load) -> str:
    return " ".join(f"{value:.1f}" for value in load)


def write_chart(found: list[Ratio], path: Path, title: str) -> None:
    """One panel per ratio: the measured bar, the goal as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, max(1, len(found)), figsize=(2.3 * max(1, len(found)), 3.4), squeeze=False)
    for axis, ratio in zip(axes[0], found):
        colour = {True: "tab:green", False: "tab:red", None: "tab:blue"}[ratio.met]
        axis.bar([0], [ratio.value], color=colour, width=0.6)
        if ratio.goal is not None:
            axis.axhline(ratio.goal, color="black", linestyle="--", linewidth=1)
        top = max(ratio.value, ratio.goal or 0)
        if ratio.key == "request_bytes":     # hundreds against a goal of 100: a log scale shows both
            axis.set_yscale("log")
            axis.set_ylim(1, top * 4)
        else:
            axis.set_ylim(0, top * 1.25)
        axis.set_xticks([])
        axis.set_xlabel(f"goal {ratio.goal_text} (dashed)" if ratio.goal is not None else "no goal", fontsize=7)
        axis.set_title(ratio.title.replace(": ", ":\n", 1), fontsize=8)
        axis.text(0, ratio.value, f"{ratio.value:.3g}", ha="center", va="bottom", fontsize=9)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    partial = path.with_name(path.name + ".partial.png")
    figure.savefig(partial, dpi=110)
    plt.close(figure)
    os.replace(partial, path)


def write_json(results: dict, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(partial, path)


# --- the run -----------------------------------------------------------------------------------
def with_quick_defaults(settings: BenchSettings, given: set[str]) -> BenchSettings:
    if not settings.quick:
        return settings
    return dataclasses.replace(settings, **{k: v for k, v in QUICK_SETTINGS.items() if k not in given})


def run_bench(settings: BenchSettings) -> dict:
    import tensorflow as tf

    started = time.monotonic()
    results: dict = {"mode": "quick" if settings.quick else "full", "settings": dataclasses.asdict(settings),
                     "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg(),
                                 "python": platform.python_version(), "tensorflow": tf.__version__},
                     "seconds": {}, "errors": {}}

    def phase(name: str, title: str, work, *needs: str) -> None:
        """Runs one measurement; a failure is recorded and the others still run."""
        missing = [need for need in needs if need not in results]
        if missing:
            results["errors"][name] = f"skipped: needs {', '.join(missing)}"
            return
        note(f"== {title}")
        begun = time.monotonic()
        try:
            results[name] = work()
        except Exception as error:   # noqa: BLE001 - reported in the table and the JSON
            results["errors"][name] = f"{type(error).__name__}: {error}"
            note(f"  FAILED: {results['errors'][name]}")
        results["seconds"][name] = round(time.monotonic() - begun, 1)

    with tempfile.TemporaryDirectory(prefix="imgclf-bench-") as scratch:
        workdir = Path(scratch)
        inputs = resolve_inputs(settings, workdir)
        results["inputs"] = {"train_dir": str(inputs.train_dir), "serving_dir": str(inputs.serving_dir),
                             "module": inputs.module, "image_size": inputs.image_size}
        pages = list(iter_image_files(inputs.serving_dir))
        if not pages:
            raise ValueError(f"no {'/'.join(contract.IMAGE_EXTENSIONS)} files under {inputs.serving_dir}")
        sample = pages[:: max(1, len(pages) // BYTES_SAMPLE_PAGES)][:BYTES_SAMPLE_PAGES]
        trained = {}
        parts = set(settings.parts.split(","))

        if "bytes" in parts:
            phase("request_bytes", "1. request bytes per page", lambda: measure_request_bytes(sample))
        if "training" in parts:
            phase("training", f"3. training: {settings.epochs} epochs, cached vs recomputed",
                  lambda: measure_training(inputs, settings.epochs, workdir))

        def served_model():
            trained["model"] = (given_model(settings.model, workdir) if settings.model
                                else train_served_model(inputs, settings.epochs, workdir))
            return {"version_dir": str(trained["model"].version_dir)}

        if parts & {"serving", "rollout", "batching"}:
            phase("model", f"   a model to serve: {settings.model or 'imgclf train'}", served_model)
        sweep = QUICK_SERVING_SWEEP if settings.quick else SERVING_SWEEP
        if "serving" in parts:
            phase("serving", "2. serving throughput: validate through the local server vs in-process",
                  lambda: measure_serving(trained["model"], inputs.serving_dir, settings.serving_images, sweep,
                                          workdir), "model")
        if "rollout" in parts:
            phase("rollout", "4. rollout drill: publish under traffic",
                  lambda: measure_rollout(trained["model"], settings.publishes, settings.quick), "model")
        if "memory" in parts:
            counts = [int(count) for count in settings.memory_files.split(",")]
            phase("client_memory", f"5. client peak memory: {' vs '.join(map(str, counts))} files",
                  lambda: measure_client_memory(counts, workdir))
        if "batching" in parts:
            seconds = 2.0 if settings.quick else BATCHING_SECONDS
            phase("batching", "6. batching: single-image REST requests/s, --enable_batching vs without",
                  lambda: measure_batching(trained["model"], sample[0].read_bytes(), seconds), "model")
    results["machine"]["load_after"] = os.getloadavg()
    results["seconds"]["total"] = round(time.monotonic() - started, 1)
    results["ratios"] = [{**dataclasses.asdict(r), "met": r.met} for r in ratios(results)]
    return results


def build_parser(command: str = "bench") -> argparse.ArgumentParser:
    # omit_unset: --quick keeps what is given
    return settings_parser(BenchSettings, command, __doc__.split("\n\n")[0], omit_unset=True)


def main(argv: list[str], command: str = "bench") -> int:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    given = vars(build_parser(command).parse_args(argv))
    settings = with_quick_defaults(BenchSettings(**given), set(given))
    output_dir = Path(settings.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        results = run_bench(settings)
    except ValueError as error:
        print(f"imgclf {command}: {error}", file=sys.stderr)
        return 2
    found = ratios(results)
    write_json(results, output_dir / JSON_FILE)
    write_chart(found, output_dir / CHART_FILE,
                f"imgclf bench ({results['mode']}, {Path(results['inputs']['module']).name}, "
                f"{results['seconds']['total']:.0f} s, {os.cpu_count()} cores)")
    print(format_table(found, results["errors"]))
    load = results["machine"]
    print(f"load average (1, 5, 15 min) before {format_load(load['load_before'])}, after {format_load(load['load_after'])}"
          f" on {load['cpus']} cores")
    print(f"{output_dir / JSON_FILE}  {output_dir / CHART_FILE}  ({results['seconds']['total']:.0f} s)")
    return 1 if results["errors"] else 0
