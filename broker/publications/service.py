"""Publish/subscribe: an event reaches every recipient its agreement subscribes,
each recipient receiving only what the agreement allows it.

For each registered, active agency of the subscription's recipient parties the
broker asks the policy engine, exactly as for a request (the publisher is the
provider, the recipient the requester, the subscription's purpose the purpose),
and in ONE durable commit appends the audit entries (a ``publication`` entry, a
``decision`` entry per recipient and item, a ``release`` entry per recipient
that receives something) and stores the publication, the decision records and
one inbox message per receiving agency: the per-item decisions in clear, the
allowed values as a JWE to the recipient's registered key. Only then is the
publisher answered. Nothing of the event (no BSN, no value) is logged or
stored in clear.

Messages stay in the inbox until the recipient acknowledges them (``ack``) or
its webhook accepts them (``broker.publications.delivery``); acknowledgements
are audited too.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import structlog
from sqlalchemy import Table, select, tuple_

from audit.log import AuditRecord, AuditWriter, RowUpdate
from audit.models import AuditEntry
from broker.agencies.service import AgencyDirectory, AgencyView
from broker.core.canonical import canonical_json, sha256_hex
from broker.core.clock import Clock, dutch_date, system_clock, to_ns
from broker.core.errors import Conflict, ErrorCode, Forbidden, InvalidRequest, NotFound
from broker.core.protocols import PersonRecord, PolicyEngine, SubjectRegister
from broker.core.telemetry import current_trace_id
from broker.core.types import (
    ConsentFact,
    Decision,
    PolicyInput,
    RequestedItem,
    ResponseForm,
    SubjectFacts,
    SubjectKind,
)
from broker.crypto.jose import Sealer
from broker.crypto.keys import Pseudonymizer
from broker.db.session import Database
from broker.exchange.models import DecisionRecord
from broker.exchange.schemas import AgreementRef
from broker.exchange.service import ConsentSource
from broker.exchange.subjects import subject_key
from broker.policy.loader import Agreement, PolicySet
from broker.publications.models import InboxMessage, Publication
from broker.publications.schemas import (
    AckResponse,
    InboxPage,
    ItemDecisionOut,
    PartyRef,
    PublicationRequest,
    PublicationResponse,
    RecipientOut,
    message_out,
)
from broker.retention.vault import RetentionVault
from broker.security.tokens import Principal

log = structlog.get_logger("publications")

PUBLICATION_KIND = "publication"
ACK_KIND = "inbox_acknowledged"


@dataclass(frozen=True, slots=True)
class _Item:
    """One element x subject of the event, with what the broker needs to deliver it."""

    element: str
    index: int  # position of the subject in the event's subject list
    bsn: str
    kind: SubjectKind
    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class _Delivery:
    """The decision for one recipient agency and, when something is allowed, its message."""

    recipient: AgencyView
    decision: Decision
    policy_input: PolicyInput
    message_id: str | None
    payload: str | None


def ack_unit(
    message: InboxMessage | Any, *, via: str, at: datetime, where: dict[str, Any] | None = None
) -> tuple[list[AuditRecord], list[RowUpdate]]:
    """The audit entry and guarded update that acknowledge ``message`` (only while it
    is unacknowledged: a second acknowledgement matches no row and conflicts). The
    encrypted payload is dropped: the recipient has it, the broker keeps only the
    record of what was decided and delivered."""
    record = AuditRecord(
        kind=ACK_KIND,
        body={
            "exchange_id": message.id,
            "message_id": message.id,
            "publication_id": message.publication_id,
            "event_type": message.event_type,
            "recipient": message.recipient_oin,
            "recipient_party": message.recipient_party,
            "via": via,
        },
        exchange_id=message.id,
    )
    update = RowUpdate(
        table=cast(Table, InboxMessage.__table__),
        where={"id": message.id, "acked_at": None, **(where or {})},
        values={
            "acked_at": at,
            "acked_by": via,
            "claimed_by": None,
            "claimed_until": None,
            "payload": "",
        },
    )
    return [record], [update]


@dataclass(frozen=True, slots=True)
class Notice:
    """One inbox message the broker itself makes (e.g. a signal match): for
    ``recipient``, naming as sender the agency it is about, with a JWE payload
    already sealed to the recipient's key. It carries no element decisions."""

    message_id: str
    recipient_oin: str
    recipient_party: str
    sender_oin: str
    sender_party: str
    decision_id: str
    payload: str


