"""``broker officer add|add-oidc|list|disable|reset-totp``: privacy-officer accounts of the
review web page (``/review``). The TOTP secret is printed once, when an account
is made or its second factor reset; it is not shown again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import click

from broker.cli_support import audited_database, load_settings, run_sync

if TYPE_CHECKING:
    from broker.review.accounts import AccountService, NewSecret

T = TypeVar("T")


@asynccontextmanager
async def _accounts() -> AsyncIterator[AccountService]:
    from broker.review.accounts import AccountService, load_or_create_session_key
    from broker.review.sealing import SecretBox, load_kek

    settings = load_settings()
    async with audited_database(settings) as (db, audit):
        yield AccountService(
            db=db,
            audit=audit,
            session_key=load_or_create_session_key(settings.keys_dir),
            box=SecretBox(db, load_kek(settings)),
        )


def _run(action: Callable[[AccountService], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _accounts() as accounts:
            return await action(accounts)

    return run_sync(go())


def _print_secret(new: NewSecret) -> None:
    click.echo(f"account {new.account.id} ({new.account.username})")
    click.echo(f"TOTP secret: {new.totp_secret}")
    click.echo(f"otpauth URI: {new.otpauth_uri}")
    click.echo("Give the secret to the officer for an authenticator app; it is not shown again.")


@click.group("officer")
def officer_group() -> None:
    """Privacy-officer accounts of the review web page (/review)."""


@officer_group.command("add")
@click.option("--username", required=True, help="Sign-in name: a-z first, then a-z 0-9 . _ -")
@click.option(
    "--agency", "agencies", multiple=True, help="OIN of an agency the officer reviews (repeat)"
)
@click.option("--broker-officer", is_flag=True, help="The broker's own officer: sees every agency")
@click.password_option(
    "--password",
    prompt="Password",
    help="At least 12 characters; prompted (twice) when not given",
)
def officer_add(
    username: str, agencies: tuple[str, ...], broker_officer: bool, password: str
) -> None:
    """Create an account; prints its TOTP secret and otpauth:// URI once."""
    new = _run(
        lambda accounts: accounts.add(
            username=username,
            password=password,
            agencies=list(agencies),
            broker_officer=broker_officer,
        )
    )
    _print_secret(new)


@officer_group.command("add-oidc")
@click.option(
    "--username", required=True, help="Name shown on the page: a-z first, then a-z 0-9 . _ -"
)
@click.option("--subject", required=True, help="The officer's subject (sub) at the provider")
@click.option(
    "--issuer",
    default=None,
    help="The provider's issuer (default: BROKER_REVIEW_OIDC_ISSUER)",
)
@click.option(
    "--agency", "agencies", multiple=True, help="OIN of an agency the officer reviews (repeat)"
)
@click.option("--broker-officer", is_flag=True, help="The broker's own officer: sees every agency")
def officer_add_oidc(
    username: str,
    subject: str,
    issuer: str | None,
    agencies: tuple[str, ...],
    broker_officer: bool,
) -> None:
    """Allow an OpenID Connect identity in (no password, no TOTP: the provider signs in)."""
    from broker.settings import Settings

    issuer = issuer or Settings().review_oidc_issuer
    if not issuer:
        raise click.ClickException("give --issuer or set BROKER_REVIEW_OIDC_ISSUER")
    account = _run(
        lambda accounts: accounts.add_oidc(
            username=username,
            issuer=issuer,
            subject=subject,
            agencies=list(agencies),
            broker_officer=broker_officer,
        )
    )
    click.echo(f"account {account.id} ({account.username}) signs in through {issuer}")


@officer_group.command("list")
def officer_list() -> None:
    """Every account: id, username, scope, state, last sign-in."""
    rows = _run(lambda accounts: accounts.list())
    for a in rows:
        scope = "ALL (broker officer)" if a.broker_officer else ",".join(a.agencies)
        state = "active" if a.active else "disabled"
        if a.locked_until is not None:
            state += f", locked until {a.locked_until.isoformat(timespec='minutes')}"
        last = a.last_login_at.isoformat(timespec="minutes") if a.last_login_at else "never"
        via = f"  oidc {a.oidc_issuer}" if a.oidc_issuer else ""
        click.echo(f"{a.id:<4} {a.username:<24} {state:<10} last sign-in {last}  {scope}{via}")


@officer_group.command("disable")
@click.argument("username")
def officer_disable(username: str) -> None:
    """Disable USERNAME and end its sessions."""
    account = _run(lambda accounts: accounts.disable(username))
    click.echo(f"account {account.id} ({account.username}) disabled")


@officer_group.command("reset-totp")
@click.argument("username")
def officer_reset_totp(username: str) -> None:
    """New TOTP secret for USERNAME (the old codes stop working; a lockout is lifted)."""
    _print_secret(_run(lambda accounts: accounts.reset_totp(username)))
