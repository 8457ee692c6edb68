"""signal-and-match registrations ("who else is involved")

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signals",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("agency_oin", sa.String(length=20), nullable=False),
        sa.Column("agency_party", sa.String(length=64), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject_key", sa.String(length=80), nullable=True),
        sa.Column("household_key", sa.String(length=80), nullable=True),
        sa.Column("contact", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_reason", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signals")),
        sa.UniqueConstraint(
            "agency_oin",
            "agreement_id",
            "subject_kind",
            "subject_key",
            name=op.f("uq_signals_agency_oin"),
        ),
    )
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signals_agency_oin"), ["agency_oin"], unique=False)
        batch_op.create_index(batch_op.f("ix_signals_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index("ix_signals_subject", ["agreement_id", "subject_key"], unique=False)
        batch_op.create_index(
            "ix_signals_household", ["agreement_id", "household_key"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_index("ix_signals_household")
        batch_op.drop_index("ix_signals_subject")
        batch_op.drop_index(batch_op.f("ix_signals_expires_at"))
        batch_op.drop_index(batch_op.f("ix_signals_agency_oin"))
    op.drop_table("signals")
