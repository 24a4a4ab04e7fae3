"""Perceptual hashes of images, for near-duplicate searches across the catalog.

Revision ID: 0004_perceptual_hash
Revises: 0003_catalog_v1
Create Date: 2026-11-25

Adds images.perceptual_hash (16 hex digits, imagineer_common.perceptual) with an index, and fills it in for
every stored image whose file the migration can read: the catalog passes its storage root in the Alembic
config's attributes (``storage_root``). Run without it, the column stays empty and the catalog fills it in at
start-up. The downgrade drops the column and its index; nothing else depends on them.
"""

from pathlib import Path

import sqlalchemy as sa
from alembic import op
from PIL import Image, UnidentifiedImageError

from imagineer_common.perceptual import perceptual_hash

revision = "0004_perceptual_hash"
down_revision = "0003_catalog_v1"
branch_labels = None
depends_on = None

images = sa.table("images", sa.column("id", sa.Integer()), sa.column("blob_key", sa.String(255)),
                  sa.column("perceptual_hash", sa.String(16)))


def _hash_of(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            return perceptual_hash(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _backfill(storage_root: Path) -> None:
    connection = op.get_bind()
    stored = connection.execute(sa.select(images.c.id, images.c.blob_key).where(
        images.c.blob_key.is_not(None))).all()
    for image_id, key in stored:
        if not key.startswith("sha256/") or ".." in key:
            continue
        path = storage_root / key
        value = _hash_of(path) if path.is_file() else None
        if value is not None:
            connection.execute(images.update().where(images.c.id == image_id).values(perceptual_hash=value))


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("perceptual_hash", sa.String(16)))
        batch.create_index("ix_images_perceptual_hash", ["perceptual_hash"])
    storage_root = op.get_context().config.attributes.get("storage_root") if op.get_context().config else None
    if storage_root is not None:
        _backfill(Path(storage_root))


# As in 0003: names for the constraints a copied SQLite table carries, and AUTOINCREMENT kept when SQLite has to
# copy the table to drop a column (so ids are never reused).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    copy = {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}} if sqlite else {}
    with op.batch_alter_table("images", naming_convention=NAMING, **copy) as batch:
        batch.drop_index("ix_images_perceptual_hash")
        batch.drop_column("perceptual_hash")
