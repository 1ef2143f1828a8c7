"""The rollout drill: a real local server, real client threads, five publishes and two rollbacks
under continuous traffic. Every request must succeed."""

from __future__ import annotations

import pytest

from imgclf import contract
from imgclf.model_store import open_model
from imgclf.rollout.drill import MODEL_NAME, DrillError, format_figures, run_drill
from imgclf.settings import DrillSettings


@pytest.mark.slow
def test_drill_publishes_and_rolls_back_without_a_failed_request(tmp_path, trained_model):
    # Each version carries the trainer's real export, so loading, warmup and serving cost what a
    # real version costs; the marker only names the version in the reply.
    settings = DrillSettings(clients=2, publishes=5, rollbacks=2, steady_seconds=1.0, poll_seconds=0.2,
                             workdir=str(tmp_path), model=str(trained_model.version_dir))
    figures = run_drill(settings, say=print)
    print(format_figures(figures))

    assert figures.requests > 0
    assert figures.failures == 0, figures.failure_examples
    assert figures.stale_answers == 0
    assert [c["kind"] for c in figures.changes] == ["publish"] * 5 + ["rollback"] * 2
    assert all(c["seconds_to_answer"] is not None for c in figures.changes)
    # Every version answered some traffic, and each rollback handed traffic back to the previous one.
    assert len(figures.answers_by_version) == 6
    published = [c["version"] for c in figures.changes if c["kind"] == "publish"]
    rollbacks = [c for c in figures.changes if c["kind"] == "rollback"]
    assert [c["version"] for c in rollbacks] == [published[-1], published[-2]]
    assert [c["expected_version"] for c in rollbacks] == [published[-2], published[-3]]
    assert figures.steady_requests > 0 and figures.swap_requests > 0
    assert figures.passed

    store = open_model(tmp_path, MODEL_NAME)
    assert store.latest() == published[-3]
    assert sorted(v for v, _ in store.retired()) == published[-2:]
    assert store.staged() == []


def test_drill_refuses_a_base_path_that_is_not_its_own(tmp_path):
    base = contract.model_base_path(tmp_path, MODEL_NAME)
    (base / "1700000000").mkdir(parents=True)
    with pytest.raises(DrillError, match="not empty"):
        run_drill(DrillSettings(workdir=str(tmp_path)), say=print)
    assert open_model(tmp_path, MODEL_NAME).versions() == [1700000000]
