"""Every tunable of the product, with its default and what it means: the one place to look.

Each field maps to a CLI flag of the same name (``--learning-rate``) and a Make variable in upper
case (``LEARNING_RATE``). The Makefile passes a variable only when it is set, so the defaults here
are the only defaults. Plain Python: importable without TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from imgclf import contract

# A good ImageNet feature-vector module for users with internet. It fixes 224x224 RGB in [0, 1].
DEFAULT_HUB_MODULE = "https://tfhub.dev/tensorflow/efficientnet/lite0/feature-vector/2"
SCRATCH_MODULE = "scratch"   # the small built-in backbone trained from scratch (offline fallback)
# How PDFs become page images everywhere (make pages, train, validate): Ghostscript + ImageMagick 6,
# the original tool's own programs (docs/pdfs.md has the measurements behind the choice).
DEFAULT_PDF_RENDERER = "imagemagick"


@dataclass
class TrainSettings:
    """`make train` / `imgclf train`."""

    data: str = ""                       # DATA: one sub-folder of images per class
    module: str = DEFAULT_HUB_MODULE     # MODULE: TF Hub handle/URL, local module path, or "scratch"
    model_name: str = contract.DEFAULT_MODEL_NAME   # MODEL_NAME
    models: str = "./models"             # MODELS: base folder holding <model_name>/<version>/
    epochs: int = 100                    # EPOCHS: upper bound; early stopping usually ends near 20
    batch_size: int = 32                 # BATCH_SIZE
    learning_rate: float = 0.003         # LEARNING_RATE: for the head (Adam)
    image_size: int = 0                  # IMAGE_SIZE: 0 = the module's own size (224 for scratch)
    fine_tune: bool = False              # FINE_TUNE: also train the backbone, at fine_tune_learning_rate
    fine_tune_learning_rate: float = 1e-5   # FINE_TUNE_LEARNING_RATE
    fine_tune_epochs: int = 5            # FINE_TUNE_EPOCHS: upper bound, after the head is trained
    augment: bool = False                # AUGMENT: random crops/flips/contrast (bypasses the cache)
    validation_percent: int = 15         # VALIDATION_PERCENT: by hash of the file name
    test_percent: int = 15               # TEST_PERCENT: by hash of the file name
    seed: int = 42                       # SEED: shuffling and initialisation
    dropout: float = 0.5                 # DROPOUT: before the softmax head
    label_smoothing: float = 0.1         # LABEL_SMOOTHING
    patience: int = 15                   # PATIENCE: epochs without a better validation loss
    min_delta: float = 0.0               # MIN_DELTA: a smaller fall of the loss is not "better"
    grayscale: bool = True               # GRAYSCALE: drop colour in preprocessing (a shortcut cue)
    quadrants: bool = True               # QUADRANTS: add features of each image quarter at 2x (5 passes)
    layout_grid: int = 32                # LAYOUT_GRID: side of the page's ink map a second head reads; 0 = off
    layout_weight: float = 0.33          # LAYOUT_WEIGHT: that head's share of the scores
    cache_dir: str = ""                  # CACHE_DIR: feature cache; "" = <models>/.cache/features
    warmup_records: int = 8              # WARMUP_RECORDS: real images replayed by the server on load
    log_dir: str = ""                    # LOG_DIR: TensorBoard logs; "" = <models>/.logs/<model_name>
    progress: bool = True                # PROGRESS: progress bar per epoch
    decode_parallelism: int = 2          # DECODE_PARALLELISM: images decoded at once in training; each
                                         #   may take up to ~1.4 GB at the 40 MP limit (docs/hostile-inputs.md)
    validate: str = ""                   # VALIDATE: extra held-out folder for the promotion gate
    tolerance: float | None = None       # TOLERANCE: for the gate; None = RolloutSettings.tolerance
    force: bool = False                  # FORCE: publish even when the gate refuses
    pdf_renderer: str = DEFAULT_PDF_RENDERER   # PDF_RENDERER: how PDFs in DATA become pages
    pdf_cache: str = ""                  # PDF_CACHE: rendered pages; "" = <models>/.cache/pages


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise argparse.ArgumentTypeError(f"expected 1/0, true/false or yes/no, got {text!r}")


def _optional(kind):
    return lambda text: None if text.strip().lower() in ("", "none") else kind(text)


_FLAG_TYPES = {"str": str, "int": int, "float": float, "float | None": _optional(float),
               "int | None": _optional(int), "bool | None": _optional(parse_bool)}


def add_settings_flags(parser: argparse.ArgumentParser, settings_class, helps: dict[str, str] | None = None,
                       omit_unset: bool = False) -> None:
    """One flag per field of a settings dataclass: `learning_rate` becomes --learning-rate. Booleans
    take a value (`--fine-tune 1`, what the Makefile passes) or none (`--force`). With omit_unset a
    flag not given is left out of the parsed namespace, so a caller can tell given from default."""
    defaults = settings_class()
    for f in dataclasses.fields(settings_class):
        default = getattr(defaults, f.name)
        text = (helps or {}).get(f.name, "")
        shown = int(default) if isinstance(default, bool) else repr(default)
        options = dict(dest=f.name, default=argparse.SUPPRESS if omit_unset else default,
                       help=f"{text} (default {shown})".strip())
        if f.type == "bool":
            options.update(type=parse_bool, nargs="?", const=True, metavar="1|0")
        else:
            options.update(type=_FLAG_TYPES[f.type])
        parser.add_argument("--" + f.name.replace("_", "-"), **options)


def to_dict(settings) -> dict:
    return dataclasses.asdict(settings)


@dataclass
class ServeSettings:
    """`make serve` / `imgclf serve`: the local TF-Serving-compatible server.

    Its flags are tensorflow_model_server's (--port, --rest_api_port, --model_name, ...), with the
    same meaning and defaults, so one set of flags and config files works for both servers. These
    are the Make-level defaults around them.
    """

    models: str = "./models"                 # MODELS
    model_name: str = contract.DEFAULT_MODEL_NAME   # MODEL_NAME
    rest_port: int = 8501                    # REST_PORT (--rest_api_port)
    grpc_port: int = 8500                    # GRPC_PORT (--port)
    host: str = "127.0.0.1"                  # HOST: the local server binds loopback unless told
    file_system_poll_wait_seconds: float = 1.0   # as tensorflow_model_server
    model_config_file_poll_wait_seconds: float = 0.0  # as tensorflow_model_server (0 = read once)
    rest_api_timeout_in_ms: int = 30000      # as tensorflow_model_server
    serving: str = ""                        # SERVING: "local", "docker" or "" (docker if reachable)
    # Used by `make serve` (no --model_base_path / --model_config_file given), as compose does:
    # models.config when it lists MODEL_NAME (pins from `make pin`), re-read every 5 s, and
    # monitoring.config; paths under /models in them map onto MODELS.
    models_config: str = "serving/models.config"        # MODELS_CONFIG
    models_config_poll_seconds: float = 5.0
    monitoring_config: str = "serving/monitoring.config"


@dataclass
class ValidateSettings:
    """`make validate` / `imgclf validate`: the client."""

    dir: str = ""                            # DIR: images to send; class sub-folders give accuracy
    server: str = "http://localhost:8501"    # SERVER: REST endpoint
    grpc_server: str = "localhost:8500"      # GRPC_SERVER
    protocol: str = "rest"                   # PROTOCOL: rest | grpc
    model_name: str = contract.DEFAULT_MODEL_NAME   # MODEL_NAME
    version: int | None = None               # VERSION: ask this version
    label: str | None = None                 # LABEL: or this version label (stable, canary)
    batch: int = 16                          # BATCH: images per request
    concurrency: int = 4                     # CONCURRENCY: requests in flight
    output: str = ""                         # OUTPUT: results.csv or results.jsonl
    all_classes: bool = False                # --all: one line per class, not only the top one
    min_accuracy: float | None = None        # MIN_ACCURACY: exit non-zero below it
    wait: float = 60.0                       # WAIT: seconds to wait for the model to be AVAILABLE
    timeout: float = 30.0                    # TIMEOUT: per request, seconds
    retries: int = 5                         # RETRIES: on connection errors and 503/UNAVAILABLE
    progress: bool | None = None             # PROGRESS: None = when stderr is a terminal
    shard: str = ""                          # SHARD: i/N, this process's share of DIR (client/shards.py)
    pdf_renderer: str = DEFAULT_PDF_RENDERER   # PDF_RENDERER: how PDFs in DIR become pages
    pdf_cache: str = ""                      # PDF_CACHE: rendered pages; "" = ~/.cache/imgclf/pages


@dataclass
class PagesSettings:
    """`make pages` / `imgclf pages`: page 1 of every PDF under PDFS -> OUT/<folder>/<sha1>.jpg.
    The limits also hold for the PDFs that `make train` and `make validate` render."""

    pdfs: str = ""                           # PDFS: folder of PDFs, searched recursively
    out: str = ""                            # OUT: images go to OUT/<same sub-folder>/<sha1 of the PDF>.jpg
    renderer: str = DEFAULT_PDF_RENDERER     # RENDERER: imagemagick (Ghostscript + ImageMagick 6) | pdfium
    blank_bytes: int = 3000                  # BLANK_BYTES: a page whose JPEG is smaller is blank, dropped
                                             #   (the original's rule); 0 keeps every page
    workers: int = 0                         # WORKERS: rendering processes; 0 = one per core
    timeout: float = 120.0                   # TIMEOUT: seconds one PDF may take; then its worker is killed
    max_pages: int = 100_000                 # MAX_PAGES: PDFs with more pages are refused (0 = no limit)
    max_page_inches: float = 100.0           # MAX_PAGE_INCHES: page 1's longer side (0 = no limit)
    memory_mb: int = 2048                    # MEMORY_MB: address space of each worker and its programs
    progress: bool | None = None             # PROGRESS: bar on a terminal; else a line per LOG_EVERY files
    log_every: int = 500                     # LOG_EVERY


@dataclass
class DemoSettings:
    """`make demo` / `imgclf demo`: sample pages -> train (scratch) -> local server -> validate."""

    workdir: str = "./demo-output"           # DEMO_DIR: pages, models and results go here
    per_class: int = 60                      # DEMO_PER_CLASS: training pages per class
    held_out_per_class: int = 20             # DEMO_HELD_OUT: pages per class the model never sees
    image_size: int = 0                      # IMAGE_SIZE: 0 = the scratch backbone's own size
    protocol: str = "rest"                   # PROTOCOL: how the validation talks to the server


@dataclass
class RolloutSettings:
    """`make publish|rollback|pin|unpin|status|clean-staged`."""

    models: str = "./models"                 # MODELS
    model_name: str = contract.DEFAULT_MODEL_NAME   # MODEL_NAME
    tolerance: float = 0.01                  # TOLERANCE: how much worse a candidate may be
    force: bool = False                      # FORCE: publish even when the gate refuses
    validate: str = ""                       # VALIDATE: extra held-out folder for the gate
    models_config: str = "serving/models.config"   # written by pin/unpin, polled by both servers
    serving_models: str = "/models"          # SERVING_MODELS: MODELS as the server sees it, written
                                             #   into models.config: the official image's /models,
                                             #   which the local server maps onto its MODELS
    staged: str = ""                         # STAGED: folder to publish ("" = the only staged one)
    server: str = "http://localhost:8501"    # SERVER: REST endpoint asked by status and pin
    canary: int | None = None                # CANARY: pin also serves this version, labelled canary
    wait: float = 60.0                       # WAIT: seconds pin waits for versions/labels to be served
    docker_service: str = "serving"          # DOCKER_SERVICE: compose service whose health status shows
    older_than: float = 3600.0               # OLDER_THAN: clean-staged removes staged folders unchanged
                                             #   this many seconds (an export being written changes)
    sealed: bool = False                     # SEALED: clean-staged also removes complete exports the
                                             #   gate refused (else only those killed runs left)


@dataclass
class DrillSettings:
    """`make drill` / `imgclf drill`: publish and roll back under continuous traffic."""

    clients: int = 2                         # CLIENTS: threads sending predict requests non-stop
    publishes: int = 5                       # PUBLISHES: new versions published during the drill
    rollbacks: int = 2                       # ROLLBACKS: then this many taken back
    steady_seconds: float = 3.0              # STEADY_SECONDS: traffic without changes, before/after
    poll_seconds: float = 0.2                # the drill server's --file_system_poll_wait_seconds
    switch_timeout: float = 60.0             # seconds a change may take to reach the answers
    workdir: str = ""                        # WORKDIR: where its models go ("" = a temporary folder)
    model: str = ""                          # MODEL: a version folder each drill version carries and
                                             #   runs, so swaps cost what it costs ("" = tiny models)
    output: str = ""                         # OUTPUT: also write the figures as JSON here


@dataclass
class StackSettings:
    """`make e2e` / `imgclf e2e` and the Docker runner of `make train|validate`."""

    runner: str = ""                         # RUNNER: docker | local | "" = docker when an engine answers
    base_image: str = ""                     # BASE_IMAGE: "" = python:3.11-slim-bookworm, or one made
                                             #   with debootstrap where no registry is reachable
    serving_image: str = ""                  # SERVING_IMAGE: "" = tensorflow/serving:2.20.0, or the
                                             #   stand-in built from serving/ where it cannot be pulled
    ca_bundle: str = ""                      # CA_BUNDLE: CA file pip needs in the build stages
                                             #   ("" = $PIP_CERT, else the cert pip is configured with)
    per_class: int = 24                      # PER_CLASS: generated sample images per class (e2e)
    epochs: int = 2                          # EPOCHS: per training in the e2e
    image_size: int = 96                     # IMAGE_SIZE: the e2e trains the scratch backbone small
    timeout: float = 300.0                   # TIMEOUT: seconds any one wait of the e2e may take
    keep: bool = False                       # KEEP: leave the e2e's work folder (data, models, logs)


@dataclass
class SwarmSettings:
    """`make swarm-deploy | swarm-status | swarm-down`, and `make train|validate RUNNER=swarm`:
    the serving stack on a Docker Swarm (deploy/swarm). The Docker engine asked is the one
    DOCKER_HOST names (a manager of the swarm)."""

    stack: str = "imgclf"                    # STACK: the stack's name (services are STACK_serving)
    replicas: int = 2                        # REPLICAS: serving tasks
    models: str = "./models"                 # MODELS: the shared models folder as this host sees it
    models_device: str = ""                  # MODELS_DEVICE: the same folder's path on every node
                                             #   ("" = MODELS made absolute: mounted at one path everywhere)
    nfs: str = ""                            # NFS: server:/export/models; then every node's engine
                                             #   mounts it itself and MODELS_DEVICE is not used
    nfs_options: str = "nfsvers=4.1,hard,acdirmin=1,acdirmax=1"   # NFS_OPTIONS: see docs/scale-out.md
    model_name: str = contract.DEFAULT_MODEL_NAME   # MODEL_NAME
    serving_image: str = ""                  # SERVING_IMAGE: "" = tensorflow/serving:2.20.0; every
                                             #   node must be able to pull it (a registry)
    balancer_image: str = ""                 # BALANCER_IMAGE: "" = imgclf-balancer:<version>, built
                                             #   here from deploy/balancer when missing
    bind: str = "127.0.0.1"                  # BIND: the balancer's address on this host; 0.0.0.0 or an
                                             #   address publishes it
    rest_port: int = 8501                    # REST_PORT
    grpc_port: int = 8500                    # GRPC_PORT
    monitor_port: int = 8404                 # BALANCER_MONITOR_PORT: /healthz and /metrics
    serving_cpus: str = "2"                  # SERVING_CPUS: limit per replica
    serving_memory: str = "2G"               # SERVING_MEMORY: limit per replica
    serving_cpus_reserved: str = "0.25"      # SERVING_CPUS_RESERVED: what a node must have free
    serving_memory_reserved: str = "512M"    # SERVING_MEMORY_RESERVED:   to take a replica
    network: str = "imgclf-serving"          # NETWORK: the attachable overlay network
    wait: float = 600.0                      # WAIT: seconds deploy waits for every replica to serve
    trainer_image: str = ""                  # TRAINER_IMAGE, CLIENT_IMAGE: what RUNNER=swarm jobs run,
    client_image: str = ""                   #   pullable by every node ("" = imgclf-<name>:<tag>)
    shards: int = 1                          # SHARDS: RUNNER=swarm validate runs this many jobs,
                                             #   --shard i/SHARDS each, and merges their OUTPUTs


@dataclass
class SwarmE2ESettings:
    """`make swarm-e2e` / `imgclf swarm-e2e`: deploy/swarm on a real multi-node swarm made of
    Docker engines in containers. Images (BASE_IMAGE, SERVING_IMAGE, CA_BUNDLE) as for `make e2e`."""

    replicas: int = 2                        # REPLICAS: serving replicas deployed (then 1 -> 3)
    rest_clients: int = 2                    # REST_CLIENTS: REST threads of the traffic (plus one gRPC)
    pause: float = 0.04                      # PAUSE: seconds each traffic thread waits between requests
    retries: int = 5                         # RETRIES: per request, with backoff, counted
    spread_seconds: float = 15.0             # SPREAD_SECONDS: traffic over which the spread is counted
    allowed_failures_on_node_loss: int = 0   # failed requests (after retries) tolerated when a node dies
    batch_files: int = 4000                  # BATCH_FILES: files `make validate` sends through the balancer
    jobs: bool = True                        # JOBS: also train and validate as swarm jobs (pushes the
                                             #   trainer and client images: ~1.6 GB more to distribute)
    per_class: int = 24                      # PER_CLASS: generated training images per class
    epochs: int = 2                          # EPOCHS: of each of the two trainings
    image_size: int = 64                     # IMAGE_SIZE: of the scratch backbone
    timeout: float = 600.0                   # TIMEOUT: seconds any one wait may take
    keep: bool = False                       # KEEP: leave the work folder
    output: str = ""                         # OUTPUT: also write the figures as JSON here


@dataclass
class BenchSettings:
    """`make bench` / `imgclf bench`: the product's figures, as ratios measured side by side."""

    output_dir: str = "bench-output"         # BENCH_DIR: bench.json and bench.png go here
    quick: bool = False                      # QUICK: tiny pages, a tiny model, one setting each (CI)
    module: str = ""                         # MODULE: a local feature-vector module ("" = scratch,
                                             #   frozen: the cache comparison needs a fixed backbone)
    data: str = ""                           # DATA: class folders, or a folder holding train/ and
                                             #   validation/ ("" = generated sample pages)
    epochs: int = 10                         # EPOCHS: of each of the two training runs compared
    serving_images: int = 150                # SERVING_IMAGES: images per throughput measurement
                                             #   (the validation pages, cycled)
    memory_files: str = "200,20000"          # MEMORY_FILES: the file counts the client validates
    publishes: int = 3                       # PUBLISHES: versions the rollout drill publishes
