"""AVG art. 14 information duties, their embargoes and safety investigations

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "information_duties",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("exchange_id", sa.String(length=64), nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("agreement_version", sa.String(length=32), nullable=False),
        sa.Column("purpose_id", sa.String(length=128), nullable=False),
        sa.Column("subject_key", sa.String(length=80), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("addressee_rule", sa.String(length=32), nullable=False),
        sa.Column("addressees", sa.JSON(), nullable=False),
        sa.Column("elements", sa.JSON(), nullable=False),
        sa.Column("legal_basis_ids", sa.JSON(), nullable=False),
        sa.Column("duty_basis_ids", sa.JSON(), nullable=False),
        sa.Column("holder_oin", sa.String(length=20), nullable=False),
        sa.Column("holder_party", sa.String(length=64), nullable=False),
        sa.Column("recipient_oin", sa.String(length=20), nullable=False),
        sa.Column("recipient_party", sa.String(length=64), nullable=False),
        sa.Column("provider_oin", sa.String(length=20), nullable=False),
        sa.Column("provider_party", sa.String(length=64), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("embargo_id", sa.String(length=64), nullable=True),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("informed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fulfilled_by_oin", sa.String(length=20), nullable=True),
        sa.Column("fulfil_method", sa.String(length=32), nullable=True),
        sa.Column("evidence_ref", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_information_duties")),
    )
    with op.batch_alter_table("information_duties", schema=None) as batch_op:
        for column in ("exchange_id", "subject_key", "holder_oin", "recipient_oin", "provider_oin"):
            batch_op.create_index(
                batch_op.f(f"ix_information_duties_{column}"), [column], unique=False
            )
        batch_op.create_index("ix_information_duties_status_due", ["status", "due_at"])

    op.create_table(
        "safety_investigations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("agency_oin", sa.String(length=20), nullable=False),
        sa.Column("agency_party", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_investigations")),
        sa.UniqueConstraint(
            "agency_oin", "reference", name=op.f("uq_safety_investigations_agency_oin")
        ),
    )

    op.create_table(
        "information_duty_embargoes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("duty_id", sa.String(length=64), nullable=False),
        sa.Column("investigation_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("set_by_oin", sa.String(length=20), nullable=False),
        sa.Column("set_by_party", sa.String(length=64), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lapses_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("remaining_seconds", sa.Integer(), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lift_cause", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_information_duty_embargoes")),
    )
    with op.batch_alter_table("information_duty_embargoes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_information_duty_embargoes_duty_id"), ["duty_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_information_duty_embargoes_investigation_id"),
            ["investigation_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_information_duty_embargoes_active", ["lifted_at", "lapses_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("information_duty_embargoes")
    op.drop_table("safety_investigations")
    op.drop_table("information_duties")
