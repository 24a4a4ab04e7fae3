"""Training runs as this trainer sees them: state, progress, and an event log for watchers."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from imagineer_common.errors import FailedPrecondition, InvalidArgument, NotFound
from imagineer_common.eventlog import Event, EventLog
from imagineer_trainer.request import TrainingRequest

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "completed", "failed", "cancelled", "interrupted")
ENDED = frozenset({COMPLETED, FAILED, CANCELLED, INTERRUPTED})


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunSnapshot:
    id: str
    request: TrainingRequest
    state: str
    current_step: int
    total_steps: int
    loss: float
    image_count: int
    artifact_id: str
    validation_album_id: str
    error: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


@dataclass
class Run:
    id: str
    request: TrainingRequest
    state: str = QUEUED
    current_step: int = 0
    loss: float = 0.0
    image_count: int = 0
    artifact_id: str = ""
    validation_album_id: str = ""
    error: str = ""
    created_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    log: EventLog[RunSnapshot] = field(default_factory=EventLog)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def snapshot(self) -> RunSnapshot:
        return RunSnapshot(
            id=self.id, request=self.request, state=self.state, current_step=self.current_step,
            total_steps=self.request.steps, loss=self.loss, image_count=self.image_count,
            artifact_id=self.artifact_id, validation_album_id=self.validation_album_id, error=self.error,
            created_at=self.created_at, started_at=self.started_at, ended_at=self.ended_at)

    def emit(self, kind: str, **data) -> Event[RunSnapshot]:
        with self._lock:
            return self.log.append(kind, data, self.snapshot(), final=kind == "finished")

    def update(self, kind: str, data: dict, **changes) -> Event[RunSnapshot]:
        """Changes fields and records the event in one step, so watchers see both together."""
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)
            return self.emit(kind, **data)

    def finish(self, state: str, reason: str = "") -> bool:
        with self._lock:
            if self.ended:
                return False
            self.update("finished", {"state": state, "reason": reason}, state=state, error=reason, ended_at=now())
            return True


class RunRegistry:
    def __init__(self) -> None:
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._by_request: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, run: Run) -> Run:
        with self._lock:
            self._runs[run.id] = run
            if run.request.request_id:
                self._by_request[run.request.request_id] = run.id
            return run

    def find_request(self, request_id: str) -> Run | None:
        with self._lock:
            run_id = self._by_request.get(request_id)
            return self._runs.get(run_id) if run_id else None

    def find(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def get(self, run_id: str) -> Run:
        if not run_id:
            raise InvalidArgument.for_field("id", "is required")
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise NotFound(f"training {run_id} is not known to this trainer", reason="TRAINING_NOT_FOUND")
        return run

    def newest_first(self) -> list[Run]:
        with self._lock:
            return list(reversed(self._runs.values()))


def require_cancellable(run: Run) -> None:
    if run.ended:
        raise FailedPrecondition(f"training {run.id} has already ended ({run.state})", reason="TRAINING_FINISHED")
