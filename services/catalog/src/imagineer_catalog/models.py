"""The catalog's tables at the head revision (Alembic owns how they got there).

Column names and types of the legacy Flask schema are kept as they were so an
adopted database keeps every row; the catalog's own columns were added later.
Timestamps are naive UTC, as the legacy app wrote them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ImageRow(Base):
    __tablename__ = "images"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String(255), unique=True)
    # Legacy absolute path of the original file; never shown to clients.
    file_path: Mapped[str | None] = mapped_column(String(500))
    thumbnail_path: Mapped[str | None] = mapped_column(String(500))
    prompt: Mapped[str | None] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    steps: Mapped[int | None] = mapped_column(Integer)
    guidance_scale: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    lora_config: Mapped[str | None] = mapped_column(Text)
    is_nsfw: Mapped[bool | None] = mapped_column(Boolean, default=False)
    is_public: Mapped[bool | None] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Catalog additions (revision 0003).
    scheduler: Mapped[str | None] = mapped_column(String(50))
    base_model: Mapped[str | None] = mapped_column(String(255))
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)
    content_type: Mapped[str | None] = mapped_column(String(100))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    blob_key: Mapped[str | None] = mapped_column(String(255))
    thumbnail_key: Mapped[str | None] = mapped_column(String(255))
    # Revision 0004: imagineer_common.perceptual's hash of the file, for near-duplicate searches.
    perceptual_hash: Mapped[str | None] = mapped_column(String(16), index=True)

    labels: Mapped[list[LabelRow]] = relationship(back_populates="image", cascade="all, delete-orphan",
                                                  passive_deletes=False)


class LabelRow(Base):
    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_image_id", "image_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer, ForeignKey("images.id"))
    label_text: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float)
    label_type: Mapped[str | None] = mapped_column(String(50), default="ai_generated")
    source_model: Mapped[str | None] = mapped_column(String(100))
    source_prompt: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime | None] = mapped_column(DateTime)

    image: Mapped[ImageRow] = relationship(back_populates="labels")


class AlbumRow(Base):
    __tablename__ = "albums"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    album_type: Mapped[str | None] = mapped_column(String(50), default="batch")
    is_public: Mapped[bool | None] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(255))
    generation_prompt: Mapped[str | None] = mapped_column(Text)
    generation_config: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Revision 0002 (the legacy app added it by hand with an ALTER TABLE).
    is_training_source: Mapped[bool | None] = mapped_column(Boolean, default=False, server_default=false())


class AlbumImageRow(Base):
    __tablename__ = "album_images"
    __table_args__ = (
        UniqueConstraint("album_id", "image_id", name="unique_album_image"),
        Index("ix_album_images_album_id_sort_order", "album_id", "sort_order"),
        Index("ix_album_images_image_id", "image_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    album_id: Mapped[int] = mapped_column(Integer, ForeignKey("albums.id"))
    image_id: Mapped[int] = mapped_column(Integer, ForeignKey("images.id"))
    sort_order: Mapped[int | None] = mapped_column(Integer, default=0)
    added_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime | None] = mapped_column(DateTime)


class ScrapeJobRow(Base):
    __tablename__ = "scrape_jobs"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    source_url: Mapped[str | None] = mapped_column(String(500))
    scrape_config: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(50), default="pending")
    progress: Mapped[float | None] = mapped_column(Float)
    images_scraped: Mapped[int | None] = mapped_column(Integer, default=0)
    output_directory: Mapped[str | None] = mapped_column(String(500))
    error_message: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Catalog additions (revision 0003).
    stage: Mapped[str | None] = mapped_column(String(50))
    pages_seen: Mapped[int | None] = mapped_column(Integer)
    images_found: Mapped[int | None] = mapped_column(Integer)
    images_skipped: Mapped[int | None] = mapped_column(Integer)
    skip_reasons: Mapped[str | None] = mapped_column(Text)
    error_count: Mapped[int | None] = mapped_column(Integer)
    album_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("albums.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class TrainingRunRow(Base):
    __tablename__ = "training_runs"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    dataset_path: Mapped[str] = mapped_column(String(500))
    output_path: Mapped[str] = mapped_column(String(500))
    training_config: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(50), default="pending")
    progress: Mapped[float | None] = mapped_column(Float)
    final_checkpoint: Mapped[str | None] = mapped_column(String(500))
    training_loss: Mapped[float | None] = mapped_column(Float)
    validation_loss: Mapped[float | None] = mapped_column(Float)
    error_message: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Catalog additions (revision 0003).
    current_step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    artifact_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class MigrationHistoryRow(Base):
    """Markers of one-off scripts, as the legacy app kept them."""

    __tablename__ = "migration_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime)
    last_run_at: Mapped[datetime] = mapped_column(DateTime)
    details: Mapped[str | None] = mapped_column(Text)


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    # Unique per run: two runs may train identical weights, and each owns its artifact (blobs stay shared).
    __table_args__ = (Index("ix_artifacts_content_hash_kind_training_run_id", "content_hash", "kind", "training_run_id",
                            unique=True),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(50))
    filename: Mapped[str] = mapped_column(String(255))
    base_model: Mapped[str | None] = mapped_column(String(255))
    rank: Mapped[int | None] = mapped_column(Integer)
    training_run_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("training_runs.id", ondelete="SET NULL"), index=True)
    metadata_json: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class RequestKeyRow(Base):
    """Idempotency keys (AIP-155): the resource a request_id created the first time."""

    __tablename__ = "request_keys"

    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    resource_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
