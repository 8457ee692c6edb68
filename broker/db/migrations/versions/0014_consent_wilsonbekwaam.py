"""consent records' wilsonbekwaam statement in its own column; index for prior answers

A consent record's statement that the minor subject is wilsonbekwaam
(``{established_by, established_at, evidence_ref}``) moves from a marker entry
of capacity ``represented`` in the ``givers`` JSON to the nullable JSON column
``consent_records.wilsonbekwaam``; downgrading moves it back. The lookup of
earlier boolean answers (an agency's exchanges of one agreement and purpose by
time) gets the composite index ``ix_exchanges_requester_scope``.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25 16:00:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# The capacity of the marker entry that stated the statement inside ``givers``.
REPRESENTED = "represented"
STATEMENT_KEYS = ("established_by", "established_at", "evidence_ref")

_records = sa.table(
    "consent_records",
    sa.column("id", sa.String()),
    sa.column("subject_key", sa.String()),
    sa.column("givers", sa.JSON()),
    sa.column("wilsonbekwaam", sa.JSON()),
)


def _is_marker(giver: Any) -> bool:
    return isinstance(giver, dict) and giver.get("capacity") == REPRESENTED


def upgrade() -> None:
    with op.batch_alter_table("consent_records") as batch:
        batch.add_column(sa.Column("wilsonbekwaam", sa.JSON(), nullable=True))
    with op.batch_alter_table("exchanges") as batch:
        batch.create_index(
            "ix_exchanges_requester_scope",
            ["requester_oin", "agreement_id", "purpose_id", "created_at"],
            unique=False,
        )

    conn = op.get_bind()
    # Read in Python: JSON functions differ between SQLite and PostgreSQL, and the
    # registry is small (one row per recorded consent).
    rows = conn.execute(sa.select(_records.c.id, _records.c.givers)).all()
    for record_id, givers in rows:
        if not isinstance(givers, list) or not any(_is_marker(g) for g in givers):
            continue
        marker = next(g for g in givers if _is_marker(g))
        conn.execute(
            _records.update()
            .where(_records.c.id == record_id)
            .values(
                givers=[g for g in givers if not _is_marker(g)],
                wilsonbekwaam={k: marker.get(k) for k in STATEMENT_KEYS},
            )
        )


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(
            _records.c.id, _records.c.subject_key, _records.c.givers, _records.c.wilsonbekwaam
        ).where(_records.c.wilsonbekwaam.is_not(None))
    ).all()
    for record_id, subject_key, givers, statement in rows:
        if not isinstance(statement, dict):  # a JSON null
            continue
        marker = {"key": subject_key, "capacity": REPRESENTED}
        marker.update({k: statement.get(k) for k in STATEMENT_KEYS})
        conn.execute(
            _records.update()
            .where(_records.c.id == record_id)
            .values(givers=[*(givers or []), marker])
        )

    with op.batch_alter_table("exchanges") as batch:
        batch.drop_index("ix_exchanges_requester_scope")
    with op.batch_alter_table("consent_records") as batch:
        batch.drop_column("wilsonbekwaam")
