"""``broker consent record|list|withdraw``: the consent registry from the shell.

Each command acts as one registered, active agency (``--oin``), under the same
rules as the API, and every recording and withdrawal is audited. Persons are
given by BSN and never stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from broker.cli_support import (
    audited_database,
    echo_json,
    load_settings,
    parse,
    pseudonymizer,
    run_sync,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from audit.log import AuditWriter
    from broker.agencies.service import AgencyView
    from broker.breakglass.service import BreakGlassService
    from broker.consent.service import ConsentService
    from broker.db.session import Database
    from broker.policy.loader import PolicySet

T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")


@dataclass
class CliContext:
    db: Database
    audit: AuditWriter
    policy_set: PolicySet
    consents: ConsentService
    breakglass: BreakGlassService

    async def agency(self, oin: str) -> AgencyView:
        from broker.agencies.service import AgencyDirectory

        view = await AgencyDirectory(self.db).get(oin)
        if view is None or not view.active:
            raise click.ClickException(f"no active agency with OIN {oin}")
        return view


@asynccontextmanager
async def cli_context() -> AsyncIterator[CliContext]:
    """The registry services on the configured database, with a running audit writer."""
    from datetime import timedelta

    from broker.breakglass.service import BreakGlassService
    from broker.consent.service import ConsentService
    from broker.policy.loader import load_policy_set

    settings = load_settings()
    pseudonyms = pseudonymizer(settings)
    async with audited_database(settings) as (db, audit):
        yield CliContext(
            db=db,
            audit=audit,
            policy_set=load_policy_set(settings.policy_dir),
            consents=ConsentService(db=db, audit=audit, pseudonymizer=pseudonyms),
            breakglass=BreakGlassService(
                db=db,
                audit=audit,
                pseudonymizer=pseudonyms,
                review_sla=timedelta(hours=settings.break_glass_review_sla_hours),
                privacy_officers=settings.privacy_officer_oins,
            ),
        )


def run(action: Callable[[CliContext], Awaitable[T]]) -> T:
    async def go() -> T:
        async with cli_context() as ctx:
            return await action(ctx)

    return run_sync(go())


def _iso(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            "an ISO 8601 time with offset, e.g. 2026-06-03T10:00+02:00"
        ) from exc


@click.group("consent")
def consent_group() -> None:
    """The consent registry: record, list and withdraw consent."""


@consent_group.command("record")
@click.option("--oin", required=True, help="The recording agency (registered, active)")
@click.option("--id", "record_id", default=None, help="Your id for the record; generated if absent")
@click.option("--subject", required=True, help="BSN of the data subject")
@click.option(
    "--giver",
    "givers",
    multiple=True,
    required=True,
    help="BSN:CAPACITY, capacity child, authority_holder or subject (repeat per giver)",
)
@click.option("--agreement", required=True)
@click.option("--purpose", required=True)
@click.option("--element", "elements", multiple=True, help="Narrow to these elements")
@click.option("--recipient", "recipients", multiple=True, help="Narrow to these recipients")
@click.option("--given-at", required=True, help="ISO 8601 time with offset")
@click.option("--valid-until", default=None, help="ISO 8601 time with offset")
@click.option("--evidence-ref", required=True, help="Where the form or statement is kept")
@click.option(
    "--wilsonbekwaam-by",
    default=None,
    help="The minor subject is wilsonbekwaam: who established it (a reference, e.g. "
    "ggz:behandelaar:4711); needs --wilsonbekwaam-at and --wilsonbekwaam-evidence",
)
@click.option("--wilsonbekwaam-at", default=None, help="When it was established (ISO 8601)")
@click.option(
    "--wilsonbekwaam-evidence", default=None, help="Where the documented assessment is kept"
)
def consent_record(  # click passes the options by name
    *,
    oin: str,
    record_id: str | None,
    subject: str,
    givers: tuple[str, ...],
    agreement: str,
    purpose: str,
    elements: tuple[str, ...],
    recipients: tuple[str, ...],
    given_at: str,
    valid_until: str | None,
    evidence_ref: str,
    wilsonbekwaam_by: str | None,
    wilsonbekwaam_at: str | None,
    wilsonbekwaam_evidence: str | None,
) -> None:
    """Record a consent your agency obtained and documented."""
    from broker.consent.schemas import ConsentIn

    parsed_givers = []
    for giver in givers:
        bsn, _, capacity = giver.partition(":")
        parsed_givers.append({"bsn": bsn, "capacity": capacity})
    body = parse(
        ConsentIn,
        {
            "id": record_id,
            "subject": subject,
            "givers": parsed_givers,
            "agreement_id": agreement,
            "purpose_id": purpose,
            "elements": list(elements) or None,
            "recipients": list(recipients) or None,
            "given_at": _iso(given_at),
            "valid_until": _iso(valid_until),
            "evidence_ref": evidence_ref,
            "wilsonbekwaam": (
                {
                    "established_by": wilsonbekwaam_by,
                    "established_at": _iso(wilsonbekwaam_at),
                    "evidence_ref": wilsonbekwaam_evidence,
                }
                if (wilsonbekwaam_by, wilsonbekwaam_at, wilsonbekwaam_evidence)
                != (None, None, None)
                else None
            ),
        },
    )

    async def action(ctx: CliContext) -> Any:
        agency = await ctx.agency(oin)
        return await ctx.consents.record(
            body, actor_oin=agency.oin, actor_party=agency.party_type, policy_set=ctx.policy_set
        )

    echo_json(run(action))


@consent_group.command("list")
@click.option("--oin", required=True, help="The recording agency (sees its own records)")
@click.option("--subject", required=True, help="BSN of the data subject")
@click.option("--agreement", default=None)
@click.option("--purpose", default=None)
@click.option("--known", "known", multiple=True, help="BSN of a person to name among the givers")
def consent_list(
    oin: str, subject: str, agreement: str | None, purpose: str | None, known: tuple[str, ...]
) -> None:
    """The records your agency recorded about a subject (newest first)."""
    from broker.consent.schemas import ConsentSearch

    body = parse(
        ConsentSearch,
        {
            "subject": subject,
            "agreement_id": agreement,
            "purpose_id": purpose,
            "known_persons": list(known),
        },
    )

    async def action(ctx: CliContext) -> Any:
        agency = await ctx.agency(oin)
        return await ctx.consents.search(body, actor_oin=agency.oin)

    echo_json(run(action))


@consent_group.command("withdraw")
@click.argument("record_id")
@click.option("--oin", required=True, help="The agency recording the withdrawal")
@click.option("--subject", required=True, help="BSN of the record's data subject")
@click.option("--by", "by", required=True, help="BSN of the person withdrawing")
@click.option("--at", "at", default=None, help="ISO 8601 time with offset; default now")
def consent_withdraw(record_id: str, oin: str, subject: str, by: str, at: str | None) -> None:
    """Record that the data subject or a giver withdrew consent RECORD_ID."""
    from broker.consent.schemas import WithdrawalIn

    body = parse(WithdrawalIn, {"subject": subject, "withdrawn_by": by, "withdrawn_at": _iso(at)})

    async def action(ctx: CliContext) -> Any:
        agency = await ctx.agency(oin)
        return await ctx.consents.withdraw(
            record_id,
            body,
            actor_oin=agency.oin,
            actor_party=agency.party_type,
            policy_set=ctx.policy_set,
        )

    echo_json(run(action))
