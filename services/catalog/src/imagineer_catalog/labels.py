"""Labels on images: captions, tags, manual notes and AI ratings, never duplicated."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imagineer_catalog.models import ImageRow, LabelRow
from imagineer_catalog.paging import page_request
from imagineer_catalog.store import Catalog, parse_id, utcnow
from imagineer_common.errors import NotFound, ViolationCollector

LABEL_TYPES = ("caption", "tag", "manual", "user", "ai_generated")
MAX_LABEL_CHARS = 10_000


@dataclass
class LabelFields:
    text: str
    label_type: str
    confidence: float | None = None
    source_model: str = ""
    source_prompt: str = ""
    created_by: str = ""


def validate(fields: LabelFields) -> None:
    errors = ViolationCollector()
    text = fields.text.strip()
    errors.check(0 < len(text) <= MAX_LABEL_CHARS, "label.text", f"is required, at most {MAX_LABEL_CHARS} characters")
    errors.check(fields.label_type in LABEL_TYPES, "label.label_type", f"must be one of {', '.join(LABEL_TYPES)}")
    errors.check(fields.confidence is None or 0.0 <= fields.confidence <= 1.0, "label.confidence",
                 "must be between 0 and 1")
    errors.check(len(fields.source_model) <= 100, "label.source_model", "must be at most 100 characters")
    errors.check(len(fields.created_by) <= 255, "label.created_by", "must be at most 255 characters")
    errors.raise_if_any()


def _lock_image(session: Session, image_id: int) -> ImageRow:
    # Serialises label writes per image, so two identical adds cannot both insert.
    row = session.scalar(select(ImageRow).where(ImageRow.id == image_id).with_for_update())
    if row is None:
        raise NotFound(f"image {image_id} not found", reason="IMAGE_NOT_FOUND")
    return row


def create(catalog: Catalog, image_id: str, fields: LabelFields) -> LabelRow:
    key = parse_id(image_id, "image_id")
    validate(fields)
    text = fields.text.strip()
    with catalog.db.write() as session:
        _lock_image(session, key)
        existing = session.scalar(select(LabelRow).where(
            LabelRow.image_id == key, LabelRow.label_text == text, LabelRow.label_type == fields.label_type,
            func.coalesce(LabelRow.source_model, "") == fields.source_model).limit(1))
        if existing is not None:
            return existing
        row = LabelRow(image_id=key, label_text=text, label_type=fields.label_type, confidence=fields.confidence,
                       source_model=fields.source_model or None, source_prompt=fields.source_prompt or None,
                       created_by=fields.created_by or None, created_at=utcnow())
        session.add(row)
        session.flush()
        return row


def list_labels(catalog: Catalog, image_id: str, label_type: str, page_size: int,
                page_token: str) -> tuple[list[LabelRow], str]:
    key = parse_id(image_id, "image_id")
    page = page_request(page_size, page_token, {"image": key, "type": label_type}, default=100, maximum=1000)
    with catalog.db.read() as session:
        if session.get(ImageRow, key) is None:
            raise NotFound(f"image {key} not found", reason="IMAGE_NOT_FOUND")
        statement = select(LabelRow).where(LabelRow.image_id == key)
        if label_type:
            statement = statement.where(LabelRow.label_type == label_type)
        if page.after is not None:
            statement = statement.where(LabelRow.id > int(page.after[0]))
        rows = list(session.scalars(statement.order_by(LabelRow.id).limit(page.size + 1)))
    more = len(rows) > page.size
    rows = rows[: page.size]
    return rows, page.next_token([rows[-1].id] if more else None)


def delete(catalog: Catalog, label_id: str) -> None:
    key = parse_id(label_id, "id")
    with catalog.db.write() as session:
        row = session.get(LabelRow, key)
        if row is None:
            raise NotFound(f"label {key} not found", reason="LABEL_NOT_FOUND")
        session.delete(row)
