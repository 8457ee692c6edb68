"""Signatures of agreement versions by the signatory agencies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
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
