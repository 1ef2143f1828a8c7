"""The one poll loop: returns what the check found, or None at the deadline; never sleeps past it."""

from __future__ import annotations

import time

from imgclf.polling import poll


def test_returns_the_first_true_result():
    answers = iter([None, 0, "", 7, 8])
    assert poll(lambda: next(answers), timeout=5, interval=0.01) == 7


def test_gives_up_at_the_deadline_after_a_last_look():
    calls = []
    started = time.monotonic()
    assert poll(lambda: calls.append(time.monotonic()), timeout=0.2, interval=0.05) is None
    assert 0.2 <= time.monotonic() - started < 1.0
    assert calls[-1] - started >= 0.2 and len(calls) >= 3


def test_zero_timeout_is_one_look():
    calls = []
    assert poll(lambda: calls.append(1), timeout=0, interval=1) is None
    assert calls == [1]
