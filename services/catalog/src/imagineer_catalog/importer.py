"""Importing a legacy outputs folder: batch subfolders become albums, sidecar JSON the generation record.

Layout (as the legacy app wrote it)::

    outputs/
        single.png              top-level image: imported, in no album
        single.json             its sidecar (optional)
        batch_2025_10_01/       one batch = one album of type "batch", named after the folder
            img_0001.png
            img_0001.json

Only image files at the top level and directly inside first-level subfolders
are imported; hidden files and folders (a leading ".") are skipped. Files are
handled in sorted order, so an album's order is its files' names' order.

Images are content-addressed: a file whose bytes are already stored is
"already present" and only its album membership is ensured, so running the
import again adds nothing. A file whose name matches a legacy row that has no
stored file yet (adopted from the Flask database, content_hash NULL) fills in
that row instead of creating a new one.

The import is a generator of per-file events and a final summary, so a server
can stream progress; a bad file or sidecar fails (or degrades) that file only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from imagineer_catalog import albums as album_ops
from imagineer_catalog import images as image_ops
from imagineer_catalog.blobstore import CHUNK_BYTES
from imagineer_catalog.images import MAX_PROMPT_CHARS, MAX_SEED, GenerationRecord, ImageUpload, LoraUse
from imagineer_catalog.models import AlbumRow, ImageRow
from imagineer_catalog.store import Catalog
from imagineer_common.errors import DomainError, InvalidArgument, ViolationCollector

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
BATCH_ALBUM_TYPE = "batch"
ADDED_BY = "outputs import"

Outcome = Literal["imported", "already_present", "failed"]


@dataclass(frozen=True)
class ImportEvent:
    """What happened to one image file."""

    relative_path: str  # POSIX path relative to the imported folder, e.g. "batch_1/img_0001.png"
    outcome: Outcome
    image_id: int | None  # the image stored or found; None when the file failed
    album_id: int | None  # the batch album of its subfolder; None for top-level files (or a failed album)
    message: str  # why it failed, or a note (legacy row attached, sidecar problems); "" otherwise
    files_done: int  # files handled so far, this one included
    files_total: int  # image files found in the folder


@dataclass(frozen=True)
class ImportSummary:
    """Totals, yielded once, last."""

    imported: int = 0
    already_present: int = 0
    failed: int = 0
    albums_created: int = 0


ImportUpdate = ImportEvent | ImportSummary
"""One item of ``import_outputs``: an ImportEvent per file, then one ImportSummary."""


@dataclass(frozen=True)
class _SourceFile:
    path: Path
    relative_path: str
    album_name: str | None  # None for top-level files


@dataclass
class _Sidecar:
    generation: GenerationRecord = field(default_factory=GenerationRecord)
    notes: list[str] = field(default_factory=list)


def import_outputs(catalog: Catalog, directory: Path, *, make_public: bool = True) -> Iterator[ImportUpdate]:
    """Imports ``directory`` (an absolute path the catalog process can read).

    Checks the folder before returning, so a bad path raises InvalidArgument at
    the call, not at the first ``next()``. The returned iterator yields one
    ImportEvent per image file, in order, then one ImportSummary.
    """
    if not directory.is_absolute():
        raise InvalidArgument.for_field("directory", "must be an absolute path")
    if not directory.is_dir():
        raise InvalidArgument.for_field("directory", f"{directory} is not a folder the catalog can read")
    try:
        files = _find_files(directory)
    except OSError as error:
        raise InvalidArgument.for_field("directory", f"cannot list {directory}: {error}") from None
    return _run(catalog, files, make_public)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _find_files(directory: Path) -> list[_SourceFile]:
    found: list[_SourceFile] = []
    entries = sorted(directory.iterdir(), key=lambda p: p.name)
    for entry in entries:
        if _visible(entry) and entry.is_file() and _is_image_name(entry):
            found.append(_SourceFile(entry, entry.name, None))
    for folder in entries:
        if not (_visible(folder) and folder.is_dir()):
            continue
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if _visible(entry) and entry.is_file() and _is_image_name(entry):
                found.append(_SourceFile(entry, f"{folder.name}/{entry.name}", folder.name))
    return found


def _run(catalog: Catalog, files: list[_SourceFile], make_public: bool) -> Iterator[ImportUpdate]:
    total = len(files)
    counts: dict[str, int] = {"imported": 0, "already_present": 0, "failed": 0}
    albums: dict[str, int | str] = {}  # folder name -> album id, or why the album could not be made
    albums_created = 0
    # Which file takes over a legacy row of a given file name (see _legacy_row).
    paths_by_name: dict[str, list[str]] = {}
    for source in files:
        paths_by_name.setdefault(source.path.name, []).append(source.relative_path)

    for done, source in enumerate(files, start=1):
        album_id: int | None = None
        if source.album_name is not None:
            if source.album_name not in albums:
                try:
                    albums[source.album_name], created = _batch_album(catalog, source.album_name, make_public)
                    albums_created += created
                except DomainError as error:
                    albums[source.album_name] = f"cannot create album {source.album_name!r}: {error.message}"
            album = albums[source.album_name]
            if isinstance(album, str):
                counts["failed"] += 1
                yield ImportEvent(source.relative_path, "failed", None, None, album, done, total)
                continue
            album_id = album
        outcome, image_id, message = _import_file(catalog, source, album_id, make_public, paths_by_name)
        counts[outcome] += 1
        yield ImportEvent(source.relative_path, outcome, image_id, album_id, message, done, total)

    yield ImportSummary(imported=counts["imported"], already_present=counts["already_present"],
                        failed=counts["failed"], albums_created=albums_created)


def _batch_album(catalog: Catalog, name: str, make_public: bool) -> tuple[int, bool]:
    """The batch album named ``name`` (the oldest, if several), created when missing."""
    with catalog.db.read() as session:
        existing = session.scalar(select(AlbumRow.id).where(AlbumRow.name == name.strip(),
                                                            AlbumRow.album_type == BATCH_ALBUM_TYPE)
                                  .order_by(AlbumRow.id).limit(1))
    if existing is not None:
        return existing, False
    view = album_ops.create(catalog, album_ops.AlbumFields(name=name, album_type=BATCH_ALBUM_TYPE,
                                                           is_public=make_public))
    return view.row.id, True


def _import_file(catalog: Catalog, source: _SourceFile, album_id: int | None, make_public: bool,
                 paths_by_name: dict[str, list[str]]) -> tuple[Outcome, int | None, str]:
    notes: list[str] = []
    sidecar = _read_sidecar(source.path.with_suffix(".json"))
    notes.extend(sidecar.notes)
    try:
        created_at = datetime.fromtimestamp(source.path.stat().st_mtime, UTC).replace(tzinfo=None)
    except OSError as error:
        return "failed", None, f"cannot read the file: {error.strerror or error}"
    for attempt in range(2):
        try:
            staged, info = image_ops.stage_image(catalog, _read_chunks(source.path))
        except OSError as error:
            return "failed", None, f"cannot read the file: {error.strerror or error}"
        except DomainError as error:
            return "failed", None, _file_problem(catalog, source, error)
        generation = sidecar.generation
        if (generation.width and generation.width != info.width) or \
                (generation.height and generation.height != info.height):
            notes.append(f"the sidecar says {generation.width}x{generation.height} but the file is "
                         f"{info.width}x{info.height}; the file's size was kept")
            generation.width = generation.height = 0
        legacy_row = _legacy_row(catalog, source, paths_by_name)
        upload = ImageUpload(filename=source.path.name, generation=generation, is_public=make_public,
                             album_id=str(album_id) if album_id is not None else "", added_by=ADDED_BY)
        try:
            row, existed = image_ops.store_staged_image(catalog, staged, info, upload, created_at=created_at,
                                                        adopt_legacy_row=legacy_row)
        except IntegrityError:
            # A concurrent writer stored the same bytes or took the same name first: look again.
            if attempt == 0:
                continue
            raise
        except DomainError as error:
            return "failed", None, error.message
        if existed:
            return "already_present", row.id, "; ".join(notes)
        if legacy_row is not None and row.id == legacy_row:
            notes.insert(0, f"attached to legacy image {row.id}")
        return "imported", row.id, "; ".join(notes)
    raise AssertionError("unreachable")


def _file_problem(catalog: Catalog, source: _SourceFile, error: DomainError) -> str:
    """An upload error, reworded for a file: no request field names, no temporary paths."""
    text = error.violations[0].description if isinstance(error, InvalidArgument) and error.violations \
        else error.message
    text = text.replace("the upload contained no bytes", "the file is empty")
    return re.sub(re.escape(str(catalog.blobs.root / "tmp")) + r"/upload-\w+", source.relative_path, text)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def _legacy_row(catalog: Catalog, source: _SourceFile, paths_by_name: dict[str, list[str]]) -> int | None:
    """The legacy row (no stored file yet) this file should fill in, if any.

    Legacy file names are unique, so at most one row matches by name. When the
    folder holds several files of that name, the one whose relative path ends
    the row's recorded (absolute, old-machine) file_path wins; failing that, the
    first in sorted order.
    """
    name = source.path.name
    with catalog.db.read() as session:
        found = session.execute(select(ImageRow.id, ImageRow.file_path).where(
            ImageRow.filename == name, ImageRow.content_hash.is_(None))).first()
    if found is None:
        return None
    row_id, file_path = found
    candidates = paths_by_name.get(name, [source.relative_path])
    if len(candidates) > 1:
        recorded = (file_path or "").replace("\\", "/")
        matching = [p for p in candidates if recorded.endswith("/" + p) or recorded == p]
        owner = matching[0] if matching else candidates[0]
        if owner != source.relative_path:
            return None
    return row_id


def _read_sidecar(path: Path) -> _Sidecar:
    """The generation record of ``<stem>.json``; a bad sidecar or field is dropped with a note, never fatal."""
    result = _Sidecar()
    if not path.is_file():
        return result
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        result.notes.append(f"sidecar {path.name} could not be read ({_short(error)}); "
                            "imported without generation data")
        return result
    if not isinstance(data, dict):
        result.notes.append(f"sidecar {path.name} is not a JSON object; imported without generation data")
        return result
    record, dropped = _generation_from_json(data)
    errors = ViolationCollector()
    image_ops.validate_generation(record, errors, "sidecar")
    if errors.violations:  # belt and braces: _generation_from_json already drops bad fields
        result.notes.append(f"sidecar {path.name} is invalid ({errors.violations[0].description}); "
                            "imported without generation data")
        return result
    if dropped:
        result.notes.append(f"sidecar {path.name}: ignored invalid {', '.join(dropped)}")
    result.generation = record
    return result


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 200 else text[:197] + "..."


def _generation_from_json(data: dict[str, Any]) -> tuple[GenerationRecord, list[str]]:
    record = GenerationRecord()
    dropped: list[str] = []

    def text(key: str, limit: int) -> str:
        value = data.get(key)
        if value is None:
            return ""
        if isinstance(value, str) and len(value) <= limit:
            return value
        dropped.append(key)
        return ""

    def integer(key: str, low: int, high: int) -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        dropped.append(key)
        return None

    record.prompt = text("prompt", MAX_PROMPT_CHARS)
    record.negative_prompt = text("negative_prompt", MAX_PROMPT_CHARS)
    record.scheduler = text("scheduler", 50)
    record.base_model = text("base_model", 255)
    record.seed = integer("seed", 0, MAX_SEED)
    record.steps = integer("steps", 0, 10_000) or 0
    record.width = integer("width", 1, 1 << 20) or 0
    record.height = integer("height", 1, 1 << 20) or 0
    guidance = data.get("guidance_scale")
    if guidance is not None:
        if isinstance(guidance, int | float) and not isinstance(guidance, bool) and math.isfinite(guidance) \
                and 0 <= guidance <= 100:
            record.guidance_scale = float(guidance)
        else:
            dropped.append("guidance_scale")
    loras = data.get("loras")
    if loras is not None:
        if not isinstance(loras, list):
            dropped.append("loras")
        else:
            for index, item in enumerate(loras):
                use = _lora_from_json(item)
                if use is None:
                    dropped.append(f"loras[{index}]")
                else:
                    record.loras.append(use)
    return record, dropped


def _lora_from_json(item: Any) -> LoraUse | None:
    if not isinstance(item, dict):
        return None
    path = item.get("path")
    weight = item.get("weight", 1.0)
    if not isinstance(path, str) or not path.strip():
        return None
    if not isinstance(weight, int | float) or isinstance(weight, bool) or not math.isfinite(weight) \
            or not -10 <= weight <= 10:
        return None
    return LoraUse(artifact_id="", name=path, weight=float(weight))

