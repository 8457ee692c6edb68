"""officer OpenID Connect identities and encrypted TOTP secrets

Officer accounts get an OpenID Connect identity (issuer and subject; such
accounts have no password and no TOTP secret), and TOTP secrets are sealed
with AES-256-GCM under a data key wrapped by the broker's key-encryption key
(``officer_secret_keys``). Secrets stored in clear before are sealed here:
that needs the KEK, read as the broker reads it (``BROKER_RETENTION_KEK``, else
``retention-kek.key`` in ``BROKER_KEYS_DIR``), so run the upgrade with the
broker's environment. Downgrading opens them again.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25 15:00:00.000000
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from broker.retention.vault import kek_id
from broker.review import sealing
from broker.settings import Settings

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_accounts = sa.table(
    "officer_accounts",
    sa.column("id", sa.Integer()),
    sa.column("totp_secret", sa.String()),
)
_keys = sa.table(
    "officer_secret_keys",
    sa.column("id", sa.String()),
    sa.column("kek_id", sa.String()),
    sa.column("wrapped", sa.Text()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _data_key(conn: sa.Connection, *, create: bool) -> bytes:
    kek = sealing.load_kek(Settings())
    row = conn.execute(
        sa.select(_keys.c.kek_id, _keys.c.wrapped).where(_keys.c.id == sealing.TOTP_KEY_ID)
    ).first()
    if row is not None:
        return sealing.unwrap_key(kek, sealing.TOTP_KEY_ID, row.kek_id, row.wrapped)
    if not create:
        raise RuntimeError("officer TOTP secrets are sealed but their data key is missing")
    key, wrapped = sealing.new_wrapped_key(kek)
    conn.execute(
        _keys.insert().values(
            id=sealing.TOTP_KEY_ID,
            kek_id=kek_id(kek),
            wrapped=wrapped,
            created_at=datetime.now(UTC),
        )
    )
    return key


def upgrade() -> None:
    op.create_table(
        "officer_secret_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kek_id", sa.String(length=16), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_officer_secret_keys")),
    )
    with op.batch_alter_table("officer_accounts") as batch:
        batch.alter_column("password_hash", existing_type=sa.String(length=255), nullable=True)
        batch.alter_column(
            "totp_secret",
            existing_type=sa.String(length=64),
            type_=sa.String(length=255),
            nullable=True,
        )
        batch.add_column(sa.Column("oidc_issuer", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("oidc_subject", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("scope_from_claim", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_unique_constraint(
            op.f("uq_officer_accounts_oidc_issuer"), ["oidc_issuer", "oidc_subject"]
        )

    conn = op.get_bind()
    clear = [
        (int(r.id), str(r.totp_secret))
        for r in conn.execute(sa.select(_accounts.c.id, _accounts.c.totp_secret))
        if r.totp_secret is not None and not sealing.is_sealed(r.totp_secret)
    ]
    if clear:
        key = _data_key(conn, create=True)
        for account_id, secret in clear:
            conn.execute(
                _accounts.update()
                .where(_accounts.c.id == account_id)
                .values(totp_secret=sealing.seal_totp(key, account_id, secret))
            )


def downgrade() -> None:
    conn = op.get_bind()
    sealed = [
        (int(r.id), str(r.totp_secret))
        for r in conn.execute(sa.select(_accounts.c.id, _accounts.c.totp_secret))
        if sealing.is_sealed(r.totp_secret)
    ]
    if sealed:
        key = _data_key(conn, create=False)
        for account_id, stored in sealed:
            conn.execute(
                _accounts.update()
                .where(_accounts.c.id == account_id)
                .values(totp_secret=sealing.open_totp(key, account_id, stored))
            )
    # Accounts without a password (OpenID Connect only) cannot exist before 0013.
    conn.execute(sa.text("DELETE FROM officer_accounts WHERE password_hash IS NULL"))
    with op.batch_alter_table("officer_accounts") as batch:
        batch.drop_constraint(op.f("uq_officer_accounts_oidc_issuer"), type_="unique")
        batch.drop_column("scope_from_claim")
        batch.drop_column("oidc_subject")
        batch.drop_column("oidc_issuer")
        batch.alter_column(
            "totp_secret",
            existing_type=sa.String(length=255),
            type_=sa.String(length=64),
            nullable=False,
        )
        batch.alter_column("password_hash", existing_type=sa.String(length=255), nullable=False)
    op.drop_table("officer_secret_keys")
