"""audit log as an RFC 9162 Merkle tree: perfect subtree hashes, root and frontier

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from audit.merkle import append_leaves, encode_frontier, fold, leaf_hash
from audit.models import EMPTY_ROOT_HEX

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHUNK = 5000


def upgrade() -> None:
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("index", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("level", "index", name=op.f("pk_audit_nodes")),
    )
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "root_hash", sa.String(length=64), nullable=False, server_default=EMPTY_ROOT_HEX
            )
        )
        batch_op.add_column(sa.Column("frontier", sa.Text(), nullable=False, server_default=""))
    _backfill()


def _backfill() -> None:
    """Builds the tree over the entries an existing log already holds."""
    conn = op.get_bind()
    entries = sa.table("audit_entries", sa.column("seq"), sa.column("entry"))
    nodes = sa.table("audit_nodes", sa.column("level"), sa.column("index"), sa.column("hash"))
    head = sa.table("audit_head", sa.column("id"), sa.column("root_hash"), sa.column("frontier"))
    frontier: list[bytes] = []
    size = 0
    while True:
        rows = conn.execute(
            sa.select(entries.c.seq, entries.c.entry)
            .where(entries.c.seq >= size)
            .order_by(entries.c.seq)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        leaves = [leaf_hash(str(row.entry).encode("utf-8")) for row in rows]
        frontier, size, created = append_leaves(frontier, size, leaves)
        conn.execute(
            sa.insert(nodes), [{"level": lv, "index": i, "hash": h.hex()} for lv, i, h in created]
        )
    if size:
        conn.execute(
            sa.update(head)
            .where(head.c.id == 1)
            .values(root_hash=fold(frontier).hex(), frontier=encode_frontier(frontier))
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("frontier")
        batch_op.drop_column("root_hash")
    op.drop_table("audit_nodes")