def notice_rows(
    *,
    notice_id: str,
    event_type: str,
    origin_oin: str,
    agreement: tuple[str, str | None, str | None],
    purpose_id: str,
    notices: Sequence[Notice],
    now: datetime,
) -> list[tuple[Table, dict[str, Any]]]:
    """The rows that put broker-made ``notices`` into their recipients' inboxes,
    for the caller to commit together with its audit entries (``AuditWriter.append``):
    a publication row (id ``notice_id``, unique, so the same notice is stored once)
    and one inbox message per notice. From there they are listed, acknowledged and
    delivered to webhooks like any other message. ``agreement``: (id, version, hash)."""
    agreement_id, version, content_hash = agreement
    rows: list[tuple[Table, dict[str, Any]]] = [
        (
            cast(Table, Publication.__table__),
            {
                "id": notice_id,
                "publisher_oin": origin_oin,
                "event_id": f"{event_type}:{notice_id}",  # no publisher's id has a colon
                "event_type": event_type,
                "agreement_id": agreement_id,
                "purpose_id": purpose_id,
                "fingerprint": "sha256:" + sha256_hex(notice_id.encode("utf-8")),
                "created_at": now,
                "response": {"notice_id": notice_id, "messages": [n.message_id for n in notices]},
            },
        )
    ]
    rows.extend(
        (
            cast(Table, InboxMessage.__table__),
            {
                "id": n.message_id,
                "publication_id": notice_id,
                "recipient_oin": n.recipient_oin,
                "recipient_party": n.recipient_party,
                "publisher_oin": n.sender_oin,
                "publisher_party": n.sender_party,
                "event_id": notice_id,
                "event_type": event_type,
                "agreement_id": agreement_id,
                "agreement_version": version,
                "agreement_hash": content_hash,
                "purpose_id": purpose_id,
                "decision_id": n.decision_id,
                "items": [],
                "payload": n.payload,
                "created_at": now,
                "attempts": 0,
            },
        )
        for n in notices
    )
    return rows


