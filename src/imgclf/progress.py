"""Progress for people, the same in every command: a bar on a terminal, a line now and then in a log.

    with Progress(total=len(files), desc="validate", unit="img") as progress:
        for batch in batches:
            ...
            progress.update(len(batch))

On a terminal (the stream's isatty) it is a tqdm bar. Anywhere else (a log file, CI, a pipe) a bar
would be hundreds of carriage-return frames, so it prints a plain line every `every` units (10 %
of the total by default, and no more often than every `seconds`) and one when it closes: one line
per epoch when each epoch is a Progress, a few lines per long run, one per short one. `enabled=False` prints nothing. The trainer's epochs, the client's
validation, the gate, the demo and the benchmarks all use this one class.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")


def on_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """Counts units of work; shows them as a bar on a terminal and as lines in a log."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", *,
                 enabled: bool = True, stream: TextIO | None = None, every: int | None = None,
                 seconds: float = 5.0, leave: bool = True):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit = total, desc, unit
        self.count, self.postfix = 0, ""
        self.started = self._last_line = time.monotonic()
        self.seconds = seconds
        self.mode = "off" if not enabled else "bar" if on_terminal(self.stream) else "lines"
        self.every = every or (max(1, -(-total // 10)) if total else 0)   # 0: the closing line only
        self._next_line = self.every
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=leave,
                             dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and self.every and self.count >= self._next_line:
            self._next_line = (self.count // self.every + 1) * self.every
            due = time.monotonic() - self._last_line >= self.seconds
            if due and (self.total is None or self.count < self.total):   # the closing line says the rest
                self._line(self._so_far())

    def set_postfix(self, **values) -> None:
        """Figures shown after the count (loss, accuracy): on the bar, and on the closing line."""
        shown = {name: f"{value:.4f}" if isinstance(value, float) else str(value)
                 for name, value in values.items()}
        self.postfix = ", ".join(f"{name} {value}" for name, value in shown.items())
        if self._bar is not None:
            self._bar.set_postfix(shown, refresh=False)

    def write(self, text: str, file: TextIO | None = None) -> None:
        """Print text (say, result lines on stdout) without tearing the bar."""
        if self._bar is not None:
            self._bar.write(text, file=file or self.stream)
        else:
            print(text, file=file or self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines":
            self._line(self._closing())
        self.mode = "off"

    def _so_far(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        share = f" ({100 * self.count / self.total:.0f} %)" if self.total else ""
        return f"{self.count}{of} {self.unit}{share}, {self._rate()}"

    def _closing(self) -> str:
        seconds = time.monotonic() - self.started
        figures = f", {self.postfix}" if self.postfix else ""
        return f"{self.count} {self.unit} in {seconds:.1f} s ({self._rate()}){figures}"

    def _rate(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return f"{self.count / seconds:.1f} {self.unit}/s"

    def _line(self, text: str) -> None:
        self._last_line = time.monotonic()
        print(f"{self.desc}: {text}" if self.desc else text, file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          **options) -> Iterator[T]:
    """Each item of `items`, counted by a Progress (total: len(items) when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)   # type: ignore[arg-type]
    with Progress(total, desc, unit, **options) as progress:
        for item in items:
            yield item
            progress.update()
