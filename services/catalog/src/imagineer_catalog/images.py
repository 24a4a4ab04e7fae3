"""Images: upload (content-addressed, deduplicated), read, list, update, delete, file access."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import exists, false, func, or_, select
from sqlalchemy.orm import Session

from imagineer_catalog import albums as album_ops
from imagineer_catalog import imaging
from imagineer_catalog.blobstore import StagedBlob
from imagineer_catalog.models import AlbumImageRow, AlbumRow, ImageRow, LabelRow
from imagineer_catalog.paging import PageRequest, page_request
from imagineer_catalog.store import (
    Catalog,
    delete_unreferenced_blobs,
    load_json,
    parse_id,
    utcnow,
)
from imagineer_catalog.visibility import visible_images
from imagineer_common.auth import Caller
from imagineer_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ViolationCollector,
)

MAX_SEED = 2**63 - 1
MAX_PROMPT_CHARS = 20_000


@dataclass
class LoraUse:
    artifact_id: str
    name: str
    weight: float


@dataclass
class GenerationRecord:
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = 0
    guidance_scale: float = 0.0
    scheduler: str = ""
    width: int = 0
    height: int = 0
    base_model: str = ""
    loras: list[LoraUse] = field(default_factory=list)


@dataclass
class ImageUpload:
    filename: str
    generation: GenerationRecord = field(default_factory=GenerationRecord)
    is_public: bool = False
    is_nsfw: bool = False
    album_id: str = ""
    expected_size_bytes: int = 0
    expected_sha256: str = ""
    added_by: str | None = None


@dataclass
class ImageFilter:
    album_id: str = ""
    is_public: bool | None = None
    is_nsfw: bool | None = None
    label_text: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    newest_first: bool = True
    in_training_source_album: bool = False


def validate_generation(record: GenerationRecord, errors: ViolationCollector, prefix: str) -> None:
    errors.check(len(record.prompt) <= MAX_PROMPT_CHARS, f"{prefix}.prompt",
                 f"must be at most {MAX_PROMPT_CHARS} characters")
    errors.check(len(record.negative_prompt) <= MAX_PROMPT_CHARS, f"{prefix}.negative_prompt",
                 f"must be at most {MAX_PROMPT_CHARS} characters")
    errors.check(record.seed is None or 0 <= record.seed <= MAX_SEED, f"{prefix}.seed",
                 "must be between 0 and 2^63-1")
    errors.check(0 <= record.steps <= 10_000, f"{prefix}.steps", "must be between 0 and 10000")
    errors.check(0 <= record.guidance_scale <= 100, f"{prefix}.guidance_scale", "must be between 0 and 100")
    errors.check(len(record.scheduler) <= 50, f"{prefix}.scheduler", "must be at most 50 characters")
    errors.check(len(record.base_model) <= 255, f"{prefix}.base_model", "must be at most 255 characters")
    errors.check(record.width >= 0 and record.height >= 0, f"{prefix}.width",
                 "width and height must not be negative")
    for index, lora in enumerate(record.loras):
        errors.check(bool(lora.artifact_id or lora.name), f"{prefix}.loras[{index}]",
                     "needs an artifact_id or a name")
        errors.check(-10 <= lora.weight <= 10, f"{prefix}.loras[{index}].weight", "must be between -10 and 10")


def validate_filename(name: str, errors: ViolationCollector, field_path: str) -> None:
    if not name:
        errors.add(field_path, "is required")
    elif len(name) > 255:
        errors.add(field_path, "must be at most 255 characters")
    elif "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        errors.add(field_path, "must be a plain file name without path separators")


def lora_config_json(loras: list[LoraUse]) -> str | None:
    if not loras:
        return None
    return json.dumps([{"artifact_id": lora.artifact_id or None, "path": lora.name, "weight": lora.weight}
                       for lora in loras])


def loras_from_row(row: ImageRow) -> list[LoraUse]:
    """Reads both the legacy ``[{"path", "weight"}]`` and the catalog's own layout."""
    uses = []
    for item in load_json(row.lora_config, []):
        if not isinstance(item, dict):
            continue
        try:
            weight = float(item.get("weight", 1.0))
        except (TypeError, ValueError):
            weight = 1.0
        uses.append(LoraUse(artifact_id=str(item.get("artifact_id") or ""),
                            name=str(item.get("path") or item.get("name") or ""), weight=weight))
    return uses


