"""``broker audit subject``: a subject-access overview (AVG art. 15) from the shell.

The report is audited like one made over the API (channel ``cli``); with
``--oin`` the officer must be listed in BROKER_PRIVACY_OFFICERS. The BSN is
used only to compute the pseudonym and is never stored or logged."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import click

from broker.core.errors import BrokerError
from broker.subject_access.service import SubjectAccessReport


def _iso(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            "an ISO 8601 time with offset, e.g. 2026-06-03T10:00+02:00"
        ) from exc
    if moment.tzinfo is None:
        raise click.BadParameter("give a time with an offset, e.g. 2026-06-03T10:00+02:00")
    return moment


async def _generate(
    bsn: str, oin: str | None, since: datetime | None, until: datetime | None, fmt: str
) -> SubjectAccessReport:
    from adapters.brp.client import BrpRegister
    from audit.log import AuditWriter
    from broker.crypto.keys import Pseudonymizer, load_or_create_pseudonym_key
    from broker.db.session import Database
    from broker.logging import configure_logging
    from broker.policy.loader import load_policy_set
    from broker.settings import Settings
    from broker.subject_access.service import SubjectAccessService

    try:
        settings = Settings()
    except ValueError as exc:
        raise click.ClickException(f"settings: {exc}") from exc
    configure_logging(fmt=settings.log_format, level="WARNING")
    key = (
        settings.pseudonym_key.get_secret_value().encode()
        if settings.pseudonym_key is not None
        else load_or_create_pseudonym_key(settings.keys_dir)
    )
    reference = load_policy_set(settings.policy_dir).reference
    db = Database(settings.async_database_url)
    audit = AuditWriter(db)
    register = BrpRegister(settings.register_url, timeout=settings.register_timeout_seconds)
    try:
        await audit.start()
        service = SubjectAccessService(
            db=db,
            audit=audit,
            pseudonymizer=Pseudonymizer(key),
            register=register,
            reference=lambda: reference,
            privacy_officers=settings.privacy_officer_oins,
        )
        return await service.generate(
            bsn, officer_oin=oin, channel="cli", since=since, until=until, output_format=fmt
        )
    finally:
        await audit.stop()
        await register.aclose()
        await db.dispose()


@click.command("subject")
@click.option("--bsn", required=True, help="BSN of the data subject (never stored or logged)")
@click.option("--since", default=None, help="Entries from this ISO 8601 time")
@click.option("--until", default=None, help="Entries before this ISO 8601 time")
@click.option("--format", "fmt", type=click.Choice(["json", "html"]), default="json")
@click.option(
    "--oin", default=None, help="The requesting privacy officer (BROKER_PRIVACY_OFFICERS)"
)
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None)
def subject_command(
    *,
    bsn: str,
    since: str | None,
    until: str | None,
    fmt: str,
    oin: str | None,
    out_path: Path | None,
) -> None:
    """A subject-access overview (AVG art. 15) of one person, as JSON or HTML."""
    from broker.subject_access.render import render_html

    try:
        report = asyncio.run(_generate(bsn, oin, _iso(since), _iso(until), fmt))
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    text = render_html(report) if fmt == "html" else report.model_dump_json(indent=2) + "\n"
    if out_path is None:
        click.echo(text, nl=False)
    else:
        out_path.write_text(text, encoding="utf-8")
        click.echo(f"{report.entry_count} entries written to {out_path}", err=True)
