"""Recording AVG art. 14 information duties with a release.

When an exchange releases items under a purpose whose agreement declares an
``information_duty`` (see ``rules``), one duty per subject is committed in the
SAME audit unit as the exchange: a duty that cannot be recorded means nothing is
released. Subjects and addressees are pseudonym keys; a child under 16 is
represented by the holders of authority (UAVG art. 5).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import Table

from audit.log import AuditRecord
from broker.core.errors import PolicyInvalid
from broker.core.types import Decision, ItemStatus, PolicyInput, SubjectFacts, SubjectKind
from broker.information_duties.models import InformationDuty
from broker.information_duties.rules import RuleInvalid, add_period, duty_rule
from broker.policy.loader import PolicySet

log = structlog.get_logger("information_duties")

_DUTIES = cast(Table, InformationDuty.__table__)
REPRESENTED_UNDER = 16  # UAVG art. 5: the legal representative acts for a child under 16

Rows = list[tuple[Table, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ReleasedItem:
    """One item of an exchange that left the broker."""

    subject_key: str
    element: str
    reason: str  # allow_statutory_basis | allow_consent | allow_break_glass
    legal_basis_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Release:
    """What the exchange released, as far as the duties need it (no BSNs)."""

    exchange_id: str
    request_id: str
    agreement_id: str
    agreement_version: str | None
    purpose_id: str
    recipient_oin: str
    recipient_party: str
    provider_oin: str
    provider_party: str
    released_at: datetime
    items: tuple[ReleasedItem, ...]
    subjects: tuple[SubjectFacts, ...]


class ReleaseDuties(Protocol):
    """The information duties as the exchange records them (in its own commit)."""

    def for_exchange(
        self,
        policy_set: PolicySet,
        *,
        exchange_id: str,
        request_id: str,
        decision: Decision,
        policy_input: PolicyInput,
        statuses: Sequence[ItemStatus],
        recipient: tuple[str, str],
        provider: tuple[str, str],
        released_at: datetime,
    ) -> tuple[list[AuditRecord], Rows]: ...


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16].upper()}"


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


class DutyRecorder:
    """The duties of a release, as rows and audit records for the exchange's commit."""

    # ------------------------------------------------------------ recording
    def for_exchange(
        self,
        policy_set: PolicySet,
        *,
        exchange_id: str,
        request_id: str,
        decision: Decision,
        policy_input: PolicyInput,
        statuses: Sequence[ItemStatus],
        recipient: tuple[str, str],
        provider: tuple[str, str],
        released_at: datetime,
    ) -> tuple[list[AuditRecord], Rows]:
        """``for_release`` for an exchange: the items allowed AND released."""
        items = tuple(
            ReleasedItem(
                subject_key=d.subject,
                element=d.element,
                reason=d.reason.value,
                legal_basis_ids=tuple(d.legal_basis_ids),
            )
            for d, status in zip(decision.items, statuses, strict=True)
            if d.allowed and status is ItemStatus.RELEASED
        )
        return self.for_release(
            policy_set,
            Release(
                exchange_id=exchange_id,
                request_id=request_id,
                agreement_id=decision.agreement_id,
                agreement_version=decision.agreement_version,
                purpose_id=policy_input.purpose,
                recipient_oin=recipient[0],
                recipient_party=recipient[1],
                provider_oin=provider[0],
                provider_party=provider[1],
                released_at=released_at,
                items=items,
                subjects=policy_input.subjects,
            ),
        )

    def for_release(
        self, policy_set: PolicySet, release: Release
    ) -> tuple[list[AuditRecord], Rows]:
        """The audit records and rows of the duties ``release`` gives rise to, for
        the exchange's own commit. Raises (nothing is released) when the
        agreement's duty cannot be read."""
        if not release.items:
            return [], []
        agreement = (
            policy_set.version(release.agreement_id, release.agreement_version)
            if release.agreement_version is not None
            else None
        )
        purpose = agreement.purposes.get(release.purpose_id) if agreement else None
        if agreement is None or purpose is None:
            raise PolicyInvalid("The released agreement purpose cannot be found")
        try:
            rule = duty_rule(purpose)
        except RuleInvalid as exc:
            log.warning("information_duties.rule_invalid", agreement=release.agreement_id)
            raise PolicyInvalid("The agreement's information duty cannot be read") from exc
        if rule is None:
            return [], []
        by_subject: dict[str, list[ReleasedItem]] = {}
        for item in release.items:
            if item.reason in rule.on:
                by_subject.setdefault(item.subject_key, []).append(item)
        facts = {s.key: s for s in release.subjects}
        records: list[AuditRecord] = []
        rows: Rows = []
        due_at = add_period(release.released_at, rule.within)
        holder = (
            (release.recipient_oin, release.recipient_party)
            if rule.informed_by == "recipient"
            else (release.provider_oin, release.provider_party)
        )
        for subject_key, items in by_subject.items():
            subject = facts.get(subject_key)
            addressee_rule, addressees = self._addressees(subject_key, subject)
            row: dict[str, Any] = {
                "id": new_id("IDU"),
                "exchange_id": release.exchange_id,
                "agreement_id": release.agreement_id,
                "agreement_version": agreement.version,
                "purpose_id": release.purpose_id,
                "subject_key": subject_key,
                "subject_kind": subject.kind.value if subject else SubjectKind.PERSON.value,
                "addressee_rule": addressee_rule,
                "addressees": addressees,
                "elements": _unique(i.element for i in items),
                "legal_basis_ids": _unique(b for i in items for b in i.legal_basis_ids),
                "duty_basis_ids": list(rule.legal_basis_ids),
                "holder_oin": holder[0],
                "holder_party": holder[1],
                "recipient_oin": release.recipient_oin,
                "recipient_party": release.recipient_party,
                "provider_oin": release.provider_oin,
                "provider_party": release.provider_party,
                "released_at": release.released_at,
                "due_at": due_at,
                "status": "open",
                "embargo_id": None,
                "fulfilled_at": None,
                "informed_at": None,
                "fulfilled_by_oin": None,
                "fulfil_method": None,
                "evidence_ref": None,
            }
            rows.append((_DUTIES, row))
            # The exchange is named in the body ("exchange"): the entry's exchange_id
            # column (and body field) is for the exchange's own decision and release.
            records.append(
                AuditRecord(
                    kind="information_duty_recorded",
                    body={
                        "request_id": release.request_id,
                        "exchange": release.exchange_id,
                        "information_duty_id": row["id"],
                        "agreement": release.agreement_id,
                        "purpose": release.purpose_id,
                        "subject": subject_key,
                        "addressee_rule": addressee_rule,
                        "addressees": addressees,
                        "elements": row["elements"],
                        "duty_basis": row["duty_basis_ids"],
                        "holder": row["holder_oin"],
                        "due_at": due_at.isoformat(),
                    },
                    subject_key=subject_key,
                )
            )
        return records, rows

    @staticmethod
    def _addressees(key: str, subject: SubjectFacts | None) -> tuple[str, list[str]]:
        """Whom to inform: a household's members; a child under 16 through the
        holders of authority; anyone else (or of unknown age) in person."""
        if subject is not None and subject.kind is SubjectKind.HOUSEHOLD:
            return "household_members", []
        if subject is not None and subject.age is not None and subject.age < REPRESENTED_UNDER:
            return "authority_holders", list(subject.authority_holders)
        return "subject", [key]
