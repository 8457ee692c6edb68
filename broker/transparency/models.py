"""Witness cosignatures (C2SP tlog-cosignature) of the audit log's checkpoints."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime


class CheckpointCosignature(Base):
    """One agency's cosignature/v1 over the checkpoint ``(origin, tree_size,
    root_hash)``; ``signature`` is the base64 of key id || 8-byte timestamp ||
    Ed25519 signature, exactly as it follows the name on the signature line."""

    __tablename__ = "checkpoint_cosignatures"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    agency_oin: Mapped[str] = mapped_column(String(20), primary_key=True)
    origin: Mapped[str] = mapped_column(String(255))
    root_hash: Mapped[str] = mapped_column(String(64))
    kid: Mapped[str] = mapped_column(String(128))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
