"""`make pages`: page 1 of every PDF under PDFS -> OUT/<same sub-folder>/<sha1 of the PDF>.jpg.

Resumable: a PDF whose JPG (or blank-page mark) is already in OUT is not rendered again, whatever
its name, since the name is its content's sha1. Every file that yields no page gets one line on
stderr and a count; nothing stops the run.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from imgclf.pdf.pool import PagePool
from imgclf.pdf.problems import KINDS
from imgclf.pdf.render import Page, RenderOptions, tool_versions
from imgclf.pdf.store import sha1_of, write_atomically
from imgclf.settings import PagesSettings

STATE_DIR = ".imgclf-pages"   # in OUT: blank-page marks, per renderer key


@dataclass
class Tally:
    files: int = 0
    rendered: int = 0
    already: int = 0              # found in OUT from an earlier run (or a duplicate)
    blank: int = 0
    failed: Counter = field(default_factory=Counter)   # kind -> files
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.rendered + self.already + self.blank + sum(self.failed.values())

    def line(self) -> str:
        failed = sum(self.failed.values())
        rate = self.rendered / self.seconds if self.seconds else 0.0
        return (f"{self.done}/{self.files} files: {self.rendered} rendered, {self.already} already there, "
                f"{self.blank} blank, {failed} failed; {rate:.2f} pages/s")


def iter_files(root: Path, skip: Path | None = None) -> Iterator[Path]:
    """Every file under root (PDF or not: a non-PDF gets its line), hidden ones and `skip` aside."""
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (skip is None or Path(folder, d).resolve() != skip))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(folder) / name


class PagesRun:
    """One `make pages` run; `report(line)` receives every problem line and progress line."""

    def __init__(self, settings: PagesSettings, report: Callable[[str], None]):
        self.settings, self.report = settings, report
        self.root, self.out = Path(settings.pdfs), Path(settings.out)
        self.options = RenderOptions.from_settings(settings)
        self.marks = self.out / STATE_DIR / self.options.key(tool_versions(settings.renderer))
        self.tally = Tally()

    def target(self, path: Path, sha1: str) -> Path:
        return self.out / path.parent.relative_to(self.root) / f"{sha1}.jpg"

    def pending(self, files: Iterator[Path], on_skip: Callable[[], None]) -> Iterator[Path]:
        """The files still to render: hashes each and passes over those OUT already holds."""
        for path in files:
            try:
                sha1 = sha1_of(path)
            except OSError as error:
                self.fail(path, "unreadable", error.strerror or str(error))
                on_skip()
                continue
            if self.target(path, sha1).is_file():
                self.tally.already += 1
            elif (self.marks / f"{sha1}.blank").is_file():
                self.tally.blank += 1
            else:
                yield path
                continue
            on_skip()

    def take(self, path: Path, page: Page) -> None:
        if page.problem is not None:
            self.fail(path, page.problem.kind, page.problem.message)
        elif page.blank:
            write_atomically(self.marks / f"{page.sha1}.blank", b"")
            self.tally.blank += 1
        else:
            write_atomically(self.target(path, page.sha1), page.jpeg)
            self.tally.rendered += 1

    def fail(self, path: Path, kind: str, message: str) -> None:
        self.tally.failed[kind] += 1
        self.report(f"{kind}: {path}: {message}")

    def execute(self, files: Iterator[Path], on_progress: Callable[[], None]) -> Tally:
        started = time.monotonic()
        with PagePool(self.options, self.settings.workers, self.settings.memory_mb) as pool:
            for path, page in pool.render_many(self.pending(files, on_progress)):
                self.take(path, page)
                self.tally.seconds = time.monotonic() - started
                on_progress()
        self.tally.seconds = time.monotonic() - started
        return self.tally


def summary(tally: Tally, settings: PagesSettings, workers: int) -> str:
    """The closing lines: counts, failures by kind, speed per worker."""
    lines = [f"pages: {tally.line()} in {tally.seconds:.1f} s with {workers} worker(s)"]
    if tally.rendered and tally.seconds:
        lines.append(f"pages: {tally.rendered / tally.seconds / workers:.2f} pages/s per worker "
                     f"({settings.renderer})")
    if tally.failed:
        kinds = sorted(tally.failed, key=lambda k: KINDS.index(k) if k in KINDS else len(KINDS))
        lines.append("pages: failed: " + ", ".join(f"{tally.failed[k]} {k}" for k in kinds))
    return "\n".join(lines)
