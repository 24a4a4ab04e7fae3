"""albums.is_training_source, as the legacy app's hand-run ALTER TABLE added it.

Revision ID: 0002_album_training_source
Revises: 0001_legacy_schema
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_album_training_source"
down_revision = "0001_legacy_schema"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("albums", sa.Column("is_training_source", sa.Boolean(), server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("albums") as batch:
        batch.drop_column("is_training_source")
