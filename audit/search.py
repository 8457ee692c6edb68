"""Searching and exporting the decision entries of the audit log.

One filter (``DecisionFilter``) over the decision entries of exchanges and
publications, used by the privacy officers' ``broker audit search`` and
``broker audit export``. What each filter reads:

* ``subject_key`` (the person's keyed pseudonym, never a BSN), ``created_at``
  and ``seq`` are indexed columns;
* the requesting and providing agency are fields of the canonical entry with
  partial expression indexes over the decision entries (migration
  ``0010_audit_search``); the query spells each field exactly as its index does
  (``entry_field_sql``) and compares ``kind`` with a literal, so SQLite and
  PostgreSQL both use them;
* agreement, purpose, reason and outcome have few distinct values: they are
  checked on the rows the other conditions select (newest first, so a search
  with a limit stops early). Alone, on a large log, they read the decision
  entries from the newest backwards: combine them with a subject, an agency or
  a time window. (Indexes on them halved the append rate on PostgreSQL.)

Exports are CSV, JSON lines and records shaped as the Logboek Dataverwerkingen
(LDV) interface. They hold pseudonyms, element ids, codes and agency OINs only:
what the entries hold, never payloads or BSNs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, Select, literal_column, select, union_all

from audit.models import AuditEntry
from broker.core.errors import ErrorCode, InvalidRequest
from broker.db.session import Database

Outcome = Literal["allow", "deny"]
DECISION_KIND = "decision"
PAGE = 2000
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_OIN = re.compile(r"[0-9]{20}")
_SUBJECT = re.compile(r"(psn|hh):[0-9a-f]{40}")

# Entry fields read by filters: name -> JSON path. The requester and the
# provider have expression indexes.
ENTRY_FIELDS: dict[str, tuple[str, ...]] = {
    "requester": ("requester",),
    "provider": ("provider",),
    "agreement": ("agreement", "id"),
    "purpose": ("purpose",),
    "reason": ("reason",),
}


def entry_field_sql(name: str, *, sqlite: bool) -> str:
    """The SQL of an entry field, exactly as an index on it spells it.

    NULL for an entry that is not JSON: the indexes never make the database
    refuse a stored row (a changed entry must stay for the verifier to find)."""
    path = ENTRY_FIELDS[name]
    if sqlite:
        return f"CASE WHEN json_valid(entry) THEN json_extract(entry, '$.{'.'.join(path)}') END"
    return f"audit_entry_field(entry, '{{{','.join(path)}}}')"


def entry_field(name: str, *, sqlite: bool) -> ColumnElement[Any]:
    return literal_column(entry_field_sql(name, sqlite=sqlite))


# The partial indexes' condition, as a literal (a bound parameter would not
# match it on SQLite).
IS_DECISION: ColumnElement[str] = literal_column(f"'{DECISION_KIND}'")


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    """Which decision entries to read; ``subject`` is a pseudonym, never a BSN.

    ``agency`` matches the requesting or the providing agency; ``scope`` (when
    set) limits everything to entries in which one of those agencies took part."""

    subject: str | None = None
    agency: str | None = None
    purpose: str | None = None
    agreement: str | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    scope: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.subject is not None and not _SUBJECT.fullmatch(self.subject):
            raise InvalidRequest("Not a subject pseudonym", field="subject")
        for oin in (self.agency, *(self.scope or ())):
            if oin is not None and not _OIN.fullmatch(oin):
                raise InvalidRequest("Not a valid OIN (20 digits)", field="agency")
        for name in ("purpose", "agreement", "reason"):
            value = getattr(self, name)
            if value is not None and not _CODE.fullmatch(value):
                raise InvalidRequest(f"Not a valid {name}", field=name)
        if self.outcome not in (None, "allow", "deny"):
            raise InvalidRequest("The outcome is allow or deny", field="outcome")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise InvalidRequest(
                    "Give a time with an offset", field=name, code=ErrorCode.INVALID_TIME
                )
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidRequest("since is after until", field="since", code=ErrorCode.INVALID_TIME)

    def described(self) -> dict[str, Any]:
        """The filter as an audit entry of a search records it (pseudonym only)."""
        return {
            "subject": self.subject,
            "agency": self.agency,
            "purpose": self.purpose,
            "agreement": self.agreement,
            "outcome": self.outcome,
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "scope": sorted(self.scope) if self.scope is not None else None,
        }


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """One decision entry as searches and exports show it."""

    seq: int
    time: datetime
    exchange_id: str | None
    publication_id: str | None
    request_id: str | None
    trace_id: str | None
    subject: str | None
    subject_kind: str | None
    element: str | None
    outcome: str | None
    reason: str | None
    legal_basis: list[str]
    requester: str | None
    provider: str | None
    purpose: str | None
    agreement: str | None
    agreement_version: str | None
    consent_id: str | None
    acute_declaration_id: str | None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["time"] = self.time.astimezone(UTC).isoformat()
        return out


def _either_agency(oins: list[str], *, sqlite: bool) -> ColumnElement[bool]:
    """The requesting or the providing agency is one of ``oins``: a union of two
    index reads (neither database uses two expression indexes for an OR)."""

    def side(name: str) -> Select[*tuple[Any, ...]]:
        return select(AuditEntry.seq).where(
            AuditEntry.kind == IS_DECISION, entry_field(name, sqlite=sqlite).in_(oins)
        )

    return AuditEntry.seq.in_(union_all(side("requester"), side("provider")))


def decision_select(flt: DecisionFilter, *, sqlite: bool) -> Select[*tuple[Any, ...]]:
    """The decision entries matching ``flt`` (no order, no limit)."""

    def field(name: str) -> ColumnElement[Any]:
        return entry_field(name, sqlite=sqlite)

    stmt: Select[*tuple[Any, ...]] = select(
        AuditEntry.seq,
        AuditEntry.created_at,
        AuditEntry.exchange_id,
        AuditEntry.subject_key,
        AuditEntry.element,
        AuditEntry.outcome,
        AuditEntry.entry,
    ).where(AuditEntry.kind == IS_DECISION)
    if flt.subject is not None:
        stmt = stmt.where(AuditEntry.subject_key == flt.subject)
    if flt.agency is not None:
        stmt = stmt.where(_either_agency([flt.agency], sqlite=sqlite))
    if flt.scope is not None:
        stmt = stmt.where(_either_agency(sorted(flt.scope), sqlite=sqlite))
    if flt.agreement is not None:
        stmt = stmt.where(field("agreement") == flt.agreement)
    if flt.purpose is not None:
        stmt = stmt.where(field("purpose") == flt.purpose)
    if flt.reason is not None:
        stmt = stmt.where(field("reason") == flt.reason)
    if flt.outcome is not None:
        stmt = stmt.where(AuditEntry.outcome == flt.outcome)
    if flt.since is not None:
        stmt = stmt.where(AuditEntry.created_at >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(AuditEntry.created_at < flt.until)
    return stmt


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def decision_entry(row: Any) -> DecisionEntry:
    body = orjson.loads(row.entry)
    agreement = body.get("agreement")
    if not isinstance(agreement, dict):
        agreement = {"id": agreement}
    created = row.created_at
    return DecisionEntry(
        seq=int(row.seq),
        time=created if created.tzinfo else created.replace(tzinfo=UTC),
        exchange_id=row.exchange_id,
        publication_id=_str(body.get("publication_id")),
        request_id=_str(body.get("request_id")),
        trace_id=_str(body.get("trace_id")),
        subject=row.subject_key,
        subject_kind=_str(body.get("subject_kind")),
        element=row.element,
        outcome=row.outcome,
        reason=_str(body.get("reason")),
        legal_basis=[str(b) for b in body.get("legal_basis") or ()],
        requester=_str(body.get("requester")),
        provider=_str(body.get("provider")),
        purpose=_str(body.get("purpose")),
        agreement=_str(agreement.get("id")),
        agreement_version=_str(agreement.get("version")),
        consent_id=_str(body.get("consent_id")),
        acute_declaration_id=_str(body.get("acute_declaration_id")),
    )


async def search_decisions(
    db: Database, flt: DecisionFilter, *, limit: int = 100, offset: int = 0
) -> list[DecisionEntry]:
    """The newest ``limit`` matching decision entries (after ``offset``), newest first."""
    stmt = (
        decision_select(flt, sqlite=db.is_sqlite)
        .order_by(AuditEntry.seq.desc())
        .limit(max(0, limit))
        .offset(max(0, offset))
    )
    async with db.session() as session:
        rows = (await session.execute(stmt)).all()
    return [decision_entry(r) for r in rows]


async def iter_decisions(
    db: Database, flt: DecisionFilter, *, limit: int | None = None, page: int = PAGE
) -> AsyncIterator[DecisionEntry]:
    """Every matching decision entry, oldest first, read in pages by ``seq``
    (keyset paging: each page is one indexed range read)."""
    after = -1
    left = limit
    while left is None or left > 0:
        size = page if left is None else min(page, left)
        stmt = (
            decision_select(flt, sqlite=db.is_sqlite)
            .where(AuditEntry.seq > after)
            .order_by(AuditEntry.seq)
            .limit(size)
        )
        async with db.session() as session:
            rows = (await session.execute(stmt)).all()
        for row in rows:
            yield decision_entry(row)
        if len(rows) < size:
            return
        after = int(rows[-1].seq)
        if left is not None:
            left -= len(rows)


# ------------------------------------------------------------ export formats
CSV_COLUMNS = [
    "seq",
    "time",
    "exchange_id",
    "publication_id",
    "request_id",
    "trace_id",
    "subject",
    "subject_kind",
    "element",
    "outcome",
    "reason",
    "legal_basis",
    "requester",
    "provider",
    "purpose",
    "agreement",
    "agreement_version",
    "consent_id",
    "acute_declaration_id",
]


def safe_cell(value: str) -> str:
    """No spreadsheet formulas: a cell never starts with = + - @ (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_header() -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(CSV_COLUMNS)
    return out.getvalue()


def csv_row(entry: DecisionEntry) -> str:
    row = entry.as_json()
    row["legal_basis"] = " ".join(entry.legal_basis)
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(
        ["" if row[c] is None else safe_cell(str(row[c])) for c in CSV_COLUMNS]
    )
    return out.getvalue()


def json_line(entry: DecisionEntry) -> str:
    return orjson.dumps(entry.as_json()).decode("utf-8") + "\n"


def hex_id(seed: str, size: int) -> str:
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[: size * 2]


def ldv_record(entry: DecisionEntry, *, log_origin: str) -> dict[str, Any]:
    """One record shaped as the Logboek Dataverwerkingen interface.

    ``trace_id`` is the exchange's trace id when the entry holds one (W3C trace
    context), ``operation_id`` names the decision (derived from the log origin
    and the entry's position), the processing activity is the agreement's
    purpose, the data subject is the pseudonym, and ``foreign_operation`` links
    to the exchange (or publication message) at the requesting agency."""
    moment = entry.time.astimezone(UTC).isoformat()
    agreement = entry.agreement or "-"
    version = f":v{entry.agreement_version}" if entry.agreement_version else ""
    return {
        "trace_id": entry.trace_id,
        "operation_id": hex_id(f"{log_origin}/{entry.seq}", 8),
        "name": f"decide {entry.element}",
        "start_time": moment,
        "end_time": moment,
        "status_code": "OK",
        "processing_activity_id": (
            f"urn:broker:agreement:{agreement}{version}:purpose:{entry.purpose or '-'}"
        ),
        "data_subject_id": entry.subject,
        "data_subject_id_type": "pseudonym",
        "foreign_operation": {
            "entity": f"urn:oin:{entry.requester}" if entry.requester else None,
            "operation_id": entry.exchange_id,
            "request_id": entry.request_id,
        },
        "attributes": {
            "log.origin": log_origin,
            "audit.seq": entry.seq,
            "element": entry.element,
            "outcome": entry.outcome,
            "reason": entry.reason,
            "legal_basis": entry.legal_basis,
            "provider": f"urn:oin:{entry.provider}" if entry.provider else None,
            "agreement_version": entry.agreement_version,
        },
    }


def ldv_line(entry: DecisionEntry, *, log_origin: str) -> str:
    return orjson.dumps(ldv_record(entry, log_origin=log_origin)).decode("utf-8") + "\n"


ExportFormat = Literal["csv", "jsonl", "ldv"]


def export_lines(
    entries: Iterable[DecisionEntry], fmt: ExportFormat, *, log_origin: str, header: bool = True
) -> Iterable[str]:
    """The export as text lines (CSV with its header, JSON lines, or LDV JSON lines)."""
    if fmt == "csv" and header:
        yield csv_header()
    for entry in entries:
        if fmt == "csv":
            yield csv_row(entry)
        elif fmt == "jsonl":
            yield json_line(entry)
        else:
            yield ldv_line(entry, log_origin=log_origin)
