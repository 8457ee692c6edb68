"""Signal and match ("who else is involved").

An agency registers THAT it is involved with a child, or with the child's
household, under an agreement whose ``signals:`` section names its party (see
docs/signals.md); the signal carries no content, only the team's contact route
and an end date. When two agencies are involved with the same child - or with
the same household, where the agreement matches on households - each receives
an inbox message (JWE to its own key) naming the other agency and its contact
route, the agreement and the two signal ids: nothing else, never a BSN.

Rules:

* Children and households are stored as keyed pseudonyms only (the broker's
  ``Pseudonymizer``): the child's BSN and the household id the population
  register gives for it. Matching compares pseudonyms.
* Whether a signal may be registered, and whether two may be matched, is a
  decision (a frozen ``SignalDecision`` with an id, a reason code, the
  agreement version and the legal bases) taken on the agreement version in
  force today; every match decision, allowing or refusing, is audited.
* Every registration, match, withdrawal and removal is audited in the same
  durable commit as its rows. A match's notices are stored once per pair (the
  match id is derived from the two signal ids), whichever registration finds
  the other first.
* A signal ends at its end date (default and maximum: the agreement's
  ``max_duration``, at most two years); then ``expire`` removes it (``broker
  signals expire`` and, periodically, inside the app). Removal clears the keys
  in the audited commit and then deletes the row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, delete, or_, select
from sqlalchemy.exc import SQLAlchemyError

from audit.log import AuditRecord, AuditWriter, RowUpdate
from broker.agencies.service import AgencyDirectory, AgencyView
from broker.core.clock import DUTCH, Clock, age_on, dutch_date, system_clock
from broker.core.errors import (
    BrokerError,
    Conflict,
    ErrorCode,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from broker.core.periodic import Periodic
from broker.core.protocols import SubjectRegister
from broker.core.types import SubjectKind as PolicySubjectKind
from broker.crypto.jose import Sealer
from broker.crypto.keys import Pseudonymizer
from broker.db.session import Database
from broker.exchange.subjects import subject_key as subject_key_of
from broker.policy.loader import Agreement, PolicySet, add_calendar_duration
from broker.publications.service import Notice, notice_rows
from broker.security.tokens import Principal
from broker.signals.models import Signal
from broker.signals.schemas import (
    ContactRoute,
    SignalIn,
    SignalOut,
    SignalPage,
    SubjectKind,
    WithdrawalOut,
)

log = structlog.get_logger("signals")

MATCH_EVENT = "signal.match"
MATCH_PURPOSE = "signal_match"  # the inbox's purpose column for match notices
DEFAULT_DURATION = "P2Y"
ADULT_AGE = 18
_TABLE = cast(Table, Signal.__table__)
_MATCH_NAMESPACE = uuid.UUID("5b0f3a52-6c1e-4c57-9d0e-2f4f4e3b8a11")


@dataclass(frozen=True, slots=True)
class SignalDecision:
    """Whether a signal may be registered (``allow_signal``) or two signals matched
    (``allow_match``), on which agreement version and legal bases, and why not."""

    decision_id: str
    reason: str
    agreement_id: str
    agreement_version: str | None
    agreement_hash: str | None
    legal_basis_ids: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return self.reason.startswith("allow_")

    def audit_body(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "reason": self.reason,
            "agreement": {
                "id": self.agreement_id,
                "version": self.agreement_version,
                "hash": self.agreement_hash,
            },
            "legal_basis": list(self.legal_basis_ids),
        }


def _in_force(policy_set: PolicySet, agreement: Agreement, day: date) -> bool:
    return (
        agreement.source.get("status") == "active"
        and policy_set.is_enforced(agreement)
        and agreement.covers(day)
    )


def decide(
    policy_set: PolicySet,
    agreement_id: str,
    parties: Sequence[str],
    kind: str,
    day: date,
    *,
    allow: str,
) -> SignalDecision:
    """The decision for ``parties`` on ``kind`` (child | household) under the
    agreement version in force on ``day``; ``allow`` is the reason when allowed."""
    agreement = policy_set.current(agreement_id, day)
    section = agreement.signals if agreement is not None else None

    def result(reason: str) -> SignalDecision:
        return SignalDecision(
            decision_id=str(uuid.uuid4()),
            reason=reason,
            agreement_id=agreement_id,
            agreement_version=agreement.version if agreement else None,
            agreement_hash=agreement.content_hash if agreement else None,
            legal_basis_ids=tuple(str(b) for b in (section or {}).get("legal_basis_ids") or ()),
        )

    if agreement is None or not _in_force(policy_set, agreement, day):
        return result("deny_agreement_not_in_force")
    if section is None:
        return result("deny_signals_not_offered")
    allowed_parties = {str(p) for p in section.get("parties") or ()}
    if any(p not in allowed_parties for p in parties):
        return result("deny_party_not_in_signals")
    if kind not in {str(k) for k in section.get("subject_kinds") or ()}:
        return result("deny_subject_kind_not_allowed")
    return result(allow)


_REFUSALS: dict[str, tuple[type[BrokerError], ErrorCode, str, str | None]] = {
    "deny_agreement_not_in_force": (
        InvalidRequest,
        ErrorCode.AGREEMENT_NOT_IN_FORCE,
        "The agreement is not in force today",
        "agreement_id",
    ),
    "deny_signals_not_offered": (
        InvalidRequest,
        ErrorCode.SIGNALS_NOT_OFFERED,
        "The agreement offers no signal and match",
        "agreement_id",
    ),
    "deny_party_not_in_signals": (
        Forbidden,
        ErrorCode.NOT_A_SIGNAL_PARTY,
        "Your party may not register signals under this agreement",
        None,
    ),
    "deny_subject_kind_not_allowed": (
        InvalidRequest,
        ErrorCode.SUBJECT_KIND_NOT_ALLOWED,
        "The agreement does not match on this kind of subject",
        "subject_kind",
    ),
}


def _record(
    kind: str,
    body: dict[str, Any],
    *,
    unit: str,
    subject: str | None,
    outcome: str | None = None,
) -> AuditRecord:
    """An audit entry whose indexed columns repeat what its body says (the chain
    verifier checks they agree): ``exchange_id`` the signal or match id, ``subject``
    the pseudonym, ``outcome`` for match decisions."""
    full = {**body, "exchange_id": unit, "subject": subject}
    if outcome is not None:
        full["outcome"] = outcome
    return AuditRecord(kind=kind, body=full, exchange_id=unit, subject_key=subject, outcome=outcome)


def expiry_of(end_date: date) -> datetime:
    """The start of the day after ``end_date`` in the Netherlands, in UTC."""
    return datetime.combine(end_date + timedelta(days=1), time(0), tzinfo=DUTCH).astimezone(UTC)


def match_id(one: str, other: str) -> str:
    """The same id whichever of the two signals finds the other."""
    return str(uuid.uuid5(_MATCH_NAMESPACE, "|".join(sorted((one, other)))))


def _out(row: Signal, *, matches: int = 0, audit_index: int | None = None) -> SignalOut:
    return SignalOut(
        id=row.id,
        agreement_id=row.agreement_id,
        subject_kind=SubjectKind(row.subject_kind),
        contact=ContactRoute.model_validate(row.contact),
        created_at=row.created_at,
        end_date=row.end_date,
        expires_at=row.expires_at,
        matches=matches,
        audit_index=audit_index,
    )


class SignalService:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditWriter,
        pseudonymizer: Pseudonymizer,
        register: SubjectRegister,
        directory: AgencyDirectory,
        policy_set: Callable[[], PolicySet],
        sealer: Sealer,
        clock: Clock = system_clock,
        interval: float = 0.0,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._pseudo = pseudonymizer
        self._register = register
        self._directory = directory
        self._policy_set = policy_set
        self._sealer = sealer
        self._clock = clock
        self._periodic = Periodic("signal-expiry", self.expire, interval)
        self.on_stored = on_stored  # wakes the webhook worker

    # ------------------------------------------------------------ register
    async def register(
        self, principal: Principal, body: SignalIn, request_id: str | None = None
    ) -> SignalOut:
        agency = await self._directory.get(principal.oin)
        if agency is None or not agency.active:
            raise Forbidden("The registering agency is not active")
        policy_set = self._policy_set()
        if body.agreement_id not in policy_set.versions:
            raise InvalidRequest(
                "Unknown agreement", field="agreement_id", code=ErrorCode.UNKNOWN_AGREEMENT
            )
        now = self._clock()
        today = dutch_date(now)
        decision = decide(
            policy_set,
            body.agreement_id,
            [agency.party_type],
            body.subject_kind.value,
            today,
            allow="allow_signal",
        )
        if not decision.allowed:
            error, code, message, field = _REFUSALS[decision.reason]
            log.info("signal.refused", agreement=body.agreement_id, reason=decision.reason)
            raise error(message, field=field, code=code)
        agreement = policy_set.current(body.agreement_id, today)
        section = agreement.signals if agreement is not None else None
        assert section is not None  # allowed above
        end_date = self._end_date(body.end_date, today, str(section.get("max_duration") or ""))

        records = await self._register.lookup([body.subject])  # RegisterUnavailable: 503
        record = records.get(body.subject)
        if (
            body.subject_kind is SubjectKind.CHILD
            and record is not None
            and record.birth_date is not None
            and age_on(record.birth_date, today) >= ADULT_AGE
        ):
            raise InvalidRequest(
                "The register gives this person an age of 18 or over",
                field="subject",
                code=ErrorCode.NOT_A_CHILD,
            )
        subject_key = self._pseudo.person(body.subject)
        household_key = None
        if SubjectKind.HOUSEHOLD.value in (section.get("subject_kinds") or ()):
            # The household's pseudonym exactly as an exchange derives it (a person the
            # register does not place in a household forms one of their own).
            household_key = subject_key_of(
                self._pseudo,
                body.subject,
                PolicySubjectKind.HOUSEHOLD,
                record=record,
                today=today,
                subjects={},
            )

        signal_id = str(uuid.uuid4())
        row: dict[str, Any] = {
            "id": signal_id,
            "agreement_id": body.agreement_id,
            "agency_oin": agency.oin,
            "agency_party": agency.party_type,
            "subject_kind": body.subject_kind.value,
            "subject_key": subject_key,
            "household_key": household_key,
            "contact": body.contact.model_dump(mode="json"),
            "created_at": now,
            "end_date": end_date,
            "expires_at": expiry_of(end_date),
            "removed_at": None,
            "removed_reason": None,
        }
        entry = _record(
            "signal_registered",
            {
                "request_id": request_id,
                "signal_id": signal_id,
                **decision.audit_body(),
                "agency": agency.oin,
                "agency_party": agency.party_type,
                "subject_kind": body.subject_kind.value,
                "household": household_key,
                "end_date": end_date.isoformat(),
            },
            unit=signal_id,
            subject=subject_key,
        )
        try:
            [index] = await self._audit.append([entry], rows=[(_TABLE, row)])
        except Conflict as exc:
            raise Conflict(
                "Your agency has a signal for this subject under this agreement already",
                code=ErrorCode.SIGNAL_EXISTS,
            ) from exc
        log.info("signal.registered", signal_id=signal_id, agreement=body.agreement_id)
        stored = Signal(**row)
        matches = await self._match(stored, request_id)
        return _out(stored, matches=matches, audit_index=index)

    @staticmethod
    def _end_date(requested: date | None, today: date, max_duration: str) -> date:
        latest = add_calendar_duration(today, max_duration or DEFAULT_DURATION)
        latest = min(latest, add_calendar_duration(today, DEFAULT_DURATION))
        if requested is None:
            return latest
        if requested < today:
            raise InvalidRequest(
                "end_date lies in the past", field="end_date", code=ErrorCode.INVALID_TIME
            )
        if requested > latest:
            raise InvalidRequest(
                f"end_date lies beyond the agreement's maximum ({latest.isoformat()})",
                field="end_date",
                code=ErrorCode.INVALID_TIME,
            )
        return requested

    # ------------------------------------------------------------ match
    async def _match(self, new: Signal, request_id: str | None) -> int:
        """Matches ``new`` (committed) with the live signals of other agencies under
        its agreement; returns the number of matches this call stored."""
        now = self._clock()
        same: list[Any] = []
        if new.subject_kind == SubjectKind.CHILD.value:
            same.append(
                (Signal.subject_kind == SubjectKind.CHILD.value)
                & (Signal.subject_key == new.subject_key)
            )
        if new.household_key is not None:
            same.append(Signal.household_key == new.household_key)
        if not same:
            return 0
        stmt = (
            select(Signal)
            .where(
                Signal.agreement_id == new.agreement_id,
                Signal.agency_oin != new.agency_oin,
                Signal.removed_at.is_(None),
                Signal.expires_at > now,
                or_(*same),
            )
            .order_by(Signal.created_at, Signal.id)
        )
        async with self._db.session() as session:
            others = (await session.scalars(stmt)).all()
        stored = 0
        for other in others:
            child = (
                new.subject_kind == other.subject_kind == SubjectKind.CHILD.value
                and new.subject_key == other.subject_key
            )
            basis = SubjectKind.CHILD if child else SubjectKind.HOUSEHOLD
            if await self._pair(new, other, basis, now, request_id):
                stored += 1
        if stored and self.on_stored is not None:
            self.on_stored()
        return stored

    async def _pair(
        self, new: Signal, other: Signal, basis: SubjectKind, now: datetime, request_id: str | None
    ) -> bool:
        policy_set = self._policy_set()
        decision = decide(
            policy_set,
            new.agreement_id,
            [new.agency_party, other.agency_party],
            basis.value,
            dutch_date(now),
            allow="allow_match",
        )
        mid = match_id(new.id, other.id)
        shared_key = new.subject_key if basis is SubjectKind.CHILD else new.household_key
        common = {
            "request_id": request_id,
            "match_id": mid,
            **decision.audit_body(),
            "basis": basis.value,
            "signals": [other.id, new.id],
            "agencies": [other.agency_oin, new.agency_oin],
            "parties": [other.agency_party, new.agency_party],
        }
        if not decision.allowed:
            await self._audit.append(
                [
                    _record(
                        "signal_match_refused", common, unit=mid, subject=shared_key, outcome="deny"
                    )
                ]
            )
            log.info("signal.match_refused", match_id=mid, reason=decision.reason)
            return False
        agencies = {s.agency_oin: await self._directory.get(s.agency_oin) for s in (new, other)}
        notices = [
            n
            for n in (
                self._notice(
                    mid=mid,
                    decision=decision,
                    basis=basis,
                    to=to,
                    about=about,
                    agencies=agencies,
                    now=now,
                )
                for to, about in ((new, other), (other, new))
            )
            if n is not None
        ]
        record = _record(
            "signal_match",
            {**common, "messages": [n.message_id for n in notices]},
            unit=mid,
            subject=shared_key,
            outcome="allow",
        )
        rows = notice_rows(
            notice_id=mid,
            event_type=MATCH_EVENT,
            origin_oin=new.agency_oin,
            agreement=(decision.agreement_id, decision.agreement_version, decision.agreement_hash),
            purpose_id=MATCH_PURPOSE,
            notices=notices,
            now=now,
        )
        try:
            await self._audit.append([record], rows=rows)
        except Conflict:
            return False  # the other registration stored this match first
        log.info("signal.matched", match_id=mid, messages=len(notices))
        return True

    def _notice(
        self,
        *,
        mid: str,
        decision: SignalDecision,
        basis: SubjectKind,
        to: Signal,
        about: Signal,
        agencies: dict[str, AgencyView | None],
        now: datetime,
    ) -> Notice | None:
        """The message for ``to``'s agency naming ``about``'s agency and contact route."""
        recipient, sender = agencies.get(to.agency_oin), agencies.get(about.agency_oin)
        key = recipient.encryption_key() if recipient is not None and recipient.active else None
        if recipient is None or key is None:
            return None
        message_id = str(uuid.uuid5(uuid.UUID(mid), recipient.oin))
        payload = self._sealer.seal(
            recipient.oin,
            key,
            {
                "message_id": message_id,
                "event_type": MATCH_EVENT,
                "match_id": mid,
                "matched_at": now.isoformat(),
                "agreement": {"id": decision.agreement_id, "version": decision.agreement_version},
                "basis": basis.value,
                "your_signal_id": to.id,
                "other_signal_id": about.id,
                "other_agency": {
                    "oin": about.agency_oin,
                    "name": sender.name if sender is not None else None,
                    "party": about.agency_party,
                },
                "contact": about.contact,
                "other_end_date": about.end_date.isoformat(),
            },
        )
        return Notice(
            message_id=message_id,
            recipient_oin=recipient.oin,
            recipient_party=recipient.party_type,
            sender_oin=about.agency_oin,
            sender_party=about.agency_party,
            decision_id=decision.decision_id,
            payload=payload,
        )

    # ------------------------------------------------------------ own signals
    async def own(self, principal: Principal) -> SignalPage:
        """The agency's live signals, oldest first."""
        return await self.list_for(principal.oin)

    async def list_for(self, oin: str) -> SignalPage:
        """The live signals of the agency ``oin``, oldest first."""
        now = self._clock()
        async with self._db.session() as session:
            rows = (
                await session.scalars(
                    select(Signal)
                    .where(
                        Signal.agency_oin == oin,
                        Signal.removed_at.is_(None),
                        Signal.expires_at > now,
                    )
                    .order_by(Signal.created_at, Signal.id)
                    .limit(1000)
                )
            ).all()
        return SignalPage(signals=[_out(r) for r in rows])

    async def withdraw(
        self, principal: Principal, signal_id: str, request_id: str | None = None
    ) -> WithdrawalOut:
        async with self._db.session() as session:
            row = await session.get(Signal, signal_id)
        if row is None or row.agency_oin != principal.oin or row.removed_at is not None:
            raise NotFound("No such signal of your agency")
        now = self._clock()
        index = await self._remove(row, "withdrawn", now, request_id)
        if index is None:
            raise NotFound("No such signal of your agency")  # removed meanwhile
        await self._purge()
        return WithdrawalOut(id=row.id, removed_at=now, audit_index=index)

    # ------------------------------------------------------------ expiry
    async def expire(self) -> list[str]:
        """Removes every signal past its end date (each removal audited); returns
        the ids this call removed (one removed meanwhile elsewhere is skipped)."""
        now = self._clock()
        async with self._db.session() as session:
            due = (
                await session.scalars(
                    select(Signal)
                    .where(Signal.removed_at.is_(None), Signal.expires_at <= now)
                    .order_by(Signal.expires_at, Signal.id)
                )
            ).all()
        removed = [r.id for r in due if await self._remove(r, "expired", now, None) is not None]
        await self._purge()
        if removed:
            log.info("signals.expired", count=len(removed))
        return removed

    async def _remove(
        self, row: Signal, reason: str, now: datetime, request_id: str | None
    ) -> int | None:
        """Audits the removal and clears the row's keys in one commit; None when
        it was removed already."""
        entry = _record(
            f"signal_{reason}",
            {
                "request_id": request_id,
                "signal_id": row.id,
                "agreement": {"id": row.agreement_id},
                "agency": row.agency_oin,
                "agency_party": row.agency_party,
                "subject_kind": row.subject_kind,
                "household": row.household_key,
                "end_date": row.end_date.isoformat(),
                "removed_at": now.isoformat(),
                "reason": reason,
            },
            unit=row.id,
            subject=row.subject_key,
        )
        change = RowUpdate(
            _TABLE,
            where={"id": row.id, "removed_at": None},
            values={
                "removed_at": now,
                "removed_reason": reason,
                "subject_key": None,
                "household_key": None,
                "contact": {},
            },
        )
        try:
            [index] = await self._audit.append([entry], updates=[change])
        except Conflict:
            return None
        log.info("signal.removed", signal_id=row.id, reason=reason)
        return index

    async def _purge(self) -> None:
        """Deletes the rows whose removal is audited (their keys are cleared already)."""
        try:
            async with self._db.write_sessions() as session:
                await session.execute(delete(Signal).where(Signal.removed_at.is_not(None)))
                await session.commit()
        except SQLAlchemyError as exc:  # the removal stands; the next run deletes the row
            log.warning("signals.purge_failed", error=type(exc).__name__)

    # ------------------------------------------------------------ periodic
    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
