"""Single-use client-assertion ids (jti), shared by every broker instance."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class UsedAssertion(Base):
    __tablename__ = "used_assertions"

    issuer: Mapped[str] = mapped_column(String(20), primary_key=True)
    jti: Mapped[str] = mapped_column(String(256), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
