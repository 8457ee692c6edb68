"""Publication, inbox and webhook tables.

A publication is one event a publisher sent (unique per publisher and event id,
so a re-publication is recognised); an inbox message is what one recipient
agency receives of it: the per-item decisions in clear (subjects as positions in
the event's subject list, never BSNs) and the allowed values as a JWE to the
recipient's key. Messages stay until acknowledged; the delivery columns drive the
webhook worker's claims and retries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class Publication(Base):
    __tablename__ = "publications"
    __table_args__ = (UniqueConstraint("publisher_oin", "event_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    publisher_oin: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(128))
    agreement_id: Mapped[str] = mapped_column(String(128))
    purpose_id: Mapped[str] = mapped_column(String(128))
    # SHA-256 over the event's shape (type, agreement, pseudonymised subjects,
    # element ids): a re-publication must match it.
    fingerprint: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # The 202 answer as first given (no BSNs, no values), repeated on re-publication.
    response: Mapped[dict[str, Any]] = mapped_column(JSON)


class InboxMessage(Base):
    __tablename__ = "inbox_messages"
    __table_args__ = (
        # The inbox listing: a recipient's unacknowledged messages in order.
        Index("ix_inbox_messages_pending", "recipient_oin", "acked_at", "created_at", "id"),
        # The delivery worker's claim.
        Index("ix_inbox_messages_delivery", "acked_at", "gave_up_at", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    publication_id: Mapped[str] = mapped_column(ForeignKey("publications.id"), index=True)
    recipient_oin: Mapped[str] = mapped_column(String(20))
    recipient_party: Mapped[str] = mapped_column(String(64))
    publisher_oin: Mapped[str] = mapped_column(String(20))
    publisher_party: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(128))
    agreement_id: Mapped[str] = mapped_column(String(128))
    agreement_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agreement_hash: Mapped[str | None] = mapped_column(String(80), nullable=True)
    purpose_id: Mapped[str] = mapped_column(String(128))
    decision_id: Mapped[str] = mapped_column(String(36))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    payload: Mapped[str] = mapped_column(Text)  # JWE compact to the recipient's key
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acked_by: Mapped[str | None] = mapped_column(String(16), nullable=True)  # inbox | webhook
    # Webhook delivery: attempts made, when the next may start, who holds the
    # current attempt and until when, and when the worker gave up.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AgencyWebhook(Base):
    """Where the broker POSTs an agency's inbox messages (optional)."""

    __tablename__ = "agency_webhooks"

    agency_oin: Mapped[str] = mapped_column(ForeignKey("agencies.oin"), primary_key=True)
    url: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
