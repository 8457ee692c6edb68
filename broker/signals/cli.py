"""``broker signals expire|list``: the signal register from the shell.

``expire`` removes every signal past its end date, each removal audited (run it
from a scheduler when BROKER_SIGNAL_EXPIRY_SECONDS is 0); ``list`` shows an
agency's live signals (ids, agreement, kind, end date; never a person)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from broker.cli_support import audited_database, load_settings, pseudonymizer, run_sync

if TYPE_CHECKING:
    from broker.signals.service import SignalService

T = TypeVar("T")


def _run(work: Callable[[SignalService], Awaitable[T]]) -> T:
    from adapters.brp.client import BrpRegister
    from broker.agencies.service import AgencyDirectory
    from broker.crypto.jose import Sealer
    from broker.policy.loader import load_policy_set
    from broker.signals.service import SignalService

    settings = load_settings()
    pseudonyms = pseudonymizer(settings)
    policy_set = load_policy_set(settings.policy_dir)

    async def go() -> T:
        register = BrpRegister(settings.register_url, timeout=settings.register_timeout_seconds)
        try:
            async with audited_database(settings) as (db, audit):
                return await work(
                    SignalService(
                        db=db,
                        audit=audit,
                        pseudonymizer=pseudonyms,
                        register=register,
                        directory=AgencyDirectory(db),
                        policy_set=lambda: policy_set,
                        sealer=Sealer(),
                    )
                )
        finally:
            await register.aclose()

    return run_sync(go())


@click.group("signals")
def signals_group() -> None:
    """Signal and match ("who else is involved"): expiry and listing."""


@signals_group.command("expire")
def expire_command() -> None:
    """Remove every signal past its end date (each removal audited)."""
    removed = _run(lambda s: s.expire())
    for signal_id in removed:
        click.echo(f"removed {signal_id}")
    click.echo(f"{len(removed)} signal{'s' if len(removed) != 1 else ''} removed")


@signals_group.command("list")
@click.option("--oin", required=True, help="The agency whose live signals to list")
def list_command(oin: str) -> None:
    """An agency's live signals: id, agreement, kind, end date."""
    page = _run(lambda s: s.list_for(oin))
    for signal in page.signals:
        click.echo(
            f"{signal.id}  {signal.agreement_id}  {signal.subject_kind.value:<9} "
            f"until {signal.end_date.isoformat()}  {signal.contact.team}"
        )
