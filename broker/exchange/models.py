"""Exchange and decision tables. The decision row keeps the full (pseudonymised)
policy input so agreements can later be replayed against recorded decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class Exchange(Base):
    __tablename__ = "exchanges"
    __table_args__ = (
        # An agency's exchanges of one agreement and purpose by time: the lookup of the
        # boolean answers a follow-up purpose needs (ConsentService.prior_answers).
        Index(
            "ix_exchanges_requester_scope",
            "requester_oin",
            "agreement_id",
            "purpose_id",
            "created_at",
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    requester_oin: Mapped[str] = mapped_column(String(20), index=True)
    recipient_party: Mapped[str] = mapped_column(String(64))
    provider_oin: Mapped[str | None] = mapped_column(String(20), nullable=True)
    provider_party: Mapped[str] = mapped_column(String(64))
    agreement_id: Mapped[str] = mapped_column(String(128))
    agreement_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    purpose_id: Mapped[str] = mapped_column(String(128))
    # Sealed for retention: "rk1:<key id>:<ciphertext>" (broker.retention.vault).
    case_reference: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision_id: Mapped[str] = mapped_column(String(36))
    item_count: Mapped[int] = mapped_column(Integer)
    allowed_count: Mapped[int] = mapped_column(Integer)
    released_count: Mapped[int] = mapped_column(Integer)


class DecisionRecord(Base):
    __tablename__ = "decisions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    exchange_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    engine: Mapped[str] = mapped_column(String(32))
    bundle_hash: Mapped[str] = mapped_column(String(80))
    agreement_id: Mapped[str] = mapped_column(String(128), index=True)
    agreement_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agreement_hash: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # Personal facts sealed for retention under "sealed" (broker.retention.vault).
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
