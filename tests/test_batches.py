"""The batch-then-one-by-one fallback shared by the client and the gate."""

from __future__ import annotations

import pytest

from imgclf.batches import run_batch_or_each


class Rejected(Exception):
    pass


def runner(calls: list, bad=("bad",)):
    def run(items):
        calls.append(list(items))
        if any(item in bad for item in items):
            raise Rejected(f"{[i for i in items if i in bad][0]} is bad")
    return run


def test_a_good_batch_runs_once():
    calls, failures = [], []
    run_batch_or_each(["a", "b"], runner(calls), (Rejected,), lambda item, error: failures.append(item))
    assert calls == [["a", "b"]] and failures == []


def test_a_rejected_batch_runs_each_item_and_names_the_bad_one():
    calls, failures = [], []
    run_batch_or_each(["a", "bad", "c"], runner(calls), (Rejected,),
                      lambda item, error: failures.append((item, str(error))))
    assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert failures == [("bad", "bad is bad")]


def test_a_single_item_runs_once_and_other_errors_propagate():
    calls, failures = [], []
    run_batch_or_each(["bad"], runner(calls), (Rejected,), lambda item, error: failures.append(item))
    assert calls == [["bad"]] and failures == ["bad"]

    def broken(items):
        raise OSError("server gone")

    with pytest.raises(OSError):
        run_batch_or_each(["a", "b"], broken, (Rejected,), lambda item, error: None)
