"""``broker breakglass list|review``: the privacy officer's review of acute-danger
declarations from the shell. ``--oin`` must be listed in BROKER_PRIVACY_OFFICERS,
as for the API."""

from __future__ import annotations

from typing import Any, Literal

import click

from broker.cli_support import echo_json, parse
from broker.consent.cli import CliContext, run


@click.group("breakglass")
def breakglass_group() -> None:
    """Acute-danger (break-the-glass) declarations: the review queue."""


@breakglass_group.command("list")
@click.option("--oin", required=True, help="A privacy officer's agency (BROKER_PRIVACY_OFFICERS)")
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "questioned", "all"]),
    default="pending",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print the declarations as JSON")
def breakglass_list(
    oin: str, status: Literal["pending", "approved", "questioned", "all"], as_json: bool
) -> None:
    """Declarations by review due date; OVERDUE marks a pending review past its due date."""

    async def action(ctx: CliContext) -> Any:
        agency = await ctx.agency(oin)
        return await ctx.breakglass.queue(actor_oin=agency.oin, status=status)

    rows = run(action)
    if as_json:
        echo_json(rows)
        return
    for d in rows:
        flag = "OVERDUE" if d.overdue else ""
        click.echo(
            f"{d.id:<20} {d.agreement_id}/{d.purpose_id} by {d.declared_by_party} "
            f"at {d.declared_at.isoformat(timespec='minutes')} "
            f"until {d.expires_at.isoformat(timespec='minutes')} "
            f"{d.review_status} due {d.review_due_at.isoformat(timespec='minutes')} {flag}".rstrip()
        )


@breakglass_group.command("review")
@click.argument("declaration_id")
@click.option("--oin", required=True, help="A privacy officer's agency (BROKER_PRIVACY_OFFICERS)")
@click.option("--approve", "decision", flag_value="approve", help="The declaration was justified")
@click.option("--question", "decision", flag_value="question", help="It needs follow-up")
@click.option("--comment", default=None, help="Required with --question")
def breakglass_review(
    declaration_id: str, oin: str, decision: str | None, comment: str | None
) -> None:
    """Approve or question declaration DECLARATION_ID."""
    from broker.breakglass.schemas import ReviewIn

    if decision is None:
        raise click.UsageError("give --approve or --question")
    body = parse(ReviewIn, {"decision": decision, "comment": comment})

    async def action(ctx: CliContext) -> Any:
        agency = await ctx.agency(oin)
        return await ctx.breakglass.review(declaration_id, body, actor_oin=agency.oin)

    echo_json(run(action))