def generation_from_row(row: ImageRow) -> GenerationRecord:
    return GenerationRecord(
        prompt=row.prompt or "", negative_prompt=row.negative_prompt or "", seed=row.seed,
        steps=row.steps or 0, guidance_scale=row.guidance_scale or 0.0, scheduler=row.scheduler or "",
        width=row.width or 0, height=row.height or 0, base_model=row.base_model or "",
        loras=loras_from_row(row))


def _unique_filename(session: Session, wanted: str, sha256: str) -> str:
    taken = session.scalar(select(func.count()).where(ImageRow.filename == wanted))
    if not taken:
        return wanted
    path = PurePosixPath(wanted)
    for attempt in range(100):
        suffix = sha256[:8] if attempt == 0 else f"{sha256[:8]}-{attempt}"
        candidate = f"{path.stem}-{suffix}{path.suffix}"
        if not session.scalar(select(func.count()).where(ImageRow.filename == candidate)):
            return candidate
    raise FailedPrecondition(f"could not find a free file name for {wanted!r}")


def stage_image(catalog: Catalog, chunks: Iterable[bytes], *, expected_size: int = 0,
                expected_sha256: str = "") -> tuple[StagedBlob, imaging.ImageInfo]:
    """Writes an upload to a temporary file and checks it is a whole, readable image."""
    staged = catalog.blobs.stage(chunks, max_bytes=catalog.max_upload_bytes)
    try:
        if staged.size_bytes == 0:
            raise InvalidArgument.for_field("chunk_data", "the upload contained no bytes")
        if expected_size and staged.size_bytes != expected_size:
            raise InvalidArgument.for_field(
                "metadata.expected_size_bytes", f"expected {expected_size} bytes, received {staged.size_bytes}")
        if expected_sha256 and staged.sha256 != expected_sha256.lower():
            raise InvalidArgument.for_field("metadata.expected_sha256", "the received bytes have another sha256")
        try:
            info = imaging.probe(staged.temp_path)
        except imaging.NotAnImage as error:
            raise InvalidArgument.for_field("chunk_data", str(error)) from None
    except BaseException:
        catalog.blobs.discard(staged)
        raise
    return staged, info


def store_staged_image(catalog: Catalog, staged: StagedBlob, info: imaging.ImageInfo, upload: ImageUpload,
                       *, created_at: datetime | None = None,
                       adopt_legacy_row: int | None = None) -> tuple[ImageRow, bool]:
    """Publishes a staged file and commits its row; returns (image, already_existed).

    The file is renamed into place before the row commits, under the blob lock:
    a crash in between leaves only an unreferenced file that start-up sweeps.
    """
    gen = upload.generation
    if (gen.width and gen.width != info.width) or (gen.height and gen.height != info.height):
        catalog.blobs.discard(staged)
        raise InvalidArgument.for_field(
            "metadata.generation.width",
            f"the generation record says {gen.width}x{gen.height} but the file is {info.width}x{info.height}")
    album_id = parse_id(upload.album_id, "metadata.album_id") if upload.album_id else None
    # The preview is made before taking the lock and not fsynced: it can always be rebuilt from the file.
    try:
        thumbnail, _, _ = imaging.make_thumbnail(staged.temp_path)
        thumbnail_staged = catalog.blobs.stage_bytes(thumbnail, durable=False)
    except (OSError, ValueError):
        thumbnail_staged = None  # a preview is a nicety, never a reason to refuse the image
    published: list[str] = []
    with catalog.blobs.lock:
        try:
            with catalog.db.write() as session:
                if album_id is not None:
                    album_ops.lock_album(session, album_id, "metadata.album_id")
                # One query answers both "are these bytes stored?" and "is this name taken?".
                clashes = session.execute(select(ImageRow.id, ImageRow.content_hash).where(
                    or_(ImageRow.content_hash == staged.sha256, ImageRow.filename == upload.filename))).all()
                existing_id = next((row.id for row in clashes if row.content_hash == staged.sha256), None)
                if existing_id is not None:
                    catalog.blobs.discard(staged)
                    if thumbnail_staged is not None:
                        catalog.blobs.discard(thumbnail_staged)
                    if album_id is not None:
                        album_ops.append_members(session, album_id, [existing_id], added_by=upload.added_by)
                    return session.get(ImageRow, existing_id), True
                key = catalog.blobs.publish(staged)
                published.append(key)
                thumbnail_key = None
                if thumbnail_staged is not None:
                    thumbnail_key = catalog.blobs.publish(thumbnail_staged)
                    published.append(thumbnail_key)
                now = utcnow()
                row = session.get(ImageRow, adopt_legacy_row, with_for_update=True) if adopt_legacy_row else None
                if row is not None and row.content_hash is not None:
                    row = None  # another import attached a file to it meanwhile: store a new row
                if row is None:
                    filename = upload.filename if not clashes else _unique_filename(
                        session, upload.filename, staged.sha256)
                    row = ImageRow(
                        filename=filename,
                        prompt=gen.prompt or None, negative_prompt=gen.negative_prompt or None, seed=gen.seed,
                        steps=gen.steps or None, guidance_scale=gen.guidance_scale or None,
                        scheduler=gen.scheduler or None, base_model=gen.base_model or None,
                        lora_config=lora_config_json(gen.loras), is_public=upload.is_public,
                        is_nsfw=upload.is_nsfw, created_at=created_at or now)
                    session.add(row)
                row.width, row.height = info.width, info.height
                row.content_hash, row.blob_key, row.thumbnail_key = staged.sha256, key, thumbnail_key
                row.content_type, row.size_bytes, row.updated_at = info.content_type, staged.size_bytes, now
                row.perceptual_hash = info.perceptual_hash or None
                session.flush()
                if album_id is not None:
                    album_ops.append_members(session, album_id, [row.id], added_by=upload.added_by)
            return row, False
        except BaseException:
            catalog.blobs.discard(staged)
            if thumbnail_staged is not None:
                catalog.blobs.discard(thumbnail_staged)
            delete_unreferenced_blobs(catalog, published)
            raise


