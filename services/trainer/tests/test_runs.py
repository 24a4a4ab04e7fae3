"""Runs and their event logs."""

from __future__ import annotations

import pytest

from imagineer_common.errors import FailedPrecondition, NotFound
from imagineer_trainer.request import TrainingRequest
from imagineer_trainer.runs import CANCELLED, COMPLETED, Run, RunRegistry, require_cancellable


def make_run(run_id: str = "1", request_id: str = "") -> Run:
    return Run(id=run_id, request=TrainingRequest(album_ids=["1"], steps=10, request_id=request_id))


def test_events_are_ordered_with_snapshots_and_end_once():
    run = make_run()
    run.emit("queued", queue_position=0)
    run.update("step", {"step": 1}, current_step=1, loss=0.5)
    assert run.finish(COMPLETED)
    assert not run.finish(CANCELLED)
    events, ended = run.log.after(0, timeout=0)
    assert ended and [e.kind for e in events] == ["queued", "step", "finished"]
    assert [e.sequence for e in events] == [1, 2, 3]
    assert events[1].snapshot.current_step == 1 and events[0].snapshot.current_step == 0
    assert events[2].snapshot.state == COMPLETED


def test_registry():
    registry = RunRegistry()
    first, second = registry.add(make_run("1", "key")), registry.add(make_run("2"))
    assert registry.find_request("key") is first
    assert registry.newest_first() == [second, first]
    with pytest.raises(NotFound):
        registry.get("99")


def test_finished_runs_cannot_be_cancelled():
    run = make_run()
    run.finish(COMPLETED)
    with pytest.raises(FailedPrecondition):
        require_cancellable(run)
