"""Artifacts are unique per training run, not per content.

Revision ID: 0005_artifact_per_run
Revises: 0004_perceptual_hash
Create Date: 2026-11-26

Two training runs can produce byte-identical weights (training on CPU is deterministic), and each run must
still own an artifact that names it. The unique index on (content_hash, kind) becomes one on
(content_hash, kind, training_run_id); the files stay shared because blobs are stored by content. An upload
retried for the same run (or for no run) still finds the artifact it made the first time.

The downgrade restores the old index only when no two artifacts share their bytes; otherwise it stops with
the ids that stand in the way, instead of deleting artifacts that training runs point at.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_artifact_per_run"
down_revision = "0004_perceptual_hash"
branch_labels = None
depends_on = None

OLD_INDEX = "ix_artifacts_content_hash_kind"
NEW_INDEX = "ix_artifacts_content_hash_kind_training_run_id"


def upgrade() -> None:
    op.drop_index(OLD_INDEX, table_name="artifacts")
    op.create_index(NEW_INDEX, "artifacts", ["content_hash", "kind", "training_run_id"], unique=True)


def downgrade() -> None:
    shared = op.get_bind().execute(sa.text(
        "SELECT content_hash, kind, COUNT(*) FROM artifacts GROUP BY content_hash, kind HAVING COUNT(*) > 1"
    )).all()
    if shared:
        ids = op.get_bind().execute(sa.text(
            "SELECT id FROM artifacts WHERE content_hash IN :hashes ORDER BY id"
        ).bindparams(sa.bindparam("hashes", expanding=True)), {"hashes": [row[0] for row in shared]}).scalars()
        raise RuntimeError(
            "cannot go below 0005_artifact_per_run: artifacts "
            + ", ".join(str(i) for i in ids)
            + " share their bytes with another artifact; delete the extra ones first")
    op.drop_index(NEW_INDEX, table_name="artifacts")
    op.create_index(OLD_INDEX, "artifacts", ["content_hash", "kind"], unique=True)
