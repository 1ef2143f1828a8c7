"""Every tunable of the product, with its default and what it means: the one place to look.

Each field is declared once, with `setting(default, help)`, and reaches the user by one road:
  field `learning_rate` -> flag `--learning-rate` (the command's parser is generated from the class by
  add_settings_flags) -> Make variable `LEARNING_RATE` (settings.mk, generated from this file by
  `make settings`; tests/test_settings.py fails while it is stale) -> docs/settings.md (same).
A Make variable is passed to its flag only when set, so the defaults here are the only defaults.

To add a tunable, declare a field in the class of its command; nothing else is needed for the flag,
then run `make settings` for the Make variable and the reference. A new command gets a class and an
entry in COMMANDS. Metadata where the derived names do not fit: `make="DEMO_DIR"` (the variable),
`flag="--all"`, `make=None` (no Make variable), `flag=None` (not on the command line: a default the
code reads), `commands=(...)` (only those commands of a class take it), `choices`, `check` (a
function that raises ValueError), `switch=True` (a boolean taking no value: `--all`/`--no-all`, for
commands with a positional argument), `positional=True`, `required=True`, `environment=True` (also
read from the environment variable of its Make name, which compose reads too).

Plain Python, standard library only: importable without TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Callable

from imgclf import contract

# A good ImageNet feature-vector module for users with internet. It fixes 224x224 RGB in [0, 1].
DEFAULT_HUB_MODULE = "https://tfhub.dev/tensorflow/efficientnet/lite0/feature-vector/2"
SCRATCH_MODULE = "scratch"   # the small built-in backbone trained from scratch (offline fallback)
# How PDFs become page images everywhere (make pages, train, validate): Ghostscript + ImageMagick 6,
# the original tool's own programs (docs/pdfs.md has the measurements behind the choice).
DEFAULT_PDF_RENDERER = "imagemagick"
# The local server's memory allocators (serving/allocator.py): auto = jemalloc where installed.
ALLOCATORS = ("auto", "jemalloc", "system")
# The ConfigProto of the serving sessions that compose passes to both servers (serving/session.config).
SESSION_CONFIG_FILE = "serving/session.config"


def session_config_file(path: str) -> str:
    """The --tensorflow_session_config_file to pass for `path`, as compose passes the project's file
    to its servers: the project's own (SESSION_CONFIG_FILE) only where it exists, i.e. from a
    checkout; "" for none. Any other file named must exist (ValueError)."""
    if not path or (path == SESSION_CONFIG_FILE and not os.path.isfile(path)):
        return ""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    return path


def setting(default, help: str = "", **metadata):
    """A field of a settings class: its default, its help text, and metadata (module docstring)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


# --- checks: each raises ValueError with the reason --------------------------------------------
def fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError("give a fraction between 0 and 1 (0.9 for 90%)")
    return value


def at_least(minimum: int) -> Callable:
    """The check that a whole number is `minimum` or more."""
    def check(value):
        if value < minimum:
            raise ValueError(f"must be {minimum} or more")
        return value
    return check


positive, at_least_two = at_least(1), at_least(2)


def non_negative(value):
    if value < 0:
        raise ValueError("must not be negative")
    return value


def shard_spec(text: str) -> str:
    """'i/N' with 0 <= i < N (spaces dropped), or "" for no sharding."""
    text = text.replace(" ", "")
    if not text:
        return text
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError("give i/N with 0 <= i < N, e.g. 0/4 ... 3/4")
    return text


def above_zero(value):
    if value <= 0:
        raise ValueError("must be above 0")
    return value


def below_one(value):
    if not 0.0 <= value < 1.0:
        raise ValueError("must lie in [0, 1)")
    return value


class SettingsError(ValueError):
    """Settings that cannot work; the message names the flag and the allowed values."""


def field_problem(settings) -> str | None:
    """The first field whose value its own check or choices refuse, said as its flag would say it
    (`--epochs 0: must be 1 or more`); None when every field passes. The same checks as parsing."""
    for f in dataclasses.fields(settings):
        value, check, choices = getattr(settings, f.name), f.metadata.get("check"), f.metadata.get("choices")
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        if choices and value not in choices:
            return f"{flag} {value}: must be one of {', '.join(str(c) for c in choices if c is not None)}"
        try:
            if check is not None and value is not None:
                check(value)
        except ValueError as error:
            return f"{flag} {value}: {error}"
    return None


