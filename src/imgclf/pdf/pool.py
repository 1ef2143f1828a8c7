"""Rendering in worker processes, one per core by default, so that a PDF that hangs or eats memory
costs one worker (killed at its deadline, or at its memory limit) and never the run.

pebble's ProcessPool does the killing: a task past its timeout has its worker process terminated
and replaced. Workers are spawned, never forked, so a trainer that has loaded TensorFlow does not
copy itself into them.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, TimeoutError as FutureTimeout, wait, FIRST_COMPLETED
from pathlib import Path
from typing import Iterable, Iterator

from pebble import ProcessExpired, ProcessPool

from imgclf.pdf.problems import PageProblem
from imgclf.pdf.render import Page, RenderOptions, render_file

# The workers' own deadline (render.draw) comes first and says which program was slow; the pool's,
# a little later, catches a worker stuck inside PDFium or numpy.
_GRACE_SECONDS = 5.0


def _limit_memory(memory_mb: int) -> None:
    """Runs in each worker: its address space (and that of the programs it starts) is bounded."""
    if memory_mb > 0:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class PagePool:
    """render(path) and render_many(paths) through `workers` processes (0 = one per core)."""

    def __init__(self, options: RenderOptions, workers: int = 0, memory_mb: int = 2048):
        self.options = options
        self.workers = workers if workers > 0 else (os.cpu_count() or 1)
        self.memory_mb = memory_mb
        self._pool: ProcessPool | None = None

    def __enter__(self) -> "PagePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def submit(self, path: Path) -> Future:
        if self._pool is None:
            self._pool = ProcessPool(max_workers=self.workers, max_tasks=500,
                                     initializer=_limit_memory, initargs=(self.memory_mb,),
                                     context=multiprocessing.get_context("spawn"))
        return self._pool.schedule(render_file, args=(str(path), self.options),
                                   timeout=self.options.timeout + _GRACE_SECONDS)

    def outcome(self, future: Future) -> Page:
        """The Page of a finished task, with a killed or crashed worker turned into a problem."""
        try:
            return future.result()
        except FutureTimeout:
            return Page("", problem=PageProblem(
                "timeout", f"not done after {self.options.timeout:g} s (TIMEOUT); its worker was killed"))
        except ProcessExpired as error:
            return Page("", problem=PageProblem(
                "render failed", f"the worker died ({error}); out of memory? (MEMORY_MB={self.memory_mb})"))

    def render(self, path: Path) -> Page:
        return self.outcome(self.submit(path))

    def render_many(self, paths: Iterable[Path]) -> Iterator[tuple[Path, Page]]:
        """(path, Page) for every path, as they finish; at most 2 x workers in flight, so the
        paths are pulled lazily and memory stays flat however many there are."""
        pending: dict[Future, Path] = {}
        iterator = iter(paths)
        try:
            while True:
                while len(pending) < 2 * self.workers and (path := next(iterator, None)) is not None:
                    pending[self.submit(path)] = path
                if not pending:
                    return
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), self.outcome(future)
        finally:
            for future in pending:
                future.cancel()
