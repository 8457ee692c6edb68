"""Acute-danger (break-the-glass) declarations. Subjects are pseudonym keys; the
justification is kept here for the privacy officer's review and never goes to
the audit log or the logs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class AcuteDeclaration(Base):
    __tablename__ = "acute_declarations"
    __table_args__ = (
        # The privacy officer's queue: pending declarations by due date.
        Index("ix_acute_declarations_review", "review_status", "review_due_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agreement_id: Mapped[str] = mapped_column(String(128))
    purpose_id: Mapped[str] = mapped_column(String(128))
    declared_by_oin: Mapped[str] = mapped_column(String(20), index=True)
    declared_by_party: Mapped[str] = mapped_column(String(64))
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    subjects: Mapped[list[str]] = mapped_column(JSON)
    justification: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    review_status: Mapped[str] = mapped_column(String(16))  # pending | approved | questioned
    reviewed_by: Mapped[str | None] = mapped_column(String(20), nullable=True)
    review_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    review_due_at: Mapped[datetime] = mapped_column(UTCDateTime())
