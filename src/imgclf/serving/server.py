"""The model server's request API, shared by REST and gRPC: resolve a servable from a model spec
(name, version or label, signature) and answer Predict, GetModelMetadata and GetModelStatus with
the tensorflow-serving-api protos, exactly as the real server's *_impl.cc do."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from imgclf.serving.batching import BatchingServable
from imgclf.serving.config import BatchingSettings
from imgclf.serving.errors import ServingError, from_exception, invalid_argument
from imgclf.serving.metrics import ServingMetrics
from imgclf.serving.priority import NicedCalls, niced_calls, thread_nice
from imgclf.serving.servable import Servable
from imgclf.serving.standby import StandbySessions
from imgclf.serving.versions import ServerCore
from imgclf.serving.warmup import replay_warmup

SIGNATURE_DEF_FIELD = "signature_def"
log = logging.getLogger(__name__)


class VersionLoader:
    """(name, version, path) -> a loaded, warmed-up servable (batching-wrapped when asked).
    `session_config`: the ConfigProto every version's session gets (thread pools). `load_nice`:
    how much nicer than the serving threads TensorFlow loads the version and runs its warmup
    (priority.py; with batching, the warmup runs on the batch threads, at their priority).
    `standby`: where versions of a program already loaded find a session to restore their
    variables into, and leave theirs when they go (standby.py); None: a new session each."""

    def __init__(self, batching: BatchingSettings | None = None, enable_warmup: bool = True, tags=("serve",),
                 run_batch_size: int = 0, session_config=None, load_nice: int = 0,
                 standby: StandbySessions | None = None):
        self.batching, self.enable_warmup, self.tags = batching, enable_warmup, tuple(tags)
        self.run_batch_size, self.session_config, self.load_nice = run_batch_size, session_config, load_nice
        self.standby = standby

    def __call__(self, name: str, version: int, path):
        with niced_calls(self.load_nice) as loading:
            servable, load_time = timed(loading, Servable.load, name, version, path, tags=self.tags,
                                        run_batch_size=self.run_batch_size, session_config=self.session_config,
                                        standby=self.standby)
        how = "restored into a standby session" if servable.restored_into_standby else "loaded"
        if self.batching is not None:
            servable = BatchingServable(servable, self.batching)
        records, warmup_time = 0, (0.0, 0.0)
        if self.enable_warmup:
            try:
                # A standby session is warm already (its executors were built by the version before
                # and its traffic): the first record shows that the new variables run; the rest
                # would only cost the requests beside it CPU.
                limit = 1 if servable.restored_into_standby else None
                with niced_calls(self.load_nice) as warming:
                    records, warmup_time = timed(warming, replay_warmup, servable, path, max_records=limit)
            except BaseException:
                getattr(servable, "close", lambda: None)()   # a batching wrapper's threads
                raise
        # Where a swap's time goes (rename -> answering): both parts compete with serving for the
        # cores. The loading threads' CPU time beside the wall time shows the share they got (the
        # graph's first optimization runs on the thread of the first run; the warmup's kernels
        # on TF's pools).
        log.info("Version %d of %s: %s in %.2f s (%.2f CPU-s), %d warmup records replayed in %.2f s "
                 "(%.2f CPU-s on the loading threads), at nice %d", version, name, how, *load_time, records,
                 *warmup_time, loading.nice if loading.nice is not None else thread_nice())
        return servable

    def forget(self, name: str) -> None:
        """The model left the server's config (ServerCore.apply_config)."""
        if self.standby is not None:
            self.standby.forget(name)

    def prepare_standby(self, serving: Servable) -> None:
        """Load the serving version once more, warm it up and keep its session as a standby, so
        that the model's next version of the same program is restored into it; and have TensorFlow
        build the restore step of the serving version's own session, the standby after that one.
        At start-up, while idle: before the ports open, as nothing may run on `serving` meanwhile."""
        if self.standby is None or not self.standby.per_model:
            return
        name, version, path = serving.name, serving.version, serving.path
        started = time.monotonic()
        spare = Servable.load(name, version, path, tags=self.tags, session_config=self.session_config)
        if self.enable_warmup:
            replay_warmup(spare, path)
        spare.keep_session_as_standby(self.standby)
        serving.prepare_restore()
        log.info("Version %d of %s: a standby session for its next version, ready in %.2f s", version, name,
                 time.monotonic() - started)


