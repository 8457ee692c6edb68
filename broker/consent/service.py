"""The consent registry: record, find and withdraw consent, and hand the
exchange the records a request relies on as policy facts.

Rules (docs/consent-and-break-glass.md):

* Consent can be recorded only for a purpose whose consent mode is ``required``
  or ``required_unless_acute_danger``; statutory purposes refuse it.
* Persons are stored as pseudonym keys, never as BSNs; answers name them by the
  BSNs the caller sent.
* Reading is limited to the recording agency. Withdrawal, which must be as easy
  as giving consent (AVG 7(3)), is open to the recording agency and to any
  agency of a party to the agreement (which knows the record's id from an
  exchange answer), by the data subject or one of the givers.
* A record past ``valid_until`` counts as withdrawn at ``valid_until``, so the
  procedure answers ``deny_consent_withdrawn`` (or ``missing``) as for a
  withdrawal.
* Every recording and withdrawal is audited in the same durable commit as the
  row: nothing is stored half-way.
* A record may state that the minor subject is wilsonbekwaam (who established
  it, when, and a reference to the assessment); the holders of authority are
  then the givers and the subject is not. Stored in the record's
  ``wilsonbekwaam`` column, apart from the givers.

The registry also hands the exchange another broker-derived fact: the boolean
answers the broker itself released earlier (``prior_answers``), read from its
own exchange and decision records, for follow-up purposes such as the
kindcheck contact route. Those answers are sealed under the retention key of
their decision's period; an answer whose key is destroyed is no answer, so the
follow-up fails closed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import structlog
from sqlalchemy import Table, select

from audit.log import AuditRecord, AuditWriter, RowUpdate
from broker.consent.models import ConsentRecord
from broker.consent.schemas import (
    Capacity,
    ConsentIn,
    ConsentOut,
    ConsentSearch,
    GiverOut,
    WilsonbekwaamOut,
    WithdrawalIn,
)
from broker.core.clock import Clock, system_clock, to_ns
from broker.core.errors import Conflict, ErrorCode, InvalidRequest, NotFound, RecordShredded
from broker.core.types import ConsentFact, PriorAnswerFact
from broker.crypto.keys import Pseudonymizer
from broker.db.session import Database
from broker.exchange.models import DecisionRecord, Exchange
from broker.policy.loader import PolicySet
from broker.retention.vault import RetentionReader, RetentionVault

log = structlog.get_logger("consent")

CONSENT_MODES = frozenset({"required", "required_unless_acute_danger"})
# How far a given or withdrawal time may lie ahead of the broker's clock.
CLOCK_SKEW = timedelta(minutes=5)
_TABLE = cast(Table, ConsentRecord.__table__)
# At most this many earlier exchanges are read for a prior answer.
PRIOR_ANSWER_SCAN = 500


def wilsonbekwaam_of(record: ConsentRecord) -> dict[str, Any] | None:
    """The wilsonbekwaam statement of a record (None: not stated)."""
    statement = record.wilsonbekwaam
    return statement if isinstance(statement, dict) and statement else None


def purpose_of(policy_set: PolicySet, agreement_id: str, purpose_id: str) -> dict[str, Any]:
    """The purpose in the current policy set; raises InvalidRequest naming the field."""
    versions = policy_set.versions.get(agreement_id)
    if not versions:
        raise InvalidRequest(
            "Unknown agreement", field="agreement_id", code=ErrorCode.UNKNOWN_AGREEMENT
        )
    # The purpose as the latest version that has it states it.
    purpose = next(
        (a.purposes[purpose_id] for a in reversed(versions) if purpose_id in a.purposes), None
    )
    if purpose is None:
        raise InvalidRequest(
            "Unknown purpose in this agreement", field="purpose_id", code=ErrorCode.UNKNOWN_PURPOSE
        )
    return purpose


def effective_end(record: ConsentRecord) -> datetime | None:
    """When the record stops counting: withdrawal or expiry, whichever is first."""
    ends = [t for t in (record.withdrawn_at, record.valid_until) if t is not None]
    return min(ends) if ends else None


def consent_fact(record: ConsentRecord) -> ConsentFact:
    """A stored record as the policy sees it; expiry counts as withdrawal."""
    end = effective_end(record)
    return ConsentFact(
        id=record.id,
        subject=record.subject_key,
        given_by=tuple(str(g["key"]) for g in record.givers),
        agreement=record.agreement_id,
        purpose=record.purpose_id,
        given_at_ns=to_ns(record.given_at),
        withdrawn_at_ns=to_ns(end) if end is not None else None,
        elements=tuple(record.elements) if record.elements is not None else None,
        recipients=tuple(record.recipients) if record.recipients is not None else None,
        wilsonbekwaam=wilsonbekwaam_of(record) is not None,
    )


def _status(record: ConsentRecord, now: datetime) -> Literal["active", "withdrawn", "expired"]:
    if record.withdrawn_at is not None and record.withdrawn_at <= now:
        return "withdrawn"
    if record.valid_until is not None and record.valid_until <= now:
        return "expired"
    return "active"


class ConsentService:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditWriter,
        pseudonymizer: Pseudonymizer,
        retention: RetentionVault | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._audit = audit
        self._pseudo = pseudonymizer
        # Opens the sealed answers of earlier decisions; without it (the CLI) no
        # sealed answer is read, so no follow-up precondition can hold.
        self._retention = retention
        self._clock = clock

    # ------------------------------------------------------------ the exchange
    async def facts_for(
        self, subject_keys: Iterable[str], agreement_id: str, purpose_id: str, at: datetime
    ) -> tuple[ConsentFact, ...]:
        """The records of these subjects for this agreement and purpose given at
        or before ``at`` (withdrawn ones included: the procedure needs them), in
        one indexed query."""
        keys = sorted(set(subject_keys))
        if not keys:
            return ()
        stmt = (
            select(ConsentRecord)
            .where(
                ConsentRecord.subject_key.in_(keys),
                ConsentRecord.agreement_id == agreement_id,
                ConsentRecord.purpose_id == purpose_id,
                ConsentRecord.given_at <= at,
            )
            .order_by(ConsentRecord.given_at, ConsentRecord.id)
        )
        async with self._db.session() as session:
            rows = (await session.scalars(stmt)).all()
        return tuple(consent_fact(r) for r in rows)

    async def prior_answers(
        self,
        *,
        requester_oin: str,
        subject_keys: Iterable[str],
        agreement_id: str,
        purpose_id: str,
        element: str,
        since: datetime,
        until: datetime,
    ) -> tuple[PriorAnswerFact, ...]:
        """Per subject, the latest boolean answer for ``element`` that the broker
        released to ``requester_oin`` under this agreement and purpose between
        ``since`` and ``until``, from its own exchange and decision records
        (``decisions.result["answers"]``, written with the release and sealed
        under its retention key; one query on ``ix_exchanges_requester_scope``).

        Fails closed: once an exchange newer than every answer found so far does
        not open (its retention key is destroyed, or no vault is at hand), the
        subjects not answered yet get no fact, since that exchange may hold a
        later ``false`` about them."""
        keys = set(subject_keys)
        if not keys:
            return ()
        stmt = (
            select(Exchange.id, Exchange.created_at, DecisionRecord.id, DecisionRecord.result)
            .join(DecisionRecord, DecisionRecord.id == Exchange.decision_id)
            .where(
                Exchange.requester_oin == requester_oin,
                Exchange.agreement_id == agreement_id,
                Exchange.purpose_id == purpose_id,
                Exchange.released_count > 0,
                Exchange.created_at >= since,
                Exchange.created_at <= until,
            )
            .order_by(Exchange.created_at.desc(), Exchange.id.desc())
            .limit(PRIOR_ANSWER_SCAN)
        )
        async with self._db.session() as session:
            rows = (await session.execute(stmt)).all()
        reader = self._retention.reader() if self._retention is not None else None
        latest: dict[str, PriorAnswerFact] = {}
        for exchange_id, created_at, decision_id, stored in rows:
            if len(latest) == len(keys):
                break
            if not isinstance(stored, dict):
                continue
            result = await _opened_result(reader, decision_id, stored)
            if result is None:
                log.info("consent.prior_answers_unreadable", exchange_id=exchange_id)
                break
            answers = result.get("answers")
            for answer in answers if isinstance(answers, list) else ():
                key = answer.get("subject") if isinstance(answer, dict) else None
                if (
                    key in keys
                    and key not in latest
                    and answer.get("element") == element
                    and isinstance(answer.get("answer"), bool)
                ):
                    latest[key] = PriorAnswerFact(
                        subject=key,
                        agreement=agreement_id,
                        purpose=purpose_id,
                        element=element,
                        answer=answer["answer"],
                        answered_at_ns=to_ns(created_at),
                        exchange_id=exchange_id,
                    )
        return tuple(latest[k] for k in sorted(latest))

    # ------------------------------------------------------------ the registry
    async def record(
        self,
        body: ConsentIn,
        *,
        actor_oin: str,
        actor_party: str,
        policy_set: PolicySet,
        request_id: str | None = None,
    ) -> ConsentOut:
        purpose = purpose_of(policy_set, body.agreement_id, body.purpose_id)
        if purpose.get("consent") not in CONSENT_MODES:
            raise InvalidRequest(
                "This purpose rests on a statutory basis; consent cannot be recorded for it",
                field="purpose_id",
                code=ErrorCode.CONSENT_NOT_APPLICABLE,
            )
        reference = policy_set.reference
        for i, element in enumerate(body.elements or ()):
            if element not in reference.elements:
                raise InvalidRequest(
                    "Unknown data element", field=f"elements[{i}]", code=ErrorCode.UNKNOWN_ELEMENT
                )
        for i, party in enumerate(body.recipients or ()):
            if party not in reference.parties:
                raise InvalidRequest(
                    "Unknown party", field=f"recipients[{i}]", code=ErrorCode.UNKNOWN_PARTY
                )
        self._check_givers(body)
        now = self._clock()
        if body.wilsonbekwaam is not None and body.wilsonbekwaam.established_at > now + CLOCK_SKEW:
            raise InvalidRequest(
                "established_at lies in the future",
                field="wilsonbekwaam.established_at",
                code=ErrorCode.INVALID_TIME,
            )
        if body.given_at > now + CLOCK_SKEW:
            raise InvalidRequest(
                "given_at lies in the future", field="given_at", code=ErrorCode.INVALID_TIME
            )
        if body.valid_until is not None and body.valid_until <= body.given_at:
            raise InvalidRequest(
                "valid_until must be after given_at",
                field="valid_until",
                code=ErrorCode.INVALID_TIME,
            )

        record_id = body.id or f"CNS-{uuid.uuid4().hex[:12].upper()}"
        async with self._db.session() as session:
            if await session.get(ConsentRecord, record_id) is not None:
                raise Conflict("A consent record with this id exists", field="id")
        subject_key = self._pseudo.person(body.subject)
        givers: list[dict[str, Any]] = [
            {"key": self._pseudo.person(g.bsn), "capacity": g.capacity.value} for g in body.givers
        ]
        statement = body.wilsonbekwaam
        row: dict[str, Any] = {
            "id": record_id,
            "subject_key": subject_key,
            "givers": givers,
            "wilsonbekwaam": (
                {
                    "established_by": statement.established_by,
                    "established_at": statement.established_at.isoformat(),
                    "evidence_ref": statement.evidence_ref,
                }
                if statement is not None
                else None
            ),
            "agreement_id": body.agreement_id,
            "purpose_id": body.purpose_id,
            "elements": list(body.elements) if body.elements is not None else None,
            "recipients": list(body.recipients) if body.recipients is not None else None,
            "given_at": body.given_at,
            "valid_until": body.valid_until,
            "withdrawn_at": None,
            "withdrawn_by_key": None,
            "evidence_ref": body.evidence_ref,
            "recorded_by_oin": actor_oin,
            "recorded_at": now,
        }
        entry = AuditRecord(
            kind="consent_recorded",
            body={
                "request_id": request_id,
                "consent_id": record_id,
                "subject": subject_key,
                "agreement": body.agreement_id,
                "purpose": body.purpose_id,
                "givers": givers,
                # Who established it and when; the evidence reference is not audited.
                "wilsonbekwaam": (
                    {
                        "established_by": statement.established_by,
                        "established_at": statement.established_at.isoformat(),
                    }
                    if statement is not None
                    else None
                ),
                "elements": row["elements"],
                "recipients": row["recipients"],
                "given_at": body.given_at.isoformat(),
                "valid_until": body.valid_until.isoformat() if body.valid_until else None,
                "recorded_by": actor_oin,
                "recorded_by_party": actor_party,
            },
            subject_key=subject_key,
        )
        indices = await self._audit.append([entry], rows=[(_TABLE, row)])
        log.info(
            "consent.recorded",
            consent_id=record_id,
            agreement=body.agreement_id,
            purpose=body.purpose_id,
        )
        known = {g.bsn for g in body.givers} | {body.subject}
        return self._out(ConsentRecord(**row), body.subject, known, now, indices[0])

    async def search(self, body: ConsentSearch, *, actor_oin: str) -> list[ConsentOut]:
        """The caller's own records about this subject (newest first)."""
        subject_key = self._pseudo.person(body.subject)
        stmt = select(ConsentRecord).where(
            ConsentRecord.subject_key == subject_key,
            ConsentRecord.recorded_by_oin == actor_oin,
        )
        if body.agreement_id is not None:
            stmt = stmt.where(ConsentRecord.agreement_id == body.agreement_id)
        if body.purpose_id is not None:
            stmt = stmt.where(ConsentRecord.purpose_id == body.purpose_id)
        stmt = stmt.order_by(ConsentRecord.given_at.desc(), ConsentRecord.id).limit(500)
        async with self._db.session() as session:
            rows = (await session.scalars(stmt)).all()
        now = self._clock()
        known = {body.subject, *body.known_persons}
        return [self._out(r, body.subject, known, now) for r in rows]

    async def withdraw(
        self,
        record_id: str,
        body: WithdrawalIn,
        *,
        actor_oin: str,
        actor_party: str,
        policy_set: PolicySet,
        request_id: str | None = None,
    ) -> ConsentOut:
        async with self._db.session() as session:
            record = await session.get(ConsentRecord, record_id)
        subject_key = self._pseudo.person(body.subject)
        if (
            record is None
            or record.subject_key != subject_key
            or not self._may_withdraw(record, actor_oin, actor_party, policy_set)
        ):
            raise NotFound("No such consent record")
        by_key = self._pseudo.person(body.withdrawn_by)
        capacities = {str(g["key"]): str(g["capacity"]) for g in record.givers}
        if by_key != record.subject_key and by_key not in capacities:
            raise InvalidRequest(
                "Only the data subject or one of the givers can withdraw this consent",
                field="withdrawn_by",
                code=ErrorCode.INVALID_GIVER,
            )
        if record.withdrawn_at is not None:
            raise Conflict("This consent is withdrawn already", code=ErrorCode.ALREADY_WITHDRAWN)
        now = self._clock()
        at = body.withdrawn_at or now
        if at > now + CLOCK_SKEW or at < record.given_at:
            raise InvalidRequest(
                "withdrawn_at must lie between given_at and now",
                field="withdrawn_at",
                code=ErrorCode.INVALID_TIME,
            )
        entry = AuditRecord(
            kind="consent_withdrawn",
            body={
                "request_id": request_id,
                "consent_id": record.id,
                "subject": record.subject_key,
                "agreement": record.agreement_id,
                "purpose": record.purpose_id,
                "withdrawn_at": at.isoformat(),
                "withdrawn_by": by_key,
                "withdrawn_by_capacity": capacities.get(by_key, Capacity.SUBJECT.value),
                "recorded_by": actor_oin,
                "recorded_by_party": actor_party,
            },
            subject_key=record.subject_key,
        )
        change = RowUpdate(
            _TABLE,
            where={"id": record.id, "withdrawn_at": None},
            values={"withdrawn_at": at, "withdrawn_by_key": by_key},
        )
        indices = await self._audit.append([entry], updates=[change])
        log.info(
            "consent.withdrawn",
            consent_id=record.id,
            agreement=record.agreement_id,
            purpose=record.purpose_id,
        )
        record.withdrawn_at = at
        record.withdrawn_by_key = by_key
        known = {body.subject, body.withdrawn_by}
        return self._out(record, body.subject, known, now, indices[0])

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _check_givers(body: ConsentIn) -> None:
        seen: set[str] = set()
        for i, giver in enumerate(body.givers):
            if giver.bsn in seen:
                raise InvalidRequest(
                    "A person is listed twice",
                    field=f"givers[{i}].bsn",
                    code=ErrorCode.INVALID_GIVER,
                )
            seen.add(giver.bsn)
            is_subject = giver.bsn == body.subject
            if is_subject and body.wilsonbekwaam is not None:
                raise InvalidRequest(
                    "A subject stated to be wilsonbekwaam is represented by the holders "
                    "of authority and is not a giver",
                    field=f"givers[{i}].capacity",
                    code=ErrorCode.INVALID_GIVER,
                )
            if (giver.capacity is Capacity.AUTHORITY_HOLDER) == is_subject:
                raise InvalidRequest(
                    "child and subject are the data subject; an authority holder is another person",
                    field=f"givers[{i}].capacity",
                    code=ErrorCode.INVALID_GIVER,
                )

    @staticmethod
    def _may_withdraw(
        record: ConsentRecord, actor_oin: str, actor_party: str, policy_set: PolicySet
    ) -> bool:
        if record.recorded_by_oin == actor_oin:
            return True
        agreement = policy_set.agreements.get(record.agreement_id)
        if agreement is None:
            return False
        parties: Sequence[Any] = agreement.source.get("parties") or ()
        return actor_party in parties

    def _out(
        self,
        record: ConsentRecord,
        subject_bsn: str,
        known_bsns: Iterable[str],
        now: datetime,
        audit_index: int | None = None,
    ) -> ConsentOut:
        names = {self._pseudo.person(b): b for b in known_bsns}
        return ConsentOut(
            id=record.id,
            subject=subject_bsn,
            givers=[
                GiverOut(bsn=names.get(str(g["key"])), capacity=Capacity(g["capacity"]))
                for g in record.givers
            ],
            agreement_id=record.agreement_id,
            purpose_id=record.purpose_id,
            elements=record.elements,
            recipients=record.recipients,
            given_at=record.given_at,
            valid_until=record.valid_until,
            withdrawn_at=record.withdrawn_at,
            withdrawn_by=names.get(record.withdrawn_by_key) if record.withdrawn_by_key else None,
            evidence_ref=record.evidence_ref,
            wilsonbekwaam=_statement_out(record),
            recorded_by_oin=record.recorded_by_oin,
            recorded_at=record.recorded_at,
            status=_status(record, now),
            audit_index=audit_index,
        )


async def _opened_result(
    reader: RetentionReader | None, decision_id: str, stored: dict[str, Any]
) -> dict[str, Any] | None:
    """A decision's result with its sealed answers opened; None when they cannot be
    (the retention key is destroyed, or there is no vault to open them with)."""
    if reader is None:
        return None if "sealed" in stored else stored
    try:
        return await reader.decision_result(decision_id, stored)
    except RecordShredded:
        return None


def _statement_out(record: ConsentRecord) -> WilsonbekwaamOut | None:
    statement = wilsonbekwaam_of(record)
    if statement is None:
        return None
    return WilsonbekwaamOut(
        established_by=str(statement["established_by"]),
        established_at=datetime.fromisoformat(str(statement["established_at"])),
        evidence_ref=str(statement["evidence_ref"]),
    )