def upload(catalog: Catalog, request: ImageUpload, chunks: Iterable[bytes]) -> tuple[ImageRow, bool]:
    errors = ViolationCollector()
    validate_filename(request.filename, errors, "metadata.filename")
    validate_generation(request.generation, errors, "metadata.generation")
    errors.check(request.expected_size_bytes >= 0, "metadata.expected_size_bytes", "must not be negative")
    errors.raise_if_any()
    if request.album_id:
        with catalog.db.read() as session:  # fail before reading a large upload
            album_ops.require_album(session, parse_id(request.album_id, "metadata.album_id"),
                                    "metadata.album_id")
    staged, info = stage_image(catalog, chunks, expected_size=request.expected_size_bytes,
                               expected_sha256=request.expected_sha256)
    return store_staged_image(catalog, staged, info, request)


def require_image(session: Session, image_id: int, viewer: Caller, field_path: str = "id") -> ImageRow:
    row = session.scalar(select(ImageRow).where(ImageRow.id == image_id, visible_images(viewer)))
    if row is None:
        raise NotFound(f"image {image_id} not found", reason="IMAGE_NOT_FOUND")
    return row


def get(catalog: Catalog, image_id: str, viewer: Caller) -> ImageRow:
    with catalog.db.read() as session:
        return require_image(session, parse_id(image_id, "id"), viewer)


def list_images(catalog: Catalog, flt: ImageFilter, page_size: int, page_token: str,
                viewer: Caller) -> tuple[list[ImageRow], str]:
    query_key: dict[str, Any] = {"f": flt.__dict__, "admin": viewer.is_admin}
    page: PageRequest = page_request(page_size, page_token, query_key)
    with catalog.db.read() as session:
        statement = select(ImageRow).where(visible_images(viewer))
        if flt.album_id:
            album_id = parse_id(flt.album_id, "album_id")
            album_ops.require_album(session, album_id, "album_id", viewer)
            statement = statement.where(exists().where(AlbumImageRow.album_id == album_id,
                                                       AlbumImageRow.image_id == ImageRow.id))
        if viewer.is_admin and flt.is_public is not None:
            statement = statement.where(ImageRow.is_public.is_(flt.is_public))
        if viewer.is_admin and flt.is_nsfw is not None:
            statement = statement.where(ImageRow.is_nsfw.is_(True) if flt.is_nsfw
                                        else or_(ImageRow.is_nsfw.is_(None), ImageRow.is_nsfw == false()))
        if flt.label_text:
            statement = statement.where(exists().where(
                LabelRow.image_id == ImageRow.id, func.lower(LabelRow.label_text) == flt.label_text.lower()))
        if flt.created_after is not None:
            statement = statement.where(ImageRow.created_at >= flt.created_after)
        if flt.created_before is not None:
            statement = statement.where(ImageRow.created_at < flt.created_before)
        if flt.in_training_source_album:
            statement = statement.where(exists().where(
                AlbumImageRow.image_id == ImageRow.id, AlbumImageRow.album_id == AlbumRow.id,
                AlbumRow.is_training_source.is_(True)))
        # Keyset on the id: ids grow with creation, so this is creation order.
        if page.after is not None:
            after_id = int(page.after[0])
            statement = statement.where(ImageRow.id < after_id if flt.newest_first else ImageRow.id > after_id)
        order = ImageRow.id.desc() if flt.newest_first else ImageRow.id.asc()
        rows = list(session.scalars(statement.order_by(order).limit(page.size + 1)))
    more = len(rows) > page.size
    rows = rows[: page.size]
    return rows, page.next_token([rows[-1].id] if more else None)


