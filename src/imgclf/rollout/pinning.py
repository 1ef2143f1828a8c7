"""Pin and unpin: the model config file (text-format tensorflow.serving.ModelServerConfig) that both
the official server and the local one poll (`--model_config_file_poll_wait_seconds`).

Pinning serves exactly the stable version (and a canary beside it) under `specific` version policy,
with `stable`/`canary` version labels; unpinning returns to TF Serving's default, the highest version
only. Only this model's entry is rewritten; other models in the file are kept as they are.

TF Serving refuses a label that points at a version which is not AVAILABLE yet. So, when the server
can be reached, pin writes the new policy first, waits until the versions are AVAILABLE, and only
then writes the labels.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from imgclf.client.base import ClientError
from imgclf.client.rest import RestClient
from imgclf.model_status import ModelNotAvailable, ServerUnreachable, fetch_model_status
from imgclf.model_store import ModelStore
from imgclf.polling import poll

STABLE_LABEL = "stable"
CANARY_LABEL = "canary"
MODEL_PLATFORM = "tensorflow"


class PinError(RuntimeError):
    """A pin that cannot be made; the message says which version or file."""


def read_models_config(path: str | os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """The config in a file, or an empty one when the file does not exist."""
    config = model_server_config_pb2.ModelServerConfig()
    path = Path(path)
    if path.exists():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as error:
            raise PinError(f"{path}: not a text-format ModelServerConfig ({error})") from error
    return config


def write_models_config(path: str | os.PathLike, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Replaces the file atomically: a server polling it never reads half a config.

    The folder must be what a container mounts (not the file alone): a bind-mounted single file
    keeps pointing at the old contents after a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text_format.MessageToString(config))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_entry(config: model_server_config_pb2.ModelServerConfig, model_name: str,
                serving_base_path: str) -> model_server_config_pb2.ModelConfig:
    """This model's entry in the config (added when missing), pointing at serving_base_path."""
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            break
    else:
        entry = config.model_config_list.config.add(name=model_name)
    entry.base_path = serving_base_path
    entry.model_platform = MODEL_PLATFORM
    return entry


def labels_of(config: model_server_config_pb2.ModelServerConfig, model_name: str) -> dict[str, int]:
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            return dict(entry.version_labels)
    return {}


def pinned_versions(config: model_server_config_pb2.ModelServerConfig, model_name: str) -> list[int] | None:
    """The versions a `specific` policy names, or None when the model is not pinned."""
    for entry in config.model_config_list.config:
        if entry.name == model_name and entry.model_version_policy.WhichOneof("policy_choice") == "specific":
            return sorted(entry.model_version_policy.specific.versions)
    return None


def set_pinned(entry: model_server_config_pb2.ModelConfig, labels: dict[str, int]) -> None:
    entry.model_version_policy.Clear()
    entry.model_version_policy.specific.versions.extend(sorted(set(labels.values())))
    entry.ClearField("version_labels")


def set_latest(entry: model_server_config_pb2.ModelConfig) -> None:
    entry.model_version_policy.Clear()
    entry.model_version_policy.latest.num_versions = 1
    entry.ClearField("version_labels")


def available_versions(server: str, model_name: str, timeout: float = 5.0) -> set[int] | None:
    """Versions the server reports AVAILABLE, or None when it cannot be reached."""
    try:
        return set(fetch_model_status(server, model_name, timeout).available)
    except ModelNotAvailable:
        return set()
    except ServerUnreachable:
        return None


def pin(config_path: str | os.PathLike, model_name: str, store: ModelStore, serving_base_path: str, stable: int, canary: int | None = None, server: str = "",
        wait: float = 60.0, say: Callable[[str], None] = print) -> dict[str, int]:
    """Serves `stable` (and `canary`) only, labelled; returns the labels written."""
    labels = {STABLE_LABEL: int(stable)}
    if canary is not None:
        labels[CANARY_LABEL] = int(canary)
    on_disk = store.versions()
    for label, version in labels.items():
        if version not in on_disk:
            raise PinError(f"{label} version {version} is not published in {store.location} "
                           f"(published: {on_disk or 'none'})")

    config = read_models_config(config_path)
    entry = model_entry(config, model_name, serving_base_path)
    set_pinned(entry, labels)
    available = available_versions(server, model_name) if server else None
    if available is None:
        entry.version_labels.update(labels)
        write_models_config(config_path, config)
        say(f"wrote {config_path}: {model_name} pinned to {labels} "
            f"(server {server or '-'} not reachable: it applies the pin when it reads the file)")
        return labels

    hint = (f"is the server started with --model_config_file={config_path} and "
            f"--model_config_file_poll_wait_seconds > 0?")
    entry.version_labels.update({k: v for k, v in labels.items() if v in available})
    write_models_config(config_path, config)
    say(f"wrote {config_path}: {model_name} serves versions {sorted(set(labels.values()))}; "
        f"waiting for them to be AVAILABLE on {server}")
    _wait_until(lambda: set(labels.values()) <= (available_versions(server, model_name) or set()), wait,
                f"versions {sorted(set(labels.values()))} not AVAILABLE on {server} after {wait:g}s "
                f"(labels not written yet); {hint}")
    entry.version_labels.update(labels)
    write_models_config(config_path, config)
    _wait_until(lambda: all(label_version(server, model_name, label) == version
                            for label, version in labels.items()), wait,
                f"{server} does not answer labels {labels} after {wait:g}s; {hint}")
    say(f"wrote {config_path}: labels {labels}; the server answers them")
    return labels


def label_version(server: str, model_name: str, label: str, timeout: float = 5.0) -> int | None:
    """The version the server resolves a label to, or None. Asked through metadata: TF Serving's
    status call ignores labels and lists every version, while metadata resolves the label."""
    client = RestClient(server, model_name, label=label, timeout=timeout, retries=0)
    try:
        return client.metadata_version()
    except (ClientError, ValueError):
        return None
    finally:
        client.close()


def _wait_until(condition: Callable[[], bool], wait: float, failure: str) -> None:
    if not poll(condition, wait, 0.25):
        raise PinError(failure)


def unpin(config_path: str | os.PathLike, model_name: str, serving_base_path: str,
          say: Callable[[str], None] = print) -> None:
    """Back to the default policy: the highest version only, no labels."""
    config = read_models_config(config_path)
    set_latest(model_entry(config, model_name, serving_base_path))
    write_models_config(config_path, config)
    say(f"wrote {config_path}: {model_name} serves its highest version (no labels)")
