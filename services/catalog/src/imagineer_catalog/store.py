"""The catalog's shared state: database, blob store and limits; and small helpers every domain module uses."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, select, union
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imagineer_catalog.blobstore import BlobStore
from imagineer_catalog.database import Database
from imagineer_catalog.hashindex import HashIndex
from imagineer_catalog.models import ArtifactRow, ImageRow, RequestKeyRow
from imagineer_common.errors import InvalidArgument

T = TypeVar("T")
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024 * 1024 * 1024


@dataclass
class Catalog:
    db: Database
    blobs: BlobStore
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    hash_index: HashIndex = field(default_factory=HashIndex)  # near-duplicate search, kept in step with the rows


def utcnow() -> datetime:
    """Naive UTC, the way the legacy app stored every timestamp."""
    return datetime.now(UTC).replace(tzinfo=None)


def parse_id(value: str, field: str) -> int:
    """Ids are opaque strings to clients; inside they are positive integers."""
    if not value:
        raise InvalidArgument.for_field(field, "is required")
    if not value.isdigit() or len(value) > 18 or int(value) <= 0:
        raise InvalidArgument.for_field(field, f"{value!r} is not a valid id")
    return int(value)


def load_json(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def referenced_blob_keys(session: Session, keys: Iterable[str] | None = None) -> set[str]:
    """Blob keys some row still refers to (all of them, or those among ``keys``)."""
    queries: list[Select] = [
        select(ImageRow.blob_key.label("key")).where(ImageRow.blob_key.is_not(None)),
        select(ImageRow.thumbnail_key.label("key")).where(ImageRow.thumbnail_key.is_not(None)),
        select(ArtifactRow.blob_key.label("key")),
    ]
    if keys is not None:
        wanted = list(set(keys))
        if not wanted:
            return set()
        queries = [q.where(q.selected_columns[0].in_(wanted)) for q in queries]
    return {row[0] for row in session.execute(union(*queries))}


def delete_unreferenced_blobs(catalog: Catalog, keys: Iterable[str]) -> None:
    """Removes files whose last row is gone. Caller holds ``catalog.blobs.lock``."""
    candidates = {k for k in keys if k}
    if not candidates:
        return
    with catalog.db.read() as session:
        still_used = referenced_blob_keys(session, candidates)
    for key in candidates - still_used:
        catalog.blobs.delete(key)


def remembered_request(session: Session, method: str, request_id: str) -> int | None:
    """The resource a retried request created the first time (AIP-155)."""
    if not request_id:
        return None
    if len(request_id) > 128:
        raise InvalidArgument.for_field("request_id", "must be at most 128 characters")
    row = session.get(RequestKeyRow, (method, request_id))
    return None if row is None else row.resource_id


def remember_request(session: Session, method: str, request_id: str, resource_id: int) -> None:
    if request_id:
        session.add(RequestKeyRow(method=method, request_id=request_id, resource_id=resource_id,
                                  created_at=utcnow()))


def create_once(catalog: Catalog, method: str, request_id: str, insert: Callable[[Session], Any],
                present: Callable[[Session, int], T]) -> T:
    """Creates a resource at most once per ``request_id`` (AIP-155) and answers with ``present`` of it.

    ``insert`` adds the new row to the session; a retry finds the resource the first call made, even when the
    two overlapped (the loser's unique-key violation on PostgreSQL is answered with the winner's resource).
    """
    def attempt() -> T:
        with catalog.db.write() as session:
            earlier = remembered_request(session, method, request_id)
            if earlier is not None:
                return present(session, earlier)
            row = insert(session)
            session.add(row)
            session.flush()
            remember_request(session, method, request_id, row.id)
            return present(session, row.id)

    try:
        return attempt()
    except IntegrityError:
        if not request_id:
            raise
        with catalog.db.read() as session:
            earlier = remembered_request(session, method, request_id)
            if earlier is None:
                raise
            return present(session, earlier)


def sweep_storage(catalog: Catalog) -> tuple[int, int]:
    """Start-up clean-up after a crash: unfinished uploads and files no row refers to."""
    temporary = catalog.blobs.clear_temporary()
    with catalog.db.read() as session:
        referenced = referenced_blob_keys(session)
    return temporary, catalog.blobs.sweep_unreferenced(referenced)