@dataclass
class TrainSettings:
    """`make train` / `imgclf train`."""

    data: str = setting("", "one sub-folder of images per class")
    module: str = setting(DEFAULT_HUB_MODULE, 'TF Hub handle/URL, local module path, or "scratch"')
    model_name: str = setting(contract.DEFAULT_MODEL_NAME, "the model's name: MODELS/<name>/<version>/")
    models: str = setting("./models", "base folder holding <model_name>/<version>/")
    epochs: int = setting(100, "upper bound; early stopping usually ends near 20", check=positive)
    batch_size: int = setting(32, "images per training step", check=positive)
    learning_rate: float = setting(0.003, "for the head (Adam)", check=above_zero)
    image_size: int = setting(0, "0 = the module's own size (224 for scratch)", check=non_negative)
    fine_tune: bool = setting(False, "also train the backbone, at fine_tune_learning_rate")
    fine_tune_learning_rate: float = setting(1e-5, "learning rate of the fine-tuning phase")
    fine_tune_epochs: int = setting(5, "upper bound, after the head is trained")
    augment: bool = setting(False, "random crops/flips/contrast (bypasses the cache)")
    validation_percent: int = setting(15, "share of the images for validation, by hash of the file name")
    test_percent: int = setting(15, "share of the images for the test split, by hash of the file name")
    seed: int = setting(42, "shuffling and initialisation")
    dropout: float = setting(0.5, "before the softmax head", check=below_one)
    label_smoothing: float = setting(0.1, "of the training targets", check=below_one)
    patience: int = setting(15, "epochs without a better validation loss before stopping", check=non_negative)
    min_delta: float = setting(0.0, 'a smaller fall of the loss is not "better"')
    recipe: str = setting("auto", "auto = measure on this data the options below left unset: colour or grey, then "
                          "keep the reference view (whole image + its centre at 4x) unless another view or the "
                          "layout head beats it by more than the data can resolve; document = grey, centre; "
                          "photo = colour, whole image (docs/training.md)", choices=("auto", "document", "photo"))
    grayscale: bool | None = setting(None, "drop colour in preprocessing; unset = the recipe's")
    view: str | None = setting(None, "what the backbone sees: whole (the image: 1 pass per image), centre (the "
                               "mean of the 4 central tiles of a 4x4 grid, each enlarged 4x: 4 passes), "
                               "whole+centre (both: 5), whole+quadrants (each quarter at 2x too: 5) or tiles (the "
                               "mean of all 16 tiles: 16); unset = the recipe's",
                               choices=(None, "whole", "centre", "whole+centre", "whole+quadrants", "tiles"))
    layout_grid: int | None = setting(None, "side of the page's ink map a second head reads; 0 = off; unset = the "
                                      "recipe's", check=non_negative)
    layout_weight: float = setting(0.33, "that head's share of the scores", check=fraction)
    head: str = setting("ridge", "on cached features: ridge (fitted in closed form, its temperature on "
                        "validation) or softmax (dropout + softmax, early stopping); training on images "
                        "(scratch, AUGMENT) uses softmax; FINE_TUNE then trains either with the backbone",
                        choices=("ridge", "softmax"))
    ridge_strength: float = setting(1.0, "the ridge head's L2 penalty, relative to the features' mean square",
                                    check=above_zero)
    balance_classes: bool = setting(True, "every class weighs the same in the head's loss")
    calibrate: bool = setting(True, "temperature scaling of the softmax head, fitted on validation, in the "
                              "exported graph (the ridge head always fits its temperature)")
    selection_folds: int = setting(5, "cross-validation folds when RECIPE=auto measures", check=at_least_two)
    selection_repeats: int = setting(3, "... repeated with other folds", check=positive)
    selection_margin: float = setting(1.64, "standard errors of the per-image difference by which a candidate "
                                      "must beat the reference recipe to replace it", check=non_negative)
    selection_images: int = setting(3000, "at most this many train + validation images measured (a sample)",
                                    check=positive)
    cache_dir: str = setting("", 'feature cache; "" = <models>/.cache/features')
    warmup_records: int = setting(8, "real images replayed by the server on load", check=non_negative)
    log_dir: str = setting("", 'TensorBoard logs; "" = <models>/.logs/<model_name>')
    progress: bool = setting(True, "progress per epoch: a bar on a terminal, a line in a log")
    decode_parallelism: int = setting(2, "images decoded at once in training; each may take up to ~1.4 GB at "
                                      "the 40 MP limit (docs/hostile-inputs.md)", check=positive)
    validate: str = setting("", "extra held-out folder for the promotion gate")
    tolerance: float | None = setting(None, "for the gate; None = RolloutSettings.tolerance")
    force: bool = setting(False, "publish even when the gate refuses")
    pdf_renderer: str = setting(DEFAULT_PDF_RENDERER, "how PDFs in DATA become pages")
    pdf_cache: str = setting("", 'rendered pages; "" = <models>/.cache/pages')

    def problem(self) -> str | None:
        """What is wrong with these settings, naming the flag; None when nothing: each field's own
        check (the one its flag applies when parsed) and what no single field can say. The CLI asks
        before TensorFlow loads (exit 2); train() asks again for library callers (SettingsError)."""
        if not self.data:
            return "--data is required (one sub-folder of images per class)"
        if self.validation_percent < 0 or self.test_percent < 0 or self.validation_percent + self.test_percent >= 100:
            return (f"--validation-percent {self.validation_percent} and --test-percent {self.test_percent}: "
                    "each must be 0 or more and together below 100")
        return field_problem(self)


