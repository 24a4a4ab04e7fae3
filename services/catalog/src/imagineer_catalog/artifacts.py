"""Artifacts: files the services exchange through the catalog, such as trained LoRA weights."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select

from imagineer_catalog.images import FileDownload, validate_filename
from imagineer_catalog.models import ArtifactRow, TrainingRunRow
from imagineer_catalog.paging import page_request
from imagineer_catalog.store import Catalog, delete_unreferenced_blobs, load_json, parse_id, utcnow
from imagineer_common.errors import FailedPrecondition, InvalidArgument, NotFound, ViolationCollector

ARTIFACT_KINDS = ("lora", "checkpoint", "other")
MAX_METADATA_ENTRIES = 64


@dataclass
class ArtifactUpload:
    name: str
    kind: str
    filename: str
    base_model: str = ""
    rank: int = 0
    training_run_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    expected_size_bytes: int = 0
    expected_sha256: str = ""


def _validate(request: ArtifactUpload) -> None:
    errors = ViolationCollector()
    errors.check(0 < len(request.name.strip()) <= 255, "metadata.name", "is required, at most 255 characters")
    errors.check(request.kind in ARTIFACT_KINDS, "metadata.kind", "is required: LORA, CHECKPOINT or OTHER")
    validate_filename(request.filename, errors, "metadata.filename")
    errors.check(len(request.base_model) <= 255, "metadata.base_model", "must be at most 255 characters")
    errors.check(0 <= request.rank <= 4096, "metadata.rank", "must be between 0 and 4096")
    errors.check(len(request.metadata) <= MAX_METADATA_ENTRIES, "metadata.metadata",
                 f"must have at most {MAX_METADATA_ENTRIES} entries")
    errors.check(request.expected_size_bytes >= 0, "metadata.expected_size_bytes", "must not be negative")
    errors.raise_if_any()


def metadata_of(row: ArtifactRow) -> dict[str, str]:
    value = load_json(row.metadata_json, {})
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def upload(catalog: Catalog, request: ArtifactUpload, chunks: Iterable[bytes]) -> tuple[ArtifactRow, bool]:
    _validate(request)
    run_id = parse_id(request.training_run_id, "metadata.training_run_id") if request.training_run_id else None
    if run_id is not None:
        with catalog.db.read() as session:
            if session.get(TrainingRunRow, run_id) is None:
                raise NotFound(f"training run {run_id} not found", reason="TRAINING_RUN_NOT_FOUND")
    staged = catalog.blobs.stage(chunks, max_bytes=catalog.max_upload_bytes)
    published: list[str] = []
    with catalog.blobs.lock:
        try:
            if staged.size_bytes == 0:
                raise InvalidArgument.for_field("chunk_data", "the upload contained no bytes")
            if request.expected_size_bytes and staged.size_bytes != request.expected_size_bytes:
                raise InvalidArgument.for_field("metadata.expected_size_bytes",
                                                f"expected {request.expected_size_bytes} bytes, "
                                                f"received {staged.size_bytes}")
            if request.expected_sha256 and staged.sha256 != request.expected_sha256.lower():
                raise InvalidArgument.for_field("metadata.expected_sha256", "the received bytes have another sha256")
            with catalog.db.write() as session:
                # The same bytes for the same run are a retried upload; another run gets its own artifact
                # (``== None`` is SQL's IS NULL here), sharing the stored file.
                existing = session.scalar(select(ArtifactRow).where(
                    ArtifactRow.content_hash == staged.sha256, ArtifactRow.kind == request.kind,
                    ArtifactRow.training_run_id == run_id))
                if existing is not None:
                    catalog.blobs.discard(staged)
                    return existing, True
                key = catalog.blobs.publish(staged)
                published.append(key)
                row = ArtifactRow(name=request.name.strip(), kind=request.kind, filename=request.filename,
                                  base_model=request.base_model or None, rank=request.rank or None,
                                  training_run_id=run_id,
                                  metadata_json=json.dumps(request.metadata) if request.metadata else None,
                                  content_hash=staged.sha256, blob_key=key, size_bytes=staged.size_bytes,
                                  created_at=utcnow())
                session.add(row)
                session.flush()
            return row, False
        except BaseException:
            catalog.blobs.discard(staged)
            delete_unreferenced_blobs(catalog, published)
            raise


def get(catalog: Catalog, artifact_id: str) -> ArtifactRow:
    key = parse_id(artifact_id, "id")
    with catalog.db.read() as session:
        row = session.get(ArtifactRow, key)
    if row is None:
        raise NotFound(f"artifact {key} not found", reason="ARTIFACT_NOT_FOUND")
    return row


def list_artifacts(catalog: Catalog, kind: str, training_run_id: str, base_model: str, page_size: int,
                   page_token: str) -> tuple[list[ArtifactRow], str]:
    run_id = parse_id(training_run_id, "training_run_id") if training_run_id else None
    page = page_request(page_size, page_token, {"kind": kind, "run": run_id, "model": base_model})
    with catalog.db.read() as session:
        statement = select(ArtifactRow)
        if kind:
            statement = statement.where(ArtifactRow.kind == kind)
        if run_id is not None:
            statement = statement.where(ArtifactRow.training_run_id == run_id)
        if base_model:
            statement = statement.where(ArtifactRow.base_model == base_model)
        if page.after is not None:
            statement = statement.where(ArtifactRow.id < int(page.after[0]))
        rows = list(session.scalars(statement.order_by(ArtifactRow.id.desc()).limit(page.size + 1)))
    more = len(rows) > page.size
    rows = rows[: page.size]
    return rows, page.next_token([rows[-1].id] if more else None)


def download(catalog: Catalog, artifact_id: str) -> FileDownload:
    row = get(catalog, artifact_id)
    if not catalog.blobs.exists(row.blob_key):
        raise FailedPrecondition(f"artifact {row.id} has lost its file", reason="ARTIFACT_FILE_MISSING")
    return FileDownload(content_type="application/octet-stream", size_bytes=row.size_bytes,
                        sha256=row.content_hash, filename=row.filename, chunks=catalog.blobs.read_chunks(row.blob_key))


def delete(catalog: Catalog, artifact_id: str) -> None:
    key = parse_id(artifact_id, "id")
    with catalog.blobs.lock:
        with catalog.db.write() as session:
            row = session.get(ArtifactRow, key)
            if row is None:
                raise NotFound(f"artifact {key} not found", reason="ARTIFACT_NOT_FOUND")
            blob_key = row.blob_key
            session.delete(row)
        delete_unreferenced_blobs(catalog, [blob_key])
