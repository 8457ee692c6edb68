"""AVG art. 14 information duties: recorded with each release, postponed by an
embargo while a safety investigation runs, fulfilled by the agency that informs,
listed for the privacy officer when overdue.

* **Recording** with the release, in the exchange's own commit (``recording``).
* **Embargo.** A professional of the recipient or the provider sets one only with
  a reason and the case reference of a running safety investigation by a party
  the agreement lists (``embargo.investigated_by``). The period that was left
  when the embargo began runs again when it is lifted: when the investigating
  agency ends the investigation, or at the agreement's ``lapses_after``.
* **Lifting** is automatic: at once on ending, and by ``run`` (a periodic task in
  the app, ``broker duties run``) for lapsed embargoes. Every change is audited.

The embargo reason and case reference never go to the audit log or the logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, or_, select

from audit.log import AuditRecord, AuditWriter, RowUpdate
from broker.core.clock import Clock, system_clock
from broker.core.errors import (
    Conflict,
    ErrorCode,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from broker.core.periodic import Periodic
from broker.db.session import Database
from broker.information_duties.models import DutyEmbargo, InformationDuty, SafetyInvestigation
from broker.information_duties.recording import DutyRecorder, Rows, new_id
from broker.information_duties.rules import DutyRule, RuleInvalid, add_period, duty_rule
from broker.information_duties.schemas import (
    DutyOut,
    EmbargoIn,
    EmbargoOut,
    ExchangeEmbargoIn,
    FulfilIn,
    InvestigationIn,
    InvestigationOut,
    StatusFilter,
)
from broker.policy.loader import PolicySet

log = structlog.get_logger("information_duties")

_DUTIES = cast(Table, InformationDuty.__table__)
_EMBARGOES = cast(Table, DutyEmbargo.__table__)
_INVESTIGATIONS = cast(Table, SafetyInvestigation.__table__)
LIST_LIMIT = 500


class InformationDutyService(DutyRecorder):
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditWriter,
        privacy_officers: frozenset[str],
        interval: float = 0.0,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._audit = audit
        self._privacy_officers = privacy_officers
        self._clock = clock
        self._periodic = Periodic("information-duties", self.run, interval)

    # ------------------------------------------------------------ reading
    def _is_officer(self, actor_oin: str) -> bool:
        return actor_oin in self._privacy_officers

    async def list_duties(
        self,
        *,
        actor_oin: str,
        status: StatusFilter = "all",
        exchange_id: str | None = None,
        scope: frozenset[str] | None = None,
    ) -> list[DutyOut]:
        """A privacy officer sees every duty; another agency the duties it holds,
        received or provided. ``scope`` (the review page) limits it to duties held
        by those agencies."""
        now = self._clock()
        stmt = select(InformationDuty)
        if not self._is_officer(actor_oin):
            stmt = stmt.where(
                or_(
                    InformationDuty.holder_oin == actor_oin,
                    InformationDuty.recipient_oin == actor_oin,
                    InformationDuty.provider_oin == actor_oin,
                )
            )
        return await self._list(stmt, status=status, exchange_id=exchange_id, scope=scope, now=now)

    async def list_for(
        self, *, status: StatusFilter = "all", scope: frozenset[str] | None = None
    ) -> list[DutyOut]:
        """For a caller whose authority is checked already (the review web page)."""
        stmt = select(InformationDuty)
        return await self._list(
            stmt, status=status, exchange_id=None, scope=scope, now=self._clock()
        )

    async def _list(
        self,
        stmt: Any,
        *,
        status: StatusFilter,
        exchange_id: str | None,
        scope: frozenset[str] | None,
        now: datetime,
    ) -> list[DutyOut]:
        if scope is not None:
            stmt = stmt.where(InformationDuty.holder_oin.in_(sorted(scope)))
        if exchange_id is not None:
            stmt = stmt.where(InformationDuty.exchange_id == exchange_id)
        if status == "overdue":
            stmt = stmt.where(InformationDuty.status == "open", InformationDuty.due_at < now)
        elif status != "all":
            stmt = stmt.where(InformationDuty.status == status)
        stmt = stmt.order_by(InformationDuty.due_at, InformationDuty.id).limit(LIST_LIMIT)
        async with self._db.session() as session:
            rows = list((await session.scalars(stmt)).all())
            embargoes = await self._embargoes(session, [r.embargo_id for r in rows if r.embargo_id])
        return [self._out(r, embargoes.get(r.embargo_id or ""), now) for r in rows]

    async def _embargoes(
        self, session: Any, ids: Sequence[str]
    ) -> dict[str, tuple[DutyEmbargo, SafetyInvestigation]]:
        if not ids:
            return {}
        stmt = (
            select(DutyEmbargo, SafetyInvestigation)
            .join(SafetyInvestigation, SafetyInvestigation.id == DutyEmbargo.investigation_id)
            .where(DutyEmbargo.id.in_(sorted(set(ids))))
        )
        return {e.id: (e, i) for e, i in (await session.execute(stmt)).all()}

    async def get(self, duty_id: str, *, actor_oin: str) -> DutyOut:
        duty = await self._involved(duty_id, actor_oin, officers=True)
        async with self._db.session() as session:
            embargoes = await self._embargoes(session, [duty.embargo_id] if duty.embargo_id else [])
        return self._out(duty, embargoes.get(duty.embargo_id or ""), self._clock())

    async def _involved(self, duty_id: str, actor_oin: str, *, officers: bool) -> InformationDuty:
        async with self._db.session() as session:
            duty = await session.get(InformationDuty, duty_id)
        if duty is None or not (
            actor_oin in (duty.recipient_oin, duty.provider_oin, duty.holder_oin)
            or (officers and self._is_officer(actor_oin))
        ):
            raise NotFound("No such information duty")
        return duty

    # ------------------------------------------------------------ embargo
    @staticmethod
    def _rule(policy_set: PolicySet, duty: InformationDuty) -> DutyRule | None:
        agreement = policy_set.version(duty.agreement_id, duty.agreement_version)
        purpose = agreement.purposes.get(duty.purpose_id) if agreement else None
        try:
            return duty_rule(purpose) if purpose is not None else None
        except RuleInvalid:
            return None

    async def embargo(
        self,
        duty_id: str,
        body: EmbargoIn,
        *,
        actor_oin: str,
        actor_party: str,
        policy_set: PolicySet,
        request_id: str | None = None,
    ) -> DutyOut:
        if not body.reason.strip():
            raise InvalidRequest("A reason is required", field="reason")
        duty = await self._involved(duty_id, actor_oin, officers=False)
        if duty.status == "fulfilled":
            raise Conflict("The duty is fulfilled already", code=ErrorCode.ALREADY_FULFILLED)
        if duty.status == "embargoed":
            raise Conflict("The duty is under an embargo already", code=ErrorCode.DUTY_EMBARGOED)
        (out,) = await self._embargo(
            [duty],
            body,
            actor_oin=actor_oin,
            actor_party=actor_party,
            policy_set=policy_set,
            request_id=request_id,
        )
        return out

    async def embargo_exchange(
        self,
        body: ExchangeEmbargoIn,
        *,
        actor_oin: str,
        actor_party: str,
        policy_set: PolicySet,
        request_id: str | None = None,
    ) -> list[DutyOut]:
        """Postpones every open duty of one exchange (each subject's) at once, in
        one commit: informing one family member while another's duty waits would
        tell what the postponement keeps back."""
        if not body.reason.strip():
            raise InvalidRequest("A reason is required", field="reason")
        async with self._db.session() as session:
            found = (
                await session.scalars(
                    select(InformationDuty)
                    .where(InformationDuty.exchange_id == body.exchange_id)
                    .order_by(InformationDuty.subject_key, InformationDuty.id)
                )
            ).all()
        duties = [d for d in found if actor_oin in (d.recipient_oin, d.provider_oin, d.holder_oin)]
        if not duties:
            raise NotFound("No information duties of that exchange", field="exchange_id")
        waiting = [d for d in duties if d.status == "open"]
        if not waiting:
            raise Conflict(
                "Every duty of the exchange is fulfilled or under an embargo already",
                code=ErrorCode.DUTY_EMBARGOED,
            )
        return await self._embargo(
            waiting,
            body,
            actor_oin=actor_oin,
            actor_party=actor_party,
            policy_set=policy_set,
            request_id=request_id,
        )

    async def _embargo(
        self,
        duties: Sequence[InformationDuty],
        body: EmbargoIn,
        *,
        actor_oin: str,
        actor_party: str,
        policy_set: PolicySet,
        request_id: str | None,
    ) -> list[DutyOut]:
        """Embargoes open ``duties`` for one investigation, in one commit."""
        rules = [self._rule(policy_set, duty) for duty in duties]
        embargo_rules = [r.embargo for r in rules if r is not None and r.embargo is not None]
        if len(embargo_rules) != len(duties):
            raise InvalidRequest(
                "The agreement allows no embargo on this duty",
                code=ErrorCode.EMBARGO_NOT_APPLICABLE,
            )
        agency_oin = body.investigation_agency_oin or actor_oin
        now = self._clock()
        records: list[AuditRecord] = []
        rows: Rows = []
        async with self._db.session() as session:
            investigation = await session.scalar(
                select(SafetyInvestigation).where(
                    SafetyInvestigation.agency_oin == agency_oin,
                    SafetyInvestigation.reference == body.investigation_reference,
                )
            )
        if investigation is None:
            if agency_oin != actor_oin:
                raise InvalidRequest(
                    "No such investigation of that agency",
                    field="investigation_reference",
                    code=ErrorCode.UNKNOWN_INVESTIGATION,
                )
            investigation, opened = self._open_row(
                actor_oin, actor_party, body.investigation_reference, now
            )
            rows.append((_INVESTIGATIONS, opened))
            records.append(self._opened_record(investigation, request_id))
        if investigation.ended_at is not None:
            raise InvalidRequest(
                "The investigation has ended",
                field="investigation_reference",
                code=ErrorCode.INVESTIGATION_ENDED,
            )
        if any(investigation.agency_party not in r.investigated_by for r in embargo_rules):
            raise InvalidRequest(
                "The agreement allows no embargo for an investigation of this party",
                field="investigation_agency_oin" if body.investigation_agency_oin else None,
                code=ErrorCode.EMBARGO_NOT_APPLICABLE,
            )
        first = len(records)
        embargoes: list[dict[str, Any]] = []
        updates: list[RowUpdate] = []
        for duty, rule in zip(duties, embargo_rules, strict=True):
            embargo: dict[str, Any] = {
                "id": new_id("EMB"),
                "duty_id": duty.id,
                "investigation_id": investigation.id,
                "reason": body.reason,
                "set_by_oin": actor_oin,
                "set_by_party": actor_party,
                "set_at": now,
                "lapses_at": add_period(now, rule.lapses_after),
                "remaining_seconds": max(0, int((duty.due_at - now).total_seconds())),
                "lifted_at": None,
                "lift_cause": None,
            }
            embargoes.append(embargo)
            rows.append((_EMBARGOES, embargo))
            records.append(
                AuditRecord(
                    kind="information_duty_embargoed",
                    body={
                        "request_id": request_id,
                        "information_duty_id": duty.id,
                        "embargo_id": embargo["id"],
                        "investigation_id": investigation.id,
                        "investigation_party": investigation.agency_party,
                        "exchange": duty.exchange_id,
                        "subject": duty.subject_key,
                        "set_by": actor_oin,
                        "set_at": now.isoformat(),
                        "lapses_at": embargo["lapses_at"].isoformat(),
                        "legal_basis": list(rule.legal_basis_ids),
                    },
                    subject_key=duty.subject_key,
                )
            )
            updates.append(
                RowUpdate(
                    _DUTIES,
                    where={"id": duty.id, "status": "open"},
                    values={"status": "embargoed", "embargo_id": embargo["id"]},
                )
            )
        indices = await self._audit.append(records, rows=rows, updates=updates)
        outs: list[DutyOut] = []
        for k, (duty, embargo) in enumerate(zip(duties, embargoes, strict=True)):
            log.info("information_duties.embargoed", information_duty_id=duty.id)
            duty.status, duty.embargo_id = "embargoed", embargo["id"]
            outs.append(
                self._out(duty, (DutyEmbargo(**embargo), investigation), now, indices[first + k])
            )
        return outs

    # ------------------------------------------------------------ investigations
    @staticmethod
    def _open_row(
        oin: str, party: str, reference: str, now: datetime
    ) -> tuple[SafetyInvestigation, dict[str, Any]]:
        row: dict[str, Any] = {
            "id": new_id("INV"),
            "agency_oin": oin,
            "agency_party": party,
            "reference": reference,
            "opened_at": now,
            "ended_at": None,
        }
        return SafetyInvestigation(**row), row

    @staticmethod
    def _opened_record(investigation: SafetyInvestigation, request_id: str | None) -> AuditRecord:
        return AuditRecord(
            kind="safety_investigation_opened",
            body={
                "request_id": request_id,
                "investigation_id": investigation.id,
                "agency": investigation.agency_oin,
                "agency_party": investigation.agency_party,
                "opened_at": investigation.opened_at.isoformat(),
            },
        )

    async def open_investigation(
        self,
        body: InvestigationIn,
        *,
        actor_oin: str,
        actor_party: str,
        request_id: str | None = None,
    ) -> InvestigationOut:
        async with self._db.session() as session:
            existing = await session.scalar(
                select(SafetyInvestigation).where(
                    SafetyInvestigation.agency_oin == actor_oin,
                    SafetyInvestigation.reference == body.reference,
                )
            )
        if existing is not None:
            raise Conflict("You registered this investigation already", field="reference")
        investigation, row = self._open_row(actor_oin, actor_party, body.reference, self._clock())
        indices = await self._audit.append(
            [self._opened_record(investigation, request_id)], rows=[(_INVESTIGATIONS, row)]
        )
        return self._investigation_out(investigation, audit_index=indices[0])

    async def end_investigation(
        self, reference: str, *, actor_oin: str, request_id: str | None = None
    ) -> InvestigationOut:
        """Ends the caller's investigation and lifts every embargo resting on it."""
        async with self._db.session() as session:
            investigation = await session.scalar(
                select(SafetyInvestigation).where(
                    SafetyInvestigation.agency_oin == actor_oin,
                    SafetyInvestigation.reference == reference,
                )
            )
            if investigation is None:
                raise NotFound("No such investigation of yours")
            if investigation.ended_at is not None:
                raise Conflict(
                    "The investigation has ended already", code=ErrorCode.INVESTIGATION_ENDED
                )
            active = list(
                (
                    await session.execute(
                        select(DutyEmbargo, InformationDuty)
                        .join(InformationDuty, InformationDuty.id == DutyEmbargo.duty_id)
                        .where(
                            DutyEmbargo.investigation_id == investigation.id,
                            DutyEmbargo.lifted_at.is_(None),
                        )
                    )
                ).all()
            )
        now = self._clock()
        records = [
            AuditRecord(
                kind="safety_investigation_ended",
                body={
                    "request_id": request_id,
                    "investigation_id": investigation.id,
                    "agency": actor_oin,
                    "ended_at": now.isoformat(),
                    "embargoes_lifted": len(active),
                },
            )
        ]
        updates = [
            RowUpdate(
                _INVESTIGATIONS,
                where={"id": investigation.id, "ended_at": None},
                values={"ended_at": now},
            )
        ]
        for embargo, duty in active:
            record, changes = self._lift(embargo, duty, "investigation_ended", now, request_id)
            records.append(record)
            updates.extend(changes)
        indices = await self._audit.append(records, updates=updates)
        log.info(
            "information_duties.investigation_ended",
            investigation_id=investigation.id,
            embargoes_lifted=len(active),
        )
        investigation.ended_at = now
        return self._investigation_out(investigation, lifted=len(active), audit_index=indices[0])

    @staticmethod
    def _lift(
        embargo: DutyEmbargo,
        duty: InformationDuty,
        cause: str,
        now: datetime,
        request_id: str | None,
    ) -> tuple[AuditRecord, list[RowUpdate]]:
        """The record and guarded updates that lift ``embargo``: the period that was
        left when it began runs again from now."""
        due_at = now + timedelta(seconds=embargo.remaining_seconds)
        record = AuditRecord(
            kind="information_duty_embargo_lifted",
            body={
                "request_id": request_id,
                "information_duty_id": duty.id,
                "embargo_id": embargo.id,
                "investigation_id": embargo.investigation_id,
                "exchange": duty.exchange_id,
                "subject": duty.subject_key,
                "cause": cause,
                "lifted_at": now.isoformat(),
                "due_at": due_at.isoformat(),
            },
            subject_key=duty.subject_key,
        )
        updates = [
            RowUpdate(
                _EMBARGOES,
                where={"id": embargo.id, "lifted_at": None},
                values={"lifted_at": now, "lift_cause": cause},
            ),
            RowUpdate(
                _DUTIES,
                where={"id": duty.id, "status": "embargoed", "embargo_id": embargo.id},
                values={"status": "open", "embargo_id": None, "due_at": due_at},
            ),
        ]
        return record, updates

    # ------------------------------------------------------------ automatic lifting
    async def run(self) -> int:
        """Lifts every embargo past its ``lapses_at``; returns how many. Each is its
        own commit, so one conflict (lifted meanwhile) does not hold up the others."""
        now = self._clock()
        async with self._db.session() as session:
            lapsed = list(
                (
                    await session.execute(
                        select(DutyEmbargo, InformationDuty)
                        .join(InformationDuty, InformationDuty.id == DutyEmbargo.duty_id)
                        .where(DutyEmbargo.lifted_at.is_(None), DutyEmbargo.lapses_at <= now)
                        .order_by(DutyEmbargo.lapses_at)
                        .limit(LIST_LIMIT)
                    )
                ).all()
            )
        lifted = 0
        for embargo, duty in lapsed:
            record, updates = self._lift(embargo, duty, "max_duration", now, None)
            try:
                await self._audit.append([record], updates=updates)
            except Conflict:
                continue  # lifted by an ended investigation meanwhile
            lifted += 1
        if lifted:
            log.info("information_duties.embargoes_lapsed", lifted=lifted)
        return lifted

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    # ------------------------------------------------------------ fulfilment
    async def fulfil(
        self, duty_id: str, body: FulfilIn, *, actor_oin: str, request_id: str | None = None
    ) -> DutyOut:
        duty = await self._involved(duty_id, actor_oin, officers=False)
        if duty.holder_oin != actor_oin:
            raise Forbidden("Only the agency that must inform marks the duty fulfilled")
        if duty.status == "fulfilled":
            raise Conflict("The duty is fulfilled already", code=ErrorCode.ALREADY_FULFILLED)
        if duty.status == "embargoed":
            raise Conflict(
                "The duty is under an embargo: informing must wait",
                code=ErrorCode.DUTY_EMBARGOED,
            )
        now = self._clock()
        if not duty.released_at <= body.informed_at <= now:
            raise InvalidRequest(
                "informed_at lies before the release or in the future",
                field="informed_at",
                code=ErrorCode.INVALID_TIME,
            )
        values = {
            "status": "fulfilled",
            "fulfilled_at": now,
            "informed_at": body.informed_at,
            "fulfilled_by_oin": actor_oin,
            "fulfil_method": body.method,
            "evidence_ref": body.evidence_reference,
        }
        record = AuditRecord(
            kind="information_duty_fulfilled",
            body={
                "request_id": request_id,
                "information_duty_id": duty.id,
                "exchange": duty.exchange_id,
                "subject": duty.subject_key,
                "fulfilled_by": actor_oin,
                "method": body.method,
                "informed_at": body.informed_at.isoformat(),
                "due_at": duty.due_at.isoformat(),
                "late": body.informed_at > duty.due_at,
            },
            subject_key=duty.subject_key,
        )
        change = RowUpdate(_DUTIES, where={"id": duty.id, "status": "open"}, values=values)
        indices = await self._audit.append([record], updates=[change])
        log.info("information_duties.fulfilled", information_duty_id=duty.id)
        for name, value in values.items():
            setattr(duty, name, value)
        return self._out(duty, None, now, indices[0])

    # ------------------------------------------------------------ output
    @staticmethod
    def _investigation_out(
        row: SafetyInvestigation, *, lifted: int = 0, audit_index: int | None = None
    ) -> InvestigationOut:
        return InvestigationOut(
            id=row.id,
            agency_oin=row.agency_oin,
            agency_party=row.agency_party,
            reference=row.reference,
            opened_at=row.opened_at,
            ended_at=row.ended_at,
            running=row.ended_at is None,
            embargoes_lifted=lifted,
            audit_index=audit_index,
        )

    @staticmethod
    def _out(
        row: InformationDuty,
        embargo: tuple[DutyEmbargo, SafetyInvestigation] | None,
        now: datetime,
        audit_index: int | None = None,
    ) -> DutyOut:
        embargo_out = None
        if embargo is not None:
            e, inv = embargo
            embargo_out = EmbargoOut(
                id=e.id,
                investigation_id=inv.id,
                investigation_reference=inv.reference,
                investigation_agency_oin=inv.agency_oin,
                reason=e.reason,
                set_by_oin=e.set_by_oin,
                set_by_party=e.set_by_party,
                set_at=e.set_at,
                lapses_at=e.lapses_at,
                lifted_at=e.lifted_at,
                lift_cause=e.lift_cause,
            )
        return DutyOut(
            id=row.id,
            exchange_id=row.exchange_id,
            agreement_id=row.agreement_id,
            agreement_version=row.agreement_version,
            purpose_id=row.purpose_id,
            subject_key=row.subject_key,
            subject_kind=row.subject_kind,
            addressee_rule=row.addressee_rule,
            addressees=list(row.addressees),
            elements=list(row.elements),
            legal_basis_ids=list(row.legal_basis_ids),
            duty_basis_ids=list(row.duty_basis_ids),
            holder_oin=row.holder_oin,
            holder_party=row.holder_party,
            recipient_oin=row.recipient_oin,
            recipient_party=row.recipient_party,
            provider_oin=row.provider_oin,
            provider_party=row.provider_party,
            released_at=row.released_at,
            due_at=row.due_at,
            status=row.status,
            overdue=row.status == "open" and now > row.due_at,
            embargo=embargo_out,
            fulfilled_at=row.fulfilled_at,
            informed_at=row.informed_at,
            fulfilled_by_oin=row.fulfilled_by_oin,
            fulfil_method=row.fulfil_method,
            evidence_reference=row.evidence_ref,
            audit_index=audit_index,
        )
