"""A bounded first-in, first-out queue of jobs and the worker threads that run them.

Trainings, labelings and scrapes all wait and run this way; what differs is what running one means, and what a
waiting job hears about its place in the line (``announce``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from imagineer_common.errors import ResourceExhausted, Unavailable

J = TypeVar("J")
log = logging.getLogger("imagineer.trainer.jobqueue")


class JobQueue(Generic[J]):
    """``run(job)`` on ``workers`` threads in arrival order; a job whose ``run`` raises is handed to ``crashed``
    and the worker goes on with the next one."""

    def __init__(self, *, name: str, what: str, capacity: int, run: Callable[[J], None],
                 crashed: Callable[[J, Exception], None], workers: int = 1,
                 announce: Callable[[J, int], None] | None = None) -> None:
        self.what = what  # "training", "labeling", "scrape": for messages
        self.capacity = capacity
        self._run = run
        self._crashed = crashed
        self._announce = announce  # (job, jobs ahead of it) when it joins and whenever the line moves
        self._waiting: deque[J] = deque()
        self._running = 0
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True)
                         for index in range(workers)]

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def waiting(self) -> int:
        with self._changed:
            return len(self._waiting)

    def check_room(self) -> None:
        """Raises what ``submit`` would now, for callers that must know before doing costly work."""
        with self._changed:
            self._require_room()

    def _require_room(self) -> None:
        if self._stopping.is_set():
            raise Unavailable("the trainer is shutting down", reason="SHUTTING_DOWN")
        if len(self._waiting) >= self.capacity:
            raise ResourceExhausted(f"the {self.what} queue is full ({self.capacity} waiting); retry later",
                                    reason="QUEUE_FULL")

    def submit(self, job: J, *, admit: Callable[[], None] | None = None) -> None:
        """Queues ``job``; ``admit`` runs first under the queue's lock, once there is room (to record the job only
        when it will run). UNAVAILABLE while shutting down, RESOURCE_EXHAUSTED when the queue is full."""
        with self._changed:
            self._require_room()
            if admit is not None:
                admit()
            self._enqueue(job)

    def resume(self, job: J) -> None:
        """Queues a job a previous process accepted (recovery at start-up): it had its place already, so the
        capacity does not apply."""
        with self._changed:
            self._enqueue(job)

    def _enqueue(self, job: J) -> None:
        """Appends ``job``, tells it its place and wakes a worker. Caller holds ``_changed``."""
        self._waiting.append(job)
        if self._announce is not None:
            self._announce(job, len(self._waiting) - 1 + self._running)
        self._changed.notify_all()

    def withdraw(self, job: J) -> bool:
        """Takes a job that has not started out of the queue; False when it was not waiting."""
        with self._changed:
            if job not in self._waiting:
                return False
            self._waiting.remove(job)
            return True

    def stop(self, grace_seconds: float, *, withdrawn: Callable[[J], None],
             before_join: Callable[[], None] | None = None) -> None:
        """Takes no more work, hands each job that was still waiting to ``withdrawn``, then waits up to
        ``grace_seconds`` for the running ones (``before_join`` can tell them to stop)."""
        self._stopping.set()
        with self._changed:
            waiting = list(self._waiting)
            self._waiting.clear()
            self._changed.notify_all()
        for job in waiting:
            withdrawn(job)
        if before_join is not None:
            before_join()
        deadline = time.monotonic() + grace_seconds
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._stopping.is_set():
                    self._changed.wait(0.5)
                if self._stopping.is_set():
                    return
                job = self._waiting.popleft()
                self._running += 1
                if self._announce is not None:
                    for ahead, waiting in enumerate(self._waiting):
                        self._announce(waiting, ahead + self._running)
            try:
                self._run(job)
            except Exception as error:  # one broken job never stops the worker
                log.exception("%s %s failed unexpectedly", self.what, getattr(job, "id", ""))
                self._crashed(job, error)
            finally:
                with self._changed:
                    self._running -= 1
