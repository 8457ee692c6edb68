"""indexes for searching decision entries by the requesting and providing agency

Partial expression indexes over the canonical entry of decision entries, spelt
exactly as ``audit.search.entry_field_sql`` spells the fields in queries. An
entry that is not JSON indexes as NULL: the indexes never make the database
refuse a row (a changed entry must stay for the verifier to find).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 13:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# index name -> the JSON paths it covers
INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "ix_audit_decision_requester": (("requester",),),
    "ix_audit_decision_provider": (("provider",),),
}

PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_entry_field(entry text, path text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN entry::jsonb #>> path;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$
"""


def _field(path: tuple[str, ...], *, sqlite: bool) -> str:
    if sqlite:
        return f"CASE WHEN json_valid(entry) THEN json_extract(entry, '$.{'.'.join(path)}') END"
    return f"audit_entry_field(entry, '{{{','.join(path)}}}')"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if not sqlite:
        op.execute(PG_FUNCTION)
    for name, paths in INDEXES.items():
        expressions = ", ".join(_field(p, sqlite=sqlite) for p in paths)
        op.execute(f"CREATE INDEX {name} ON audit_entries ({expressions}) WHERE kind = 'decision'")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION audit_entry_field(text, text[])")
