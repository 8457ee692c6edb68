"""One version counter per kind of shared state that instances cache."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class ChangeVersion(Base):
    """Bumped in the transaction that changes the state of ``topic``."""

    __tablename__ = "change_versions"

    topic: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
