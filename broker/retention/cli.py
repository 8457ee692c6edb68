"""``broker retention``: list the retention keys and destroy those that are due."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import click

from broker.cli_support import audited_database, load_settings, run_sync
from broker.retention.service import KeyState, RetentionService

T = TypeVar("T")


def _at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter("an ISO 8601 time with offset, e.g. 2046-01-01T00:00Z") from exc
    if moment.tzinfo is None:
        raise click.BadParameter("give a time with an offset, e.g. 2046-01-01T00:00Z")
    if moment < datetime.now(UTC):
        raise click.BadParameter("lies in the past; keys due by now are destroyed without --at")
    return moment


def _with_service(work: Callable[[RetentionService], Awaitable[T]], *, audit: bool) -> T:
    from broker.retention.vault import open_vault

    settings = load_settings()

    async def go() -> T:
        async with audited_database(settings, audit=audit) as (db, writer):
            return await work(RetentionService(db, writer, open_vault(settings, db)))

    return run_sync(go())


def _line(key: KeyState) -> str:
    state = (
        f"destroyed {key.destroyed_at.isoformat(timespec='seconds')} (audit #{key.destroyed_seq})"
        if key.destroyed_at is not None
        else f"destroy after {key.destroy_after.isoformat(timespec='seconds')}"
    )
    return f"{key.id:<24} {state}"


@click.group("retention")
def retention_group() -> None:
    """Retention keys: released-data metadata is shredded when its retention ends."""


@retention_group.command("status")
def status() -> None:
    """List every retention key: its period and when it is (or was) destroyed."""
    keys = _with_service(lambda s: s.keys(), audit=False)
    if not keys:
        click.echo("no retention keys")
    for key in keys:
        click.echo(_line(key))


@retention_group.command("run")
@click.option(
    "--at",
    "at_text",
    default=None,
    help="Destroy what is due at this (future) time instead of now, e.g. 2046-01-01T00:00Z",
)
@click.option("--dry-run", is_flag=True, help="Only list the keys that are due")
def run(at_text: str | None, dry_run: bool) -> None:
    """Destroy the keys whose period plus retention has ended (each audit-logged)."""
    at = _at(at_text)
    if dry_run:
        due = _with_service(lambda s: s.due(at), audit=False)
        click.echo(f"{len(due)} retention keys due")
        for key in due:
            click.echo(_line(key))
        return
    destroyed = _with_service(lambda s: s.run(at), audit=True)
    click.echo(f"destroyed {len(destroyed)} retention keys")
    for key in destroyed:
        click.echo(_line(key))
