"""Every tunable of the product, with its default and what it means: the one place to look.

Each field maps to a CLI flag of the same name (``--learning-rate``) and a Make variable in upper
case (``LEARNING_RATE``). The Makefile passes a variable only when it is set, so the defaults here
are the only defaults. Plain Python: importable without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from imgclf import contract

# A good ImageNet feature-vector module for users with internet. It fixes 224x224 RGB in [0, 1].
DEFAULT_HUB_MODULE = "https://tfhub.dev/tensorflow/efficientnet/lite0/feature-vector/2"
SCRATCH_MODULE = "scratch"   # the small built-in backbone trained from scratch (offline fallback)


@dataclass
class TrainSettings:
    """`make train` / `imgclf train`."""

    data: str = ""                       # DATA: one sub-folder of images per class
    module: str = DEFAULT_HUB_MODULE     # MODULE: TF Hub handle/URL, local module path, or "scratch"
    model_name: str = contract.DEFAULT_MODEL_NAME   # MODEL_NAME
    models: str = "./models"             # MODELS: base folder holding <model_name>/<version>/
    epochs: int = 20                     # EPOCHS: upper bound; early stopping usually ends sooner
    batch_size: int = 32                 # BATCH_SIZE
    learning_rate: float = 0.005         # LEARNING_RATE: for the head (Adam)
    image_size: int = 0                  # IMAGE_SIZE: 0 = the module's own size (224 for scratch)
    fine_tune: bool = False              # FINE_TUNE: also train the backbone, at fine_tune_learning_rate
    fine_tune_learning_rate: float = 1e-5   # FINE_TUNE_LEARNING_RATE
    augment: bool = False                # AUGMENT: random crops/flips/contrast (bypasses the cache)
    validation_percent: int = 15         # VALIDATION_PERCENT: by hash of the file name
    test_percent: int = 15               # TEST_PERCENT: by hash of the file name
    seed: int = 42                       # SEED: shuffling and initialisation
    dropout: float = 0.2                 # DROPOUT: before the softmax head
    label_smoothing: float = 0.1         # LABEL_SMOOTHING
    patience: int = 3                    # PATIENCE: epochs without a better validation loss
    grayscale: bool = True               # GRAYSCALE: drop colour in preprocessing (a shortcut cue)
    cache_dir: str = ""                  # CACHE_DIR: feature cache; "" = <models>/.cache/features
    warmup_records: int = 8              # WARMUP_RECORDS: real images replayed by the server on load
    log_dir: str = ""                    # LOG_DIR: TensorBoard logs; "" = <models>/.logs/<model_name>
    progress: bool = True                # PROGRESS: progress bar per epoch


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


@dataclass
class RolloutSettings:
    """`make publish|rollback|pin|unpin|status`."""

    models: str = "./models"                 # MODELS
    model_name: str = contract.DEFAULT_MODEL_NAME   # MODEL_NAME
    tolerance: float = 0.01                  # TOLERANCE: how much worse a candidate may be
    force: bool = False                      # FORCE: publish even when the gate refuses
    validate: str = ""                       # VALIDATE: extra held-out folder for the gate
    models_config: str = "serving/models.config"   # written by pin/unpin, polled by both servers
