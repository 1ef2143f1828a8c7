"""--enable_batching: concurrent predict calls on the same version and signature are merged into
one model call along the first (batch) dimension, then the outputs are split back.

Like TF Serving's batching session: a batch closes when it reaches max_batch_size or when
batch_timeout_micros have passed since its first request (0 = take whatever is already queued);
num_batch_threads batches run at once. Requests whose inputs cannot be concatenated with the
open batch (other signature, other inner shape) start their own.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from imgclf.serving.config import BatchingSettings
from imgclf.serving.errors import ServingError, from_exception

log = logging.getLogger(__name__)
_CLOSE = object()


@dataclass
class _Task:
    signature_name: str
    inputs: Mapping[str, np.ndarray]
    output_filter: tuple[str, ...]
    rows: int
    key: tuple
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: BaseException | None = None


def _batch_key(signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: tuple) -> tuple | None:
    """Requests with equal keys can be concatenated; None means "cannot batch" (scalars,
    inputs that disagree on the batch size)."""
    sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    shapes = tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()))
    return (signature_name or "serving_default", output_filter, shapes)


class BatchingServable:
    """Wraps a Servable; `predict` has the same contract, the rest is delegated."""

    def __init__(self, servable, settings: BatchingSettings):
        self._servable = servable
        self._settings = settings
        self._queue: queue.Queue = queue.Queue(maxsize=max(settings.max_enqueued_batches, 1) * max(settings.max_batch_size, 1))
        self._closed = False
        self._close_lock = threading.Lock()     # no task may be queued behind the stop markers
        self._workers = [
            threading.Thread(target=self._work, name=f"batch-{servable.name}-{servable.version}-{i}", daemon=True)
            for i in range(max(settings.num_batch_threads, 1))
        ]
        for worker in self._workers:
            worker.start()
        self.batches_run = 0          # for tests and the benchmark: how many model calls were made
        self.requests_batched = 0

    def __getattr__(self, name):
        return getattr(self._servable, name)

    def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        output_filter = tuple(output_filter)
        key = _batch_key(signature_name, inputs, output_filter)
        if key is None or self._closed:
            return self._servable.predict(signature_name, inputs, output_filter)
        rows = next(iter(inputs.values())).shape[0]
        if rows > self._settings.max_batch_size:
            return self._servable.predict(signature_name, inputs, output_filter)
        task = _Task(signature_name, inputs, output_filter, rows, key)
        with self._close_lock:
            if self._closed:
                return self._servable.predict(signature_name, inputs, output_filter)
            try:
                self._queue.put_nowait(task)
            except queue.Full:
                raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted is full")
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        """Stop the batch threads once the queue is drained (the version was unloaded)."""
        with self._close_lock:
            self._closed = True
            for _ in self._workers:
                self._queue.put(_CLOSE)

    # --- batch threads -----------------------------------------------------------------------
    def _work(self) -> None:
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _CLOSE:
                return
            batch, carry = self._collect(first)
            self._run(batch)

    def _collect(self, first: _Task):
        batch, rows = [first], first.rows
        deadline = time.monotonic() + self._settings.batch_timeout_micros / 1e6
        while rows < self._settings.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                task = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if task is _CLOSE or task.key != first.key or rows + task.rows > self._settings.max_batch_size:
                return batch, task
            batch.append(task)
            rows += task.rows
        return batch, None

    def _run(self, batch: list[_Task]) -> None:
        first = batch[0]
        try:
            if len(batch) == 1:
                outputs = [self._servable.predict(first.signature_name, first.inputs, first.output_filter)]
            else:
                outputs = self._run_merged(batch)
        except BaseException as error:  # every waiting request gets the model's error
            error = from_exception(error)
            for task in batch:
                task.error = error
                task.done.set()
            return
        self.batches_run += 1
        self.requests_batched += len(batch)
        for task, result in zip(batch, outputs):
            task.result = result
            task.done.set()

    def _run_merged(self, batch: list[_Task]) -> list[dict]:
        first = batch[0]
        merged = {name: np.concatenate([t.inputs[name] for t in batch]) for name in first.inputs}
        result = self._servable.predict(first.signature_name, merged, first.output_filter)
        total = sum(t.rows for t in batch)
        if any(a.ndim == 0 or a.shape[0] != total for a in result.values()):
            # Outputs not batched along the first dimension: the merge is meaningless; run singly.
            return [self._servable.predict(t.signature_name, t.inputs, t.output_filter) for t in batch]
        bounds = np.cumsum([0] + [t.rows for t in batch])
        return [{name: a[bounds[i]:bounds[i + 1]] for name, a in result.items()} for i in range(len(batch))]
