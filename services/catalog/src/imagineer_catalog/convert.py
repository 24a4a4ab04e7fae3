"""Protobuf <-> domain translation for the catalog API (no behaviour here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer.common.v1 import common_pb2 as common
from imagineer_catalog import albums, artifacts, jobs
from imagineer_catalog.backup import BackupManifest
from imagineer_catalog.images import GenerationRecord, LoraUse, generation_from_row
from imagineer_catalog.models import ArtifactRow, ImageRow, LabelRow, ScrapeJobRow, TrainingRunRow
from imagineer_catalog.store import load_json
from imagineer_common.errors import InvalidArgument
from imagineer_common.timestamps import timestamp_message


class EnumMap:
    """Maps a proto enum (``ALBUM_TYPE_BATCH``) to the lowercase strings the database keeps (``batch``)."""

    def __init__(self, descriptor, prefix: str) -> None:
        self._to_text = {v.number: v.name.removeprefix(prefix).lower() for v in descriptor.values if v.number}
        self._to_number = {text: number for number, text in self._to_text.items()}

    def text(self, number: int, field_path: str, *, allow_unspecified: bool = True) -> str:
        if number == 0:
            if allow_unspecified:
                return ""
            raise InvalidArgument.for_field(field_path, "is required")
        if number not in self._to_text:
            raise InvalidArgument.for_field(field_path, f"{number} is not a known value")
        return self._to_text[number]

    def number(self, text: str | None) -> int:
        return self._to_number.get(text or "", 0)


ALBUM_TYPE = EnumMap(res.AlbumType.DESCRIPTOR, "ALBUM_TYPE_")
LABEL_TYPE = EnumMap(res.LabelType.DESCRIPTOR, "LABEL_TYPE_")
ARTIFACT_KIND = EnumMap(res.ArtifactKind.DESCRIPTOR, "ARTIFACT_KIND_")
JOB_STATE = EnumMap(common.JobState.DESCRIPTOR, "JOB_STATE_")


def naive_utc(stamp: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    if not present:
        return None
    return stamp.ToDatetime(tzinfo=UTC).replace(tzinfo=None)


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if not value:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def generation_to_domain(message: common.GenerationParameters) -> GenerationRecord:
    return GenerationRecord(
        prompt=message.prompt, negative_prompt=message.negative_prompt,
        seed=message.seed if message.HasField("seed") else None, steps=message.steps,
        guidance_scale=message.guidance_scale, scheduler=message.scheduler, width=message.width,
        height=message.height, base_model=message.base_model,
        loras=[LoraUse(artifact_id=lora.artifact_id, name=lora.name, weight=lora.weight) for lora in message.loras])


def generation_message(record: GenerationRecord) -> common.GenerationParameters:
    message = common.GenerationParameters(
        prompt=record.prompt, negative_prompt=record.negative_prompt, steps=record.steps,
        guidance_scale=record.guidance_scale, scheduler=record.scheduler, width=record.width, height=record.height,
        base_model=record.base_model,
        loras=[common.LoraWeight(artifact_id=lora.artifact_id, name=lora.name, weight=lora.weight)
               for lora in record.loras])
    if record.seed is not None:
        message.seed = record.seed
    return message


def image_message(row: ImageRow) -> res.Image:
    return res.Image(
        id=str(row.id), filename=row.filename, generation=generation_message(generation_from_row(row)),
        content_type=row.content_type or "", size_bytes=row.size_bytes or 0, sha256=row.content_hash or "",
        is_public=bool(row.is_public), is_nsfw=bool(row.is_nsfw), has_file=row.blob_key is not None,
        has_thumbnail=row.blob_key is not None, create_time=timestamp_message(row.created_at),
        update_time=timestamp_message(row.updated_at), perceptual_hash=row.perceptual_hash or "")


def album_message(view: albums.AlbumView) -> res.Album:
    row = view.row
    return res.Album(
        id=str(row.id), name=row.name, description=row.description or "",
        album_type=ALBUM_TYPE.number(row.album_type), is_public=bool(row.is_public),
        is_training_source=bool(row.is_training_source), created_by=row.created_by or "",
        generation_prompt=row.generation_prompt or "", generation_config=struct(albums.config_of(row)),
        image_count=view.image_count, create_time=timestamp_message(row.created_at),
        update_time=timestamp_message(row.updated_at))


def album_fields(message: res.Album, *, creating: bool, paths: list[str] | None = None) -> albums.AlbumFields:
    # Fields outside an update mask are ignored, so an odd value there is no error.
    checks_type = creating or "album_type" in (paths or [])
    album_type = ALBUM_TYPE.text(message.album_type, "album.album_type") if checks_type else ""
    album_type = album_type or ("manual" if creating else "")
    return albums.AlbumFields(
        name=message.name, description=message.description, album_type=album_type, is_public=message.is_public,
        is_training_source=message.is_training_source, created_by=message.created_by,
        generation_prompt=message.generation_prompt,
        generation_config=struct_to_dict(message.generation_config) if message.HasField("generation_config")
        else None)


def label_message(row: LabelRow) -> res.Label:
    message = res.Label(
        id=str(row.id), image_id=str(row.image_id), text=row.label_text, label_type=LABEL_TYPE.number(row.label_type),
        source_model=row.source_model or "", source_prompt=row.source_prompt or "", created_by=row.created_by or "",
        create_time=timestamp_message(row.created_at))
    if row.confidence is not None:
        message.confidence = row.confidence
    return message


def _progress(value: float | None) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def training_run_message(row: TrainingRunRow) -> res.TrainingRun:
    config = jobs.training_config(row)
    config.pop("album_ids", None)
    message = res.TrainingRun(
        id=str(row.id), name=row.name, description=row.description or "",
        album_ids=[str(i) for i in jobs.training_album_ids(row)], config=struct(config),
        state=JOB_STATE.number(row.status), progress_percent=_progress(row.progress),
        current_step=row.current_step or 0, total_steps=row.total_steps or 0, error_message=row.error_message or "",
        artifact_id=str(row.artifact_id) if row.artifact_id else "", create_time=timestamp_message(row.created_at),
        start_time=timestamp_message(row.started_at), end_time=timestamp_message(row.completed_at),
        update_time=timestamp_message(row.updated_at))
    if row.training_loss is not None:
        message.training_loss = row.training_loss
    if row.validation_loss is not None:
        message.validation_loss = row.validation_loss
    return message


def scrape_job_message(row: ScrapeJobRow) -> res.ScrapeJob:
    reasons = load_json(row.skip_reasons, {})
    return res.ScrapeJob(
        id=str(row.id), name=row.name, description=row.description or "", source_url=row.source_url or "",
        config=struct(load_json(row.scrape_config, None) if isinstance(load_json(row.scrape_config, None), dict)
                      else None),
        state=JOB_STATE.number(row.status), stage=row.stage or "", progress_percent=_progress(row.progress),
        pages_seen=row.pages_seen or 0, images_found=row.images_found or 0, images_kept=row.images_scraped or 0,
        images_skipped=row.images_skipped or 0,
        skip_reasons={str(k): int(v) for k, v in reasons.items()} if isinstance(reasons, dict) else {},
        error_count=row.error_count or 0, error_message=row.error_message or "",
        album_id=str(row.album_id) if row.album_id else "", create_time=timestamp_message(row.created_at),
        start_time=timestamp_message(row.started_at), end_time=timestamp_message(row.completed_at),
        update_time=timestamp_message(row.updated_at))


def job_fields(message: res.TrainingRun | res.ScrapeJob, prefix: str) -> jobs.JobFields:
    fields = jobs.JobFields(
        name=message.name, description=message.description,
        config=struct_to_dict(message.config) if message.HasField("config") else None,
        state=JOB_STATE.text(message.state, f"{prefix}.state"), progress_percent=message.progress_percent,
        error_message=message.error_message)
    if isinstance(message, res.TrainingRun):
        fields.album_ids = list(message.album_ids)
        fields.current_step, fields.total_steps = message.current_step, message.total_steps
        fields.training_loss = message.training_loss if message.HasField("training_loss") else None
        fields.validation_loss = message.validation_loss if message.HasField("validation_loss") else None
        fields.artifact_id = message.artifact_id
    else:
        fields.source_url, fields.stage = message.source_url, message.stage
        fields.pages_seen, fields.images_found = message.pages_seen, message.images_found
        fields.images_kept, fields.images_skipped = message.images_kept, message.images_skipped
        fields.skip_reasons, fields.error_count = dict(message.skip_reasons), message.error_count
        fields.album_id = message.album_id
    return fields


def artifact_message(row: ArtifactRow) -> res.Artifact:
    return res.Artifact(
        id=str(row.id), name=row.name, kind=ARTIFACT_KIND.number(row.kind), filename=row.filename,
        base_model=row.base_model or "", rank=row.rank or 0,
        training_run_id=str(row.training_run_id) if row.training_run_id else "",
        metadata=artifacts.metadata_of(row), size_bytes=row.size_bytes, sha256=row.content_hash,
        create_time=timestamp_message(row.created_at))


def backup_manifest_message(manifest: BackupManifest, archive_size: int, archive_sha256: str) -> api.BackupManifest:
    return api.BackupManifest(
        format_version=manifest.format_version, schema_revision=manifest.alembic_revision,
        row_count=manifest.total_rows, file_count=len(manifest.blobs), file_bytes=manifest.blob_bytes,
        archive_size_bytes=archive_size, archive_sha256=archive_sha256)
