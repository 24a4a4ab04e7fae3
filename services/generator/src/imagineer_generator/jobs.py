"""Generation jobs in memory: their state, and an ordered event log that watchers can join at any point.

Every change to a job goes through ``Job.emit`` under the job's lock, so a
watcher sees each event once, in order, with the job as it stood right after
that event.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from imagineer_common.errors import FailedPrecondition, InvalidArgument, NotFound
from imagineer_common.eventlog import Event, EventLog
from imagineer_generator.plan import GenerationPlan

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobSnapshot:
    """An immutable copy of a job's visible state."""

    id: str
    state: str
    plan: GenerationPlan
    image_ids: tuple[str, ...]
    album_id: str
    queue_position: int
    error: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None

    @property
    def images_done(self) -> int:
        return sum(1 for image_id in self.image_ids if image_id)


# Kinds: queued | started | step | image | finished; ``snapshot`` is the job right after the event.
JobEvent = Event[JobSnapshot]


@dataclass
class Job:
    plan: GenerationPlan
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    request_id: str = ""
    state: str = QUEUED
    album_id: str = ""
    queue_position: int = 0
    error: str = ""
    created_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    log: EventLog[JobSnapshot] = field(default_factory=EventLog)
    # Called after every event but step progress (the journal keeps jobs across restarts).
    listener: Callable[[Job], None] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.album_id = self.plan.album_id

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def pending_tasks(self):
        return [task for task in self.plan.tasks if not task.image_id]

    def snapshot(self) -> JobSnapshot:
        return JobSnapshot(
            id=self.id, state=self.state, plan=replace(self.plan, tasks=[replace(t) for t in self.plan.tasks]),
            image_ids=tuple(t.image_id for t in self.plan.tasks), album_id=self.album_id,
            queue_position=self.queue_position if self.state == QUEUED else 0, error=self.error,
            created_at=self.created_at, started_at=self.started_at, ended_at=self.ended_at)

    def emit(self, kind: str, **data: Any) -> JobEvent:
        with self._lock:
            event = self.log.append(kind, data, self.snapshot(), final=kind == "finished")
        if kind != "step" and self.listener is not None:
            self.listener(self)
        return event

    # State changes, each recorded as an event.

    def mark_queued(self, position: int) -> None:
        with self._lock:
            self.queue_position = position
            self.emit("queued", queue_position=position)

    def mark_started(self, album_id: str) -> None:
        with self._lock:
            self.state, self.started_at, self.album_id = RUNNING, now(), album_id
            self.emit("started", album_id=album_id)

    def record_image(self, task_index: int, image_id: str) -> None:
        with self._lock:
            task = self.plan.tasks[task_index]
            task.image_id = image_id
            self.emit("image", image_index=task_index, image_id=image_id, seed=task.seed)

    def finish(self, state: str, reason: str = "") -> bool:
        """Moves to a terminal state once; returns False when the job had already ended."""
        with self._lock:
            if self.finished:
                return False
            self.state, self.error, self.ended_at = state, reason, now()
            self.emit("finished", state=state, reason=reason)
            return True


class JobRegistry:
    """All jobs this process knows, newest last, with idempotency keys; old finished jobs are forgotten."""

    def __init__(self, keep_finished: int = 1000) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._by_request: dict[str, str] = {}
        self._keep_finished = keep_finished
        self._lock = threading.Lock()

    def add(self, job: Job, request_id: str = "") -> Job:
        with self._lock:
            if request_id and request_id in self._by_request and self._by_request[request_id] in self._jobs:
                return self._jobs[self._by_request[request_id]]
            self._jobs[job.id] = job
            if request_id:
                self._by_request[request_id] = job.id
            self._forget_old()
            return job

    def find_request(self, request_id: str) -> Job | None:
        with self._lock:
            job_id = self._by_request.get(request_id)
            return self._jobs.get(job_id) if job_id else None

    def get(self, job_id: str) -> Job:
        if not job_id:
            raise InvalidArgument.for_field("id", "is required")
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"generation job {job_id} not found", reason="GENERATION_NOT_FOUND")
        return job

    def newest_first(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.finished]
        for job_id in finished[: max(0, len(finished) - self._keep_finished)]:
            del self._jobs[job_id]
        live = set(self._jobs)
        self._by_request = {key: value for key, value in self._by_request.items() if value in live}


def require_cancellable(job: Job) -> None:
    if job.finished:
        raise FailedPrecondition(f"generation job {job.id} has already ended ({job.state})", reason="JOB_FINISHED")