@dataclass
class EvaluateSettings:
    """`make evaluate` / `imgclf evaluate`: how `make train` does on sources or styles it never saw,
    through the exported signature. Every TrainSettings flag applies to its trainings too."""

    manifest: str = setting("", "TSV of images (paths relative to it), a `label` column and a group column: "
                            "leave one group out over them")
    group_column: str = setting("source", "the manifest's column that names each image's group")
    group_separator: str = setting(":", 'a group is the value up to it ("debian:tex" is "debian"); "" = '
                                   "the whole value")
    test: str = setting("", "or: train on DATA and test on these folders of class folders (comma-separated)")
    seeds: str = setting("42", "comma-separated; each seed trains and tests again")
    output: str = setting("", "also write the figures here, as JSON")
    workdir: str = setting("", 'fold data and models ("" = a temporary folder)')


@dataclass
class ServeSettings:
    """`make serve` / `imgclf serve`: the local TF-Serving-compatible server, or compose's `serving`.

    Its flags are tensorflow_model_server's (--port, --rest_api_port, --model_name, ...; see
    serving/flags.py), with the same meaning and defaults, so one set of flags and config files
    works for both servers. These are the Make variables around them and the Make-level defaults.
    """

    models: str = setting("./models", "the folder that holds <model_name>/<version>/ and stands for the "
                          "container's /models")
    model_name: str = setting(contract.DEFAULT_MODEL_NAME, "the model served", flag="--model_name")
    rest_port: int = setting(8501, "REST port", flag="--rest_api_port")
    grpc_port: int = setting(8500, "gRPC port", flag="--port")
    host: str = setting("127.0.0.1", "address to bind: loopback unless told (0.0.0.0 for other machines)")
    serving: str = setting("", 'local, docker, or "" = docker when an engine is reachable',
                           choices=("", "local", "docker"))
    # Used by `make serve` (no --model_base_path / --model_config_file given), as compose does:
    # models.config when it lists MODEL_NAME (pins from `make pin`), re-read every 5 s, and
    # monitoring.config; paths under /models in them map onto MODELS.
    models_config: str = setting("serving/models.config", "model config served when it lists the model",
                                 flag="--models_config")
    models_config_poll_seconds: float = setting(5.0, "how often that config is re-read", flag=None)
    monitoring_config: str = setting("serving/monitoring.config", "served with it", flag=None)
    # Always (when present), as compose passes it to both servers: the sessions' ConfigProto.
    session_config: str = setting(SESSION_CONFIG_FILE, "--tensorflow_session_config_file when none is "
                                  "given", flag=None)
    allocator: str = setting("auto", "the local server's memory allocator: jemalloc where installed (auto), "
                             "jemalloc (required), or system (glibc's malloc); see serving/allocator.py",
                             choices=ALLOCATORS, flag="--allocator")


@dataclass
class ServerLimits:
    """The local server's limits: flags of `imgclf serve` (named as below, tensorflow_model_server
    style; the real server has no such flags unless said), with safe defaults. Memory and
    latency figures behind them: docs/serving.md and docs/security.md. serving/flags.py makes
    them flags, with their help (LIMIT_HELP)."""

    rest_api_max_connections: int = 16384          # connections held at once; when full, the longest
                                                   #   idle one is closed to make room
    rest_api_idle_timeout_in_ms: int = 30000       # request headers, and keep-alive between requests
    rest_api_body_timeout_in_ms: int = 60000       # a request body, from its headers to its last byte
    rest_api_max_body_bytes: int = 64 << 20        # larger bodies: 413
    rest_api_max_buffered_bytes: int = 512 << 20   # request bodies held in memory at once: else 503
    max_instances_per_request: int = 256           # REST instances / gRPC first dimension: else 400
    model_max_concurrent_requests: int = 0         # requests running a model at once; 0 = one per CPU
    model_max_queued_requests: int = 64            # more waiting for the model: else 503 UNAVAILABLE
    model_run_batch_size: int = 8                  # most examples per model call: larger requests run
                                                   #   in slices, which bounds the memory a burst leaves
    grpc_max_receive_message_bytes: int = 64 << 20  # larger messages: RESOURCE_EXHAUSTED
    grpc_max_concurrent_rpcs: int = 256            # calls running or queued: else RESOURCE_EXHAUSTED
    reload_model_roots: str = ""                   # extra folders (comma-separated) that the reload
                                                   #   RPC may point base paths into; "/" = anywhere
    model_load_nice: int = 2                       # a new version loads and warms up this much nicer
                                                   #   than requests run (Linux): serving gets the
                                                   #   CPU first; 0 = same priority
    model_standby_sessions: int = 1                # per model, sessions kept warm for its next version
                                                   #   of the same program (a retrain): it is restored
                                                   #   into one instead of loaded; 0 = load each anew


