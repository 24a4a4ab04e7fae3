"""The legacy Flask schema, exactly as the old app's db.create_all() made it.

Revision ID: 0001_legacy_schema
Revises:
Create Date: 2026-11-25

A legacy database is stamped at this revision (or 0002) instead of running it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_legacy_schema"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("file_path", sa.String(500), nullable=False),
        sa.Column("thumbnail_path", sa.String(500)),
        sa.Column("prompt", sa.Text()),
        sa.Column("negative_prompt", sa.Text()),
        sa.Column("seed", sa.Integer()),
        sa.Column("steps", sa.Integer()),
        sa.Column("guidance_scale", sa.Float()),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("lora_config", sa.Text()),
        sa.Column("is_nsfw", sa.Boolean()),
        sa.Column("is_public", sa.Boolean()),
        sa.Column("created_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("filename", name="uq_images_filename"),
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("label_text", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float()),
        sa.Column("label_type", sa.String(50)),
        sa.Column("source_model", sa.String(100)),
        sa.Column("source_prompt", sa.Text()),
        sa.Column("created_by", sa.String(255)),
        sa.Column("created_at", sa.DateTime()),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_labels_image_id_images"),
        sa.PrimaryKeyConstraint("id", name="pk_labels"),
    )
    op.create_table(
        "albums",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("album_type", sa.String(50)),
        sa.Column("is_public", sa.Boolean()),
        sa.Column("created_by", sa.String(255)),
        sa.Column("generation_prompt", sa.Text()),
        sa.Column("generation_config", sa.Text()),
        sa.Column("created_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_albums"),
    )
    op.create_table(
        "album_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("album_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("sort_order", sa.Integer()),
        sa.Column("added_by", sa.String(255)),
        sa.Column("created_at", sa.DateTime()),
        sa.ForeignKeyConstraint(["album_id"], ["albums.id"], name="fk_album_images_album_id_albums"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_album_images_image_id_images"),
        sa.PrimaryKeyConstraint("id", name="pk_album_images"),
        sa.UniqueConstraint("album_id", "image_id", name="unique_album_image"),
    )
    op.create_table(
        "scrape_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("source_url", sa.String(500)),
        sa.Column("scrape_config", sa.Text()),
        sa.Column("status", sa.String(50)),
        sa.Column("progress", sa.Integer()),
        sa.Column("images_scraped", sa.Integer()),
        sa.Column("output_directory", sa.String(500)),
        sa.Column("error_message", sa.Text()),
        sa.Column("last_error_at", sa.DateTime()),
        sa.Column("created_at", sa.DateTime()),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("completed_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_scrape_jobs"),
    )
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("dataset_path", sa.String(500), nullable=False),
        sa.Column("output_path", sa.String(500), nullable=False),
        sa.Column("training_config", sa.Text()),
        sa.Column("status", sa.String(50)),
        sa.Column("progress", sa.Integer()),
        sa.Column("final_checkpoint", sa.String(500)),
        sa.Column("training_loss", sa.Float()),
        sa.Column("validation_loss", sa.Float()),
        sa.Column("error_message", sa.Text()),
        sa.Column("last_error_at", sa.DateTime()),
        sa.Column("created_at", sa.DateTime()),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("completed_at", sa.DateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_training_runs"),
    )
    op.create_table(
        "migration_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("applied_at", sa.DateTime(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(), nullable=False),
        sa.Column("details", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_migration_history"),
        sa.UniqueConstraint("name", name="uq_migration_history_name"),
    )


def downgrade() -> None:
    for table in ("migration_history", "training_runs", "scrape_jobs", "album_images", "albums",
                  "labels", "images"):
        op.drop_table(table)
