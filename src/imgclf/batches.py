"""The one batch-then-one-by-one fallback, for the client's requests and the gate's evaluation:
one bad image fails the whole batch it is in, so the batch is run again one item at a time, and
the good items still get their answers while the bad one gets its own error."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def run_batch_or_each(batch: Sequence[T], run: Callable[[Sequence[T]], None],
                      fall_back_on: tuple[type[BaseException], ...],
                      on_failure: Callable[[T, BaseException], None],
                      item_errors: tuple[type[BaseException], ...] | None = None) -> None:
    """run(batch); when that raises one of `fall_back_on`, run([item]) for each item, passing an
    item's own error (one of `item_errors`, default `fall_back_on`) to on_failure(item, error).
    A batch of one is run alone directly. Any other error propagates: it concerns every item."""
    item_errors = item_errors or fall_back_on
    if len(batch) > 1:
        try:
            run(batch)
            return
        except fall_back_on:
            pass
    for item in batch:
        try:
            run([item])
        except item_errors as error:
            on_failure(item, error)
