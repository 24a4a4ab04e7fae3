"""The trainer's shared job queue: order, bounds, positions, withdrawal, crashes and shutdown."""

from __future__ import annotations

import threading

import pytest

from imagineer_common.errors import ResourceExhausted, Unavailable
from imagineer_trainer.jobqueue import JobQueue


class Recorder:
    def __init__(self) -> None:
        self.ran: list[str] = []
        self.crashed: list[tuple[str, str]] = []
        self.positions: list[tuple[str, int]] = []
        self.gate = threading.Event()  # jobs wait here until the test lets them go
        self.done = threading.Semaphore(0)

    def run(self, job: str) -> None:
        self.gate.wait(10)
        if job.startswith("bad"):
            self.done.release()
            raise RuntimeError(f"{job} broke")
        self.ran.append(job)
        self.done.release()


def make_queue(recorder: Recorder, capacity: int = 3, workers: int = 1) -> JobQueue[str]:
    queue = JobQueue(name="test", what="test", capacity=capacity, run=recorder.run, workers=workers,
                     crashed=lambda job, error: recorder.crashed.append((job, str(error))),
                     announce=lambda job, ahead: recorder.positions.append((job, ahead)))
    queue.start()
    return queue


def test_jobs_run_in_arrival_order_and_a_crash_does_not_stop_the_worker():
    recorder = Recorder()
    queue = make_queue(recorder)
    for job in ("a", "bad-b", "c"):
        queue.submit(job)
    recorder.gate.set()
    for _ in range(3):
        assert recorder.done.acquire(timeout=10)
    assert recorder.ran == ["a", "c"]
    assert recorder.crashed == [("bad-b", "bad-b broke")]
    queue.stop(5, withdrawn=lambda job: None)


def test_positions_count_the_running_job_and_move_up():
    recorder = Recorder()
    queue = make_queue(recorder, capacity=5)
    queue.submit("first")
    assert recorder.done.acquire(timeout=0.2) is False  # "first" is running, held at the gate
    queue.submit("second")
    queue.submit("third")
    assert ("second", 1) in recorder.positions and ("third", 2) in recorder.positions
    recorder.gate.set()
    for _ in range(3):
        assert recorder.done.acquire(timeout=10)
    assert ("third", 1) in recorder.positions  # announced again when "second" started
    queue.stop(5, withdrawn=lambda job: None)


def test_a_full_queue_refuses_and_a_withdrawn_job_never_runs():
    recorder = Recorder()
    queue = make_queue(recorder, capacity=2)
    queue.submit("running")
    assert recorder.done.acquire(timeout=0.2) is False
    queue.submit("w1")
    queue.submit("w2")
    with pytest.raises(ResourceExhausted) as refused:
        queue.submit("w3")
    assert "queue is full (2 waiting)" in str(refused.value)
    assert queue.withdraw("w1") is True and queue.withdraw("w1") is False
    assert queue.waiting() == 1
    recorder.gate.set()
    for _ in range(2):
        assert recorder.done.acquire(timeout=10)
    assert recorder.ran == ["running", "w2"]
    queue.stop(5, withdrawn=lambda job: None)


def test_stop_hands_back_waiting_jobs_and_refuses_new_ones():
    recorder = Recorder()
    queue = make_queue(recorder, capacity=5)
    queue.submit("running")
    assert recorder.done.acquire(timeout=0.2) is False
    queue.submit("waiting-1")
    queue.submit("waiting-2")
    withdrawn: list[str] = []
    queue.stop(5, withdrawn=withdrawn.append, before_join=recorder.gate.set)
    assert withdrawn == ["waiting-1", "waiting-2"]
    assert recorder.ran == ["running"]  # the running one finished within the grace period
    with pytest.raises(Unavailable):
        queue.submit("late")
    with pytest.raises(Unavailable):
        queue.check_room()


def test_resumed_jobs_keep_their_place_beyond_the_capacity_and_run_first():
    recorder = Recorder()
    queue = JobQueue(name="test", what="test", capacity=1, run=recorder.run,
                     crashed=lambda job, error: recorder.crashed.append((job, str(error))),
                     announce=lambda job, ahead: recorder.positions.append((job, ahead)))
    for job in ("old-1", "old-2", "old-3"):  # recovery happens before the worker starts
        queue.resume(job)
    assert queue.waiting() == 3 and recorder.positions == [("old-1", 0), ("old-2", 1), ("old-3", 2)]
    with pytest.raises(ResourceExhausted):
        queue.submit("new")  # new work still meets the bound
    queue.start()
    recorder.gate.set()
    for _ in range(3):
        assert recorder.done.acquire(timeout=10)
    assert recorder.ran == ["old-1", "old-2", "old-3"]
    queue.stop(5, withdrawn=lambda job: None)
