"""AVG art. 14 information duties, their embargoes and the safety investigations
that justify them. Subjects and addressees are pseudonym keys; the embargo
reason and the investigation's case reference stay here (for the agencies and
the privacy officer) and never go to the audit log or the logs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class InformationDuty(Base):
    """One duty per released exchange and subject: who must inform whom, about
    what, by when."""

    __tablename__ = "information_duties"
    __table_args__ = (
        # The privacy officer's overdue list: open duties by due date.
        Index("ix_information_duties_status_due", "status", "due_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    exchange_id: Mapped[str] = mapped_column(String(64), index=True)
    agreement_id: Mapped[str] = mapped_column(String(128))
    agreement_version: Mapped[str] = mapped_column(String(32))
    purpose_id: Mapped[str] = mapped_column(String(128))
    subject_key: Mapped[str] = mapped_column(String(80), index=True)
    subject_kind: Mapped[str] = mapped_column(String(16))
    # authority_holders | subject | household_members
    addressee_rule: Mapped[str] = mapped_column(String(32))
    addressees: Mapped[list[str]] = mapped_column(JSON)  # pseudonym keys
    elements: Mapped[list[str]] = mapped_column(JSON)
    legal_basis_ids: Mapped[list[str]] = mapped_column(JSON)  # of the release
    duty_basis_ids: Mapped[list[str]] = mapped_column(JSON)  # of the duty (AVG art. 14)
    holder_oin: Mapped[str] = mapped_column(String(20), index=True)
    holder_party: Mapped[str] = mapped_column(String(64))
    recipient_oin: Mapped[str] = mapped_column(String(20), index=True)
    recipient_party: Mapped[str] = mapped_column(String(64))
    provider_oin: Mapped[str] = mapped_column(String(20), index=True)
    provider_party: Mapped[str] = mapped_column(String(64))
    released_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))  # open | embargoed | fulfilled
    embargo_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    informed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fulfilled_by_oin: Mapped[str | None] = mapped_column(String(20), nullable=True)
    fulfil_method: Mapped[str | None] = mapped_column(String(32), nullable=True)
    evidence_ref: Mapped[str | None] = mapped_column(String(128), nullable=True)


class SafetyInvestigation(Base):
    """A safety investigation run by one agency, known by that agency's case
    reference. While it runs it can justify embargoes; ending it lifts them."""

    __tablename__ = "safety_investigations"
    __table_args__ = (UniqueConstraint("agency_oin", "reference"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_oin: Mapped[str] = mapped_column(String(20))
    agency_party: Mapped[str] = mapped_column(String(64))
    reference: Mapped[str] = mapped_column(String(128))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DutyEmbargo(Base):
    """A restriction (AVG art. 23 jo. UAVG art. 41) of one duty while an
    investigation runs; lifted when it ends or at ``lapses_at``."""

    __tablename__ = "information_duty_embargoes"
    __table_args__ = (Index("ix_information_duty_embargoes_active", "lifted_at", "lapses_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    duty_id: Mapped[str] = mapped_column(String(64), index=True)
    investigation_id: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    set_by_oin: Mapped[str] = mapped_column(String(20))
    set_by_party: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lapses_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # What was left of the period when the embargo began; it runs again on lifting.
    remaining_seconds: Mapped[int] = mapped_column(Integer)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # investigation_ended | max_duration
    lift_cause: Mapped[str | None] = mapped_column(String(32), nullable=True)
