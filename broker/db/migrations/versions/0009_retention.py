"""retention keys (crypto-shredding); case references hold ciphertext

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("retention", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroy_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kek_id", sa.String(length=16), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("destroyed_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_keys")),
    )
    op.create_index(
        op.f("ix_retention_keys_destroy_after"), "retention_keys", ["destroy_after"], unique=False
    )
    # A sealed case reference ("rk1:<key id>:<ciphertext>") is longer than the reference.
    with op.batch_alter_table("exchanges") as batch:
        batch.alter_column(
            "case_reference",
            existing_type=sa.String(length=128),
            type_=sa.Text(),
            existing_nullable=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("exchanges") as batch:
        batch.alter_column(
            "case_reference",
            existing_type=sa.Text(),
            type_=sa.String(length=128),
            existing_nullable=True,
        )
    op.drop_index(op.f("ix_retention_keys_destroy_after"), table_name="retention_keys")
    op.drop_table("retention_keys")
