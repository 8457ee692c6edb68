"""What the review web page reads: the audit trail of decisions with filters and
paging, denied-request trends, chart series, the log's integrity status, and
exports (CSV, JSON, Logboek Dataverwerkingen).

Every read is scoped to the officer: an officer of agencies X sees the decision
entries of exchanges in which one of X is the requesting or the providing
agency; the broker's own officer sees all. A subject is searched by the keyed
pseudonym of the BSN the officer typed; the BSN itself is never stored, logged
or audited. Trail searches, exports and verification runs are audited with the
officer's account id (and, for a subject search, the pseudonym).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVarTuple, cast

import orjson
import structlog
from sqlalchemy import ColumnElement, Select, String, Table, func, or_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB

from audit.log import AuditRecord, AuditWriter
from audit.models import AuditEntry
from audit.search import (
    DecisionEntry,
    DecisionFilter,
    ExportFormat,
    decision_entry,
    decision_select,
    export_lines,
)
from audit.tree import tree_head
from audit.verify import verify_log
from broker.agencies.models import Agency
from broker.breakglass.schemas import DeclarationOut, ReviewIn
from broker.breakglass.service import BreakGlassService
from broker.core.bsn import is_valid_bsn
from broker.core.clock import Clock, system_clock
from broker.core.errors import AuditChainBroken, ErrorCode, Forbidden, InvalidRequest
from broker.core.types import ReasonCode
from broker.crypto.keys import BrokerKeyring, Pseudonymizer
from broker.db.session import Database
from broker.exchange.models import Exchange
from broker.retention.vault import load_or_create_kek
from broker.review.accounts import AccountService, Officer, load_or_create_session_key
from broker.review.models import VerificationRun
from broker.review.oidc import OidcRelyingParty, oidc_config
from broker.review.sealing import SecretBox, load_kek
from broker.transparency.checkpoint import CheckpointSigner
from broker.transparency.witnesses import witness_rows

if TYPE_CHECKING:
    from broker.settings import Settings

log = structlog.get_logger("review")

PAGE_SIZE = 50
EXPORT_MAX_ROWS = 10_000
TREND_DAYS = 30
_CODE = re.compile(r"[a-z][a-z0-9_.-]{0,127}")
_RUNS = cast(Table, VerificationRun.__table__)
Outcome = Literal["allow", "deny"]
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True, slots=True)
class TrailFilter:
    """The filter of the trail page; ``subject`` is a pseudonym key, never a BSN."""

    subject: str | None = None
    agency: str | None = None
    purpose: str | None = None
    agreement: str | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def described(self) -> dict[str, str | None]:
        """The filter as the audit entry of a search records it."""
        return {
            "subject": self.subject,
            "agency": self.agency,
            "purpose": self.purpose,
            "agreement": self.agreement,
            "outcome": self.outcome,
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


# The trail shows, and the exports write, the decision entries exactly as
# ``broker audit search`` / ``broker audit export`` do (one shape).
TrailEntry = DecisionEntry


@dataclass(frozen=True, slots=True)
class TrailPage:
    entries: list[TrailEntry]
    total: int
    page: int
    pages: int


@dataclass(frozen=True, slots=True)
class DayCount:
    day: str
    key: str
    count: int


@dataclass(frozen=True, slots=True)
class Trends:
    since: datetime
    until: datetime
    denied_per_day: list[DayCount]  # key: "deny"
    denied_by_reason: list[tuple[str, int]]
    exchanges_per_day: list[DayCount]  # key: requesting agency OIN
    outcomes_per_purpose: list[tuple[str, int, int]]  # purpose, allowed, denied


@dataclass(frozen=True, slots=True)
class Witness:
    oin: str
    name: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Integrity:
    size: int
    root_hash: str
    checkpoint: str
    verifier_key: str
    cosigned_size: int | None
    cosigned_root: str | None
    witnesses: list[Witness]
    last_run: VerificationRun | None


@dataclass(frozen=True, slots=True)
class Options:
    """Values offered in the filter's drop-downs (within the officer's scope)."""

    agencies: dict[str, str] = field(default_factory=dict)
    purposes: list[str] = field(default_factory=list)
    agreements: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def _code(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not _CODE.fullmatch(value):
        raise InvalidRequest(f"Not a valid {name}", field=name)
    return value


class ReviewService:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditWriter,
        pseudonymizer: Pseudonymizer,
        accounts: AccountService,
        breakglass: BreakGlassService,
        checkpoints: CheckpointSigner,
        reasons: Sequence[str],
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._audit = audit
        self._pseudo = pseudonymizer
        self.accounts = accounts
        self._breakglass = breakglass
        self._checkpoints = checkpoints
        self._reasons = list(reasons)
        self._clock = clock
        self.oidc: OidcRelyingParty | None = None  # OpenID Connect sign-in, when configured
        self.local_accounts = True  # the password + TOTP sign-in is offered

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    # ------------------------------------------------------------ filter
    def make_filter(
        self,
        *,
        bsn: str | None = None,
        agency: str | None = None,
        purpose: str | None = None,
        agreement: str | None = None,
        outcome: str | None = None,
        reason: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> TrailFilter:
        """Checks the form's values; the BSN becomes its pseudonym here and goes no further."""
        subject = None
        bsn = (bsn or "").strip()
        if bsn:
            if not is_valid_bsn(bsn):
                raise InvalidRequest(
                    "Not a valid BSN (9 digits passing the 11-check)",
                    field="bsn",
                    code=ErrorCode.INVALID_BSN,
                )
            subject = self._pseudo.person(bsn)
        if agency and not re.fullmatch(r"[0-9]{20}", agency):
            raise InvalidRequest("Not a valid OIN", field="agency")
        if outcome not in (None, "", "allow", "deny"):
            raise InvalidRequest("The outcome is allow or deny", field="outcome")
        if since is not None and until is not None and since > until:
            raise InvalidRequest("since is after until", field="since", code=ErrorCode.INVALID_TIME)
        return TrailFilter(
            subject=subject,
            agency=agency or None,
            purpose=_code(purpose, "purpose"),
            agreement=_code(agreement, "agreement"),
            outcome=cast(Outcome, outcome) if outcome else None,
            reason=_code(reason, "reason"),
            since=since,
            until=until,
        )

    # ------------------------------------------------------------ queries
    @staticmethod
    def _scope(officer: Officer) -> ColumnElement[bool] | None:
        if officer.agencies is None:
            return None
        oins = sorted(officer.agencies)
        return or_(Exchange.requester_oin.in_(oins), Exchange.provider_oin.in_(oins))

    async def _audit_read(
        self,
        officer: Officer,
        *,
        action: str,
        flt: TrailFilter,
        count: int,
        request_id: str | None,
        output_format: str | None = None,
    ) -> None:
        await self._audit.append(
            [
                AuditRecord(
                    kind="review_trail_read",
                    body={
                        "request_id": request_id,
                        "account_id": officer.account_id,
                        "action": action,
                        "format": output_format,
                        "filter": flt.described(),
                        "entries": count,
                    },
                    subject_key=flt.subject,
                )
            ]
        )

    def _decisions(self, officer: Officer, flt: TrailFilter) -> Select[*tuple[Any, ...]]:
        """The officer's decision entries matching ``flt``, through the shared audit
        search (exchanges and publication deliveries alike, read by their indexes)."""
        shared = DecisionFilter(
            subject=flt.subject,
            agency=flt.agency,
            purpose=flt.purpose,
            agreement=flt.agreement,
            outcome=flt.outcome,
            reason=flt.reason,
            since=flt.since,
            until=flt.until,
            scope=officer.agencies,
        )
        return decision_select(shared, sqlite=self._db.is_sqlite)

    @staticmethod
    def _trail(row: Any) -> TrailEntry:
        return decision_entry(row)

    async def search(
        self, officer: Officer, flt: TrailFilter, *, page: int = 1, request_id: str | None = None
    ) -> TrailPage:
        page = max(1, page)
        stmt = self._decisions(officer, flt)
        async with self._db.session() as session:
            total = int(
                await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            )
            rows = (
                await session.execute(
                    stmt.order_by(AuditEntry.seq.desc())
                    .limit(PAGE_SIZE)
                    .offset((page - 1) * PAGE_SIZE)
                )
            ).all()
        entries = [self._trail(r) for r in rows]
        await self._audit_read(
            officer, action="search", flt=flt, count=len(entries), request_id=request_id
        )
        return TrailPage(entries, total, page, max(1, -(-total // PAGE_SIZE)))

    async def export_rows(
        self, officer: Officer, flt: TrailFilter, *, output_format: str, request_id: str | None
    ) -> list[TrailEntry]:
        async with self._db.session() as session:
            rows = (
                await session.execute(
                    self._decisions(officer, flt).order_by(AuditEntry.seq).limit(EXPORT_MAX_ROWS)
                )
            ).all()
        entries = [self._trail(r) for r in rows]
        await self._audit_read(
            officer,
            action="export",
            flt=flt,
            count=len(entries),
            request_id=request_id,
            output_format=output_format,
        )
        return entries

    async def options(self, officer: Officer) -> Options:
        scope = self._scope(officer)
        async with self._db.session() as session:
            names = {
                str(o): str(n)
                for o, n in (await session.execute(select(Agency.oin, Agency.name))).all()
            }
            stmt = select(Exchange.purpose_id, Exchange.agreement_id).distinct()
            if scope is not None:
                stmt = stmt.where(scope)
            pairs = (await session.execute(stmt.limit(1000))).all()
        # Every registered agency: an officer filters on the other side of its exchanges
        # too; the scope is applied to every query regardless.
        return Options(
            agencies=dict(sorted(names.items(), key=lambda kv: kv[1])),
            purposes=sorted({str(p) for p, _ in pairs}),
            agreements=sorted({str(a) for _, a in pairs}),
            reasons=self._reasons,
        )

    async def agency_names(self) -> dict[str, str]:
        async with self._db.session() as session:
            return {
                str(o): str(n)
                for o, n in (await session.execute(select(Agency.oin, Agency.name))).all()
            }

    # ------------------------------------------------------------ trends and charts
    def _day(self, column: Any) -> ColumnElement[str]:
        if self._db.is_sqlite:
            # SQLite stores the UTC time as text 'YYYY-MM-DD HH:MM:SS...'.
            return func.substr(sql_cast(column, String), 1, 10)
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")

    def _reason(self) -> ColumnElement[str]:
        if self._db.is_sqlite:
            return func.json_extract(AuditEntry.entry, "$.reason")
        return sql_cast(AuditEntry.entry, JSONB).op("->>")("reason")

    async def trends(self, officer: Officer, *, days: int = TREND_DAYS) -> Trends:
        now = self._clock().astimezone(UTC)
        since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        scope = self._scope(officer)

        def decisions(stmt: Select[*Ts]) -> Select[*Ts]:
            # Decisions count on their exchange's day (indexed; the time the request was decided).
            stmt = (
                stmt.select_from(AuditEntry)
                .join(Exchange, Exchange.id == AuditEntry.exchange_id)
                .where(AuditEntry.kind == "decision", Exchange.created_at >= since)
            )
            return stmt.where(scope) if scope is not None else stmt

        day = self._day(Exchange.created_at).label("day")
        reason = self._reason().label("reason")
        ex_day = self._day(Exchange.created_at).label("day")
        async with self._db.session() as session:
            denied = (
                await session.execute(
                    decisions(select(day, func.count()))
                    .where(AuditEntry.outcome == "deny")
                    .group_by(day)
                    .order_by(day)
                )
            ).all()
            by_reason = (
                await session.execute(
                    decisions(select(reason, func.count()))
                    .where(AuditEntry.outcome == "deny")
                    .group_by(reason)
                    .order_by(func.count().desc())
                )
            ).all()
            per_purpose = (
                await session.execute(
                    decisions(select(Exchange.purpose_id, AuditEntry.outcome, func.count()))
                    .group_by(Exchange.purpose_id, AuditEntry.outcome)
                    .order_by(Exchange.purpose_id)
                )
            ).all()
            ex_stmt = (
                select(ex_day, Exchange.requester_oin, func.count())
                .where(Exchange.created_at >= since)
                .group_by(ex_day, Exchange.requester_oin)
                .order_by(ex_day)
            )
            if scope is not None:
                ex_stmt = ex_stmt.where(scope)
            exchanges = (await session.execute(ex_stmt)).all()
        purposes: dict[str, list[int]] = {}
        for purpose, outcome, count in per_purpose:
            slot = purposes.setdefault(str(purpose), [0, 0])
            slot[0 if outcome == "allow" else 1] += int(count)
        return Trends(
            since=since,
            until=now,
            denied_per_day=[DayCount(str(d), "deny", int(c)) for d, c in denied],
            denied_by_reason=[(str(r), int(c)) for r, c in by_reason],
            exchanges_per_day=[DayCount(str(d), str(o), int(c)) for d, o, c in exchanges],
            outcomes_per_purpose=[(p, a, d) for p, (a, d) in sorted(purposes.items())],
        )

    # ------------------------------------------------------------ break-glass
    @staticmethod
    def _declared_by(officer: Officer) -> frozenset[str] | None:
        return officer.agencies

    async def declarations(
        self, officer: Officer, status: Literal["pending", "approved", "questioned", "all"]
    ) -> list[DeclarationOut]:
        return await self._breakglass.queue_for(
            status=status, declared_by=self._declared_by(officer)
        )

    async def review(
        self,
        officer: Officer,
        declaration_id: str,
        *,
        decision: str,
        comment: str | None,
        request_id: str | None,
    ) -> DeclarationOut:
        if decision not in ("approve", "question"):
            raise InvalidRequest("The decision is approve or question", field="decision")
        body = ReviewIn(decision=cast(Literal["approve", "question"], decision), comment=comment)
        return await self._breakglass.record_review(
            declaration_id,
            body,
            reviewer=officer.reviewer,
            declared_by=self._declared_by(officer),
            request_id=request_id,
        )

    # ------------------------------------------------------------ integrity
    async def integrity(self) -> Integrity:
        head = await tree_head(self._db)
        checkpoint = await self._checkpoints.latest()
        rows = await witness_rows(self._db)
        names = await self.agency_names()
        cosigned_size = max((r.tree_size for r in rows), default=None)
        newest = [r for r in rows if r.tree_size == cosigned_size]
        async with self._db.session() as session:
            last_run = await session.scalar(
                select(VerificationRun).order_by(VerificationRun.id.desc()).limit(1)
            )
        return Integrity(
            size=head.size,
            root_hash=head.root_hash.hex(),
            checkpoint=checkpoint,
            verifier_key=self._checkpoints.verifier_key,
            cosigned_size=cosigned_size,
            cosigned_root=newest[0].root_hash if newest else None,
            witnesses=[
                Witness(r.agency_oin, names.get(r.agency_oin), r.received_at) for r in newest
            ],
            last_run=last_run,
        )

    async def verify(self, officer: Officer, *, request_id: str | None) -> VerificationRun:
        """Recomputes the hash chain and the Merkle tree; records and audits the run."""
        if officer.agencies is not None:
            raise Forbidden(
                "Only the broker's own privacy officer starts a verification run",
                code=ErrorCode.NOT_A_PRIVACY_OFFICER,
            )
        started = self._clock()
        ok, size, root, message = True, 0, None, None
        try:
            chain, tree = await verify_log(self._db)  # one read of the log for both
            size, root = chain.size, tree.root_hash.hex()
        except AuditChainBroken as exc:
            ok, size, message = False, exc.index, exc.message[:500]
        row = {
            "started_at": started,
            "finished_at": self._clock(),
            "ok": ok,
            "size": size,
            "root_hash": root,
            "message": message,
            "account_id": officer.account_id,
        }
        await self._audit.append(
            [
                AuditRecord(
                    kind="audit_verification_run",
                    body={
                        "request_id": request_id,
                        "account_id": officer.account_id,
                        "ok": ok,
                        "size": size,
                        "root": root,
                    },
                )
            ],
            rows=[(_RUNS, row)],
        )
        log.info("review.verified", ok=ok, size=size)
        return VerificationRun(**row)


# ------------------------------------------------------------ export formats
def export_text(entries: list[TrailEntry], fmt: ExportFormat, *, log_origin: str) -> str:
    """CSV (with its header), JSON lines or LDV JSON lines: the bytes ``broker
    audit export --format csv|jsonl|ldv`` writes for the same entries."""
    return "".join(export_lines(entries, fmt, log_origin=log_origin))


def to_json(entries: list[TrailEntry], flt: TrailFilter, generated_at: datetime) -> bytes:
    """One JSON document: the filter, the count and the entries (each as a line
    of ``broker audit export --format jsonl`` holds it)."""
    return orjson.dumps(
        {
            "generated_at": generated_at.astimezone(UTC).isoformat(),
            "filter": flt.described(),
            "count": len(entries),
            "truncated": len(entries) >= EXPORT_MAX_ROWS,
            "entries": [e.as_json() for e in entries],
        }
    )


def build_review(
    *,
    db: Database,
    audit: AuditWriter,
    pseudonymizer: Pseudonymizer,
    breakglass: BreakGlassService,
    keyring: BrokerKeyring,
    log_origin: str,
    keys_dir: Path,
    clock: Clock = system_clock,
    settings: Settings | None = None,
) -> ReviewService:
    """The review web page's services: local accounts (password + TOTP, the TOTP
    secrets sealed under the broker's KEK) and, when ``settings`` name an
    issuer, the OpenID Connect relying party."""
    kek = load_kek(settings) if settings is not None else load_or_create_kek(keys_dir)
    session_key = load_or_create_session_key(keys_dir)
    accounts = AccountService(
        db=db, audit=audit, session_key=session_key, box=SecretBox(db, kek), clock=clock
    )
    config = oidc_config(settings) if settings is not None else None
    review = ReviewService(
        db=db,
        audit=audit,
        pseudonymizer=pseudonymizer,
        accounts=accounts,
        breakglass=breakglass,
        checkpoints=CheckpointSigner(db, keyring, log_origin),
        reasons=[code.value for code in ReasonCode],
        clock=clock,
    )
    if config is not None:
        review.oidc = OidcRelyingParty(config, accounts, session_key=session_key, clock=clock)
    review.local_accounts = settings.review_local_accounts if settings is not None else True
    return review
