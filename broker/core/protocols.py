"""Collaborator protocols. One place (broker.app) wires implementations in.

Each protocol has a conformance test that every implementation passes
(tests/unit/test_conformance.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, runtime_checkable

from broker.core.types import Decision, ItemStatus, PolicyInput, ResponseForm, SubjectKind


@runtime_checkable
class PolicyEngine(Protocol):
    """Decides per item (element x subject). Raises PolicyUnavailable, never guesses."""

    name: str

    @property
    def bundle_hash(self) -> str:
        """Content hash of the compiled policy bundle currently in use."""
        ...

    async def decide(self, policy_input: PolicyInput) -> Decision: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FetchItem:
    """One allowed item to fetch from a provider: only what the decision allowed."""

    element: str
    bsn: str
    subject_kind: SubjectKind


@dataclass(frozen=True, slots=True)
class FetchRequest:
    exchange_id: str
    request_id: str
    agreement_id: str
    purpose_id: str
    recipient_party: str
    response_form: ResponseForm
    items: tuple[FetchItem, ...]
    context: dict[str, Any] = field(default_factory=dict)
    # The request's calendar date in the Netherlands, the date the decision was
    # taken on: periods a source looks back over count from it (None: the
    # adapter's own today).
    request_date: date | None = None


@dataclass(frozen=True, slots=True)
class FetchedItem:
    element: str
    bsn: str
    status: ItemStatus
    value: Any = None
    source: str | None = None


@runtime_checkable
class PartnerAdapter(Protocol):
    """Reaches one provider's system. Returns a per-item status; never raises for
    a provider fault (those become ``unavailable``/``timeout`` items)."""

    kind: str

    async def fetch(self, endpoint: str, request: FetchRequest) -> list[FetchedItem]: ...

    def health(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: circuit ``state``, ``calls``, ``failures``, ``timeouts`` and
        ``p50_ms``/``p95_ms``/``p99_ms`` over recent calls. Never personal data."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """What the population register says about one person on the request date."""

    bsn: str
    birth_date: date | None
    household_id: str | None
    authority_holder_bsns: tuple[str, ...] = ()


@runtime_checkable
class SubjectRegister(Protocol):
    """Looks persons up by BSN (one batched call, never a bulk download).

    Raises RegisterUnavailable when the register cannot answer."""

    async def lookup(self, bsns: Sequence[str]) -> dict[str, PersonRecord]: ...

    async def aclose(self) -> None: ...
