"""audit_entry_field is not parallel safe

Migration 0010 declared the PostgreSQL function that the audit search indexes
use ``PARALLEL SAFE``. Its ``EXCEPTION`` block starts a subtransaction, which a
parallel plan refuses ("cannot start subtransactions during a parallel
operation"): a large audit search that the planner ran in parallel failed. It is
``PARALLEL UNSAFE`` now, so such queries run serially. SQLite has no such function.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-25 16:20:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER FUNCTION audit_entry_field(text, text[]) PARALLEL UNSAFE")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER FUNCTION audit_entry_field(text, text[]) PARALLEL SAFE")