@dataclass
class ValidateSettings:
    """`make validate` / `imgclf validate`: the client."""

    dir: str = setting("", "images to send (.jpg/.jpeg/.png, recursively); sub-folders named after the "
                       "labels give accuracy", positional=True)
    server: str = setting("http://localhost:8501", "REST endpoint")
    grpc_server: str = setting("localhost:8500", "gRPC host:port")
    protocol: str = setting("rest", "rest | grpc (grpc needs the imgclf[grpc] extra: TensorFlow)",
                            choices=("rest", "grpc"))
    model_name: str = setting(contract.DEFAULT_MODEL_NAME, "the model asked")
    version: int | None = setting(None, "ask this version (not with --label)")
    label: str | None = setting(None, "or the version with this label: stable, canary")
    batch: int = setting(16, "images per request", check=positive)
    concurrency: int = setting(4, "requests in flight", check=positive)
    output: str = setting("", "write every score to this results.csv or results.jsonl")
    all_classes: bool = setting(False, "print one line per class, not only the top one",
                                make="ALL", flag="--all", switch=True)
    min_accuracy: float | None = setting(None, "exit 1 when accuracy is below this fraction", check=fraction)
    wait: float = setting(60.0, "seconds to wait for the model to be AVAILABLE", check=non_negative)
    timeout: float = setting(30.0, "per request, seconds", check=non_negative)
    retries: int = setting(5, "retries with backoff on connection errors and 503/UNAVAILABLE",
                           check=non_negative)
    progress: bool = setting(True, "progress on stderr: a bar on a terminal, a line per tenth of the "
                             "images in a log", switch=True)
    pdf_renderer: str = setting(DEFAULT_PDF_RENDERER, "how PDFs in DIR become pages (docs/pdfs.md)")
    pdf_cache: str = setting("", 'rendered pages; "" = ~/.cache/imgclf/pages')
    shard: str = setting("", "i/N: send only shard i of N (0 <= i < N) of DIR's files, chosen by a hash of "
                         "each file's path relative to DIR; with OUTPUT, writes <name>.shard-<i>-of-<N><ext> "
                         "for `imgclf merge-results` (docs/scale-out.md)", check=shard_spec)


@dataclass
class MergeSettings:
    """`make merge-results` / `imgclf merge-results`: the outputs of `validate --shard i/N` as one."""

    output: str = setting("", "the merged .csv or .jsonl; its shards are read from beside it "
                          "(<name>.shard-<i>-of-<N><ext>)", required=True)
    inputs: tuple[str, ...] = setting((), "shard outputs to merge instead, space-separated",
                                      make="SHARD_FILES")


@dataclass
class PagesSettings:
    """`make pages` / `imgclf pages`: page 1 of every PDF under PDFS -> OUT/<folder>/<sha1>.jpg.
    The limits also hold for the PDFs that `make train` and `make validate` render."""

    pdfs: str = setting("", "folder of PDFs, searched recursively")
    out: str = setting("", "images go to OUT/<same sub-folder>/<sha1 of the PDF>.jpg")
    renderer: str = setting(DEFAULT_PDF_RENDERER, "imagemagick (Ghostscript + ImageMagick 6) | pdfium")
    blank_bytes: int = setting(3000, "a page whose JPEG is smaller is blank, dropped (the original's rule); "
                               "0 keeps every page")
    workers: int = setting(0, "rendering processes; 0 = one per core")
    timeout: float = setting(120.0, "seconds one PDF may take; then its worker is killed")
    max_pages: int = setting(100_000, "PDFs with more pages are refused (0 = no limit)")
    max_page_inches: float = setting(100.0, "page 1's longer side (0 = no limit)")
    memory_mb: int = setting(2048, "address space of each worker and its programs")
    progress: bool | None = setting(None, "bar on a terminal; else a line per LOG_EVERY files; 0: none")
    log_every: int = setting(500, "files per progress line in a log")


