"""Agency registry tables: organisations (by OIN) and their public keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.db.base import Base, UTCDateTime


class Agency(Base):
    __tablename__ = "agencies"

    oin: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    party_type: Mapped[str] = mapped_column(String(64), index=True)
    endpoint_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    adapter_kind: Mapped[str] = mapped_column(String(32), default="partner_api")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    keys: Mapped[list[AgencyKey]] = relationship(
        back_populates="agency", order_by="AgencyKey.id", lazy="selectin"
    )


class AgencyKey(Base):
    __tablename__ = "agency_keys"
    __table_args__ = (UniqueConstraint("agency_oin", "kid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agency_oin: Mapped[str] = mapped_column(ForeignKey("agencies.oin"), index=True)
    kid: Mapped[str] = mapped_column(String(128))
    use: Mapped[str] = mapped_column(String(8))  # "sig" | "enc"
    alg: Mapped[str] = mapped_column(String(32))
    jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    agency: Mapped[Agency] = relationship(back_populates="keys")
