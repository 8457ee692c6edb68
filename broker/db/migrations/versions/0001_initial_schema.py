"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 09:08:07.018269
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "agencies",
        sa.Column("oin", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("party_type", sa.String(length=64), nullable=False),
        sa.Column("endpoint_url", sa.String(length=500), nullable=True),
        sa.Column("adapter_kind", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("oin", name=op.f("pk_agencies")),
    )
    with op.batch_alter_table("agencies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agencies_party_type"), ["party_type"], unique=False)

    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("exchange_id", sa.String(length=36), nullable=True),
        sa.Column("subject_key", sa.String(length=80), nullable=True),
        sa.Column("element", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_entries")),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_entries_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_entries_exchange_id"), ["exchange_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_entries_subject_key"), ["subject_key"], unique=False
        )

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("exchange_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("bundle_hash", sa.String(length=80), nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("agreement_version", sa.String(length=32), nullable=True),
        sa.Column("agreement_hash", sa.String(length=80), nullable=True),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_decisions_agreement_id"), ["agreement_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_decisions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_decisions_exchange_id"), ["exchange_id"], unique=False)

    op.create_table(
        "exchanges",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requester_oin", sa.String(length=20), nullable=False),
        sa.Column("recipient_party", sa.String(length=64), nullable=False),
        sa.Column("provider_oin", sa.String(length=20), nullable=True),
        sa.Column("provider_party", sa.String(length=64), nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("agreement_version", sa.String(length=32), nullable=True),
        sa.Column("purpose_id", sa.String(length=128), nullable=False),
        sa.Column("case_reference", sa.String(length=128), nullable=True),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("allowed_count", sa.Integer(), nullable=False),
        sa.Column("released_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchanges")),
    )
    with op.batch_alter_table("exchanges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exchanges_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_exchanges_requester_oin"), ["requester_oin"], unique=False
        )

    op.create_table(
        "used_assertions",
        sa.Column("issuer", sa.String(length=20), nullable=False),
        sa.Column("jti", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti", name=op.f("pk_used_assertions")),
    )
    with op.batch_alter_table("used_assertions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_used_assertions_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "agency_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agency_oin", sa.String(length=20), nullable=False),
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("use", sa.String(length=8), nullable=False),
        sa.Column("alg", sa.String(length=32), nullable=False),
        sa.Column("jwk", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["agency_oin"], ["agencies.oin"], name=op.f("fk_agency_keys_agency_oin_agencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agency_keys")),
        sa.UniqueConstraint("agency_oin", "kid", name=op.f("uq_agency_keys_agency_oin")),
    )
    with op.batch_alter_table("agency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agency_keys_agency_oin"), ["agency_oin"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("agency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agency_keys_agency_oin"))

    op.drop_table("agency_keys")
    with op.batch_alter_table("used_assertions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_assertions_expires_at"))

    op.drop_table("used_assertions")
    with op.batch_alter_table("exchanges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exchanges_requester_oin"))
        batch_op.drop_index(batch_op.f("ix_exchanges_created_at"))

    op.drop_table("exchanges")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decisions_exchange_id"))
        batch_op.drop_index(batch_op.f("ix_decisions_created_at"))
        batch_op.drop_index(batch_op.f("ix_decisions_agreement_id"))

    op.drop_table("decisions")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entries_subject_key"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_exchange_id"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_created_at"))

    op.drop_table("audit_entries")
    with op.batch_alter_table("agencies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agencies_party_type"))

    op.drop_table("agencies")
