"""The exchange flow: decide per item, fetch only what is allowed, audit durably,
then release the data encrypted to the requester.

Fail closed: the policy engine, the register, the database or the audit log
failing raises a ServiceUnavailable and nothing is released.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import structlog

from audit.log import AuditRecord, AuditWriter
from broker.agencies.service import AgencyDirectory, AgencyView
from broker.core.clock import Clock, dutch_date, system_clock, to_ns
from broker.core.errors import ErrorCode, Forbidden, InvalidRequest, PolicyUnavailable
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
    PriorAnswerFact,
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
    LegOut,
    ProviderOut,
    ProviderRef,
)
from broker.exchange.subjects import subject_key
from broker.information_duties.recording import ReleaseDuties
from broker.policy.explain import explain, explanation_key
from broker.policy.loader import PolicySet
from broker.retention.vault import RetentionVault
from broker.security.tokens import Principal
from broker.transparency.receipts import ReceiptLeg, ReceiptSigner

log = structlog.get_logger("exchange")


class ConsentSource(Protocol):
    """The consent registry as the exchange reads it (broker.consent)."""

    async def facts_for(
        self, subject_keys: Iterable[str], agreement_id: str, purpose_id: str, at: datetime
    ) -> tuple[ConsentFact, ...]: ...

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
    ) -> tuple[PriorAnswerFact, ...]: ...


class DeclarationSource(Protocol):
    """Stored acute-danger declarations (broker.breakglass)."""

    async def fact(self, declaration_id: str) -> AcuteDeclarationFact | None: ...


def _consent_state(fact: ConsentFact) -> dict[str, Any]:
    """What a decision relied on: the consent record's state in the snapshot."""
    return {
        "given_at_ns": fact.given_at_ns,
        "withdrawn_at_ns": fact.withdrawn_at_ns,
        "wilsonbekwaam": fact.wilsonbekwaam,
    }


@dataclass(frozen=True, slots=True)
class _Item:
    """One decided pair, with what the broker needs to fetch and answer it."""

    element: str
    bsn: str
    kind: SubjectKind
    key: str


# Items decided per request over all providers (the single-provider maximum, 100 x 100).
MAX_FAN_OUT_ITEMS = 10_000

# The source recorded for a released value whose adapter named a party the broker does
# not know: the partner's text is never passed on or audited.
UNKNOWN_SOURCE = "unknown"


def original_source(got: FetchedItem, provider_party: str, parties: Collection[str]) -> str:
    """The party a released value originates at: the provider's own party when its
    adapter names no other (first-hand holder), the named party when the provider
    passes on what it lawfully received (secondary provision) and that party is a
    known one, else :data:`UNKNOWN_SOURCE`."""
    source = got.source
    if source is None or source == provider_party:
        return provider_party
    if isinstance(source, str) and source in parties:
        return source
    return UNKNOWN_SOURCE


