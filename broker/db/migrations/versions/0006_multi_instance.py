"""several broker instances on one database: change versions, uploaded agreements,
recorded agreement states

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 12:10:00.000000
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    versions = op.create_table(
        "change_versions",
        sa.Column("topic", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic", name=op.f("pk_change_versions")),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        versions,
        [
            {"topic": "agreements", "version": 0, "changed_at": now},
            {"topic": "agencies", "version": 0, "changed_at": now},
        ],
    )
    op.create_table(
        "agreement_uploads",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("folder", sa.String(length=200), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("uploader", sa.String(length=20), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreement_uploads")),
    )
    with op.batch_alter_table("agreement_uploads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agreement_uploads_agreement_id"), ["agreement_id"], unique=False
        )
    op.create_table(
        "agreement_states",
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agreement_id", "version", name=op.f("pk_agreement_states")),
    )


def downgrade() -> None:
    op.drop_table("agreement_states")
    with op.batch_alter_table("agreement_uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agreement_uploads_agreement_id"))
    op.drop_table("agreement_uploads")
    op.drop_table("change_versions")
