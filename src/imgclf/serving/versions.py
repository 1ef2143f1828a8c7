"""Which versions of each model are served, and how they change: TF Serving's file-system source,
availability-preserving policy, version labels and status monitor, in one small class per model.

Every `--file_system_poll_wait_seconds` each model's base path is listed through the model store
(imgclf.model_store: numeric folders only); the version policy picks the aspired versions; new ones are loaded and warmed up
on the poller thread while the current ones keep serving; the table of servable versions is then
replaced in one assignment, so a request that already holds a version finishes on it. A version
that fails to load ends in END with its error and the previous one keeps serving.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from tensorflow_serving.apis import get_model_status_pb2

from imgclf.model_store import open_store
from imgclf.serving.config import ModelSpecConfig
from imgclf.serving.errors import from_exception, invalid_argument, not_found

log = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"

Loader = Callable[[str, int, object], object]   # (model name, version, path) -> servable


@dataclass(frozen=True)
class VersionState:
    state: str
    error_code: str = "OK"
    error_message: str = ""


class ModelVersions:
    """One model's versions. `poll()` runs on one thread at a time; everything else may be called
    from any request thread."""

    def __init__(self, spec: ModelSpecConfig, loader: Loader):
        self._spec = spec
        self._loader = loader
        self._lock = threading.Lock()          # guards the small dicts below, never held while loading
        self._poll_lock = threading.Lock()     # one poll cycle at a time
        self._serving: dict[int, object] = {}  # replaced, never mutated: readers take a snapshot
        self._states: dict[int, VersionState] = {}
        self._failed: dict[int, tuple] = {}     # version -> folder fingerprint when it failed
        self._labels: dict[str, int] = {}
        self._label_warnings: set[tuple[str, int]] = set()   # logged once per (label, version)
        self._missing_base_path_logged = False

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def spec(self) -> ModelSpecConfig:
        return self._spec

    def update_spec(self, spec: ModelSpecConfig) -> None:
        """A new config for this model (policy, labels, base path); takes effect on the next poll."""
        self._spec = spec

    # --- reading -----------------------------------------------------------------------------
    def states(self) -> dict[int, VersionState]:
        with self._lock:
            return dict(self._states)

    def serving_versions(self) -> list[int]:
        return sorted(self._serving)

    def labels(self) -> dict[str, int]:
        with self._lock:
            return dict(self._labels)

    def resolve(self, version: int | None = None, label: str | None = None):
        """The servable for a request: a version, a label, or the highest served version."""
        if version is not None and label is not None:
            raise invalid_argument(f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
        if label is not None:
            with self._lock:
                if label not in self._labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                version = self._labels[label]
        serving = self._serving
        if version is None:
            if not serving:
                raise not_found(f"Servable not found for request: Latest({self.name})")
            return serving[max(serving)]
        if version not in serving:
            raise not_found(f"Servable not found for request: Specific({self.name}, {version})")
        return serving[version]

    # --- changing ----------------------------------------------------------------------------
    def poll(self) -> None:
        """One cycle: list the base path, load what is aspired and new, unload what is not."""
        with self._poll_lock:
            spec = self._spec
            on_disk = open_store(spec.base_path).versions()
            self._log_missing(spec, on_disk)
            aspired = spec.policy.choose(on_disk)
            with self._lock:
                # A failed version is retried only when its folder changed (a copy that was still
                # being written) or went away and came back.
                self._failed = {v: mark for v, mark in self._failed.items()
                                if v in aspired and folder_fingerprint(spec, v) == mark}
            self._apply(aspired, spec)
            self._update_labels(spec)

    def unload_all(self) -> None:
        """The model left the config: its versions stop serving (state END)."""
        with self._poll_lock:
            for version in sorted(self._serving):
                self._unload(version)

    def _apply(self, aspired: list[int], spec: ModelSpecConfig) -> None:
        # TF Serving's AvailabilityPreservingPolicy, one action at a time: unload a non-aspired
        # version when that cannot leave the model without a served version; otherwise load the
        # highest new aspired version.
        while True:
            serving = self._serving
            unaspired = sorted(v for v in serving if v not in aspired)
            has_aspired_serving = any(v in serving for v in aspired)
            if unaspired and (not aspired or has_aspired_serving or len(unaspired) > 1):
                self._unload(unaspired[0])
                continue
            new = [v for v in aspired if v not in serving and v not in self._failed]
            if not new:
                return
            self._load(max(new), spec)

    def _load(self, version: int, spec: ModelSpecConfig) -> None:
        path = open_store(spec.base_path).version_path(version)
        self._set_state(version, VersionState(START))
        self._set_state(version, VersionState(LOADING))
        log.info("Loading servable version {name: %s version: %d} from %s", spec.name, version, path)
        try:
            servable = self._loader(spec.name, version, path)
        except Exception as error:  # any load failure is reported in the status, not raised
            status = from_exception(error)
            log.error("Loading servable version {name: %s version: %d} failed: %s: %s",
                      spec.name, version, status.code, status.message)
            with self._lock:
                self._failed[version] = folder_fingerprint(spec, version)
                self._states[version] = VersionState(END, status.code, status.message)
            return
        with self._lock:
            self._serving = {**self._serving, version: servable}
            self._states[version] = VersionState(AVAILABLE)
        log.info("Successfully loaded servable version {name: %s version: %d}", spec.name, version)

    def _unload(self, version: int) -> None:
        self._set_state(version, VersionState(UNLOADING))
        with self._lock:
            servable = self._serving.get(version)
            self._serving = {v: s for v, s in self._serving.items() if v != version}
            self._states[version] = VersionState(END)
        # Requests that already hold the servable keep it alive until they finish; a batching
        # wrapper lets its threads go once its queue is drained.
        close = getattr(servable, "close", None)
        if close is not None:
            close()
        log.info("Unloaded servable version {name: %s version: %d}", self.name, version)

    def _set_state(self, version: int, state: VersionState) -> None:
        with self._lock:
            self._states[version] = state

    def _update_labels(self, spec: ModelSpecConfig) -> None:
        # As TF Serving: a label may only point at an AVAILABLE version. Until it does, a label
        # keeps its previous version (or stays unknown).
        wanted = spec.labels
        with self._lock:
            labels = {label: v for label, v in self._labels.items() if label in wanted}
            for label, version in wanted.items():
                if version in self._serving:
                    labels[label] = version
                elif labels.get(label) != version and (label, version) not in self._label_warnings:
                    self._label_warnings.add((label, version))
                    log.warning("Request to assign label %s to version %d of model %s, which is not currently "
                                "available for inference", label, version, spec.name)
            self._labels = labels

    def _log_missing(self, spec: ModelSpecConfig, on_disk: list[int]) -> None:
        if not on_disk and not self._missing_base_path_logged:
            log.warning("No versions of servable %s found under base path %s", spec.name, spec.base_path)
        self._missing_base_path_logged = not on_disk


def folder_fingerprint(spec: ModelSpecConfig, version: int) -> tuple:
    """What the store says of a version folder's files: changes when they change."""
    return open_store(spec.base_path).fingerprint(version)