class PublicationService:
    def __init__(
        self,
        *,
        db: Database,
        engine: PolicyEngine,
        policy_set: Callable[[], PolicySet],
        directory: AgencyDirectory,
        register: SubjectRegister,
        audit: AuditWriter,
        pseudonymizer: Pseudonymizer,
        sealer: Sealer,
        consents: ConsentSource,
        clock: Clock = system_clock,
        on_stored: Callable[[], None] | None = None,
        retention: RetentionVault | None = None,
    ) -> None:
        self._db = db
        self._retention = retention
        self._engine = engine
        self._policy_set = policy_set
        self._directory = directory
        self._register = register
        self._audit = audit
        self._pseudo = pseudonymizer
        self._sealer = sealer
        self._consents = consents
        self._clock = clock
        self.on_stored = on_stored  # wakes the webhook worker

    # ------------------------------------------------------------------ publish
    async def publish(
        self, principal: Principal, request: PublicationRequest, request_id: str
    ) -> PublicationResponse:
        policy_set = self._policy_set()
        now = self._clock()
        today = dutch_date(now)
        # The version the decision procedure uses today (its subscriptions apply).
        agreement = policy_set.current(request.agreement_id, today)
        if agreement is None:
            raise InvalidRequest(
                "Unknown agreement", field="agreement_id", code=ErrorCode.UNKNOWN_AGREEMENT
            )
        subscription = agreement.subscriptions.get(request.event_type)
        if subscription is None:
            raise InvalidRequest(
                "The agreement has no subscription for this event type",
                field="event_type",
                code=ErrorCode.UNKNOWN_EVENT_TYPE,
            )
        publisher = await self._directory.get(principal.oin)
        if publisher is None or not publisher.active:
            raise Forbidden("The publishing agency is not active")
        if publisher.party_type not in subscription.get("publishers", ()):
            raise Forbidden(
                "Your party may not publish this event type under this agreement",
                code=ErrorCode.NOT_A_PUBLISHER,
            )
        self._check_elements(request, policy_set, subscription)
        fingerprint = self._fingerprint(request)
        stored = await self._stored(publisher.oin, request.event_id, fingerprint)
        if stored is not None:
            return stored

        bsns = list(dict.fromkeys(request.subjects))
        records = await self._register.lookup(bsns)
        subjects: dict[str, SubjectFacts] = {}
        items = self._items(request, policy_set, records, today, subjects)
        purpose_id = str(subscription["purpose"])
        consents = await self._consent_facts(agreement, purpose_id, subjects.values(), now)

        publication_id = str(uuid.uuid4())
        deliveries: list[_Delivery] = []
        for recipient in await self._recipients(subscription, publisher):
            policy_input = PolicyInput(
                agreement=agreement.id,
                purpose=purpose_id,
                provider=publisher.party_type,
                recipient=recipient.party_type,
                request_time_ns=to_ns(now),
                request_date=today,
                context=request.context,
                subjects=tuple(subjects.values()),
                items=tuple(RequestedItem(element=i.element, subject=i.key) for i in items),
                consents=consents,
            )
            decision = await self._engine.decide(policy_input)
            deliveries.append(
                self._seal(
                    request=request,
                    publisher=publisher,
                    recipient=recipient,
                    decision=decision,
                    policy_input=policy_input,
                    items=items,
                )
            )

        response = self._response(
            request=request,
            agreement=agreement,
            publication_id=publication_id,
            purpose_id=purpose_id,
            now=now,
            items=items,
            deliveries=deliveries,
        )
        audit_records, rows = self._records(
            request=request,
            publisher=publisher,
            publication_id=publication_id,
            purpose_id=purpose_id,
            request_id=request_id,
            fingerprint=fingerprint,
            response=response,
            agreement=agreement,
            items=items,
            deliveries=deliveries,
            now=now,
        )
        if self._retention is not None and deliveries:
            # Personal detail in the decision rows is sealed under the retention
            # period's key (every recipient's decision is for the same purpose).
            await self._retention.seal_rows(rows, deliveries[0].decision.obligations.retention, now)
        try:
            indices = await self._audit.append(audit_records, rows)
        except Conflict:
            # The same event published concurrently: the first commit stands.
            stored = await self._stored(publisher.oin, request.event_id, fingerprint)
            if stored is None:
                raise
            return stored
        if self.on_stored is not None and any(d.message_id for d in deliveries):
            self.on_stored()
        log.info(
            "publication.stored",
            publication_id=publication_id,
            event_type=request.event_type,
            agreement=agreement.id,
            recipients=len(deliveries),
            messages=sum(1 for d in deliveries if d.message_id),
        )
        return response.model_copy(update={"audit_indices": indices})

    def _check_elements(
        self, request: PublicationRequest, policy_set: PolicySet, subscription: dict[str, Any]
    ) -> None:
        catalogue = policy_set.reference.elements
        declared = set(subscription.get("elements", ()))
        subjects = set(request.subjects)
        for i, entry in enumerate(request.elements):
            if entry.element not in catalogue:
                raise InvalidRequest(
                    "Unknown data element",
                    field=f"elements[{i}].element",
                    code=ErrorCode.UNKNOWN_ELEMENT,
                )
            if entry.element not in declared:
                raise InvalidRequest(
                    "The subscription does not declare this element for the event type",
                    field=f"elements[{i}].element",
                    code=ErrorCode.ELEMENT_NOT_IN_SUBSCRIPTION,
                )
            if entry.subject not in subjects:
                raise InvalidRequest(
                    "The element's subject is not one of the event's subjects",
                    field=f"elements[{i}].subject",
                )

    def _fingerprint(self, request: PublicationRequest) -> str:
        """What a re-publication of the event must repeat (pseudonymised, no values)."""
        shape = {
            "event_type": request.event_type,
            "agreement_id": request.agreement_id,
            "subjects": [self._pseudo.person(b) for b in request.subjects],
            "elements": [[e.element, self._pseudo.person(e.subject)] for e in request.elements],
        }
        return "sha256:" + sha256_hex(canonical_json(shape))

    async def _stored(
        self, publisher_oin: str, event_id: str, fingerprint: str
    ) -> PublicationResponse | None:
        """The first answer to this event, or None when it was not published yet."""
        async with self._db.session() as session:
            row = await session.scalar(
                select(Publication).where(
                    Publication.publisher_oin == publisher_oin, Publication.event_id == event_id
                )
            )
            if row is None:
                return None
            if row.fingerprint != fingerprint:
                raise Conflict(
                    "This event id was published with another type, agreement, subjects or "
                    "elements",
                    field="event_id",
                    code=ErrorCode.EVENT_ID_REUSED,
                )
            response = PublicationResponse.model_validate(row.response)
            units = [row.id] + [r.message_id for r in response.recipients if r.message_id]
            indices = (
                await session.scalars(
                    select(AuditEntry.seq)
                    .where(AuditEntry.exchange_id.in_(units))
                    .order_by(AuditEntry.seq)
                )
            ).all()
        return response.model_copy(update={"audit_indices": list(indices)})

    def _items(
        self,
        request: PublicationRequest,
        policy_set: PolicySet,
        records: dict[str, PersonRecord],
        today: date,
        subjects: dict[str, SubjectFacts],
    ) -> list[_Item]:
        elements = policy_set.reference.elements
        index = {bsn: i for i, bsn in reversed(list(enumerate(request.subjects)))}
        items: list[_Item] = []
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(request.elements):
            kind = elements[entry.element].subject_kind
            key = self._subject(entry.subject, kind, records.get(entry.subject), today, subjects)
            if (entry.element, key) in seen:
                raise InvalidRequest(
                    "The event holds this element twice for the same subject (or household)",
                    field=f"elements[{i}]",
                )
            seen.add((entry.element, key))
            items.append(
                _Item(
                    element=entry.element,
                    index=index[entry.subject],
                    bsn=entry.subject,
                    kind=kind,
                    key=key,
                    value=entry.value,
                )
            )
        return items

    def _subject(
        self,
        bsn: str,
        kind: SubjectKind,
        record: PersonRecord | None,
        today: date,
        subjects: dict[str, SubjectFacts],
    ) -> str:
        """The subject's pseudonymised key and facts, as the exchange builds them."""
        return subject_key(self._pseudo, bsn, kind, record=record, today=today, subjects=subjects)

    async def _consent_facts(
        self, agreement: Agreement, purpose_id: str, subjects: Iterable[SubjectFacts], now: datetime
    ) -> tuple[ConsentFact, ...]:
        purpose = agreement.purposes.get(purpose_id)
        if purpose is None or purpose.get("consent") == "not_required_with_basis":
            return ()
        return await self._consents.facts_for(
            (s.key for s in subjects if s.kind is SubjectKind.PERSON), agreement.id, purpose_id, now
        )

    async def _recipients(
        self, subscription: dict[str, Any], publisher: AgencyView
    ) -> list[AgencyView]:
        """Every active agency of the subscription's recipient parties (not the publisher)."""
        found: dict[str, AgencyView] = {}
        for party in subscription.get("recipients", ()):
            for agency in await self._directory.providers_of(str(party)):
                if agency.active and agency.oin != publisher.oin:
                    found[agency.oin] = agency
        return [found[oin] for oin in sorted(found)]

    def _seal(
        self,
        *,
        request: PublicationRequest,
        publisher: AgencyView,
        recipient: AgencyView,
        decision: Decision,
        policy_input: PolicyInput,
        items: Sequence[_Item],
    ) -> _Delivery:
        boolean = decision.obligations.response_form is ResponseForm.BOOLEAN_ONLY
        allowed = [
            {
                "element": item.element,
                "subject": item.bsn,
                "value": bool(item.value) if boolean else item.value,
            }
            for item, decided in zip(items, decision.items, strict=True)
            if decided.allowed
        ]
        key = recipient.encryption_key()
        if not allowed or key is None:
            return _Delivery(recipient, decision, policy_input, None, None)
        message_id = str(uuid.uuid4())
        payload = self._sealer.seal(
            recipient.oin,
            key,
            {
                "message_id": message_id,
                "event_id": request.event_id,
                "event_type": request.event_type,
                "occurred_at": request.occurred_at.isoformat(),
                "publisher": {"oin": publisher.oin, "party": publisher.party_type},
                "items": allowed,
            },
        )
        return _Delivery(recipient, decision, policy_input, message_id, payload)

    @staticmethod
    def _decisions(items: Sequence[_Item], decision: Decision) -> list[ItemDecisionOut]:
        return [
            ItemDecisionOut(
                element=item.element,
                subject_index=item.index,
                subject_kind=item.kind.value,
                outcome=decided.outcome,
                reason=decided.reason,
                legal_basis=list(decided.legal_basis_ids),
            )
            for item, decided in zip(items, decision.items, strict=True)
        ]

    def _response(
        self,
        *,
        request: PublicationRequest,
        agreement: Agreement,
        publication_id: str,
        purpose_id: str,
        now: datetime,
        items: Sequence[_Item],
        deliveries: Sequence[_Delivery],
    ) -> PublicationResponse:
        first = deliveries[0].decision if deliveries else None
        return PublicationResponse(
            publication_id=publication_id,
            event_id=request.event_id,
            event_type=request.event_type,
            agreement=AgreementRef(
                id=agreement.id,
                version=first.agreement_version if first else agreement.version,
                content_hash=first.agreement_hash if first else agreement.content_hash,
            ),
            purpose_id=purpose_id,
            policy_bundle=first.bundle_hash if first else self._engine.bundle_hash,
            created_at=now,
            audit_indices=[],
            recipients=[
                RecipientOut(
                    recipient=PartyRef(oin=d.recipient.oin, party=d.recipient.party_type),
                    decision_id=d.decision.decision_id,
                    message_id=d.message_id,
                    items=self._decisions(items, d.decision),
                )
                for d in deliveries
            ],
        )

    def _records(
        self,
        *,
        request: PublicationRequest,
        publisher: AgencyView,
        publication_id: str,
        purpose_id: str,
        request_id: str,
        fingerprint: str,
        response: PublicationResponse,
        agreement: Agreement,
        items: Sequence[_Item],
        deliveries: Sequence[_Delivery],
        now: datetime,
    ) -> tuple[list[AuditRecord], list[tuple[Table, dict[str, Any]]]]:
        records = [
            AuditRecord(
                kind=PUBLICATION_KIND,
                body={
                    "request_id": request_id,
                    "trace_id": current_trace_id(),
                    "exchange_id": publication_id,  # the indexed column, as for exchanges
                    "publication_id": publication_id,
                    "event_type": request.event_type,
                    "publisher": publisher.oin,
                    "publisher_party": publisher.party_type,
                    "agreement": agreement.id,
                    "purpose": purpose_id,
                    "recipients": [d.recipient.oin for d in deliveries],
                    "messages": [d.message_id for d in deliveries if d.message_id],
                },
                exchange_id=publication_id,
            )
        ]
        rows: list[tuple[Table, dict[str, Any]]] = [
            (
                cast(Table, Publication.__table__),
                {
                    "id": publication_id,
                    "publisher_oin": publisher.oin,
                    "event_id": request.event_id,
                    "event_type": request.event_type,
                    "agreement_id": agreement.id,
                    "purpose_id": purpose_id,
                    "fingerprint": fingerprint,
                    "created_at": now,
                    "response": response.model_dump(mode="json"),
                },
            )
        ]
        by_recipient = {r.recipient.oin: r for r in response.recipients}
        for d in deliveries:
            records.extend(self._delivery_records(d, publisher, publication_id, request_id, items))
            rows.append(self._decision_row(d, publication_id, now))
            if d.message_id is not None and d.payload is not None:
                rows.append(
                    (
                        cast(Table, InboxMessage.__table__),
                        {
                            "id": d.message_id,
                            "publication_id": publication_id,
                            "recipient_oin": d.recipient.oin,
                            "recipient_party": d.recipient.party_type,
                            "publisher_oin": publisher.oin,
                            "publisher_party": publisher.party_type,
                            "event_id": request.event_id,
                            "event_type": request.event_type,
                            "agreement_id": agreement.id,
                            "agreement_version": d.decision.agreement_version,
                            "agreement_hash": d.decision.agreement_hash,
                            "purpose_id": purpose_id,
                            "decision_id": d.decision.decision_id,
                            "items": [
                                i.model_dump(mode="json")
                                for i in by_recipient[d.recipient.oin].items
                            ],
                            "payload": d.payload,
                            "created_at": now,
                            "attempts": 0,
                        },
                    )
                )
        return records, rows

    @staticmethod
    def _delivery_records(
        d: _Delivery,
        publisher: AgencyView,
        publication_id: str,
        request_id: str,
        items: Sequence[_Item],
    ) -> list[AuditRecord]:
        """The decision entries of one recipient (and its release entry), shaped as an
        exchange's so subject-access overviews list them: requester = recipient,
        provider = publisher; ``exchange_id`` is the message id (the publication id
        when nothing was allowed)."""
        decision = d.decision
        unit = d.message_id or publication_id
        common = {
            "request_id": request_id,
            "trace_id": current_trace_id(),
            "exchange_id": unit,
            "publication_id": publication_id,
            "message_id": d.message_id,
            "decision_id": decision.decision_id,
            "requester": d.recipient.oin,
            "recipient_party": d.recipient.party_type,
            "provider": publisher.oin,
            "provider_party": publisher.party_type,
            "purpose": d.policy_input.purpose,
            "agreement": {
                "id": decision.agreement_id,
                "version": decision.agreement_version,
                "hash": decision.agreement_hash,
            },
            "bundle": decision.bundle_hash,
            "engine": decision.engine,
        }
        records: list[AuditRecord] = []
        released: list[dict[str, Any]] = []
        for item, decided in zip(items, decision.items, strict=True):
            records.append(
                AuditRecord(
                    kind="decision",
                    body=dict(
                        common,
                        subject=item.key,
                        subject_kind=item.kind.value,
                        element=item.element,
                        outcome=decided.outcome.value,
                        reason=decided.reason.value,
                        legal_basis=list(decided.legal_basis_ids),
                        consent_id=decided.consent_id,
                        acute_declaration_id=decided.acute_declaration_id,
                    ),
                    exchange_id=unit,
                    subject_key=item.key,
                    element=item.element,
                    outcome=decided.outcome.value,
                )
            )
            if decided.allowed and d.message_id:
                released.append(
                    {"subject": item.key, "element": item.element, "status": "released"}
                )
        if released:
            records.append(
                AuditRecord(
                    kind="release",
                    body=dict(
                        common,
                        items=released,
                        response_form=decision.obligations.response_form.value,
                    ),
                    exchange_id=unit,
                )
            )
        return records

    @staticmethod
    def _decision_row(
        d: _Delivery, publication_id: str, now: datetime
    ) -> tuple[Table, dict[str, Any]]:
        decision = d.decision
        return (
            cast(Table, DecisionRecord.__table__),
            {
                "id": decision.decision_id,
                "exchange_id": d.message_id or publication_id,
                "created_at": now,
                "engine": decision.engine,
                "bundle_hash": decision.bundle_hash,
                "agreement_id": decision.agreement_id,
                "agreement_version": decision.agreement_version,
                "agreement_hash": decision.agreement_hash,
                "input": d.policy_input.to_document(),
                "result": {
                    "items": [
                        {
                            "element": i.element,
                            "subject": i.subject,
                            "reason": i.reason.value,
                            "legal_basis_ids": list(i.legal_basis_ids),
                            "consent_id": i.consent_id,
                            "acute_declaration_id": i.acute_declaration_id,
                        }
                        for i in decision.items
                    ],
                    "obligations": {
                        "response_form": decision.obligations.response_form.value,
                        "retention": decision.obligations.retention,
                    },
                },
            },
        )

    # ------------------------------------------------------------------ inbox
    async def inbox(self, principal: Principal, *, limit: int, after: str | None) -> InboxPage:
        """The agency's unacknowledged messages, oldest first."""
        async with self._db.session() as session:
            stmt = select(InboxMessage).where(
                InboxMessage.recipient_oin == principal.oin, InboxMessage.acked_at.is_(None)
            )
            if after is not None:
                anchor = await session.get(InboxMessage, after)
                if anchor is None or anchor.recipient_oin != principal.oin:
                    raise InvalidRequest("Unknown paging position", field="after")
                stmt = stmt.where(
                    tuple_(InboxMessage.created_at, InboxMessage.id)
                    > tuple_(anchor.created_at, anchor.id)
                )
            rows = (
                await session.scalars(
                    stmt.order_by(InboxMessage.created_at, InboxMessage.id).limit(limit + 1)
                )
            ).all()
        page = rows[:limit]
        return InboxPage(
            messages=[message_out(r) for r in page],
            next_after=page[-1].id if len(rows) > limit else None,
        )

    async def ack(self, principal: Principal, message_id: str) -> AckResponse:
        """Acknowledges a message of the agency (again: the first acknowledgement)."""
        message = await self._message(principal, message_id)
        if message.acked_at is None:
            records, updates = ack_unit(message, via="inbox", at=self._clock())
            # A Conflict: acknowledged meanwhile (by the webhook or another call).
            with contextlib.suppress(Conflict):
                await self._audit.append(records, updates=updates)
            message = await self._message(principal, message_id)
        assert message.acked_at is not None  # set by the update above
        return AckResponse(
            id=message.id,
            acked_at=message.acked_at,
            acked_by="webhook" if message.acked_by == "webhook" else "inbox",
        )

    async def _message(self, principal: Principal, message_id: str) -> InboxMessage:
        async with self._db.session() as session:
            message = await session.get(InboxMessage, message_id)
        if message is None or message.recipient_oin != principal.oin:
            raise NotFound("No such message in your inbox")
        return message