@dataclass(slots=True)
class _Leg:
    """One provider's part of an exchange: its own decision, fetch, statuses and
    exchange record. A request naming one provider has one part, whose exchange id is
    the exchange's; a fan-out has one per provider, each with its own exchange id."""

    provider: AgencyView
    exchange_id: str
    items: list[_Item]
    policy_input: PolicyInput
    decision: Decision
    statuses: list[ItemStatus] = field(default_factory=list)
    # Per item, the party its released value originates at (None: nothing released).
    sources: list[str | None] = field(default_factory=list)
    released: list[dict[str, Any]] = field(default_factory=list)
    records: list[AuditRecord] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)


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
        duties: ReleaseDuties,
        receipts: ReceiptSigner,
        retention: RetentionVault,
        clock: Clock = system_clock,
        fetch_cap_seconds: float = 30.0,
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
        self._duties = duties
        self._receipts = receipts
        self._retention = retention
        self._clock = clock
        self._fetch_cap = fetch_cap_seconds
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
        providers = await self._resolve_providers(request)
        fan_out = request.providers is not None
        asked_of = self._asked_of(request)
        declaration = await self._declaration(request)

        bsns = list(dict.fromkeys(request.subjects))
        records = await self._register.lookup(bsns)
        consents, now = await self._consent_snapshot(request, bsns)
        today = dutch_date(now)

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
        prior_answers = await self._prior_answers(requester.oin, request, bsns, now)

        policy_input = PolicyInput(
            agreement=request.agreement_id,
            purpose=request.purpose_id,
            provider=providers[0].party_type,
            recipient=requester.party_type,
            request_time_ns=to_ns(now),
            request_date=today,
            context=request.context,
            subjects=tuple(subjects.values()),
            items=tuple(RequestedItem(element=i.element, subject=i.key) for i in items),
            consents=consents,
            acute_declaration=declaration,
            prior_answers=prior_answers,
        )
        parts = [
            items if only is None else [i for i in items if i.element in only] for only in asked_of
        ]
        if sum(len(part) for part in parts) > MAX_FAN_OUT_ITEMS:
            raise InvalidRequest(
                f"At most {MAX_FAN_OUT_ITEMS} items (elements x subjects x providers)",
                field="providers",
            )
        exchange_id = str(uuid.uuid4())
        # The provider is part of the decision: one policy input (and decision) per provider,
        # with the items asked of it; the subjects' facts stay those of the whole request.
        inputs = [
            replace(
                policy_input,
                provider=p.party_type,
                items=tuple(RequestedItem(element=i.element, subject=i.key) for i in part),
            )
            if part is not items
            else replace(policy_input, provider=p.party_type)
            for p, part in zip(providers, parts, strict=True)
        ]
        with decision_span(self._engine.name):
            decisions = await self._decide(inputs)
        legs = [
            _Leg(
                provider=p,
                exchange_id=str(uuid.uuid4()) if fan_out else exchange_id,
                items=part,
                policy_input=i,
                decision=d,
            )
            for p, part, i, d in zip(providers, parts, inputs, decisions, strict=True)
        ]
        decision = legs[0].decision  # agreement, bundle and obligations: one per request
        response_form = decision.obligations.response_form
        # Every provider at once, each within its adapter's own deadline.
        fetched = await asyncio.gather(
            *(
                self._fetch(
                    provider=leg.provider,
                    decision=leg.decision,
                    items=leg.items,
                    request=request,
                    exchange_id=leg.exchange_id,
                    request_id=request_id,
                    requester=requester,
                    request_date=leg.policy_input.request_date,
                )
                for leg in legs
            )
        )

        for leg, got_items in zip(legs, fetched, strict=True):
            self._settle(
                leg,
                got_items,
                response_form,
                fan_out=fan_out,
                parties=self.policy_set.reference.parties,
            )
            leg.records, leg.rows = self._records(
                principal=principal,
                requester=requester,
                provider=leg.provider,
                request=request,
                request_id=request_id,
                exchange_id=leg.exchange_id,
                decision=leg.decision,
                policy_input=leg.policy_input,
                items=leg.items,
                statuses=leg.statuses,
                sources=leg.sources,
                now=now,
                answers=self._answers(response_form, leg.released),
                fan_out_id=exchange_id if fan_out else None,
            )
            # Personal detail in the rows is sealed under the retention period's key.
            await self._retention.seal_rows(leg.rows, leg.decision.obligations.retention, now)
        indices = await self._commit(legs, request_id=request_id, requester=requester, now=now)
        # After the commit (it cites the leaf indices), before anything leaves.
        receipt = await self._receipt(
            exchange_id=exchange_id,
            request_id=request_id,
            requester=requester,
            purpose_id=request.purpose_id,
            legs=legs,
            indices=indices,
            fan_out=fan_out,
        )

        released = [r for leg in legs for r in leg.released]
        payload = None
        if released:
            payload = self._sealer.seal(
                requester.oin, encryption_key, {"exchange_id": exchange_id, "items": released}
            )
        log.info(
            "exchange.completed",
            exchange_id=exchange_id,
            decision_id=None if fan_out else decision.decision_id,
            agreement=request.agreement_id,
            purpose=request.purpose_id,
            providers=len(legs),
            items=sum(len(leg.items) for leg in legs),
            released=len(released),
        )
        return self._response(
            request=request,
            request_id=request_id,
            exchange_id=exchange_id,
            legs=legs,
            indices=indices,
            payload=payload,
            receipt=receipt,
            requester=requester,
            fan_out=fan_out,
        )

    @staticmethod
    def _settle(
        leg: _Leg,
        fetched: dict[tuple[str, str], FetchedItem],
        response_form: ResponseForm,
        *,
        fan_out: bool,
        parties: Collection[str],
    ) -> None:
        """The part's status per item and its released values (a fan-out names the
        provider with each value; every value but a yes/no answer names its original
        ``source``, which the response items and the audit entry always carry)."""
        boolean = response_form is ResponseForm.BOOLEAN_ONLY
        for item, decided in zip(leg.items, leg.decision.items, strict=True):
            if not decided.allowed:
                leg.statuses.append(ItemStatus.DENIED)
                leg.sources.append(None)
                continue
            got = fetched.get((item.element, item.bsn))
            status = got.status if got else ItemStatus.UNAVAILABLE
            leg.statuses.append(status)
            if got is None or status is not ItemStatus.RELEASED:
                leg.sources.append(None)
                continue
            source = original_source(got, leg.provider.party_type, parties)
            if source == UNKNOWN_SOURCE:
                # Logged without the adapter's text: it may hold anything.
                log.warning(
                    "exchange.unknown_source",
                    element=item.element,
                    provider=leg.provider.party_type,
                )
            leg.sources.append(source)
            out: dict[str, Any] = {"element": item.element, "subject": item.bsn}
            if fan_out:
                out["provider"] = {"party": leg.provider.party_type, "oin": leg.provider.oin}
            if not boolean:  # a yes/no answer stays {element, subject, value}
                out["source"] = source
            out["value"] = bool(got.value) if boolean else got.value
            leg.released.append(out)

    async def _receipt(
        self,
        *,
        exchange_id: str,
        request_id: str,
        requester: AgencyView,
        purpose_id: str,
        legs: list[_Leg],
        indices: list[int],
        fan_out: bool,
    ) -> str:
        """The signed receipt: version 1 for one provider, version 2 for several."""
        if not fan_out:
            leg = legs[0]
            return await self._receipts.issue_async(
                exchange_id=exchange_id,
                request_id=request_id,
                issued_at=self._clock(),
                requester_oin=requester.oin,
                requester_party=requester.party_type,
                provider_oin=leg.provider.oin,
                provider_party=leg.provider.party_type,
                purpose_id=purpose_id,
                decision=leg.decision,
                statuses=leg.statuses,
                leaf_indices=indices,
                sources=leg.sources,
            )
        return await self._receipts.issue_fan_out_async(
            exchange_id=exchange_id,
            request_id=request_id,
            issued_at=self._clock(),
            requester_oin=requester.oin,
            requester_party=requester.party_type,
            purpose_id=purpose_id,
            legs=[
                ReceiptLeg(
                    exchange_id=leg.exchange_id,
                    provider_oin=leg.provider.oin,
                    provider_party=leg.provider.party_type,
                    decision=leg.decision,
                    statuses=leg.statuses,
                    sources=leg.sources,
                )
                for leg in legs
            ],
            leaf_indices=indices,
        )

    async def _decide(self, inputs: list[PolicyInput]) -> list[Decision]:
        """One decision per provider, concurrently. Every part of a request must be
        decided by the same policy bundle: a reload between them is decided again once,
        and refused (nothing released) if the bundle keeps changing."""
        for _ in range(2):
            decisions = list(await asyncio.gather(*(self._engine.decide(i) for i in inputs)))
            if len({d.bundle_hash for d in decisions}) == 1:
                return decisions
        raise PolicyUnavailable("The policy changed while the request was decided; retry")

    async def _commit(
        self,
        legs: Sequence[_Leg],
        *,
        request_id: str,
        requester: AgencyView,
        now: datetime,
    ) -> list[int]:
        """Appends every part's records and rows with the AVG art. 14 information
        duties of the release, in ONE commit: no duty, no release. Returns the
        leaf indices of the exchange's own records."""
        records: list[AuditRecord] = []
        rows: list[Any] = []
        duty_records: list[AuditRecord] = []
        duty_rows: list[Any] = []
        for leg in legs:
            records += leg.records
            rows += leg.rows
            more_records, more_rows = self._duties.for_exchange(
                self.policy_set,
                exchange_id=leg.exchange_id,
                request_id=request_id,
                decision=leg.decision,
                policy_input=leg.policy_input,
                statuses=leg.statuses,
                recipient=(requester.oin, requester.party_type),
                provider=(leg.provider.oin, leg.provider.party_type),
                released_at=now,
            )
            duty_records += more_records
            duty_rows += more_rows
        indices = await self._audit.append(records + duty_records, rows + duty_rows)
        return indices[: len(records)]

    async def _consent_snapshot(
        self, request: ExchangeRequest, bsns: list[str]
    ) -> tuple[tuple[ConsentFact, ...], datetime]:
        """One consent snapshot for the whole request (one query), and the request
        time, taken AFTER the read: a withdrawal committed before the read has
        ``withdrawn_at`` <= the request time, so every item of the request denies
        with deny_consent_withdrawn; one committed after the read is seen by no
        item. Every item thus relies on the same state (the audit names it)."""
        elements = self.policy_set.reference.elements
        person_keys = (
            [self._pseudo.person(b) for b in bsns]
            if any(elements[e].subject_kind is SubjectKind.PERSON for e in request.elements)
            else []
        )
        consents = await self._consent_facts(request, person_keys, self._clock())
        return consents, self._clock()

    async def _consent_facts(
        self, request: ExchangeRequest, person_keys: Iterable[str], now: datetime
    ) -> tuple[ConsentFact, ...]:
        """One indexed query for every person subject's records of this agreement
        and purpose; the procedure picks, per item, the record that applies. A
        purpose on a statutory basis has no records (the registry refuses them)."""
        agreement = self.policy_set.current(request.agreement_id, dutch_date(now))
        purpose = agreement.purposes.get(request.purpose_id) if agreement else None
        if purpose is None or purpose.get("consent") == "not_required_with_basis":
            return ()
        return await self._consents.facts_for(
            person_keys, request.agreement_id, request.purpose_id, now
        )

    async def _prior_answers(
        self, requester_oin: str, request: ExchangeRequest, bsns: list[str], now: datetime
    ) -> tuple[PriorAnswerFact, ...]:
        """For a purpose with a ``prior_answer`` block (e.g. the kindcheck contact
        route): the latest boolean answer of the named purpose and element that
        the broker itself released to this agency about each subject within the
        window. A broker fact; nothing in the request context counts. A block the
        broker cannot read gives no facts, so the precondition fails closed."""
        agreement = self.policy_set.current(request.agreement_id, dutch_date(now))
        purpose = agreement.purposes.get(request.purpose_id) if agreement else None
        spec = purpose.get("prior_answer") if purpose else None
        if not isinstance(spec, dict):
            return ()
        try:
            window = timedelta(hours=float(spec["window_hours"]))
            prior_purpose, element = str(spec["purpose"]), str(spec["element"])
        except (KeyError, TypeError, ValueError):
            return ()
        return await self._consents.prior_answers(
            requester_oin=requester_oin,
            subject_keys=[self._pseudo.person(b) for b in bsns],
            agreement_id=request.agreement_id,
            purpose_id=prior_purpose,
            element=element,
            since=now - window,
            until=now,
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

    async def _resolve_providers(self, request: ExchangeRequest) -> list[AgencyView]:
        """The agencies asked: ``provider``, or each of ``providers`` (each once)."""
        if (request.provider is None) == (request.providers is None):
            raise InvalidRequest(
                "Give exactly one of provider or providers",
                field="provider" if request.provider is None else "providers",
            )
        if request.provider is not None:
            return [await self._resolve_ref(request.provider, "provider")]
        assert request.providers is not None  # checked above
        found: list[AgencyView] = []
        for i, ref in enumerate(request.providers):
            agency = await self._resolve_ref(ref, f"providers[{i}]")
            if any(a.oin == agency.oin for a in found):
                raise InvalidRequest("This provider is named twice", field=f"providers[{i}]")
            found.append(agency)
        return found

    @staticmethod
    def _asked_of(request: ExchangeRequest) -> list[frozenset[str] | None]:
        """Per provider, the elements asked of it (None: all). Each must be one of the
        request's elements, and every requested element is asked of some provider."""
        if request.providers is None:
            return [None]
        requested = set(request.elements)
        out: list[frozenset[str] | None] = []
        for i, ref in enumerate(request.providers):
            if ref.elements is None:
                out.append(None)
                continue
            for j, element in enumerate(ref.elements):
                if element not in requested:
                    raise InvalidRequest(
                        "Not one of the request's elements",
                        field=f"providers[{i}].elements[{j}]",
                    )
            out.append(frozenset(ref.elements))
        if None not in out:
            covered = frozenset().union(*(o for o in out if o is not None))
            for k, element in enumerate(request.elements):
                if element not in covered:
                    raise InvalidRequest("Asked of no provider", field=f"elements[{k}]")
        return out

    async def _resolve_ref(self, ref: ProviderRef, where: str) -> AgencyView:
        if ref.oin is not None:
            agency = await self._directory.get(ref.oin)
            if agency is None or not agency.active:
                raise InvalidRequest(
                    "No active agency with this OIN",
                    field=f"{where}.oin",
                    code=ErrorCode.UNKNOWN_PROVIDER,
                )
            return agency
        assert ref.party is not None  # guaranteed by ProviderRef
        candidates = await self._directory.providers_of(ref.party)
        if not candidates:
            raise InvalidRequest(
                "No active agency of this party type",
                field=f"{where}.party",
                code=ErrorCode.UNKNOWN_PROVIDER,
            )
        if len(candidates) > 1:
            raise InvalidRequest(
                "Several agencies of this party type; name one by OIN",
                field=f"{where}.party",
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
        return subject_key(self._pseudo, bsn, kind, record=record, today=today, subjects=subjects)

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
        request_date: date,
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
            request_date=request_date,
        )
        asked = {(a.element, a.bsn) for a in allowed}
        try:
            # Adapters keep their own deadline; the cap only guards against one that hangs.
            async with asyncio.timeout(self._fetch_cap):
                results = await adapter.fetch(provider.endpoint_url, fetch_request)
        except TimeoutError:
            log.warning("exchange.fetch_cap_reached", exchange_id=exchange_id, kind=adapter.kind)
            return {k: FetchedItem(k[0], k[1], ItemStatus.TIMEOUT) for k in asked}
        except Exception as exc:  # noqa: BLE001 - one provider's fault stays its own
            # An adapter must not raise; if one does, its items are unavailable (nothing of
            # it is released) and the other providers' items still answer. No traceback:
            # an exception's text may hold request data.
            log.error(  # noqa: TRY400
                "exchange.adapter_raised",
                exchange_id=exchange_id,
                kind=adapter.kind,
                error_type=type(exc).__name__,
            )
            return {}
        # Source-side filtering is the adapter's job; the broker checks it again.
        return {(r.element, r.bsn): r for r in results if (r.element, r.bsn) in asked}

    def _answers(
        self, response_form: ResponseForm, released: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The boolean answers released, by the person key of the BSN asked
        about: the broker's own record that a follow-up purpose's precondition
        reads back (``prior_answers``), sealed with the row's other personal
        detail (``RetentionVault.seal_rows``). Other response forms keep no values."""
        if response_form is not ResponseForm.BOOLEAN_ONLY:
            return []
        return [
            {
                "subject": self._pseudo.person(r["subject"]),
                "element": r["element"],
                "answer": bool(r["value"]),
            }
            for r in released
        ]

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
        sources: list[str | None] | None = None,
        answers: list[dict[str, Any]] | None = None,
        fan_out_id: str | None = None,
    ) -> tuple[list[AuditRecord], list[Any]]:
        """The audit records and rows of one provider's part. ``fan_out_id``: the id of
        the exchange that asked several providers, of which this part is one. Each
        released item of the ``release`` entry names its original ``source`` party
        (``sources``, per item): the provider's own party id when it holds the value
        first-hand."""
        per_item = sources if sources is not None else [None] * len(items)
        common: dict[str, Any] = {
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
        if fan_out_id is not None:
            common["fan_out_id"] = fan_out_id
        records: list[AuditRecord] = []
        released_items: list[dict[str, Any]] = []
        # The consent records as the request's one snapshot had them.
        consent_states = {c.id: _consent_state(c) for c in policy_input.consents}
        for item, decided, status, source in zip(
            items, decision.items, statuses, per_item, strict=True
        ):
            body = dict(
                common,
                subject=item.key,
                subject_kind=item.kind.value,
                element=item.element,
                outcome=decided.outcome.value,
                reason=decided.reason.value,
                legal_basis=list(decided.legal_basis_ids),
                consent_id=decided.consent_id,
                consent_state=consent_states.get(decided.consent_id)
                if decided.consent_id
                else None,
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
                released_item = {
                    "subject": item.key,
                    "element": item.element,
                    "status": status.value,
                }
                if source is not None:
                    released_item["source"] = source
                released_items.append(released_item)
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
                        "answers": answers or [],
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
        legs: list[_Leg],
        indices: list[int],
        payload: str | None,
        receipt: str,
        requester: AgencyView,
        fan_out: bool,
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
                    provider=leg.provider.party_type,
                    policy_input=leg.policy_input,
                ),
                provider=ProviderOut.model_construct(
                    party=leg.provider.party_type, oin=leg.provider.oin
                ),
                source=source,
            )
            for leg in legs
            for item, decided, status, source in zip(
                leg.items, leg.decision.items, leg.statuses, leg.sources, strict=True
            )
        ]
        decision = legs[0].decision
        return ExchangeResponse.model_construct(
            exchange_id=exchange_id,
            decision_id=None if fan_out else decision.decision_id,
            providers=[
                LegOut.model_construct(
                    party=leg.provider.party_type,
                    oin=leg.provider.oin,
                    exchange_id=leg.exchange_id,
                    decision_id=leg.decision.decision_id,
                )
                for leg in legs
            ],
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