def timed(calls: NicedCalls, function, *args, **kwargs):
    """(function(*args, **kwargs), (wall seconds, CPU seconds of this thread and of its niced calls))."""
    started, started_cpu = time.monotonic(), time.thread_time()
    value = function(*args, **kwargs)
    return value, (time.monotonic() - started, time.thread_time() - started_cpu + calls.cpu_seconds)


class ModelGate:
    """Requests that run a model (predict, classify, regress; REST and gRPC alike): at most
    `concurrent` run at once and `queued` more wait their turn; past that a request is refused at
    once with UNAVAILABLE (HTTP 503, which clients retry), so a burst queues a bounded amount of
    work and memory instead of all of it. admit()/leave() around run(), or `with gate.request()`."""

    def __init__(self, concurrent: int, queued: int):
        self.concurrent, self.queued = max(1, concurrent), max(0, queued)
        self._lock = threading.Lock()
        self._admitted = 0
        self._slots = threading.Semaphore(self.concurrent)

    def admit(self) -> ServingError | None:
        """None when admitted (call leave() later), else the refusal to send."""
        with self._lock:
            if self._admitted >= self.concurrent + self.queued:
                return ServingError(
                    "UNAVAILABLE",
                    f"The model is busy: {self.concurrent} requests running and {self.queued} waiting "
                    "(--model_max_concurrent_requests, --model_max_queued_requests); retry later")
            self._admitted += 1
        return None

    def leave(self) -> None:
        with self._lock:
            self._admitted -= 1

    def run(self, function, *args):
        with self._slots:
            return function(*args)

    @contextmanager
    def request(self):
        refusal = self.admit()
        if refusal is not None:
            raise refusal
        try:
            with self._slots:
                yield
        finally:
            self.leave()


class ModelServer:
    def __init__(self, core: ServerCore, metrics: ServingMetrics | None = None, timeout_seconds: float = 0.0,
                 max_instances: int = 0, gate: ModelGate | None = None):
        self.core = core
        self.metrics = metrics
        self.timeout_seconds = timeout_seconds
        self.max_instances = max_instances      # per request; 0 = no limit
        self.gate = gate

    def check_instances(self, count: int) -> None:
        """Refuse a request with more examples than --max_instances_per_request, before any of
        them is converted or decoded."""
        if self.max_instances and count > self.max_instances:
            raise invalid_argument(
                f"The request has {count} instances, more than this server takes in one request "
                f"({self.max_instances}, --max_instances_per_request); send them in smaller batches")

    @contextmanager
    def model_request(self):
        """Around a request that runs a model, when the caller has not been admitted already."""
        if self.gate is None:
            yield
        else:
            with self.gate.request():
                yield

    # --- the three calls ---------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None):
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        return self.core.resolve(name, version, label)

    def predict(self, servable, signature_name: str, inputs: Mapping[str, np.ndarray],
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        started = time.monotonic()
        outputs = servable.predict(signature_name, inputs, output_filter)
        if self.timeout_seconds and time.monotonic() - started > self.timeout_seconds:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded")
        return outputs

    def metadata(self, name: str, version: int | None = None, label: str | None = None
                 ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        servable = self.resolve(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    def status(self, name: str, version: int | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        return self.core.model_status(name, version)

    # --- bookkeeping -------------------------------------------------------------------------
    @contextmanager
    def observe(self, api: str, entrypoint: str, model_name: str):
        """Count the call and time it; `holder["version"]` may be set by the caller once known."""
        holder: dict = {"version": None}
        started = time.monotonic()
        status = "OK"
        try:
            yield holder
        except BaseException as error:
            status = from_exception(error).code if isinstance(error, Exception) else "CANCELLED"
            raise
        finally:
            # Only models the server has ever known get series: a name from a request must not
            # create one (a client sending random names would grow the page without bound).
            if self.metrics is not None and model_name and self.core.model(model_name) is not None:
                self.metrics.record(model_name, holder["version"], api, entrypoint, status,
                                    time.monotonic() - started)
