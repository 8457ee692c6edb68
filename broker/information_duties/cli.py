"""``broker duties list|embargo|end-investigation|fulfil|run``: AVG art. 14
information duties from the shell.

Each command acts as one registered, active agency (``--oin``) under the same
rules as the API; ``list`` as a privacy officer (BROKER_PRIVACY_OFFICERS) shows
every duty. ``run`` lifts the embargoes past their maximum duration (for a
scheduler when the app's own task is off)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from broker.cli_support import audited_database, echo_json, load_settings, parse, run_sync

if TYPE_CHECKING:
    from broker.agencies.service import AgencyView
    from broker.db.session import Database
    from broker.information_duties.schemas import StatusFilter
    from broker.information_duties.service import InformationDutyService
    from broker.policy.loader import PolicySet

T = TypeVar("T")


@dataclass
class _Context:
    db: Database
    policy_set: PolicySet
    duties: InformationDutyService

    async def agency(self, oin: str) -> AgencyView:
        from broker.agencies.service import AgencyDirectory

        view = await AgencyDirectory(self.db).get(oin)
        if view is None or not view.active:
            raise click.ClickException(f"no active agency with OIN {oin}")
        return view


@asynccontextmanager
async def _context() -> AsyncIterator[_Context]:
    from broker.information_duties.service import InformationDutyService
    from broker.policy.loader import load_policy_set

    settings = load_settings()
    async with audited_database(settings) as (db, audit):
        yield _Context(
            db=db,
            policy_set=load_policy_set(settings.policy_dir),
            duties=InformationDutyService(
                db=db, audit=audit, privacy_officers=settings.privacy_officer_oins
            ),
        )


def _run(action: Callable[[_Context], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _context() as ctx:
            return await action(ctx)

    return run_sync(go())


@click.group("duties")
def duties_group() -> None:
    """AVG art. 14 information duties: list, embargo, fulfil, lift lapsed embargoes."""


@duties_group.command("list")
@click.option("--oin", required=True, help="Your agency; a privacy officer sees every duty")
@click.option(
    "--status",
    type=click.Choice(["open", "embargoed", "fulfilled", "overdue", "all"]),
    default="all",
    show_default=True,
)
@click.option("--overdue", is_flag=True, help="Same as --status overdue")
@click.option("--json", "as_json", is_flag=True, help="Print the duties as JSON")
def duties_list(oin: str, status: StatusFilter, overdue: bool, as_json: bool) -> None:
    """Duties by due date; OVERDUE marks an open duty past its due date."""
    wanted: StatusFilter = "overdue" if overdue else status

    async def action(ctx: _Context) -> Any:
        agency = await ctx.agency(oin)
        return await ctx.duties.list_duties(actor_oin=agency.oin, status=wanted)

    rows = _run(action)
    if as_json:
        echo_json(rows)
        return
    for d in rows:
        flag = "OVERDUE" if d.overdue else ""
        click.echo(
            f"{d.id:<22} {d.agreement_id}/{d.purpose_id} {d.holder_party} informs "
            f"{d.addressee_rule} ({len(d.addressees)}) {d.status} "
            f"due {d.due_at.isoformat(timespec='minutes')} {flag}".rstrip()
        )


@duties_group.command("embargo")
@click.argument("duty_id", required=False)
@click.option(
    "--exchange", "exchange_id", default=None, help="Every open duty of this exchange instead"
)
@click.option("--oin", required=True, help="Your agency (the recipient or the provider)")
@click.option("--reason", required=True, help="Why informing must wait")
@click.option("--investigation", required=True, help="Case reference of the investigation")
@click.option("--investigation-oin", default=None, help="The agency running it (default: you)")
def duties_embargo(
    *,
    duty_id: str | None,
    exchange_id: str | None,
    oin: str,
    reason: str,
    investigation: str,
    investigation_oin: str | None,
) -> None:
    """Postpone informing for DUTY_ID (or, with --exchange, for every open duty of
    one exchange at once) while a safety investigation runs."""
    from broker.information_duties.schemas import EmbargoIn, ExchangeEmbargoIn

    if (duty_id is None) == (exchange_id is None):
        raise click.UsageError("give either DUTY_ID or --exchange")
    fields = {
        "reason": reason,
        "investigation_reference": investigation,
        "investigation_agency_oin": investigation_oin,
    }

    async def action(ctx: _Context) -> Any:
        agency = await ctx.agency(oin)
        if exchange_id is not None:
            return await ctx.duties.embargo_exchange(
                parse(ExchangeEmbargoIn, dict(fields, exchange_id=exchange_id)),
                actor_oin=agency.oin,
                actor_party=agency.party_type,
                policy_set=ctx.policy_set,
            )
        assert duty_id is not None
        return await ctx.duties.embargo(
            duty_id,
            parse(EmbargoIn, fields),
            actor_oin=agency.oin,
            actor_party=agency.party_type,
            policy_set=ctx.policy_set,
        )

    echo_json(_run(action))


@duties_group.command("end-investigation")
@click.argument("reference")
@click.option("--oin", required=True, help="The agency running the investigation")
def duties_end(reference: str, oin: str) -> None:
    """End your investigation REFERENCE: every embargo resting on it is lifted."""

    async def action(ctx: _Context) -> Any:
        agency = await ctx.agency(oin)
        return await ctx.duties.end_investigation(reference, actor_oin=agency.oin)

    echo_json(_run(action))


@duties_group.command("fulfil")
@click.argument("duty_id")
@click.option("--oin", required=True, help="The agency that must inform")
@click.option("--informed-at", required=True, help="ISO 8601 time with offset")
@click.option(
    "--method",
    type=click.Choice(["letter", "conversation", "email", "portal", "other"]),
    required=True,
)
@click.option("--evidence", required=True, help="Where the notice or its record is kept")
def duties_fulfil(duty_id: str, oin: str, informed_at: str, method: str, evidence: str) -> None:
    """Record that the addressees of DUTY_ID were informed."""
    from broker.information_duties.schemas import FulfilIn

    body = parse(
        FulfilIn,
        {"informed_at": informed_at, "method": method, "evidence_reference": evidence},
    )

    async def action(ctx: _Context) -> Any:
        agency = await ctx.agency(oin)
        return await ctx.duties.fulfil(duty_id, body, actor_oin=agency.oin)

    echo_json(_run(action))


@duties_group.command("run")
def duties_run() -> None:
    """Lift every embargo past its maximum duration (audited)."""

    async def action(ctx: _Context) -> int:
        return await ctx.duties.run()

    click.echo(f"lifted {_run(action)} lapsed embargo(es)")
