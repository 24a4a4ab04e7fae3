"""Scrapes as this trainer sees them: settings, state, counters, and an event log for watchers."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from imagineer_common.errors import FailedPrecondition, InvalidArgument, NotFound
from imagineer_common.eventlog import Event, EventLog
from imagineer_trainer.scraping.request import ScrapeRequest

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "completed", "failed", "cancelled", "interrupted")
ENDED = frozenset({COMPLETED, FAILED, CANCELLED, INTERRUPTED})
SKIP_REASONS = ("duplicate", "near_duplicate", "too_small", "bad_aspect", "format", "undecodable", "robots",
                "blocked_address", "http_error", "too_large")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ScrapeSnapshot:
    id: str
    request: ScrapeRequest
    state: str
    stage: str
    pages_seen: int
    images_found: int
    images_kept: int
    images_skipped: int
    skip_reasons: dict[str, int]
    error_count: int
    error: str
    album_id: str
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


@dataclass
class ScrapeJob:
    id: str
    request: ScrapeRequest
    state: str = QUEUED
    stage: str = "queued"
    pages_seen: int = 0
    images_found: int = 0
    images_kept: int = 0
    skip_reasons: Counter = field(default_factory=Counter)
    error_count: int = 0
    error: str = ""
    album_id: str = ""
    created_at: datetime | None = field(default_factory=now)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # set by cancel and by shutdown
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    log: EventLog[ScrapeSnapshot] = field(default_factory=EventLog)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def images_skipped(self) -> int:
        return sum(self.skip_reasons.values())

    def snapshot(self) -> ScrapeSnapshot:
        with self._lock:
            return ScrapeSnapshot(
                id=self.id, request=self.request, state=self.state, stage=self.stage, pages_seen=self.pages_seen,
                images_found=self.images_found, images_kept=self.images_kept, images_skipped=self.images_skipped,
                skip_reasons=dict(self.skip_reasons), error_count=self.error_count, error=self.error,
                album_id=self.album_id, created_at=self.created_at, started_at=self.started_at,
                ended_at=self.ended_at)

    def emit(self, kind: str, **data) -> Event[ScrapeSnapshot]:
        with self._lock:
            return self.log.append(kind, data, self.snapshot(), final=kind == "finished")

    def update(self, kind: str, data: dict, **changes) -> Event[ScrapeSnapshot]:
        """Changes fields and records the event in one step, so watchers see both together."""
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)
            return self.emit(kind, **data)

    def skip(self, url: str, reason: str) -> None:
        with self._lock:
            self.skip_reasons[reason] += 1
            self.emit("image", url=url, image_id="", skip_reason=reason)

    def failed_request(self, message: str) -> None:
        with self._lock:
            self.error_count += 1
            self.error = message

    def finish(self, state: str, reason: str = "") -> bool:
        with self._lock:
            if self.ended:
                return False
            self.update("finished", {"state": state, "reason": reason}, state=state, error=reason or self.error,
                        stage="done", ended_at=now())
            return True


class ScrapeRegistry:
    def __init__(self) -> None:
        self._jobs: OrderedDict[str, ScrapeJob] = OrderedDict()
        self._by_request: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, job: ScrapeJob) -> ScrapeJob:
        with self._lock:
            self._jobs[job.id] = job
            if job.request.request_id:
                self._by_request[job.request.request_id] = job.id
            return job

    def find_request(self, request_id: str) -> ScrapeJob | None:
        with self._lock:
            job_id = self._by_request.get(request_id)
            return self._jobs.get(job_id) if job_id else None

    def find(self, job_id: str) -> ScrapeJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def live(self) -> list[ScrapeJob]:
        with self._lock:
            return [job for job in self._jobs.values() if not job.ended]


def require_id(job_id: str) -> None:
    if not job_id:
        raise InvalidArgument.for_field("id", "is required")
    if not (job_id.isascii() and job_id.isdigit() and len(job_id) <= 18):
        raise InvalidArgument.for_field("id", f"{job_id!r} is not a valid id")


def not_found(job_id: str) -> NotFound:
    return NotFound(f"scrape {job_id} not found", reason="SCRAPE_NOT_FOUND")


def require_cancellable(job: ScrapeJob) -> None:
    if job.ended:
        raise FailedPrecondition(f"scrape {job.id} has already ended ({job.state})", reason="SCRAPE_FINISHED")