UPDATABLE_FIELDS = {
    "filename", "is_public", "is_nsfw", "generation.prompt", "generation.negative_prompt", "generation.seed",
    "generation.steps", "generation.guidance_scale", "generation.scheduler", "generation.base_model",
    "generation.loras",
}


def update(catalog: Catalog, image_id: str, paths: list[str], filename: str, is_public: bool, is_nsfw: bool,
           generation: GenerationRecord) -> ImageRow:
    errors = ViolationCollector()
    image_key = parse_id(image_id, "image.id")
    if not paths:
        errors.add("update_mask", "must name at least one field")
    for path in paths:
        errors.check(path in UPDATABLE_FIELDS, "update_mask", f"{path!r} cannot be updated")
    if "filename" in paths:
        validate_filename(filename, errors, "image.filename")
    validate_generation(generation, errors, "image.generation")
    errors.raise_if_any()
    with catalog.db.write() as session:
        row = require_image(session, image_key, Caller(is_admin=True), "image.id")
        if "filename" in paths and filename != row.filename:
            clash = session.scalar(select(ImageRow.id).where(ImageRow.filename == filename))
            if clash is not None:
                raise AlreadyExists(f"another image is already named {filename!r}", reason="FILENAME_TAKEN")
            row.filename = filename
        if "is_public" in paths:
            row.is_public = is_public
        if "is_nsfw" in paths:
            row.is_nsfw = is_nsfw
        simple = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps",
                  "guidance_scale": "guidance_scale", "scheduler": "scheduler", "base_model": "base_model"}
        for name, column in simple.items():
            if f"generation.{name}" in paths:
                setattr(row, column, getattr(generation, name) or None)
        if "generation.seed" in paths:
            row.seed = generation.seed
        if "generation.loras" in paths:
            row.lora_config = lora_config_json(generation.loras)
        row.updated_at = utcnow()
    return row


def delete(catalog: Catalog, image_id: str) -> None:
    key = parse_id(image_id, "id")
    with catalog.blobs.lock:
        with catalog.db.write() as session:
            row = require_image(session, key, Caller(is_admin=True))
            blob_keys = [row.blob_key, row.thumbnail_key]
            session.query(AlbumImageRow).filter(AlbumImageRow.image_id == key).delete()
            session.query(LabelRow).filter(LabelRow.image_id == key).delete()
            session.delete(row)
        delete_unreferenced_blobs(catalog, [k for k in blob_keys if k])


@dataclass
class FileDownload:
    content_type: str
    size_bytes: int
    sha256: str
    filename: str
    chunks: Iterator[bytes]


def download(catalog: Catalog, image_id: str, viewer: Caller) -> FileDownload:
    row = get(catalog, image_id, viewer)
    if not row.blob_key or not catalog.blobs.exists(row.blob_key):
        raise FailedPrecondition(
            f"image {row.id} has no stored file (a legacy row whose file was never imported; "
            "run `imagineer-catalog import` on its outputs folder)", reason="IMAGE_FILE_MISSING")
    return FileDownload(content_type=row.content_type or "application/octet-stream",
                        size_bytes=row.size_bytes or 0, sha256=row.content_hash or "", filename=row.filename,
                        chunks=catalog.blobs.read_chunks(row.blob_key))


def thumbnail(catalog: Catalog, image_id: str, viewer: Caller) -> tuple[bytes, int, int]:
    row = get(catalog, image_id, viewer)
    if row.thumbnail_key and catalog.blobs.exists(row.thumbnail_key):
        data = catalog.blobs.path(row.thumbnail_key).read_bytes()
        return (data, *imaging.encoded_size(data))
    if not row.blob_key or not catalog.blobs.exists(row.blob_key):
        raise FailedPrecondition(f"image {row.id} has no stored file to make a thumbnail from",
                                 reason="IMAGE_FILE_MISSING")
    return imaging.make_thumbnail(catalog.blobs.path(row.blob_key))
