"""The exchange flow: decide per item, fetch only what is allowed, audit durably,
then release the data encrypted to the requester.

Fail closed: the policy engine, the register, the database or the audit log
failing raises a ServiceUnavailable and nothing is released.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from audit.log import AuditRecord, AuditWriter
from broker.agencies.service import AgencyDirectory, AgencyView
from broker.core.clock import Clock, age_on, dutch_date, system_clock, to_ns
from broker.core.errors import ErrorCode, Forbidden, InvalidRequest
from broker.core.protocols import (
    FetchedItem,
    FetchItem,
    FetchRequest,
    PartnerAdapter,
    PersonRecord,
    PolicyEngine,
    SubjectRegister,
)
from broker.core.telemetry import current_trace_id, decision_span
from broker.core.types import (
    AcuteDeclarationFact,
    ConsentFact,
    Decision,
    ItemDecision,
    ItemStatus,
    PolicyInput,
    RequestedItem,
    ResponseForm,
    SubjectFacts,
    SubjectKind,
)
from broker.crypto.jose import Sealer
from broker.crypto.keys import Pseudonymizer
from broker.exchange.models import DecisionRecord, Exchange
from broker.exchange.schemas import (
    AgreementRef,
    ExchangeRequest,
    ExchangeResponse,
    ItemOut,
    LegalBasisOut,
)
from broker.policy.explain import explain, explanation_key
from broker.policy.loader import PolicySet
from broker.retention.vault import RetentionVault
from broker.security.tokens import Principal
from broker.transparency.receipts import ReceiptSigner

log = structlog.get_logger("exchange")


class ConsentSource(Protocol):
    """The consent registry as the exchange reads it (broker.consent)."""

    async def facts_for(
        self, subject_keys: Iterable[str], agreement_id: str, purpose_id: str, at: datetime
    ) -> tuple[ConsentFact, ...]: ...


class DeclarationSource(Protocol):
    """Stored acute-danger declarations (broker.breakglass)."""

    async def fact(self, declaration_id: str) -> AcuteDeclarationFact | None: ...


@dataclass(frozen=True, slots=True)
class _Item:
    """One decided pair, with what the broker needs to fetch and answer it."""

    element: str
    bsn: str
    kind: SubjectKind
    key: str


class ExchangeService:
    def __init__(
        self,
        *,
        engine: PolicyEngine,
        policy_set: PolicySet,
        directory: AgencyDirectory,
        register: SubjectRegister,
        adapters: dict[str, PartnerAdapter],
        audit: AuditWriter,
        pseudonymizer: Pseudonymizer,
        sealer: Sealer,
        consents: ConsentSource,
        declarations: DeclarationSource,
        receipts: ReceiptSigner,
        retention: RetentionVault,
        clock: Clock = system_clock,
    ) -> None:
        self._engine = engine
        self.policy_set = policy_set
        self._directory = directory
        self._register = register
        self._adapters = adapters
        self._audit = audit
        self._pseudo = pseudonymizer
        self._sealer = sealer
        self._consents = consents
        self._declarations = declarations
        self._receipts = receipts
        self._retention = retention
        self._clock = clock
        self._explained_for: PolicySet | None = None
        self._explanations: dict[tuple[Any, ...], str] = {}

    def now(self) -> datetime:
        return self._clock()

    async def handle(
        self, principal: Principal, request: ExchangeRequest, request_id: str
    ) -> ExchangeResponse:
        elements = self.policy_set.reference.elements
        for i, element in enumerate(request.elements):
            if element not in elements:
                raise InvalidRequest(
                    "Unknown data element", field=f"elements[{i}]", code=ErrorCode.UNKNOWN_ELEMENT
                )
        requester = await self._directory.get(principal.oin)
        if requester is None or not requester.active:
            raise Forbidden("The requesting agency is not active")
        encryption_key = requester.encryption_key()
        if encryption_key is None:
            raise Forbidden("The requesting agency has no encryption key")
        provider = await self._resolve_provider(request)
        declaration = await self._declaration(request)

        now = self._clock()
        today = dutch_date(now)
        bsns = list(dict.fromkeys(request.subjects))
        records = await self._register.lookup(bsns)

        subjects: dict[str, SubjectFacts] = {}
        items: list[_Item] = []
        seen: set[tuple[str, str]] = set()
        for element_id in request.elements:
            kind = elements[element_id].subject_kind
            for bsn in bsns:
                key = self._subject(bsn, kind, records.get(bsn), today, subjects)
                if (element_id, key) in seen:
                    continue
                seen.add((element_id, key))
                items.append(_Item(element=element_id, bsn=bsn, kind=kind, key=key))
        consents = await self._consent_facts(request, subjects.values(), now)

        policy_input = PolicyInput(
            agreement=request.agreement_id,
            purpose=request.purpose_id,
            provider=provider.party_type,
            recipient=requester.party_type,
            request_time_ns=to_ns(now),
            request_date=today,
            context=request.context,
            subjects=tuple(subjects.values()),
            items=tuple(RequestedItem(element=i.element, subject=i.key) for i in items),
            consents=consents,
            acute_declaration=declaration,
        )
        with decision_span(self._engine.name):
            decision = await self._engine.decide(policy_input)

        exchange_id = str(uuid.uuid4())
        response_form = decision.obligations.response_form
        fetched = await self._fetch(
            provider=provider,
            decision=decision,
            items=items,
            request=request,
            exchange_id=exchange_id,
            request_id=request_id,
            requester=requester,
        )

        statuses: list[ItemStatus] = []
        released: list[dict[str, Any]] = []
        for item, decided in zip(items, decision.items, strict=True):
            if not decided.allowed:
                statuses.append(ItemStatus.DENIED)
                continue
            got = fetched.get((item.element, item.bsn))
            status = got.status if got else ItemStatus.UNAVAILABLE
            statuses.append(status)
            if got is not None and status is ItemStatus.RELEASED:
                value = bool(got.value) if response_form is ResponseForm.BOOLEAN_ONLY else got.value
                released.append({"element": item.element, "subject": item.bsn, "value": value})

        audit_records, rows = self._records(
            principal=principal,
            requester=requester,
            provider=provider,
            request=request,
            request_id=request_id,
            exchange_id=exchange_id,
            decision=decision,
            policy_input=policy_input,
            items=items,
            statuses=statuses,
            now=now,
        )
        # Personal detail in the rows is sealed under the retention period's key.
        await self._retention.seal_rows(rows, decision.obligations.retention, now)
        indices = await self._audit.append(audit_records, rows)
        # After the commit (it cites the leaf indices), before anything leaves.
        receipt = await self._receipts.issue_async(
            exchange_id=exchange_id,
            request_id=request_id,
            issued_at=self._clock(),
            requester_oin=requester.oin,
            requester_party=requester.party_type,
            provider_oin=provider.oin,
            provider_party=provider.party_type,
            purpose_id=request.purpose_id,
            decision=decision,
            statuses=statuses,
            leaf_indices=indices,
        )

        payload = None
        if released:
            payload = self._sealer.seal(
                requester.oin, encryption_key, {"exchange_id": exchange_id, "items": released}
            )
        log.info(
            "exchange.completed",
            exchange_id=exchange_id,
            decision_id=decision.decision_id,
            agreement=request.agreement_id,
            purpose=request.purpose_id,
            items=len(items),
            released=len(released),
        )
        return self._response(
            request=request,
            request_id=request_id,
            exchange_id=exchange_id,
            decision=decision,
            items=items,
            statuses=statuses,
            indices=indices,
            payload=payload,
            receipt=receipt,
            requester=requester,
            provider=provider,
            policy_input=policy_input,
        )

    async def _consent_facts(
        self, request: ExchangeRequest, subjects: Iterable[SubjectFacts], now: datetime
    ) -> tuple[ConsentFact, ...]:
        """One indexed query for every person subject's records of this agreement
        and purpose; the procedure picks, per item, the record that applies. A
        purpose on a statutory basis has no records (the registry refuses them)."""
        agreement = self.policy_set.current(request.agreement_id, dutch_date(now))
        purpose = agreement.purposes.get(request.purpose_id) if agreement else None
        if purpose is None or purpose.get("consent") == "not_required_with_basis":
            return ()
        return await self._consents.facts_for(
            (s.key for s in subjects if s.kind is SubjectKind.PERSON),
            request.agreement_id,
            request.purpose_id,
            now,
        )

    async def _declaration(self, request: ExchangeRequest) -> AcuteDeclarationFact | None:
        """The stored declaration the request names. One for another agreement or
        purpose is passed on as it is: the procedure does not use it."""
        if request.acute_declaration_id is None:
            return None
        declaration = await self._declarations.fact(request.acute_declaration_id)
        if declaration is None:
            raise InvalidRequest(
                "No such acute declaration",
                field="acute_declaration_id",
                code=ErrorCode.UNKNOWN_ACUTE_DECLARATION,
            )
        return declaration

    async def _resolve_provider(self, request: ExchangeRequest) -> AgencyView:
        ref = request.provider
        if ref.oin is not None:
            agency = await self._directory.get(ref.oin)
            if agency is None or not agency.active:
                raise InvalidRequest(
                    "No active agency with this OIN",
                    field="provider.oin",
                    code=ErrorCode.UNKNOWN_PROVIDER,
                )
            return agency
        assert ref.party is not None  # guaranteed by ProviderRef
        candidates = await self._directory.providers_of(ref.party)
        if not candidates:
            raise InvalidRequest(
                "No active agency of this party type",
                field="provider.party",
                code=ErrorCode.UNKNOWN_PROVIDER,
            )
        if len(candidates) > 1:
            raise InvalidRequest(
                "Several agencies of this party type; name one by OIN",
                field="provider.party",
                code=ErrorCode.AMBIGUOUS_PROVIDER,
            )
        return candidates[0]

    def _subject(
        self,
        bsn: str,
        kind: SubjectKind,
        record: PersonRecord | None,
        today: Any,
        subjects: dict[str, SubjectFacts],
    ) -> str:
        if kind is SubjectKind.HOUSEHOLD:
            household = record.household_id if record and record.household_id else f"of:{bsn}"
            key = self._pseudo.household(household)
            subjects.setdefault(key, SubjectFacts(key=key, kind=SubjectKind.HOUSEHOLD))
            return key
        key = self._pseudo.person(bsn)
        if key not in subjects:
            birth = record.birth_date if record else None
            subjects[key] = SubjectFacts(
                key=key,
                kind=SubjectKind.PERSON,
                birth_date=birth,
                age=age_on(birth, today) if birth else None,
                authority_holders=tuple(
                    self._pseudo.person(h) for h in (record.authority_holder_bsns if record else ())
                ),
            )
        return key

    async def _fetch(
        self,
        *,
        provider: AgencyView,
        decision: Decision,
        items: list[_Item],
        request: ExchangeRequest,
        exchange_id: str,
        request_id: str,
        requester: AgencyView,
    ) -> dict[tuple[str, str], FetchedItem]:
        allowed = [
            FetchItem(element=i.element, bsn=i.bsn, subject_kind=i.kind)
            for i, d in zip(items, decision.items, strict=True)
            if d.allowed
        ]
        if not allowed:
            return {}
        adapter = self._adapters.get(provider.adapter_kind)
        if adapter is None or not provider.endpoint_url:
            return {}
        fetch_request = FetchRequest(
            exchange_id=exchange_id,
            request_id=request_id,
            agreement_id=request.agreement_id,
            purpose_id=request.purpose_id,
            recipient_party=requester.party_type,
            response_form=decision.obligations.response_form,
            items=tuple(allowed),
        )
        asked = {(a.element, a.bsn) for a in allowed}
        results = await adapter.fetch(provider.endpoint_url, fetch_request)
        # Source-side filtering is the adapter's job; the broker checks it again.
        return {(r.element, r.bsn): r for r in results if (r.element, r.bsn) in asked}

    def _records(
        self,
        *,
        principal: Principal,
        requester: AgencyView,
        provider: AgencyView,
        request: ExchangeRequest,
        request_id: str,
        exchange_id: str,
        decision: Decision,
        policy_input: PolicyInput,
        items: list[_Item],
        statuses: list[ItemStatus],
        now: Any,
    ) -> tuple[list[AuditRecord], list[Any]]:
        common = {
            "request_id": request_id,
            "trace_id": current_trace_id(),
            "exchange_id": exchange_id,
            "decision_id": decision.decision_id,
            "requester": requester.oin,
            "recipient_party": requester.party_type,
            "provider": provider.oin,
            "provider_party": provider.party_type,
            "purpose": request.purpose_id,
            "agreement": {
                "id": decision.agreement_id,
                "version": decision.agreement_version,
                "hash": decision.agreement_hash,
            },
            "bundle": decision.bundle_hash,
            "engine": decision.engine,
        }
        records: list[AuditRecord] = []
        released_items: list[dict[str, Any]] = []
        for item, decided, status in zip(items, decision.items, statuses, strict=True):
            body = dict(
                common,
                subject=item.key,
                subject_kind=item.kind.value,
                element=item.element,
                outcome=decided.outcome.value,
                reason=decided.reason.value,
                legal_basis=list(decided.legal_basis_ids),
                consent_id=decided.consent_id,
                acute_declaration_id=decided.acute_declaration_id,
            )
            records.append(
                AuditRecord(
                    kind="decision",
                    body=body,
                    exchange_id=exchange_id,
                    subject_key=item.key,
                    element=item.element,
                    outcome=decided.outcome.value,
                )
            )
            if decided.allowed:
                released_items.append(
                    {"subject": item.key, "element": item.element, "status": status.value}
                )
        if released_items:
            records.append(
                AuditRecord(
                    kind="release",
                    body=dict(
                        common,
                        items=released_items,
                        response_form=decision.obligations.response_form.value,
                    ),
                    exchange_id=exchange_id,
                )
            )
        allowed_count = sum(1 for d in decision.items if d.allowed)
        released_count = sum(1 for s in statuses if s is ItemStatus.RELEASED)
        rows = [
            (
                Exchange.__table__,
                {
                    "id": exchange_id,
                    "request_id": request_id,
                    "created_at": now,
                    "requester_oin": principal.oin,
                    "recipient_party": requester.party_type,
                    "provider_oin": provider.oin,
                    "provider_party": provider.party_type,
                    "agreement_id": request.agreement_id,
                    "agreement_version": decision.agreement_version,
                    "purpose_id": request.purpose_id,
                    "case_reference": request.case_reference,
                    "decision_id": decision.decision_id,
                    "item_count": len(items),
                    "allowed_count": allowed_count,
                    "released_count": released_count,
                },
            ),
            (
                DecisionRecord.__table__,
                {
                    "id": decision.decision_id,
                    "exchange_id": exchange_id,
                    "created_at": now,
                    "engine": decision.engine,
                    "bundle_hash": decision.bundle_hash,
                    "agreement_id": decision.agreement_id,
                    "agreement_version": decision.agreement_version,
                    "agreement_hash": decision.agreement_hash,
                    "input": policy_input.to_document(),
                    "result": {
                        "items": [
                            {
                                "element": d.element,
                                "subject": d.subject,
                                "reason": d.reason.value,
                                "legal_basis_ids": list(d.legal_basis_ids),
                                "consent_id": d.consent_id,
                                "acute_declaration_id": d.acute_declaration_id,
                            }
                            for d in decision.items
                        ],
                        "obligations": {
                            "response_form": decision.obligations.response_form.value,
                            "retention": decision.obligations.retention,
                        },
                    },
                },
            ),
        ]
        return records, rows

    def _explain(
        self,
        item: ItemDecision,
        *,
        agreement_id: str,
        purpose_id: str,
        recipient: str,
        provider: str,
        policy_input: PolicyInput,
    ) -> str:
        """``explain``, with texts that do not depend on the subject kept per
        policy set (most items of most requests share them)."""
        policy_set = self.policy_set
        facts = explanation_key(item, policy_input)
        key = None
        if facts is not None:
            if self._explained_for is not policy_set or len(self._explanations) > 20_000:
                self._explanations = {}
                self._explained_for = policy_set
            key = (agreement_id, purpose_id, recipient, provider, *facts)
            text = self._explanations.get(key)
            if text is not None:
                return text
        text = explain(
            item,
            agreement_id=agreement_id,
            purpose_id=purpose_id,
            recipient=recipient,
            provider=provider,
            policy_set=policy_set,
            policy_input=policy_input,
        )
        if key is not None:
            self._explanations[key] = text
        return text

    def _response(
        self,
        *,
        request: ExchangeRequest,
        request_id: str,
        exchange_id: str,
        decision: Decision,
        items: list[_Item],
        statuses: list[ItemStatus],
        indices: list[int],
        payload: str | None,
        receipt: str,
        requester: AgencyView,
        provider: AgencyView,
        policy_input: PolicyInput,
    ) -> ExchangeResponse:
        bases = self.policy_set.reference.legal_bases
        # Built from values the broker made itself: constructed, not re-validated.
        out = [
            ItemOut.model_construct(
                element=item.element,
                subject=item.bsn,
                subject_kind=item.kind.value,
                outcome=decided.outcome,
                reason=decided.reason,
                status=status,
                legal_basis=[
                    LegalBasisOut.model_construct(
                        id=b, citation=bases[b].citation if b in bases else b
                    )
                    for b in decided.legal_basis_ids
                ],
                consent_id=decided.consent_id,
                acute_declaration_id=decided.acute_declaration_id,
                explanation=self._explain(
                    decided,
                    agreement_id=request.agreement_id,
                    purpose_id=request.purpose_id,
                    recipient=requester.party_type,
                    provider=provider.party_type,
                    policy_input=policy_input,
                ),
            )
            for item, decided, status in zip(items, decision.items, statuses, strict=True)
        ]
        return ExchangeResponse.model_construct(
            exchange_id=exchange_id,
            decision_id=decision.decision_id,
            request_id=request_id,
            agreement=AgreementRef.model_construct(
                id=decision.agreement_id,
                version=decision.agreement_version,
                content_hash=decision.agreement_hash,
            ),
            purpose_id=request.purpose_id,
            policy_bundle=decision.bundle_hash,
            response_form=decision.obligations.response_form,
            retention=decision.obligations.retention,
            audit_indices=indices,
            items=out,
            payload=payload,
            receipt=receipt,
        )
