"""agreement signatures

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:51:42.104140
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "agreement_signatures",
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(length=80), nullable=False),
        sa.Column("signer_oin", sa.String(length=20), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("party", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "agreement_id", "content_hash", "signer_oin", name=op.f("pk_agreement_signatures")
        ),
    )
    with op.batch_alter_table("agreement_signatures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agreement_signatures_signed_at"), ["signed_at"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("agreement_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agreement_signatures_signed_at"))

    op.drop_table("agreement_signatures")
