"""The catalog's own schema: content-addressed files, job progress, artifacts, idempotency keys.

Revision ID: 0003_catalog_v1
Revises: 0002_album_training_source
Create Date: 2026-11-25

Only additions and widenings: no legacy value is rewritten. Seeds widen to
BIGINT (PostgreSQL INTEGER cannot hold a 64-bit seed), job progress to FLOAT
(the old app sometimes wrote fractions), and images.file_path becomes nullable
because new images live in the blob store and have no path.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_catalog_v1"
down_revision = "0002_album_training_source"
branch_labels = None
depends_on = None

# Unnamed constraints of a legacy SQLite database get these names when a table is copied.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Ids are public: on SQLite a plain INTEGER PRIMARY KEY hands the id of a deleted
# last row to the next insert, so a client's stale id would name a new resource.
# AUTOINCREMENT never reuses ids (PostgreSQL sequences never do).
SQLITE_NEVER_REUSE_IDS = {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    never_reuse_ids = SQLITE_NEVER_REUSE_IDS if sqlite else {}
    with op.batch_alter_table("images", naming_convention=NAMING, **never_reuse_ids) as batch:
        batch.alter_column("file_path", existing_type=sa.String(500), nullable=True)
        batch.alter_column("seed", existing_type=sa.Integer(), type_=sa.BigInteger())
        batch.add_column(sa.Column("scheduler", sa.String(50)))
        batch.add_column(sa.Column("base_model", sa.String(255)))
        batch.add_column(sa.Column("content_hash", sa.String(64)))
        batch.add_column(sa.Column("content_type", sa.String(100)))
        batch.add_column(sa.Column("size_bytes", sa.BigInteger()))
        batch.add_column(sa.Column("blob_key", sa.String(255)))
        batch.add_column(sa.Column("thumbnail_key", sa.String(255)))
        batch.create_index("ix_images_content_hash", ["content_hash"], unique=True)

    if sqlite:
        # A legacy migration_history has an unnamed UNIQUE(name); copying the table names it.
        with op.batch_alter_table("migration_history", naming_convention=NAMING, recreate="always"):
            pass
        for table in ("albums", "labels"):
            with op.batch_alter_table(table, naming_convention=NAMING, **SQLITE_NEVER_REUSE_IDS):
                pass

    op.create_index("ix_labels_image_id", "labels", ["image_id"])
    op.create_index("ix_album_images_album_id_sort_order", "album_images", ["album_id", "sort_order"])
    op.create_index("ix_album_images_image_id", "album_images", ["image_id"])

    with op.batch_alter_table("scrape_jobs", naming_convention=NAMING, **never_reuse_ids) as batch:
        batch.alter_column("progress", existing_type=sa.Integer(), type_=sa.Float())
        batch.add_column(sa.Column("stage", sa.String(50)))
        batch.add_column(sa.Column("pages_seen", sa.Integer()))
        batch.add_column(sa.Column("images_found", sa.Integer()))
        batch.add_column(sa.Column("images_skipped", sa.Integer()))
        batch.add_column(sa.Column("skip_reasons", sa.Text()))
        batch.add_column(sa.Column("error_count", sa.Integer()))
        batch.add_column(sa.Column("album_id", sa.Integer()))
        batch.add_column(sa.Column("updated_at", sa.DateTime()))
        batch.create_foreign_key("fk_scrape_jobs_album_id_albums", "albums", ["album_id"], ["id"],
                                 ondelete="SET NULL")

    with op.batch_alter_table("training_runs", naming_convention=NAMING, **never_reuse_ids) as batch:
        batch.alter_column("progress", existing_type=sa.Integer(), type_=sa.Float())
        batch.add_column(sa.Column("current_step", sa.Integer()))
        batch.add_column(sa.Column("total_steps", sa.Integer()))
        batch.add_column(sa.Column("artifact_id", sa.Integer()))
        batch.add_column(sa.Column("updated_at", sa.DateTime()))

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("base_model", sa.String(255)),
        sa.Column("rank", sa.Integer()),
        sa.Column("training_run_id", sa.Integer()),
        sa.Column("metadata_json", sa.Text()),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("blob_key", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["training_run_id"], ["training_runs.id"],
                                name="fk_artifacts_training_run_id_training_runs", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_artifacts_content_hash_kind", "artifacts", ["content_hash", "kind"], unique=True)
    op.create_index("ix_artifacts_training_run_id", "artifacts", ["training_run_id"])

    op.create_table(
        "request_keys",
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("method", "request_id", name="pk_request_keys"),
    )


def downgrade() -> None:
    op.drop_table("request_keys")
    op.drop_index("ix_artifacts_training_run_id", table_name="artifacts")
    op.drop_index("ix_artifacts_content_hash_kind", table_name="artifacts")
    op.drop_table("artifacts")

    with op.batch_alter_table("training_runs", naming_convention=NAMING) as batch:
        batch.drop_column("updated_at")
        batch.drop_column("artifact_id")
        batch.drop_column("total_steps")
        batch.drop_column("current_step")
        batch.alter_column("progress", existing_type=sa.Float(), type_=sa.Integer())

    with op.batch_alter_table("scrape_jobs", naming_convention=NAMING) as batch:
        batch.drop_constraint("fk_scrape_jobs_album_id_albums", type_="foreignkey")
        for column in ("updated_at", "album_id", "error_count", "skip_reasons", "images_skipped",
                       "images_found", "pages_seen", "stage"):
            batch.drop_column(column)
        batch.alter_column("progress", existing_type=sa.Float(), type_=sa.Integer())

    op.drop_index("ix_album_images_image_id", table_name="album_images")
    op.drop_index("ix_album_images_album_id_sort_order", table_name="album_images")
    op.drop_index("ix_labels_image_id", table_name="labels")

    bind = op.get_bind()
    # SQLite's INTEGER holds 64 bits; PostgreSQL's legacy INTEGER column does not.
    too_large = bind.dialect.name != "sqlite" and bind.execute(sa.text(
        "SELECT COUNT(*) FROM images WHERE seed > 2147483647 OR seed < -2147483648")).scalar()
    if too_large:
        raise RuntimeError(
            f"cannot downgrade: {too_large} images have seeds that do not fit the legacy 32-bit column; "
            "restore a backup taken before the upgrade instead")
    # Rows stored by the catalog have no legacy path; keep their blob key there instead.
    op.execute("UPDATE images SET file_path = COALESCE(blob_key, '') WHERE file_path IS NULL")
    with op.batch_alter_table("images", naming_convention=NAMING) as batch:
        batch.drop_index("ix_images_content_hash")
        for column in ("thumbnail_key", "blob_key", "size_bytes", "content_type", "content_hash",
                       "base_model", "scheduler"):
            batch.drop_column(column)
        batch.alter_column("seed", existing_type=sa.BigInteger(), type_=sa.Integer())
        # Rows without a legacy path cannot go back to a NOT NULL column.
        batch.alter_column("file_path", existing_type=sa.String(500), nullable=False)
