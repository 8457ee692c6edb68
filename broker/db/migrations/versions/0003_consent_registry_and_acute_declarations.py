"""consent registry and acute declarations (break-the-glass)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 10:11:26.071435
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acute_declarations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("purpose_id", sa.String(length=128), nullable=False),
        sa.Column("declared_by_oin", sa.String(length=20), nullable=False),
        sa.Column("declared_by_party", sa.String(length=64), nullable=False),
        sa.Column("declared_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subjects", sa.JSON(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("review_status", sa.String(length=16), nullable=False),
        sa.Column("reviewed_by", sa.String(length=20), nullable=True),
        sa.Column("review_comment", sa.Text(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_acute_declarations")),
    )
    with op.batch_alter_table("acute_declarations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_acute_declarations_declared_by_oin"), ["declared_by_oin"], unique=False
        )
        batch_op.create_index(
            "ix_acute_declarations_review", ["review_status", "review_due_at"], unique=False
        )

    op.create_table(
        "consent_records",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("subject_key", sa.String(length=80), nullable=False),
        sa.Column("givers", sa.JSON(), nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("purpose_id", sa.String(length=128), nullable=False),
        sa.Column("elements", sa.JSON(), nullable=True),
        sa.Column("recipients", sa.JSON(), nullable=True),
        sa.Column("given_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_by_key", sa.String(length=80), nullable=True),
        sa.Column("evidence_ref", sa.String(length=128), nullable=False),
        sa.Column("recorded_by_oin", sa.String(length=20), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
    )
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_records_recorded_by_oin"), ["recorded_by_oin"], unique=False
        )
        batch_op.create_index(
            "ix_consent_records_scope", ["subject_key", "agreement_id", "purpose_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_records_scope")
        batch_op.drop_index(batch_op.f("ix_consent_records_recorded_by_oin"))

    op.drop_table("consent_records")
    with op.batch_alter_table("acute_declarations", schema=None) as batch_op:
        batch_op.drop_index("ix_acute_declarations_review")
        batch_op.drop_index(batch_op.f("ix_acute_declarations_declared_by_oin"))

    op.drop_table("acute_declarations")
