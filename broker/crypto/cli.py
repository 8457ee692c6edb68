"""``broker keys list|rotate|retire|init-hsm``: the broker's own signing keys.

The backend is the configured one (BROKER_KEY_BACKEND): files in the keys folder
or key pairs inside a PKCS#11 token, whose private halves never leave it. A
running broker picks up a rotation when it restarts; until every instance has,
the old key still signs and the new one already verifies nowhere, so restart all
instances after a rotation."""

from __future__ import annotations

import json
from typing import Any

import click

from broker.cli_support import load_settings
from broker.core.errors import BrokerError
from broker.settings import KeyBackend, Settings


def _settings() -> Settings:
    return load_settings(quiet_logs=False)


def _rows(settings: Settings) -> list[dict[str, Any]]:
    """Every key, newest first: kid, alg, role (signs/verifies) and where it lives."""
    from broker.crypto.keys import BrokerKeyring, file_public_keys, open_pkcs11_token

    if settings.key_backend is KeyBackend.FILE:
        ring = BrokerKeyring.load_or_create(settings.keys_dir)
        return [
            {"kid": k["kid"], "alg": k["alg"], "role": "verifies", "where": "file"}
            for k in ring.public_jwks()["keys"]
        ]
    token = open_pkcs11_token(settings)
    try:
        hsm = token.keys(settings.pkcs11_key_label)
    finally:
        token.close()
    rows = [
        {
            "kid": k.kid,
            "alg": k.public_jwk["alg"],
            "role": "verifies",
            "where": f"pkcs11:{k.label}" + ("" if k.has_private else " (public key only)"),
        }
        for k in hsm
    ]
    known = {r["kid"] for r in rows}
    rows += [
        {"kid": k["kid"], "alg": k["alg"], "role": "verifies", "where": "file (public key only)"}
        for k in file_public_keys(settings.keys_dir)
        if k["kid"] not in known
    ]
    return rows


@click.group("keys")
def keys_group() -> None:
    """The broker's signing keys (files or a PKCS#11 token): list, rotate, retire."""


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON")
def keys_list(as_json: bool) -> None:
    """List the keys, newest first: the first signs, every one verifies."""
    settings = _settings()
    try:
        rows = _rows(settings)
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    if rows:
        rows[0]["role"] = "signs"
    if as_json:
        click.echo(json.dumps({"backend": settings.key_backend.value, "keys": rows}, indent=2))
        return
    click.echo(f"backend: {settings.key_backend.value}")
    for row in rows:
        click.echo(f"{row['kid']}  {row['alg']}  {row['role']:<8}  {row['where']}")


@keys_group.command("rotate")
def keys_rotate() -> None:
    """Create a new key in front (in the token for pkcs11); older keys keep verifying."""
    from broker.crypto.keys import BrokerKeyring, open_pkcs11_token

    settings = _settings()
    try:
        if settings.key_backend is KeyBackend.FILE:
            kid = BrokerKeyring.rotate(settings.keys_dir)
        else:
            token = open_pkcs11_token(settings)
            try:
                kid = token.generate(settings.pkcs11_key_label).kid
            finally:
                token.close()
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    click.echo(f"new signing key {kid}; restart every broker instance to sign with it")


@keys_group.command("retire")
@click.argument("kid")
def keys_retire(kid: str) -> None:
    """Remove a key that no longer signs; what it signed no longer verifies.

    A key id may start with "-" (it is a base64url thumbprint): give it after
    "--", as in ``broker keys retire -- -Rk3...``."""
    from broker.crypto.keys import BrokerKeyring, open_pkcs11_token

    settings = _settings()
    try:
        if settings.key_backend is KeyBackend.FILE:
            BrokerKeyring.retire(settings.keys_dir, kid)
        else:
            token = open_pkcs11_token(settings)
            try:
                keys = token.keys(settings.pkcs11_key_label)
                match = next((k for k in keys if k.kid == kid), None)
                if match is None:
                    raise click.ClickException(f"no key {kid} in the PKCS#11 token")
                if match is keys[0]:
                    raise click.ClickException("the active key cannot be retired; rotate first")
                token.destroy(match.label)
            finally:
                token.close()
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    click.echo(f"retired {kid}")


@keys_group.command("init-hsm")
def keys_init_hsm() -> None:
    """Generate the broker's first key pair inside the PKCS#11 token (once).

    The token itself is initialised with the HSM's tools (SoftHSM2:
    softhsm2-util --init-token). Does nothing when the token holds a broker key."""
    from broker.crypto.keys import open_pkcs11_token

    settings = _settings()
    if settings.key_backend is not KeyBackend.PKCS11:
        raise click.ClickException("init-hsm needs BROKER_KEY_BACKEND=pkcs11")
    try:
        token = open_pkcs11_token(settings)
        try:
            existing = token.keys(settings.pkcs11_key_label)
            if existing:
                click.echo(
                    f"the token already holds {len(existing)} broker key(s); "
                    f"active {existing[0].kid}"
                )
                return
            key = token.generate(settings.pkcs11_key_label)
        finally:
            token.close()
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    click.echo(f"generated signing key {key.kid} ({key.label}) inside the token")
