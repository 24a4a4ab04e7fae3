"""Training runs and scrape jobs: records other services keep current, with an enforced life cycle.

States are stored as the legacy lowercase strings. A state the legacy app wrote
that we do not know reads as "unspecified" and may move to any state, so old
rows can still be repaired.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imagineer_catalog.models import AlbumRow, ArtifactRow, ScrapeJobRow, TrainingRunRow
from imagineer_catalog.paging import page_request
from imagineer_catalog.store import (
    Catalog,
    create_once,
    load_json,
    parse_id,
    utcnow,
)
from imagineer_common.errors import FailedPrecondition, InvalidArgument, NotFound, ViolationCollector

STATES = ("pending", "queued", "running", "completed", "failed", "cancelled", "interrupted")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"queued", "running", "failed", "cancelled"}),
    "queued": frozenset({"pending", "running", "failed", "cancelled", "interrupted"}),
    "running": frozenset({"queued", "completed", "failed", "cancelled", "interrupted"}),
    "interrupted": frozenset({"queued", "running", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


def known_state(value: str | None) -> str:
    return value if value in STATES else ""


def check_transition(current: str | None, new: str) -> None:
    if new not in STATES:
        raise InvalidArgument.for_field("state", "must be a job state")
    now = known_state(current)
    if now == new or not now:
        return
    if new not in ALLOWED_TRANSITIONS[now]:
        raise FailedPrecondition(f"cannot go from {now} to {new}", reason="INVALID_STATE_TRANSITION")


def _apply_state(row: TrainingRunRow | ScrapeJobRow, new: str) -> None:
    check_transition(row.status, new)
    now = utcnow()
    if new == "running" and row.started_at is None:
        row.started_at = now
    if new in TERMINAL and row.completed_at is None:
        row.completed_at = now
    row.status = new


@dataclass
class JobFields:
    """The writable fields of a training run or scrape job; which apply depends on the kind."""

    name: str = ""
    description: str = ""
    config: dict[str, Any] | None = None
    state: str = ""
    progress_percent: float = 0.0
    error_message: str = ""
    # training runs
    album_ids: list[str] = field(default_factory=list)
    current_step: int = 0
    total_steps: int = 0
    training_loss: float | None = None
    validation_loss: float | None = None
    artifact_id: str = ""
    # scrape jobs
    source_url: str = ""
    stage: str = ""
    pages_seen: int = 0
    images_found: int = 0
    images_kept: int = 0
    images_skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    error_count: int = 0
    album_id: str = ""


def _validate_common(fields: JobFields, paths: set[str] | None, prefix: str, errors: ViolationCollector) -> None:
    def wants(name: str) -> bool:
        return paths is None or name in paths

    if wants("name"):
        errors.check(0 < len(fields.name.strip()) <= 255, f"{prefix}.name", "is required, at most 255 characters")
    if wants("state") and (paths is not None or fields.state):
        errors.check(fields.state in STATES, f"{prefix}.state", "must be a job state")
    if wants("progress_percent"):
        errors.check(0.0 <= fields.progress_percent <= 100.0, f"{prefix}.progress_percent",
                     "must be between 0 and 100")


TRAINING_RUN_FIELDS = {"name", "description", "config", "state", "progress_percent", "current_step", "total_steps",
                       "training_loss", "validation_loss", "error_message", "artifact_id"}
SCRAPE_JOB_FIELDS = {"name", "description", "config", "state", "stage", "progress_percent", "pages_seen",
                     "images_found", "images_kept", "images_skipped", "skip_reasons", "error_count",
                     "error_message", "album_id"}


def _validate_training(session: Session, fields: JobFields, paths: set[str] | None) -> list[int]:
    errors = ViolationCollector()
    _validate_common(fields, paths, "training_run", errors)
    for name in ("current_step", "total_steps"):
        if paths is None or name in paths:
            errors.check(getattr(fields, name) >= 0, f"training_run.{name}", "must not be negative")
    album_ids = []
    if paths is None:
        for index, value in enumerate(fields.album_ids):
            try:
                album_ids.append(parse_id(value, f"training_run.album_ids[{index}]"))
            except InvalidArgument as error:
                errors.violations.extend(error.violations)
    errors.raise_if_any()
    for album_id in album_ids:
        if session.get(AlbumRow, album_id) is None:
            raise NotFound(f"album {album_id} not found", reason="ALBUM_NOT_FOUND")
    if (paths is None or "artifact_id" in paths) and fields.artifact_id:
        artifact = parse_id(fields.artifact_id, "training_run.artifact_id")
        if session.get(ArtifactRow, artifact) is None:
            raise NotFound(f"artifact {artifact} not found", reason="ARTIFACT_NOT_FOUND")
    return album_ids


def training_config(row: TrainingRunRow) -> dict[str, Any]:
    value = load_json(row.training_config, {})
    return value if isinstance(value, dict) else {}


def training_album_ids(row: TrainingRunRow) -> list[int]:
    ids = training_config(row).get("album_ids", [])
    return [int(i) for i in ids if isinstance(i, int | str) and str(i).isdigit()]


def create_training_run(catalog: Catalog, fields: JobFields, request_id: str = "") -> TrainingRunRow:
    def insert(session: Session) -> TrainingRunRow:
        album_ids = _validate_training(session, fields, None)
        row = TrainingRunRow(name="", dataset_path="", output_path="", status="pending", created_at=utcnow())
        row.training_config = json.dumps({"album_ids": album_ids})  # where the legacy app kept them
        _initial_state(row, fields.state)
        _assign_training(row, fields, TRAINING_RUN_FIELDS - {"state"})
        return row

    return create_once(catalog, "CreateTrainingRun", request_id, insert, require_training_run)


def require_training_run(session: Session, run_id: int) -> TrainingRunRow:
    row = session.get(TrainingRunRow, run_id)
    if row is None:
        raise NotFound(f"training run {run_id} not found", reason="TRAINING_RUN_NOT_FOUND")
    return row


def get_training_run(catalog: Catalog, run_id: str) -> TrainingRunRow:
    with catalog.db.read() as session:
        return require_training_run(session, parse_id(run_id, "id"))


def _list(catalog: Catalog, model, states: list[str], page_size: int, page_token: str):
    for state in states:
        if state not in STATES:
            raise InvalidArgument.for_field("states", f"{state!r} is not a job state")
    page = page_request(page_size, page_token, {"states": sorted(states), "kind": model.__tablename__})
    with catalog.db.read() as session:
        statement = select(model)
        if states:
            statement = statement.where(model.status.in_(states))
        if page.after is not None:
            statement = statement.where(model.id < int(page.after[0]))
        rows = list(session.scalars(statement.order_by(model.id.desc()).limit(page.size + 1)))
    more = len(rows) > page.size
    rows = rows[: page.size]
    return rows, page.next_token([rows[-1].id] if more else None)


def list_training_runs(catalog: Catalog, states: list[str], page_size: int,
                       page_token: str) -> tuple[list[TrainingRunRow], str]:
    return _list(catalog, TrainingRunRow, states, page_size, page_token)


def _check_paths(paths: list[str], allowed: set[str]) -> None:
    errors = ViolationCollector()
    if not paths:
        errors.add("update_mask", "must name at least one field")
    for path in paths:
        errors.check(path in allowed, "update_mask", f"{path!r} cannot be updated")
    errors.raise_if_any()


def update_training_run(catalog: Catalog, run_id: str, paths: list[str], fields: JobFields) -> TrainingRunRow:
    key = parse_id(run_id, "training_run.id")
    _check_paths(paths, TRAINING_RUN_FIELDS)
    wanted = set(paths)
    with catalog.db.write() as session:
        row = session.scalar(select(TrainingRunRow).where(TrainingRunRow.id == key).with_for_update())
        if row is None:
            raise NotFound(f"training run {key} not found", reason="TRAINING_RUN_NOT_FOUND")
        _validate_training(session, fields, wanted)
        _assign_training(row, fields, wanted)
        return row


def _initial_state(row: TrainingRunRow | ScrapeJobRow, state: str) -> None:
    """A new record may start in any state (an import of finished work, say); its times follow."""
    row.status = state or "pending"
    now = utcnow()
    if row.status == "running" or row.status in TERMINAL:
        row.started_at = now
    if row.status in TERMINAL:
        row.completed_at = now


def _finished_guard(row: TrainingRunRow | ScrapeJobRow, wanted: set[str], what: str) -> None:
    """A finished job keeps its results: only its name and description may still change."""
    if wanted - {"name", "description", "state"}:
        raise FailedPrecondition(f"{what} {row.id} is {row.status}; its progress can no longer change",
                                 reason="JOB_FINISHED")


def _assign_training(row: TrainingRunRow, fields: JobFields, wanted: set[str]) -> None:
    was_finished = row.id is not None and known_state(row.status) in TERMINAL
    if "state" in wanted:
        _apply_state(row, fields.state)  # a forbidden transition is reported as such first
    if was_finished:
        _finished_guard(row, wanted, "training run")
    if "name" in wanted:
        row.name = fields.name.strip()
    if "description" in wanted:
        row.description = fields.description or None
    if "config" in wanted:
        config = dict(fields.config or {})
        config["album_ids"] = training_album_ids(row)
        row.training_config = json.dumps(config)
    if "progress_percent" in wanted:
        row.progress = fields.progress_percent
    for name in ("current_step", "total_steps", "training_loss", "validation_loss"):
        if name in wanted:
            setattr(row, name, getattr(fields, name))
    if "error_message" in wanted:
        row.error_message = fields.error_message or None
        if fields.error_message:
            row.last_error_at = utcnow()
    if "artifact_id" in wanted:
        row.artifact_id = int(fields.artifact_id) if fields.artifact_id else None
    row.updated_at = utcnow()


def _assign_scrape(row: ScrapeJobRow, fields: JobFields, wanted: set[str]) -> None:
    was_finished = row.id is not None and known_state(row.status) in TERMINAL
    if "state" in wanted:
        _apply_state(row, fields.state)  # a forbidden transition is reported as such first
    if was_finished:
        _finished_guard(row, wanted, "scrape job")
    simple = {"name": "name", "stage": "stage", "pages_seen": "pages_seen", "images_found": "images_found",
              "images_kept": "images_scraped", "images_skipped": "images_skipped", "error_count": "error_count",
              "progress_percent": "progress"}
    for path, column in simple.items():
        if path in wanted:
            value = getattr(fields, path)
            setattr(row, column, value.strip() if isinstance(value, str) else value)
    if "stage" in wanted:
        row.stage = row.stage or None
    if "description" in wanted:
        row.description = fields.description or None
    if "config" in wanted:
        row.scrape_config = json.dumps(fields.config) if fields.config else None
    if "skip_reasons" in wanted:
        row.skip_reasons = json.dumps(fields.skip_reasons) if fields.skip_reasons else None
    if "error_message" in wanted:
        row.error_message = fields.error_message or None
        if fields.error_message:
            row.last_error_at = utcnow()
    if "album_id" in wanted:
        row.album_id = int(fields.album_id) if fields.album_id else None
    row.updated_at = utcnow()


def _validate_scrape(session: Session, fields: JobFields, paths: set[str] | None) -> None:
    errors = ViolationCollector()
    _validate_common(fields, paths, "scrape_job", errors)
    if paths is None:
        url = fields.source_url
        errors.check(url.startswith(("http://", "https://")) and len(url) <= 500, "scrape_job.source_url",
                     "must be an http(s) URL of at most 500 characters")
    for name in ("pages_seen", "images_found", "images_kept", "images_skipped", "error_count"):
        if paths is None or name in paths:
            errors.check(getattr(fields, name) >= 0, f"scrape_job.{name}", "must not be negative")
    if paths is None or "stage" in paths:
        errors.check(len(fields.stage) <= 50, "scrape_job.stage", "must be at most 50 characters")
    errors.raise_if_any()
    if (paths is None or "album_id" in paths) and fields.album_id:
        album = parse_id(fields.album_id, "scrape_job.album_id")
        if session.get(AlbumRow, album) is None:
            raise NotFound(f"album {album} not found", reason="ALBUM_NOT_FOUND")


def create_scrape_job(catalog: Catalog, fields: JobFields, request_id: str = "") -> ScrapeJobRow:
    def insert(session: Session) -> ScrapeJobRow:
        _validate_scrape(session, fields, None)
        row = ScrapeJobRow(name="", source_url=fields.source_url, status="pending", created_at=utcnow())
        _initial_state(row, fields.state)
        _assign_scrape(row, fields, SCRAPE_JOB_FIELDS - {"state"})
        return row

    return create_once(catalog, "CreateScrapeJob", request_id, insert, require_scrape_job)


def require_scrape_job(session: Session, job_id: int) -> ScrapeJobRow:
    row = session.get(ScrapeJobRow, job_id)
    if row is None:
        raise NotFound(f"scrape job {job_id} not found", reason="SCRAPE_JOB_NOT_FOUND")
    return row


def get_scrape_job(catalog: Catalog, job_id: str) -> ScrapeJobRow:
    with catalog.db.read() as session:
        return require_scrape_job(session, parse_id(job_id, "id"))


def list_scrape_jobs(catalog: Catalog, states: list[str], page_size: int,
                     page_token: str) -> tuple[list[ScrapeJobRow], str]:
    return _list(catalog, ScrapeJobRow, states, page_size, page_token)


def update_scrape_job(catalog: Catalog, job_id: str, paths: list[str], fields: JobFields) -> ScrapeJobRow:
    key = parse_id(job_id, "scrape_job.id")
    _check_paths(paths, SCRAPE_JOB_FIELDS)
    wanted = set(paths)
    with catalog.db.write() as session:
        row = session.scalar(select(ScrapeJobRow).where(ScrapeJobRow.id == key).with_for_update())
        if row is None:
            raise NotFound(f"scrape job {key} not found", reason="SCRAPE_JOB_NOT_FOUND")
        _validate_scrape(session, fields, wanted)
        _assign_scrape(row, fields, wanted)
        return row
