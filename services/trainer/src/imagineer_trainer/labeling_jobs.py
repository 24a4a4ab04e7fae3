"""Labeling jobs as the trainer sees them: target, progress, problems, an event log for watchers, and a folder of
JSON records so that a restart can say what became of them."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from imagineer_common.errors import FailedPrecondition, InvalidArgument, NotFound
from imagineer_common.eventlog import Event, EventLog

log = logging.getLogger("imagineer.trainer.labeling")

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "completed", "failed", "cancelled", "interrupted")
ENDED = frozenset({COMPLETED, FAILED, CANCELLED, INTERRUPTED})
LABELED, FAILED_IMAGE, SKIPPED = "labeled", "failed", "skipped"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ImageProblem:
    image_id: str
    outcome: str  # FAILED_IMAGE or SKIPPED
    reason: str


@dataclass(frozen=True)
class TargetImage:
    image_id: str
    has_file: bool


@dataclass(frozen=True)
class LabelingSnapshot:
    id: str
    target_kind: str  # "image" or "album"
    target_id: str
    labeler: str
    source_model: str
    request_id: str
    state: str
    total_images: int
    images_done: int
    labeled: int
    failed: int
    skipped: int
    problems: tuple[ImageProblem, ...]
    error: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class LabelingJob:
    id: str
    target_kind: str
    target_id: str
    labeler: str
    source_model: str
    images: list[TargetImage]
    request_id: str = ""
    state: str = QUEUED
    images_done: int = 0
    labeled: int = 0
    failed: int = 0
    skipped: int = 0
    problems: list[ImageProblem] = field(default_factory=list)
    error: str = ""
    created_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    log: EventLog[LabelingSnapshot] = field(default_factory=EventLog)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def snapshot(self) -> LabelingSnapshot:
        with self._lock:
            return LabelingSnapshot(
                id=self.id, target_kind=self.target_kind, target_id=self.target_id, labeler=self.labeler,
                source_model=self.source_model, request_id=self.request_id, state=self.state,
                total_images=len(self.images), images_done=self.images_done, labeled=self.labeled,
                failed=self.failed, skipped=self.skipped, problems=tuple(self.problems), error=self.error,
                created_at=self.created_at, started_at=self.started_at, ended_at=self.ended_at)

    def emit(self, kind: str, **data) -> Event[LabelingSnapshot]:
        with self._lock:
            return self.log.append(kind, data, self.snapshot(), final=kind == "finished")

    def start(self) -> None:
        with self._lock:
            self.state, self.started_at = RUNNING, self.started_at or now()
            self.emit("started", total_images=len(self.images), images_done=self.images_done)

    def requeue(self) -> None:
        """Back to the queue after a restart of the trainer, keeping what it did: it goes on with the next image."""
        with self._lock:
            self.state, self.error, self.ended_at = QUEUED, "", None

    def record(self, index: int, image_id: str, outcome: str, reason: str = "", **details) -> None:
        """One image handled: the counts, the problem list and the event change together."""
        with self._lock:
            self.images_done += 1
            if outcome == LABELED:
                self.labeled += 1
            elif outcome == FAILED_IMAGE:
                self.failed += 1
            else:
                self.skipped += 1
            if outcome != LABELED:
                self.problems.append(ImageProblem(image_id=image_id, outcome=outcome, reason=reason))
            self.emit("image", image_id=image_id, index=index, outcome=outcome, reason=reason, **details)

    def finish(self, state: str, reason: str = "") -> bool:
        with self._lock:
            if self.ended:
                return False
            self.state, self.error, self.ended_at = state, reason, now()
            self.emit("finished", state=state, reason=reason)
            return True

    # --- the record on disk -----------------------------------------------------------------------------------

    def to_record(self) -> dict:
        with self._lock:
            return {
                "id": self.id, "target_kind": self.target_kind, "target_id": self.target_id,
                "labeler": self.labeler, "source_model": self.source_model, "request_id": self.request_id,
                "state": self.state, "images": [[image.image_id, image.has_file] for image in self.images],
                "images_done": self.images_done, "labeled": self.labeled, "failed": self.failed,
                "skipped": self.skipped,
                "problems": [[p.image_id, p.outcome, p.reason] for p in self.problems], "error": self.error,
                "created_at": _time(self.created_at), "started_at": _time(self.started_at),
                "ended_at": _time(self.ended_at)}

    @classmethod
    def from_record(cls, record: dict) -> LabelingJob:
        return cls(
            id=record["id"], target_kind=record["target_kind"], target_id=record["target_id"],
            labeler=record["labeler"], source_model=record["source_model"], request_id=record.get("request_id", ""),
            images=[TargetImage(image_id, bool(has_file)) for image_id, has_file in record["images"]],
            state=record["state"], images_done=record["images_done"], labeled=record["labeled"],
            failed=record["failed"], skipped=record["skipped"],
            problems=[ImageProblem(*problem) for problem in record["problems"]], error=record["error"],
            created_at=_parse_time(record["created_at"]) or now(), started_at=_parse_time(record["started_at"]),
            ended_at=_parse_time(record["ended_at"]))


class LabelingStore:
    """One JSON file per labeling under ``folder``, replaced atomically on every change."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, job: LabelingJob) -> None:
        target = self.folder / f"{job.id}.json"
        temporary = target.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(job.to_record()))
            os.replace(temporary, target)
        except OSError as error:  # the job goes on; only what a restart can tell about it suffers
            log.error("could not save labeling %s: %s", job.id, error)

    def load(self) -> list[LabelingJob]:
        """Every recorded labeling, oldest first; unreadable records are logged and left alone."""
        jobs = []
        for path in self.folder.glob("*.json"):
            try:
                jobs.append(LabelingJob.from_record(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.error("ignoring the unreadable labeling record %s: %s", path, error)
        return sorted(jobs, key=lambda job: job.created_at)


class LabelingRegistry:
    def __init__(self) -> None:
        self._jobs: OrderedDict[str, LabelingJob] = OrderedDict()
        self._by_request: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, job: LabelingJob) -> LabelingJob:
        with self._lock:
            self._jobs[job.id] = job
            if job.request_id:
                self._by_request[job.request_id] = job.id
            return job

    def find_request(self, request_id: str) -> LabelingJob | None:
        with self._lock:
            job_id = self._by_request.get(request_id)
            return self._jobs.get(job_id) if job_id else None

    def get(self, job_id: str) -> LabelingJob:
        if not job_id:
            raise InvalidArgument.for_field("id", "is required")
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"labeling {job_id} is not known to this trainer", reason="LABELING_NOT_FOUND")
        return job

    def newest_first(self) -> list[LabelingJob]:
        with self._lock:
            return list(reversed(self._jobs.values()))


def require_cancellable(job: LabelingJob) -> None:
    if job.ended:
        raise FailedPrecondition(f"labeling {job.id} has already ended ({job.state})", reason="LABELING_FINISHED")
