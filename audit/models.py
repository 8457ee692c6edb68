"""The audit log tables: an append-only, hash-chained sequence of entries.

Each entry's canonical JSON (RFC 8785) is stored as text exactly as hashed, so
the chain can be recomputed byte for byte. ``audit_head`` holds the current
size and head hash; writers lock it, so concurrent broker processes on one
PostgreSQL never fork the log.

The same log is an RFC 9162 Merkle tree (leaf = SHA-256(0x00 || entry bytes)):
``audit_nodes`` holds the hash of every complete (perfect) subtree, written in
the transaction that appends its last leaf, and the head row holds the root and
the frontier (the perfect subtrees of the whole tree) so appends stay O(log n).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.base import Base, UTCDateTime

# SHA-256 of the empty string: the RFC 9162 root of the empty tree.
EMPTY_ROOT_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class AuditEntry(Base):
    __tablename__ = "audit_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    exchange_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)
    subject_key: Mapped[str | None] = mapped_column(String(80), index=True, nullable=True)
    element: Mapped[str | None] = mapped_column(String(128), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    entry: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    # RFC 9162 root (hex) and frontier (comma-separated hex hashes, largest subtree first).
    root_hash: Mapped[str] = mapped_column(String(64), default=EMPTY_ROOT_HEX)
    frontier: Mapped[str] = mapped_column(Text, default="")


class AuditNode(Base):
    """The hash (hex) of the perfect subtree over the leaves
    ``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes."""

    __tablename__ = "audit_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
