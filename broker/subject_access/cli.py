"""``broker audit subject``: a subject-access overview (AVG art. 15) from the shell;
``broker audit search`` and ``broker audit export``: the decision entries of the
audit log for privacy officers, filtered (audit.search), as a table or as CSV,
JSON lines or Logboek Dataverwerkingen records.

Reports, searches and exports are audited like those made over the API (channel
``cli``; searches and exports as kind ``audit_search`` with the filter, the
officer, the format and the number of entries); with ``--oin`` the officer must
be listed in BROKER_PRIVACY_OFFICERS. A BSN is used only to compute the
pseudonym before anything is queried, and is never stored, printed or logged."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import click

from broker.cli_support import audited_database, load_settings, pseudonymizer, run_sync
from broker.core.bsn import is_valid_bsn
from broker.core.clock import DUTCH
from broker.core.errors import BrokerError

if TYPE_CHECKING:
    from audit.search import DecisionEntry, DecisionFilter, ExportFormat, Outcome
    from broker.subject_access.service import SubjectAccessReport

T = TypeVar("T")


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
    from broker.policy.loader import load_policy_set
    from broker.subject_access.service import SubjectAccessService

    settings = load_settings()
    pseudonyms = pseudonymizer(settings)
    reference = load_policy_set(settings.policy_dir).reference
    register = BrpRegister(settings.register_url, timeout=settings.register_timeout_seconds)
    try:
        async with audited_database(settings) as (db, audit):
            service = SubjectAccessService(
                db=db,
                audit=audit,
                pseudonymizer=pseudonyms,
                register=register,
                reference=lambda: reference,
                privacy_officers=settings.privacy_officer_oins,
                log_origin=settings.log_origin,
            )
            return await service.generate(
                bsn, officer_oin=oin, channel="cli", since=since, until=until, output_format=fmt
            )
    finally:
        await register.aclose()


@click.command("subject")
@click.option("--bsn", required=True, help="BSN of the data subject (never stored or logged)")
@click.option("--since", default=None, help="Entries from this ISO 8601 time")
@click.option("--until", default=None, help="Entries before this ISO 8601 time")
@click.option("--format", "fmt", type=click.Choice(["json", "html", "pdf"]), default="json")
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
    """A subject-access overview (AVG art. 15) of one person, as JSON, HTML or PDF."""
    from broker.subject_access.pdf import render_pdf
    from broker.subject_access.render import render_html

    report = run_sync(_generate(bsn, oin, _iso(since), _iso(until), fmt))
    if fmt == "pdf":
        data = render_pdf(report)
    elif fmt == "html":
        data = render_html(report).encode("utf-8")
    else:
        data = (report.model_dump_json(indent=2) + "\n").encode("utf-8")
    if out_path is None:
        if fmt == "pdf" and sys.stdout.isatty():
            raise click.ClickException("a PDF is not written to a terminal: give --out FILE")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        out_path.write_bytes(data)
        click.echo(f"{report.entry_count} entries written to {out_path}", err=True)
    if report.withheld_entries:
        # For the officer (stderr), never in the report the person receives.
        until = report.withheld_until.isoformat() if report.withheld_until else "?"
        click.echo(
            f"{report.withheld_entries} entries withheld: informing the person about their "
            f"exchange is postponed while a safety investigation runs (at most until {until}); "
            "produce the report again once the postponement ends",
            err=True,
        )


SEARCH_KIND = "audit_search"


def _filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--subject-bsn", default=None, help="BSN of a data subject (pseudonymised at once)"
        ),
        click.option("--agency", default=None, help="OIN of the requesting or providing agency"),
        click.option("--purpose", default=None, help="Purpose id"),
        click.option("--agreement", default=None, help="Agreement id"),
        click.option("--outcome", type=click.Choice(["allow", "deny"]), default=None),
        click.option("--reason", default=None, help="Reason code, e.g. deny_consent_missing"),
        click.option("--since", default=None, help="Entries from this ISO 8601 time"),
        click.option("--until", default=None, help="Entries before this ISO 8601 time"),
        click.option(
            "--oin", default=None, help="The requesting privacy officer (BROKER_PRIVACY_OFFICERS)"
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class _Context:
    """Settings, database and audit writer of one command run."""

    def __init__(self) -> None:
        from audit.log import AuditWriter
        from broker.db.session import Database

        self.settings = load_settings()
        self.pseudonymizer = pseudonymizer(self.settings)
        self.db = Database(self.settings.async_database_url)
        self.audit = AuditWriter(self.db)


def _make_filter(ctx: _Context, values: dict[str, Any]) -> DecisionFilter:
    from audit.search import DecisionFilter

    subject = None
    bsn = values.get("subject_bsn")
    if bsn is not None:
        if not is_valid_bsn(bsn):
            raise click.BadParameter(
                "not a valid BSN (9 digits passing the 11-check)", param_hint="--subject-bsn"
            )
        subject = ctx.pseudonymizer.person(bsn)
    try:
        return DecisionFilter(
            subject=subject,
            agency=values.get("agency"),
            purpose=values.get("purpose"),
            agreement=values.get("agreement"),
            outcome=cast("Outcome | None", values.get("outcome")),
            reason=values.get("reason"),
            since=_iso(values.get("since")),
            until=_iso(values.get("until")),
        )
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc


def _check_officer(ctx: _Context, oin: str | None) -> None:
    if oin is not None and oin not in ctx.settings.privacy_officer_oins:
        raise click.ClickException(
            "not_a_privacy_officer: only privacy officers (BROKER_PRIVACY_OFFICERS) search the log"
        )


async def _audited(
    ctx: _Context,
    flt: DecisionFilter,
    *,
    action: str,
    oin: str | None,
    fmt: str,
    work: Callable[[], Awaitable[T]],
    count: Callable[[T], int],
) -> T:
    from audit.log import AuditRecord

    await ctx.audit.start()
    try:
        result = await work()
        await ctx.audit.append(
            [
                AuditRecord(
                    kind=SEARCH_KIND,
                    body={
                        "requested_by": oin,
                        "channel": "cli",
                        "action": action,
                        "format": fmt,
                        "filter": flt.described(),
                        "entries": count(result),
                    },
                    subject_key=flt.subject,
                )
            ]
        )
        return result
    finally:
        await ctx.audit.stop()
        await ctx.db.dispose()


def _run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return run_sync(factory())


_TABLE = (
    ("seq", 8),
    ("time", 19),
    ("requester", 20),
    ("provider", 20),
    ("agreement", 24),
    ("purpose", 28),
    ("subject", 16),
    ("element", 28),
    ("outcome", 7),
    ("reason", 28),
)


def _cells(e: DecisionEntry) -> list[str]:
    version = f" v{e.agreement_version}" if e.agreement_version else ""
    subject = e.subject or ""
    return [
        str(e.seq),
        e.time.astimezone(DUTCH).strftime("%Y-%m-%d %H:%M:%S"),
        e.requester or "",
        e.provider or "",
        f"{e.agreement or ''}{version}",
        e.purpose or "",
        subject[:15] + "\u2026" if len(subject) > 16 else subject,
        e.element or "",
        e.outcome or "",
        e.reason or "",
    ]


def format_table(entries: list[DecisionEntry]) -> str:
    rows = [[name for name, _ in _TABLE], *(_cells(e) for e in entries)]
    widths = [
        max(min(width, max(len(r[i]) for r in rows)), len(_TABLE[i][0]))
        for i, (_, width) in enumerate(_TABLE)
    ]

    def line(row: list[str]) -> str:
        return "  ".join(
            (c if len(c) <= w else c[: w - 1] + "\u2026").ljust(w)
            for c, w in zip(row, widths, strict=True)
        ).rstrip()

    out = [line(rows[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in rows[1:])
    return "\n".join(out) + "\n"


@click.command("search")
@_filter_options
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def search_command(*, limit: int, oin: str | None, **values: Any) -> None:
    """Decision entries matching the filters, newest first, as a table."""
    from audit.search import search_decisions

    ctx = _Context()
    _check_officer(ctx, oin)
    flt = _make_filter(ctx, values)
    entries = _run(
        lambda: _audited(
            ctx,
            flt,
            action="search",
            oin=oin,
            fmt="table",
            work=lambda: search_decisions(ctx.db, flt, limit=limit),
            count=len,
        )
    )
    click.echo(format_table(entries), nl=False)
    more = " (more match: raise --limit or narrow the filter)" if len(entries) == limit else ""
    click.echo(f"{len(entries)} entries{more}", err=True)


@click.command("export")
@_filter_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "ldv"]),
    default="csv",
    show_default=True,
    help="CSV, JSON lines, or Logboek Dataverwerkingen records (JSON lines)",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N entries")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None)
def export_command(
    *, fmt: ExportFormat, limit: int | None, out_path: Path | None, oin: str | None, **values: Any
) -> None:
    """Decision entries matching the filters, oldest first, to a file or stdout."""
    from audit.search import csv_header, export_lines, iter_decisions

    ctx = _Context()
    _check_officer(ctx, oin)
    flt = _make_filter(ctx, values)
    origin = ctx.settings.log_origin

    async def write() -> int:
        count = 0
        target: IO[str] = (
            out_path.open("w", encoding="utf-8", newline="") if out_path else sys.stdout
        )
        try:
            if fmt == "csv":
                target.write(csv_header())
            batch: list[DecisionEntry] = []
            async for entry in iter_decisions(ctx.db, flt, limit=limit):
                batch.append(entry)
                count += 1
                if len(batch) >= 1000:
                    target.writelines(export_lines(batch, fmt, log_origin=origin, header=False))
                    batch = []
            target.writelines(export_lines(batch, fmt, log_origin=origin, header=False))
        finally:
            if out_path:
                target.close()
            else:
                target.flush()
        return count

    count = _run(
        lambda: _audited(ctx, flt, action="export", oin=oin, fmt=fmt, work=write, count=lambda n: n)
    )
    where = f" to {out_path}" if out_path else ""
    click.echo(f"{count} entries written{where}", err=True)
