"""Signatures of agreement versions by the signatory agencies, and the versions
uploaded over the API (the files every broker instance installs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class AgreementSignature(Base):
    __tablename__ = "agreement_signatures"

    agreement_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(80), primary_key=True)
    signer_oin: Mapped[str] = mapped_column(String(20), primary_key=True)
    version: Mapped[str] = mapped_column(String(32))
    party: Mapped[str] = mapped_column(String(64))
    kid: Mapped[str] = mapped_column(String(128))
    jws: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class AgreementUpload(Base):
    """An agreement folder uploaded through ``POST /v1/agreements`` (files as text)."""

    __tablename__ = "agreement_uploads"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    agreement_id: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(32))
    folder: Mapped[str] = mapped_column(String(200))  # relative to agreements/
    content_hash: Mapped[str] = mapped_column(String(80))
    files: Mapped[dict[str, Any]] = mapped_column(JSON)
    uploader: Mapped[str] = mapped_column(String(20))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AgreementState(Base):
    """What the audit log last recorded of an agreement version's state (by any
    instance), so that every change is recorded once however many instances see it."""

    __tablename__ = "agreement_states"

    agreement_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(80))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