@dataclass
class DemoSettings:
    """`make demo` / `imgclf demo`: sample pages -> train (scratch) -> local server -> validate."""

    workdir: str = setting("./demo-output", "pages, models and results go here", make="DEMO_DIR")
    per_class: int = setting(60, "training pages per class", make="DEMO_PER_CLASS")
    held_out_per_class: int = setting(20, "pages per class the model never sees", make="DEMO_HELD_OUT")
    image_size: int = setting(0, "0 = the scratch backbone's own size")
    protocol: str = setting("rest", "how the validation talks to the server", choices=("rest", "grpc"))


@dataclass
class RolloutSettings:
    """`make publish|rollback|pin|unpin|status|clean-staged`."""

    models: str = setting("./models", "folder holding <model-name>/<version>/")
    model_name: str = setting(contract.DEFAULT_MODEL_NAME, "the model")
    staged: str = setting("", 'staged folder to publish ("" = the only one in the base path)',
                          commands=("publish",))
    validate: str = setting("", "held-out folder (one sub-folder per class) the gate also measures on",
                            commands=("publish",))
    tolerance: float = setting(0.01, "how much lower the candidate's accuracy may be than the served one's",
                               commands=("publish",))
    force: bool = setting(False, "publish: even when the gate refuses; rollback: also the only published "
                          "version", commands=("publish", "rollback"))
    models_config: str = setting("serving/models.config", "the model config file the servers poll, "
                                 "written by pin/unpin", commands=("pin", "unpin", "rollback", "status"))
    serving_models: str = setting("/models", "MODELS as the server sees it, written into the config: the "
                                  "official image's /models, which the local server maps onto its MODELS",
                                  commands=("pin", "unpin"))
    version: int | None = setting(None, "the version to serve, labelled stable", commands=("pin",),
                                  required=True)
    canary: int | None = setting(None, "also serve this version, labelled canary", commands=("pin",))
    wait: float = setting(60.0, "seconds to wait for the server to serve the versions and labels",
                          commands=("pin",))
    server: str = setting("http://localhost:8501", "the server's REST endpoint", commands=("pin", "status"))
    docker_service: str = setting("serving", "compose service whose container health to show "
                                  "('' = skip Docker)", commands=("status",))
    json: bool = setting(False, "print the status as JSON", commands=("status",))
    older_than: float = setting(3600.0, "clean-staged removes staged folders unchanged this many seconds "
                                "(a running export keeps changing its folder)", commands=("clean-staged",))
    sealed: bool = setting(False, "clean-staged also removes complete exports the gate refused (else only "
                           "those killed runs left)", commands=("clean-staged",))


@dataclass
class DrillSettings:
    """`make drill` / `imgclf drill`: publish and roll back under continuous traffic."""

    clients: int = setting(2, "threads sending predict requests non-stop")
    publishes: int = setting(5, "new versions published during the drill")
    rollbacks: int = setting(2, "of those, how many are then rolled back")
    steady_seconds: float = setting(3.0, "seconds of traffic without changes, before and after")
    poll_seconds: float = setting(0.2, "the drill server's --file_system_poll_wait_seconds")
    switch_timeout: float = setting(60.0, "seconds a change may take to reach the answers")
    workdir: str = setting("", "where the drill's base path goes ('' = a temporary folder)")
    model: str = setting("", "a version folder every drill version carries and runs, so swaps cost what "
                         "it costs ('' = tiny models only)")
    session_config: str = setting(SESSION_CONFIG_FILE, "the server's --tensorflow_session_config_file, as "
                                  "compose's serving gets it (skipped when this default is absent; '' = none)")
    output: str = setting("", "also write the figures as JSON to this file")


@dataclass
class StackSettings:
    """`make e2e` / `imgclf e2e` and the Docker runner of `make train|validate` (`imgclf run`)."""

    runner: str = setting("", 'docker | local | swarm (one-off jobs on the swarm DOCKER_HOST manages: '
                          'docs/scale-out.md) | "" = docker when an engine answers',
                          choices=("", "docker", "local", "swarm"), commands=("run",), environment=True)
    base_image: str = setting("", '"" = python:3.11-slim-bookworm, or one made with debootstrap where no '
                              "registry is reachable", commands=("e2e",), environment=True)
    serving_image: str = setting("", '"" = tensorflow/serving:2.20.0, or the stand-in built from serving/ '
                                 "where it cannot be pulled", commands=("e2e",), environment=True)
    ca_bundle: str = setting("", 'CA file pip needs in the build stages ("" = $PIP_CERT, else the cert pip '
                             "is configured with)", commands=("e2e",), environment=True)
    per_class: int = setting(24, "generated sample images per class", commands=("e2e",))
    epochs: int = setting(2, "per training in the e2e", commands=("e2e",))
    image_size: int = setting(96, "the e2e trains the scratch backbone small", commands=("e2e",))
    timeout: float = setting(300.0, "seconds any one wait of the e2e may take", commands=("e2e",))
    keep: bool = setting(False, "leave the e2e's work folder (data, models, logs)", commands=("e2e",))


