"""publications, recipients' inboxes and agency webhooks (publish/subscribe)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "publications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("publisher_oin", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("purpose_id", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publications")),
        sa.UniqueConstraint(
            "publisher_oin", "event_id", name=op.f("uq_publications_publisher_oin")
        ),
    )
    with op.batch_alter_table("publications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_publications_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "inbox_messages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("publication_id", sa.String(length=36), nullable=False),
        sa.Column("recipient_oin", sa.String(length=20), nullable=False),
        sa.Column("recipient_party", sa.String(length=64), nullable=False),
        sa.Column("publisher_oin", sa.String(length=20), nullable=False),
        sa.Column("publisher_party", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("event_type", sa.String(length=128), nullable=False),
        sa.Column("agreement_id", sa.String(length=128), nullable=False),
        sa.Column("agreement_version", sa.String(length=32), nullable=True),
        sa.Column("agreement_hash", sa.String(length=80), nullable=True),
        sa.Column("purpose_id", sa.String(length=128), nullable=False),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_by", sa.String(length=16), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["publication_id"],
            ["publications.id"],
            name=op.f("fk_inbox_messages_publication_id_publications"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_messages")),
    )
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbox_messages_publication_id"), ["publication_id"], unique=False
        )
        batch_op.create_index(
            "ix_inbox_messages_pending",
            ["recipient_oin", "acked_at", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_inbox_messages_delivery",
            ["acked_at", "gave_up_at", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "agency_webhooks",
        sa.Column("agency_oin", sa.String(length=20), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_oin"],
            ["agencies.oin"],
            name=op.f("fk_agency_webhooks_agency_oin_agencies"),
        ),
        sa.PrimaryKeyConstraint("agency_oin", name=op.f("pk_agency_webhooks")),
    )


def downgrade() -> None:
    op.drop_table("agency_webhooks")
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_messages_delivery")
        batch_op.drop_index("ix_inbox_messages_pending")
        batch_op.drop_index(batch_op.f("ix_inbox_messages_publication_id"))
    op.drop_table("inbox_messages")
    with op.batch_alter_table("publications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_publications_created_at"))
    op.drop_table("publications")
