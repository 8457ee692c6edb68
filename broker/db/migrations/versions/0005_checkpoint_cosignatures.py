"""witness cosignatures of audit checkpoints (C2SP tlog-cosignature)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_cosignatures",
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("agency_oin", sa.String(length=20), nullable=False),
        sa.Column("origin", sa.String(length=255), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", "agency_oin", name=op.f("pk_checkpoint_cosignatures")),
    )


def downgrade() -> None:
    op.drop_table("checkpoint_cosignatures")