BENCH_PARTS = ("bytes", "training", "serving", "rollout", "memory", "batching")


def bench_parts(text: str) -> str:
    unknown = sorted(set(filter(None, text.split(","))) - set(BENCH_PARTS))
    if unknown or not text.strip(","):
        raise ValueError(f"give a comma-separated list of {', '.join(BENCH_PARTS)}")
    return text


@dataclass
class AbuseSettings:
    """`make abuse` / `imgclf abuse`: a good client's latency and success while the local server
    is attacked, as ratios to a quiet server."""

    model: str = setting("", "a version folder to serve ('' = a marker model that decodes each image)")
    server: str = setting("", "a running server's REST URL on this machine instead of starting one "
                          "('' = start one)")
    seconds: float = setting(10.0, "seconds of good-client traffic per measurement")
    idle: int = setting(10000, "idle connections held open (0 = skip)")
    half_sent: int = setting(10000, "connections that never finish their request headers (0 = skip)")
    slow_bodies: int = setting(1000, "connections sending a body a byte every few seconds (0 = skip)")
    oversized_threads: int = setting(2, "threads sending oversized requests (0 = skip)")
    output: str = setting("", "also write the figures as JSON to this file")


@dataclass
class BenchSettings:
    """`make bench` / `imgclf bench`: the product's figures, as ratios measured side by side."""

    parts: str = setting("bytes,training,serving,rollout,memory", "which figures, comma-separated, of: "
                         + ", ".join(BENCH_PARTS) + " (batching: single-image REST requests/s with and "
                         "without --enable_batching)", check=bench_parts)
    model: str = setting("", "a version folder (MODELS/<name>/<version>) that serving, rollout and batching "
                         "use ('' = one trained on DATA)")
    output_dir: str = setting("bench-output", "where bench.json and bench.png go", make="BENCH_DIR")
    quick: bool = setting(False, "tiny pages, a tiny model, one setting each: seconds, for CI")
    module: str = setting("", "a local feature-vector module folder ('' = the scratch backbone, frozen: "
                          "the cache comparison needs a fixed backbone)")
    data: str = setting("", "class folders, or a folder holding train/ and validation/ ('' = generated "
                        "sample pages)")
    epochs: int = setting(10, "of each of the two training runs compared")
    serving_images: int = setting(150, "images sent per throughput measurement (the validation pages, cycled)")
    memory_files: str = setting("200,20000", "comma-separated file counts validated for the client's peak "
                                "memory")
    publishes: int = setting(3, "versions the rollout drill publishes under traffic")


@dataclass
class KubeSettings:
    """`make k8s-check` / `imgclf k8s-check`: render the Kubernetes manifests and check them offline."""

    folders: tuple[str, ...] = setting((), "kustomizations, space-separated (default: every one under "
                                       "deploy/kubernetes)", make="K8S_DIRS", positional=True)


SWARM_COMMANDS = ("swarm-deploy", "swarm-status", "swarm-down")