class ServerCore:
    """All served models, their poller threads, and config-file reloads."""

    def __init__(self, specs: Iterable[ModelSpecConfig], loader: Loader, poll_seconds: float = 1.0,
                 reload_config: Callable[[], list[ModelSpecConfig]] | None = None,
                 config_poll_seconds: float = 0.0):
        self._loader = loader
        self._poll_seconds = poll_seconds
        self._reload_config = reload_config
        self._config_poll_seconds = config_poll_seconds
        self._models: dict[str, ModelVersions] = {s.name: ModelVersions(s, loader) for s in specs}
        self._retired: dict[str, ModelVersions] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._models_lock = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------
    def load_initial(self) -> None:
        """Load every model's aspired versions once, before the ports open (as the real server)."""
        for model in list(self._models.values()):
            model.poll()

    def start(self) -> None:
        if self._poll_seconds > 0:
            self._spawn("version-poller", self._poll_loop, self._poll_seconds)
        if self._reload_config is not None and self._config_poll_seconds > 0:
            self._spawn("config-poller", self._config_loop, self._config_poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _spawn(self, name: str, target, interval: float) -> None:
        thread = threading.Thread(target=target, args=(interval,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for model in list(self._models.values()):
                try:
                    model.poll()
                except Exception:  # a poll must never kill the poller
                    log.exception("Polling model %s failed", model.name)

    def _config_loop(self, interval: float) -> None:
        last_error = None
        while not self._stop.wait(interval):
            try:
                self.apply_config(self._reload_config())
                last_error = None
            except Exception as error:
                if str(error) != last_error:     # once per distinct problem, not every poll
                    log.error("Model config reload failed; keeping the current config: %s", error)
                last_error = str(error)

    def apply_config(self, specs: list[ModelSpecConfig]) -> None:
        """Add, update or remove models to match a new model config."""
        wanted = {s.name: s for s in specs}
        with self._models_lock:
            models = dict(self._models)
            for name, spec in wanted.items():
                if name in models:
                    if models[name].spec != spec:
                        log.info("Model %s: new config %s", name, spec)
                    models[name].update_spec(spec)
                else:
                    models[name] = self._retired.pop(name, None) or ModelVersions(spec, self._loader)
                    models[name].update_spec(spec)
                    log.info("Adding model %s from %s", name, spec.base_path)
            for name in [n for n in models if n not in wanted]:
                log.info("Removing model %s", name)
                self._retired[name] = models.pop(name)
            self._models = models
        for retired in list(self._retired.values()):
            retired.unload_all()
        forget = getattr(self._loader, "forget", None)     # a loader that keeps sessions for later
        for name in list(self._retired) if forget else []:
            forget(name)
        for name in wanted:
            models[name].poll()

    # --- requests ----------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        return sorted(self._models)

    def model(self, name: str) -> ModelVersions | None:
        return self._models.get(name) or self._retired.get(name)

    def resolve(self, name: str, version: int | None = None, label: str | None = None):
        model = self._models.get(name)
        if model is None:
            if label is not None and version is None:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            which = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise not_found(f"Servable not found for request: {which}")
        return model.resolve(version, label)

    def model_status(self, name: str, version: int | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: one version, or every version the server has seen, highest first."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        model = self.model(name)
        states = model.states() if model else {}
        response = get_model_status_pb2.GetModelStatusResponse()
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            chosen = [version]
        else:
            if not states:
                raise not_found(f"Could not find any versions of model {name}")
            chosen = sorted(states, reverse=True)
        for v in chosen:
            state = states[v]
            entry = response.model_version_status.add()
            entry.version = v
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
            entry.status.error_code = _error_code_value(state.error_code)
            entry.status.error_message = state.error_message
        return response


def _error_code_value(name: str) -> int:
    from tensorflow.core.protobuf import error_codes_pb2

    return error_codes_pb2.Code.Value(name)


__all__ = ["ModelVersions", "ServerCore", "VersionState", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
