"""Albums and their ordered membership.

Order is kept in ``album_images.sort_order``; a client sees 0-based positions
derived from that order, so removing an image closes the gap by itself. Every
change to one album's membership first locks the album (row lock on
PostgreSQL; SQLite write transactions are already serialised), so concurrent
adds can never hand out the same place twice, as the legacy app's "count + 1" did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from imagineer_catalog.models import AlbumImageRow, AlbumRow, ImageRow, ScrapeJobRow
from imagineer_catalog.paging import page_request
from imagineer_catalog.store import (
    Catalog,
    create_once,
    load_json,
    parse_id,
    utcnow,
)
from imagineer_catalog.visibility import visible_albums, visible_images
from imagineer_common.auth import ADMIN, Caller
from imagineer_common.errors import InvalidArgument, NotFound, ViolationCollector

ALBUM_TYPES = ("batch", "set", "collection", "manual", "scraped")
MAX_IMAGES_PER_CALL = 1000


@dataclass
class AlbumFields:
    name: str = ""
    description: str = ""
    album_type: str = "manual"
    is_public: bool = False
    is_training_source: bool = False
    created_by: str = ""
    generation_prompt: str = ""
    generation_config: dict[str, Any] | None = None


@dataclass
class AlbumView:
    row: AlbumRow
    image_count: int


@dataclass
class AlbumFilter:
    album_type: str = ""
    is_training_source: bool | None = None
    is_public: bool | None = None


@dataclass
class AlbumEntry:
    image: ImageRow
    position: int
    added_by: str
    added_at: datetime | None


@dataclass
class MembershipChange:
    album: AlbumView
    added: list[int] = field(default_factory=list)
    already_present: list[int] = field(default_factory=list)
    removed_count: int = 0


def require_album(session: Session, album_id: int, field_path: str = "id", viewer: Caller = ADMIN) -> AlbumRow:
    row = session.scalar(select(AlbumRow).where(AlbumRow.id == album_id, visible_albums(viewer)))
    if row is None:
        raise NotFound(f"album {album_id} not found", reason="ALBUM_NOT_FOUND")
    return row


def lock_album(session: Session, album_id: int, field_path: str = "album_id") -> AlbumRow:
    """Loads the album for a membership change, holding its row lock until commit."""
    row = session.scalar(select(AlbumRow).where(AlbumRow.id == album_id).with_for_update())
    if row is None:
        raise NotFound(f"album {album_id} not found", reason="ALBUM_NOT_FOUND")
    return row


def _count(session: Session, album_id: int, viewer: Caller) -> int:
    statement = select(func.count()).select_from(AlbumImageRow).join(ImageRow, ImageRow.id == AlbumImageRow.image_id)
    return session.scalar(statement.where(AlbumImageRow.album_id == album_id, visible_images(viewer))) or 0


def _view(session: Session, row: AlbumRow, viewer: Caller) -> AlbumView:
    return AlbumView(row=row, image_count=_count(session, row.id, viewer))


def validate_fields(fields: AlbumFields, errors: ViolationCollector, paths: set[str] | None = None) -> None:
    def wants(name: str) -> bool:
        return paths is None or name in paths

    if wants("name"):
        errors.check(0 < len(fields.name.strip()) <= 255, "album.name", "is required, at most 255 characters")
    if wants("album_type"):
        errors.check(fields.album_type in ALBUM_TYPES, "album.album_type", f"must be one of {', '.join(ALBUM_TYPES)}")
    if wants("created_by"):
        errors.check(len(fields.created_by) <= 255, "album.created_by", "must be at most 255 characters")


def create(catalog: Catalog, fields: AlbumFields, request_id: str = "") -> AlbumView:
    errors = ViolationCollector()
    validate_fields(fields, errors)
    errors.raise_if_any()
    def insert(_session: Session) -> AlbumRow:
        now = utcnow()
        return AlbumRow(
            name=fields.name.strip(), description=fields.description or None, album_type=fields.album_type,
            is_public=fields.is_public, is_training_source=fields.is_training_source,
            created_by=fields.created_by or None, generation_prompt=fields.generation_prompt or None,
            generation_config=json.dumps(fields.generation_config) if fields.generation_config else None,
            created_at=now, updated_at=now)

    return create_once(catalog, "CreateAlbum", request_id, insert,
                       lambda session, album_id: _view(session, require_album(session, album_id), ADMIN))


def get(catalog: Catalog, album_id: str, viewer: Caller) -> AlbumView:
    with catalog.db.read() as session:
        return _view(session, require_album(session, parse_id(album_id, "id"), "id", viewer), viewer)


def list_albums(catalog: Catalog, flt: AlbumFilter, page_size: int, page_token: str,
                viewer: Caller) -> tuple[list[AlbumView], str]:
    if flt.album_type and flt.album_type not in ALBUM_TYPES:
        raise InvalidArgument.for_field("album_type", "is not a known album type")
    page = page_request(page_size, page_token, {"f": flt.__dict__, "admin": viewer.is_admin})
    with catalog.db.read() as session:
        statement = select(AlbumRow).where(visible_albums(viewer))
        if flt.album_type:
            statement = statement.where(AlbumRow.album_type == flt.album_type)
        if flt.is_training_source is not None:
            statement = statement.where(AlbumRow.is_training_source.is_(True) if flt.is_training_source
                                        else or_(AlbumRow.is_training_source.is_(None),
                                                 AlbumRow.is_training_source.is_(False)))
        if flt.is_public is not None:
            statement = statement.where(AlbumRow.is_public.is_(flt.is_public))
        if page.after is not None:
            statement = statement.where(AlbumRow.id < int(page.after[0]))
        rows = list(session.scalars(statement.order_by(AlbumRow.id.desc()).limit(page.size + 1)))
        more = len(rows) > page.size
        views = [_view(session, row, viewer) for row in rows[: page.size]]
    return views, page.next_token([views[-1].row.id] if more else None)


UPDATABLE_FIELDS = {"name", "description", "album_type", "is_public", "is_training_source",
                    "generation_prompt", "generation_config"}


def update_album(catalog: Catalog, album_id: str, paths: list[str], fields: AlbumFields) -> AlbumView:
    errors = ViolationCollector()
    key = parse_id(album_id, "album.id")
    if not paths:
        errors.add("update_mask", "must name at least one field")
    for path in paths:
        errors.check(path in UPDATABLE_FIELDS, "update_mask", f"{path!r} cannot be updated")
    validate_fields(fields, errors, set(paths))
    errors.raise_if_any()
    with catalog.db.write() as session:
        row = require_album(session, key, "album.id")
        for path in paths:
            value = getattr(fields, path)
            if path == "generation_config":
                value = json.dumps(value) if value else None
            elif path == "name":
                value = value.strip()
            elif isinstance(value, str) and path != "album_type":
                value = value or None
            setattr(row, path, value)
        row.updated_at = utcnow()
        return _view(session, row, ADMIN)


def delete(catalog: Catalog, album_id: str) -> None:
    key = parse_id(album_id, "id")
    with catalog.db.write() as session:
        row = lock_album(session, key, "id")
        session.execute(update(ScrapeJobRow).where(ScrapeJobRow.album_id == key).values(album_id=None))
        session.query(AlbumImageRow).filter(AlbumImageRow.album_id == key).delete()
        session.delete(row)


def _ordered_members(session: Session, album_id: int) -> list[AlbumImageRow]:
    return list(session.scalars(select(AlbumImageRow).where(AlbumImageRow.album_id == album_id)
                                .order_by(AlbumImageRow.sort_order, AlbumImageRow.id)))


def append_members(session: Session, album_id: int, image_ids: list[int], *, added_by: str | None = None,
                   position: int | None = None) -> tuple[list[int], list[int]]:
    """Adds images to a locked album; returns (added, already_present)."""
    present = set(session.scalars(select(AlbumImageRow.image_id).where(
        AlbumImageRow.album_id == album_id, AlbumImageRow.image_id.in_(image_ids))))
    new_ids = [i for i in image_ids if i not in present]
    already = [i for i in image_ids if i in present]
    if not new_ids:
        return [], already
    now = utcnow()
    if position is None:
        last = session.scalar(select(func.max(AlbumImageRow.sort_order)).where(AlbumImageRow.album_id == album_id))
        start = 0 if last is None else last + 1
        for offset, image_id in enumerate(new_ids):
            session.add(AlbumImageRow(album_id=album_id, image_id=image_id, sort_order=start + offset,
                                      added_by=added_by, created_at=now))
    else:
        members = _ordered_members(session, album_id)
        insert_at = min(position, len(members))
        for index, member in enumerate(members):
            member.sort_order = index if index < insert_at else index + len(new_ids)
        for offset, image_id in enumerate(new_ids):
            session.add(AlbumImageRow(album_id=album_id, image_id=image_id, sort_order=insert_at + offset,
                                      added_by=added_by, created_at=now))
    session.flush()
    return new_ids, already


def _parse_image_ids(values: list[str], field_path: str) -> list[int]:
    if not values:
        raise InvalidArgument.for_field(field_path, "must list at least one image id")
    if len(values) > MAX_IMAGES_PER_CALL:
        raise InvalidArgument.for_field(field_path, f"must list at most {MAX_IMAGES_PER_CALL} ids per call")
    ids = [parse_id(value, f"{field_path}[{index}]") for index, value in enumerate(values)]
    if len(set(ids)) != len(ids):
        raise InvalidArgument.for_field(field_path, "must not repeat an id")
    return ids


def add_images(catalog: Catalog, album_id: str, image_ids: list[str], position: int | None = None,
               added_by: str | None = None) -> MembershipChange:
    key = parse_id(album_id, "album_id")
    ids = _parse_image_ids(image_ids, "image_ids")
    if position is not None and position < 0:
        raise InvalidArgument.for_field("position", "must not be negative")
    with catalog.db.write() as session:
        lock_album(session, key)
        found = set(session.scalars(select(ImageRow.id).where(ImageRow.id.in_(ids))))
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise NotFound(f"images not found: {', '.join(missing)}", reason="IMAGE_NOT_FOUND")
        added, already = append_members(session, key, ids, added_by=added_by, position=position)
        row = session.get(AlbumRow, key)
        row.updated_at = utcnow()
        return MembershipChange(album=_view(session, row, ADMIN), added=added, already_present=already)


def remove_images(catalog: Catalog, album_id: str, image_ids: list[str]) -> MembershipChange:
    key = parse_id(album_id, "album_id")
    ids = _parse_image_ids(image_ids, "image_ids")
    with catalog.db.write() as session:
        row = lock_album(session, key)
        removed = session.query(AlbumImageRow).filter(
            AlbumImageRow.album_id == key, AlbumImageRow.image_id.in_(ids)).delete()
        row.updated_at = utcnow()
        session.flush()
        return MembershipChange(album=_view(session, row, ADMIN), removed_count=removed)


def reorder(catalog: Catalog, album_id: str, image_ids: list[str]) -> AlbumView:
    key = parse_id(album_id, "album_id")
    ids = [parse_id(value, f"image_ids[{index}]") for index, value in enumerate(image_ids)]
    with catalog.db.write() as session:
        row = lock_album(session, key)
        members = {m.image_id: m for m in _ordered_members(session, key)}
        if len(ids) != len(set(ids)) or set(ids) != set(members):
            raise InvalidArgument.for_field(
                "image_ids", f"must list each of the album's {len(members)} images exactly once")
        for index, image_id in enumerate(ids):
            members[image_id].sort_order = index
        row.updated_at = utcnow()
        session.flush()
        return _view(session, row, ADMIN)


def list_members(catalog: Catalog, album_id: str, page_size: int, page_token: str,
                 viewer: Caller) -> tuple[list[AlbumEntry], str]:
    key = parse_id(album_id, "album_id")
    page = page_request(page_size, page_token, {"album": key, "admin": viewer.is_admin})
    with catalog.db.read() as session:
        require_album(session, key, "album_id", viewer)
        base = (select(AlbumImageRow, ImageRow).join(ImageRow, ImageRow.id == AlbumImageRow.image_id)
                .where(AlbumImageRow.album_id == key, visible_images(viewer)))
        if page.after is not None:
            after = (int(page.after[0]), int(page.after[1]))
            base = base.where(or_(func.coalesce(AlbumImageRow.sort_order, 0) > after[0],
                                  and_(func.coalesce(AlbumImageRow.sort_order, 0) == after[0],
                                       AlbumImageRow.id > after[1])))
            first_position = int(page.after[2]) + 1
        else:
            first_position = 0
        rows = list(session.execute(base.order_by(func.coalesce(AlbumImageRow.sort_order, 0), AlbumImageRow.id)
                                    .limit(page.size + 1)))
    more = len(rows) > page.size
    entries = [AlbumEntry(image=image, position=first_position + index, added_by=member.added_by or "",
                          added_at=member.created_at)
               for index, (member, image) in enumerate(rows[: page.size])]
    last = rows[page.size - 1][0] if more else None
    token = page.next_token([last.sort_order or 0, last.id, entries[-1].position] if last else None)
    return entries, token


def config_of(row: AlbumRow) -> dict[str, Any] | None:
    value = load_json(row.generation_config, None)
    return value if isinstance(value, dict) else None