@dataclass
class SwarmSettings:
    """`make swarm-deploy | swarm-status | swarm-down` (deploy/swarm on the swarm whose manager
    DOCKER_HOST names), and the one-off jobs of `make train|validate RUNNER=swarm`, which read the
    settings marked environment from the environment (Make passes its variables there)."""

    stack: str = setting("imgclf", "the stack's name (its service is STACK_serving)", environment=True)
    replicas: int = setting(2, "serving tasks", check=positive)
    models: str = setting("./models", "the shared models folder, as this host mounts it", environment=True)
    models_device: str = setting("", 'the same folder\'s path on every node ("" = MODELS made absolute)')
    nfs: str = setting("", "server:/export/models: every node's engine mounts it (MODELS_DEVICE unused)")
    nfs_options: str = setting("nfsvers=4.1,hard,acdirmin=1,acdirmax=1", "mount options with NFS "
                               "(docs/scale-out.md: why the short directory cache)")
    model_name: str = setting(contract.DEFAULT_MODEL_NAME, "the model served")
    serving_image: str = setting("", '"" = tensorflow/serving:2.20.0; every node must be able to pull it')
    balancer_image: str = setting("", '"" = imgclf-balancer:<version>, built here from deploy/balancer '
                                  "when missing (only this manager runs it)")
    trainer_image: str = setting("", 'RUNNER=swarm train runs it; every node must be able to pull it '
                                 '("" = imgclf-trainer:<tag>)', flag=None, environment=True)
    client_image: str = setting("", 'RUNNER=swarm validate runs it ("" = imgclf-client:<tag>)', flag=None,
                                environment=True)
    bind: str = setting("127.0.0.1", "the balancer's address on this host; 0.0.0.0 or an address publishes it")
    rest_port: int = setting(8501, "the balancer's REST port")
    grpc_port: int = setting(8500, "the balancer's gRPC port")
    monitor_port: int = setting(8404, "the balancer's /healthz and /metrics", make="BALANCER_MONITOR_PORT")
    serving_cpus: str = setting("2", "CPU limit per replica")
    serving_memory: str = setting("2G", "memory limit per replica")
    serving_cpus_reserved: str = setting("0.25", "CPU a node must have free to take a replica")
    serving_memory_reserved: str = setting("512M", "memory a node must have free to take a replica")
    network: str = setting("imgclf-serving", "the attachable overlay network", environment=True)
    wait: float = setting(600.0, "seconds deploy (and a RUNNER=swarm job) may take", environment=True)
    shards: int = setting(1, "RUNNER=swarm validate runs this many jobs, --shard i/SHARDS each, and merges "
                          "their OUTPUTs", flag=None, environment=True, check=positive)
    json: bool = setting(False, "print the status as JSON", commands=("swarm-status",))


@dataclass
class SwarmE2ESettings:
    """`make swarm-e2e` / `imgclf swarm-e2e`: deploy/swarm on a real multi-node swarm of Docker
    engines in containers, under traffic. Images (BASE_IMAGE, SERVING_IMAGE, CA_BUNDLE) as `make e2e`."""

    replicas: int = setting(2, "serving replicas deployed (then scaled 2 -> 1 -> 3)", check=positive)
    rest_clients: int = setting(2, "REST threads of the traffic (plus one gRPC channel)", check=positive)
    pause: float = setting(0.04, "seconds each traffic thread waits between requests", check=non_negative)
    retries: int = setting(5, "per request, with backoff, counted", check=non_negative)
    spread_seconds: float = setting(15.0, "traffic over which each replica's share is counted")
    allowed_failures_on_node_loss: int = setting(0, "failed requests (after retries) tolerated when a node dies")
    batch_files: int = setting(4000, "files `imgclf validate` sends through the balancer (1 and 3 replicas)",
                               check=positive)
    jobs: bool = setting(True, "also `make train|validate RUNNER=swarm` (pushes the trainer and client "
                         "images: ~1.6 GB more to distribute)")
    per_class: int = setting(24, "generated training images per class")
    epochs: int = setting(2, "of each training")
    image_size: int = setting(64, "of the scratch backbone")
    timeout: float = setting(600.0, "seconds any one wait may take")
    keep: bool = setting(False, "leave the work folder")
    output: str = setting("", "also write every figure as JSON to this file")


# The commands whose flags and Make variables come from a settings class (`imgclf <command>`).
COMMANDS = {
    "train": TrainSettings, "evaluate": EvaluateSettings, "serve": ServeSettings, "validate": ValidateSettings, "demo": DemoSettings,
    "pages": PagesSettings, "publish": RolloutSettings, "rollback": RolloutSettings, "pin": RolloutSettings,
    "unpin": RolloutSettings, "status": RolloutSettings, "clean-staged": RolloutSettings,
    "drill": DrillSettings,
    "bench": BenchSettings, "abuse": AbuseSettings, "e2e": StackSettings, "run": StackSettings, "k8s-check": KubeSettings,
    "merge-results": MergeSettings, **{command: SwarmSettings for command in SWARM_COMMANDS},
    "swarm-e2e": SwarmE2ESettings,
}


# --- the road from a field to a flag and a Make variable ---------------------------------------
@dataclass(frozen=True)
class Knob:
    """One field of a settings class as the command line and Make see it."""

    name: str
    type: str
    default: object
    help: str
    flag: str | None       # None: not on the command line
    make: str | None       # None: no Make variable
    meta: dict

    @property
    def boolean(self) -> bool:
        return self.type == "bool"


def knobs(settings_class, command: str | None = None) -> list[Knob]:
    """The fields of a settings class that `command` takes (all of them when command is None)."""
    found = []
    for f in dataclasses.fields(settings_class):
        meta = dict(f.metadata)
        if command and meta.get("commands") and command not in meta["commands"]:
            continue
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        make = None if flag is None else meta.get("make", f.name.upper())
        found.append(Knob(f.name, f.type, f.default, meta.get("help", ""), flag, make, meta))
    return found


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise argparse.ArgumentTypeError(f"expected 1/0, true/false or yes/no, got {text!r}")


def _optional(kind):
    return lambda text: None if text.strip().lower() in ("", "none") else kind(text)


# A tuple of texts takes any number of values: `folders a b c`, `--names a b`.
_FLAG_TYPES = {"str": str, "tuple[str, ...]": str, "int": int, "float": float, "str | None": _optional(str),
               "float | None": _optional(float), "int | None": _optional(int), "bool | None": _optional(parse_bool)}


def _checked(kind, check: Callable | None):
    if check is None:
        return kind

    def parse(text: str):
        value = kind(text)
        try:
            return value if value is None else check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text}: {error}") from None
    return parse


def _shown(default) -> str:
    return str(int(default)) if isinstance(default, bool) else repr(default)


def _flag_options(knob: Knob, omit_unset: bool) -> dict:
    shown = "" if knob.meta.get("positional") or knob.meta.get("required") else f" (default {_shown(knob.default)})"
    options = dict(dest=knob.name, default=argparse.SUPPRESS if omit_unset else knob.default,
                   help=f"{knob.make + ': ' if knob.make else ''}{knob.help}{shown}")
    if knob.boolean and knob.meta.get("switch"):
        options.update(action=argparse.BooleanOptionalAction)
    elif knob.boolean:
        options.update(type=parse_bool, nargs="?", const=True, metavar="1|0")
    else:
        options.update(type=_checked(_FLAG_TYPES[knob.type], knob.meta.get("check")))
    if knob.type.startswith("tuple["):
        options["nargs"] = "*"
    if knob.meta.get("choices"):
        options["choices"] = knob.meta["choices"]
    if knob.meta.get("required"):
        options.update(required=True, default=None)
    return options


def add_settings_flags(parser, settings_class, command: str | None = None, omit_unset: bool = False) -> None:
    """One flag per field of a settings class (the fields `command` takes): `learning_rate` becomes
    --learning-rate. Booleans take a value (`--fine-tune 1`, what the Makefile passes) or none
    (`--force`), and `--no-<flag>`; `switch=True` booleans take none (`--all`, `--no-all`). Fields
    marked environment=True default to the environment variable of their Make name. With
    omit_unset a flag not given is left out of the parsed namespace, so a caller can tell given from
    default."""
    for knob in knobs(settings_class, command):
        if knob.flag is None:
            continue
        knob = dataclasses.replace(knob, default=_environment_default(knob))
        options = _flag_options(knob, omit_unset)
        if knob.meta.get("positional"):   # required, as positional arguments are
            parser.add_argument(knob.name, metavar=knob.make or knob.name.upper(),
                                **{k: v for k, v in options.items() if k not in ("dest", "default")})
            continue
        parser.add_argument(knob.flag, **options)
        if knob.boolean and not knob.meta.get("switch"):
            parser.add_argument("--no-" + knob.flag[2:], dest=knob.name, action="store_const", const=False,
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_setting_flag(parser, settings_class, name: str) -> None:
    """The flag of one field of a settings class, made as add_settings_flags makes it, for a command
    line that declares its other flags itself."""
    knob = next(k for k in knobs(settings_class) if k.name == name)
    parser.add_argument(knob.flag, **_flag_options(knob, omit_unset=False))


def settings_parser(settings_class, command: str, description: str, settings_command: str | None = None,
                    omit_unset: bool = False, **parser_options) -> argparse.ArgumentParser:
    """The parser of `imgclf <command>`: its flags are the settings class's fields (add_settings_flags;
    `settings_command` when the class serves several commands under one name, as StackSettings)."""
    parser = argparse.ArgumentParser(prog=f"imgclf {command}", description=description, **parser_options)
    add_settings_flags(parser, settings_class, settings_command or command, omit_unset)
    return parser


def _environment_default(knob: Knob):
    if knob.meta.get("environment") and knob.make and knob.make in os.environ:
        return os.environ[knob.make]
    return knob.default


def from_environment(settings_class):
    """The class's defaults, with its environment=True fields taken from the environment."""
    return settings_class(**{k.name: _environment_default(k) for k in knobs(settings_class)
                             if k.meta.get("environment")})


def to_dict(settings) -> dict:
    return dataclasses.asdict(settings)
