"""Plain-language explanations of item decisions (the same text the API, the
CLI and privacy officers see).

An explanation is a chain of reasons that follows the decision procedure of
``policies/lib/decision.rego``: one line per step that was reached, ending with
the step that decided. It names the clause (agreement title and version, purpose
id and description), the legal bases with their article citations (for allows),
the preconditions that failed, the consent rule (age band of the subject on the
request date, who had to consent and who did) and the acute-danger clause.

``explain`` works from the item decision alone; given the ``policy_input`` the
decision was made on, it also names the age band, the givers of the consent
record and the acute-danger declaration. Callers that want the same text must
pass the same arguments.

``explain_command`` (``broker policy explain``) decides one synthetic request
with the embedded engine and prints that same text.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import click

from broker.core.clock import DUTCH, dutch_date, to_ns
from broker.core.errors import BrokerError
from broker.core.types import (
    AcuteDeclarationFact,
    ConsentFact,
    ItemDecision,
    PolicyInput,
    ReasonCode,
    RequestedItem,
    SubjectFacts,
    SubjectKind,
)
from broker.policy.loader import Agreement, PolicySet, duration_seconds, load_policy_set
from broker.settings import PROJECT_ROOT

STEP_NAMES: dict[int, str] = {
    1: "agreement in force",
    2: "purpose known",
    3: "parties fit the purpose",
    4: "element allowed",
    5: "preconditions",
    6: "consent or legal basis",
    7: "shape of the answer",
}

_DECIDING_STEP: dict[ReasonCode, int] = {
    ReasonCode.DENY_AGREEMENT_NOT_IN_FORCE: 1,
    ReasonCode.DENY_UNKNOWN_PURPOSE: 2,
    ReasonCode.DENY_PURPOSE_MISMATCH: 3,
    ReasonCode.DENY_BREAK_GLASS_EXPIRED: 3,
    ReasonCode.DENY_ELEMENT_NOT_ALLOWED: 4,
    ReasonCode.DENY_PRECONDITION_FAILED: 5,
    ReasonCode.DENY_CONSENT_MISSING: 6,
    ReasonCode.DENY_CONSENT_INCOMPLETE: 6,
    ReasonCode.DENY_CONSENT_WITHDRAWN: 6,
    ReasonCode.ALLOW_STATUTORY_BASIS: 6,
    ReasonCode.ALLOW_CONSENT: 6,
    ReasonCode.ALLOW_BREAK_GLASS: 6,
}

# The statutory table of consent_rules.md section 2, as policies/lib/decision.rego applies
# it when an agreement has no consent_rule block of its own.
DEFAULT_CONSENT_RULE: dict[str, list[str]] = {
    "age_0_11": ["all_authority_holders"],
    "age_12_15": ["child", "all_authority_holders"],
    "age_16_17": ["child"],
    "age_18_plus": ["subject"],
}

AGE_BANDS: dict[str, str] = {
    "age_0_11": "under 12",
    "age_12_15": "12 to 15",
    "age_16_17": "16 or 17",
    "age_18_plus": "18 or older",
}

GIVER_NAMES: dict[str, str] = {
    "child": "the child",
    "subject": "the person themselves",
    "all_authority_holders": "every holder of parental authority",
    "any_authority_holder": "at least one holder of parental authority",
}

CONSENT_MODES: dict[str, str] = {
    "not_required_with_basis": "no consent needed, a statutory basis applies",
    "required": "consent required",
    "required_unless_acute_danger": "consent required, unless in acute danger",
}


def deciding_step(reason: ReasonCode) -> int:
    """The step of the decision procedure that gives ``reason``."""
    return _DECIDING_STEP[reason]


def age_band(age: int) -> str:
    """The consent-rule band for a completed age (as decision.rego computes it)."""
    if age < 12:
        return "age_0_11"
    if age < 16:
        return "age_12_15"
    if age < 18:
        return "age_16_17"
    return "age_18_plus"


def consent_rule_of(agreement: Agreement | None) -> tuple[dict[str, list[str]], bool]:
    """The consent rule the engine applies and whether the agreement states its own."""
    rule = agreement.source.get("consent_rule") if agreement else None
    if isinstance(rule, dict) and rule:
        return {str(k): [str(g) for g in (v or [])] for k, v in rule.items()}, True
    return dict(DEFAULT_CONSENT_RULE), False


def givers_text(kinds: Iterable[str]) -> str:
    """``["child", "all_authority_holders"]`` -> 'the child and every holder of ...'."""
    return _and([GIVER_NAMES.get(k, k) for k in kinds]) or "nobody (the band is empty)"


def consent_rule_text(rule: dict[str, list[str]]) -> str:
    return "; ".join(
        f"{AGE_BANDS.get(band, band)}: {givers_text(kinds)}" for band, kinds in rule.items()
    )


def format_ns(ns: int) -> str:
    """Nanoseconds since the epoch as Dutch local time, e.g. '2026-09-02 23:05 CEST'."""
    moment = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).astimezone(DUTCH)
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def format_duration(text: str) -> str:
    """'PT72H' -> '72 hours (PT72H)'; durations the loader cannot read stay as they are."""
    try:
        seconds = duration_seconds(text)
    except ValueError:
        return text
    if "T" not in text and seconds % 86_400 == 0 and seconds > 0:
        return f"{seconds // 86_400} days ({text})"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hours ({text})"
    return f"{seconds // 60} minutes ({text})"


def _and(parts: Sequence[str]) -> str:
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _list(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values) or "none"


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _holders(n: int) -> str:
    return f"{n} holder{'s' if n != 1 else ''} of parental authority"


def _of_holders(k: int, n: int) -> str:
    """k of the n holders of parental authority, in words."""
    if n == 1:
        return "the holder of parental authority"
    if k == n == 2:
        return "both holders of parental authority"
    if k == n:
        return f"all {n} holders of parental authority"
    return f"{k} of the {_holders(n)}"


@dataclass(frozen=True, slots=True)
class _Case:
    """Everything one explanation reads, looked up once."""

    item: ItemDecision
    agreement_id: str
    purpose_id: str
    recipient: str
    provider: str
    policy_set: PolicySet
    policy_input: PolicyInput | None
    agreement: Agreement | None
    purpose: dict[str, Any] | None

    @property
    def acute(self) -> dict[str, Any] | None:
        acute = self.purpose.get("acute_danger") if self.purpose else None
        return acute if isinstance(acute, dict) else None

    @property
    def consent_mode(self) -> str:
        return str(self.purpose.get("consent", "")) if self.purpose else ""

    @property
    def acute_only_recipient(self) -> bool:
        """The recipient is listed only in the acute-danger clause (acute mode)."""
        regular = self.purpose.get("recipients", []) if self.purpose else []
        extra = (self.acute or {}).get("additional_recipients", [])
        return self.recipient not in regular and self.recipient in extra

    @property
    def declaration(self) -> AcuteDeclarationFact | None:
        return self.policy_input.acute_declaration if self.policy_input else None

    @property
    def subject(self) -> SubjectFacts | None:
        if self.policy_input is None:
            return None
        return next((s for s in self.policy_input.subjects if s.key == self.item.subject), None)

    def consent(self, consent_id: str | None) -> ConsentFact | None:
        if self.policy_input is None or consent_id is None:
            return None
        return next((c for c in self.policy_input.consents if c.id == consent_id), None)

    def element_name(self, element: str | None = None) -> str:
        element = element or self.item.element
        found = self.policy_set.reference.elements.get(element)
        return f"{element} ({found.name_nl})" if found else element

    def clause(self) -> str:
        if self.agreement is None:
            return f"agreement {self.agreement_id}"
        source = self.agreement.source
        title = source.get("title_en") or source.get("title") or self.agreement_id
        return f"agreement {self.agreement_id} version {self.agreement.version} ('{title}')"

    def bases(self) -> str:
        ids = self.item.legal_basis_ids or tuple(
            (self.purpose or {}).get("legal_basis_ids", []) if self.item.allowed else ()
        )
        known = self.policy_set.reference.legal_bases
        return _list(f"{known[b].citation} [{b}]" if b in known else b for b in ids)

    def whitelist(self, acute: bool) -> list[str]:
        if acute:
            table = (self.acute or {}).get("allowed_elements", {})
        else:
            table = (self.purpose or {}).get("allowed_elements", {})
        return [str(e) for e in (table.get(self.recipient) or [])]


# ------------------------------------------------------------------- the steps
def _step1(case: _Case, *, passed: bool) -> str:
    agreement = case.agreement
    if agreement is None:
        return f"There is no agreement {case.agreement_id} in the policy set."
    source = agreement.source
    status = source.get("status")
    start, end = source.get("valid_from"), source.get("valid_until")
    period = f"valid from {start} to {end}"
    if passed:
        return f"{_upper(case.clause())} is active and {period}."
    if status != "active":
        return f"{_upper(case.clause())} has status '{status}', not 'active'."
    if not passed and not case.policy_set.is_enforced(agreement):
        return (
            f"{_upper(case.clause())} is not in force: not every signatory has signed "
            f"this version (content hash {agreement.content_hash})."
        )
    day = case.policy_input.request_date.isoformat() if case.policy_input else None
    if day is not None and start is not None and day < str(start):
        return f"{_upper(case.clause())} is {period}; the request date {day} is before it."
    if day is not None and end is not None and day > str(end):
        return f"{_upper(case.clause())} is {period}; the request date {day} is after it."
    return f"{_upper(case.clause())} is {period}; the request date is outside that period."


def _step2(case: _Case, *, passed: bool) -> str:
    if passed and case.purpose is not None:
        description = " ".join(str(case.purpose.get("description") or "").split())
        if not description:
            return f"Purpose {case.purpose_id} (no description)."
        return f"Purpose {case.purpose_id}: {description}" + (
            "" if description.endswith(".") else "."
        )
    purposes = _list(case.agreement.purposes) if case.agreement else "none"
    return (
        f"Agreement {case.agreement_id} has no purpose {case.purpose_id} "
        f"(its purposes: {purposes})."
    )


def _step3(case: _Case, *, passed: bool) -> str:
    purpose = case.purpose or {}
    providers = [str(p) for p in purpose.get("providers", [])]
    recipients = [str(r) for r in purpose.get("recipients", [])]
    acute = case.acute or {}
    if passed and case.acute_only_recipient:
        declaration = case.declaration
        named = f" {declaration.id}" if declaration else ""
        return (
            f"Under purpose {case.purpose_id} {case.provider} may provide; {case.recipient} is "
            "not a regular recipient but an additional recipient under the acute-danger clause, "
            f"and the acute-danger declaration{named} is valid, so the request is decided in "
            "acute mode."
        )
    if passed:
        return (
            f"Under purpose {case.purpose_id} {case.provider} may provide and {case.recipient} "
            "may receive."
        )
    if case.item.reason is ReasonCode.DENY_BREAK_GLASS_EXPIRED:
        return _expired(case, acute)
    reasons: list[str] = []
    if case.provider not in providers:
        reasons.append(
            f"{case.provider} is not a provider under purpose {case.purpose_id} "
            f"(providers: {_list(providers)})"
        )
    if case.recipient not in recipients and case.acute_only_recipient:
        reasons.append(
            f"{case.recipient} may receive under purpose {case.purpose_id} only during a valid "
            "acute-danger declaration by "
            f"{_list(acute.get('declarable_by', []))}, and this request has none that is valid"
        )
    elif case.recipient not in recipients:
        reasons.append(
            f"{case.recipient} is not a recipient under purpose {case.purpose_id} "
            f"(recipients: {_list(recipients)})"
        )
    if not reasons:
        reasons.append(
            f"{case.provider} and {case.recipient} do not fit purpose {case.purpose_id} "
            f"(providers: {_list(providers)}; recipients: {_list(recipients)})"
        )
    return "; ".join(reasons) + "."


def _expired(case: _Case, acute: dict[str, Any]) -> str:
    limit = str(acute.get("max_duration", ""))
    declaration = case.declaration
    text = (
        f"{case.recipient} is a recipient under purpose {case.purpose_id} only while an "
        f"acute-danger declaration is valid, for at most {format_duration(limit)}"
    )
    if declaration is None or case.policy_input is None:
        return text + "; the declaration this request names has expired."
    try:
        ends = declaration.declared_at_ns + duration_seconds(limit) * 1_000_000_000
    except ValueError:
        return text + f"; declaration {declaration.id} has expired."
    return (
        f"{text}; declaration {declaration.id} by {declaration.declared_by} was made at "
        f"{format_ns(declaration.declared_at_ns)} and expired at {format_ns(ends)}, before "
        f"the request at {format_ns(case.policy_input.request_time_ns)}."
    )


def _step4(case: _Case, *, passed: bool) -> str:
    acute = case.acute_only_recipient
    listing = (
        f"the acute-danger list of elements {case.recipient} may receive under purpose "
        f"{case.purpose_id}"
        if acute
        else f"the list of elements {case.recipient} may receive under purpose {case.purpose_id}"
    )
    if passed:
        return f"{case.element_name()} is on {listing}."
    allowed = case.whitelist(acute)
    text = (
        f"{case.element_name()} is not on {listing} "
        f"({len(allowed)} element{'s' if len(allowed) != 1 else ''}: {_list(allowed)})."
    )
    elsewhere = [
        pid
        for pid, p in (case.agreement.purposes.items() if case.agreement else ())
        if pid != case.purpose_id
        and case.item.element in (p.get("allowed_elements", {}).get(case.recipient) or [])
    ]
    if elsewhere:
        text += (
            f" It is on {case.recipient}'s list under purpose {_list(elsewhere)} of this "
            "agreement, which has its own conditions."
        )
    return text


def _step5(case: _Case, *, passed: bool) -> str:
    preconditions = [p for p in (case.purpose or {}).get("preconditions", []) if "id" in p]
    described = {str(p["id"]): str(p.get("description", p["id"])) for p in preconditions}
    if passed:
        if not described:
            return f"Purpose {case.purpose_id} has no preconditions."
        return (
            "Every precondition holds: "
            + "; ".join(f"{pid} ({text})" for pid, text in described.items())
            + "."
        )
    failed = case.item.failed_preconditions
    text = "Not met: " + "; ".join(f"{pid} ({described.get(pid, pid)})" for pid in failed) + "."
    held = [pid for pid in described if pid not in failed]
    if held:
        text += f" Met: {_list(held)}."
    return text + " Preconditions are checked once for the whole request."


# ------------------------------------------------------------ step 6: consent
def _consent_status(case: _Case, record: ConsentFact | None) -> str:
    """Age band, who had to consent and who did (as far as the input tells)."""
    rule, own = consent_rule_of(case.agreement)
    source = "the agreement's own consent rule" if own else "the statutory consent table"
    facts = case.subject
    if facts is None:
        return (
            f"Who must consent follows {source} for the subject's age on the request date "
            f"({consent_rule_text(rule)})."
        )
    day = case.policy_input.request_date.isoformat() if case.policy_input else "?"
    if facts.kind is SubjectKind.HOUSEHOLD or facts.age is None:
        what = "a household" if facts.kind is SubjectKind.HOUSEHOLD else "of unknown age"
        return (
            f"The subject is {what} on the request date ({day}), so no age band of {source} "
            "applies and consent can never be complete (fails closed)."
        )
    band = age_band(facts.age)
    represented = record is not None and record.wilsonbekwaam and facts.age < 18
    if represented:
        # consent_rules.md section 2 rule 5: represented as a child under 12.
        band = "age_0_11"
    kinds = rule.get(band, [])
    text = (
        f"On the request date ({day}) the subject is {facts.age} years old (age band "
        f"{AGE_BANDS[band]}); {source} requires consent from {givers_text(kinds)}"
    )
    if represented:
        text = (
            f"On the request date ({day}) the subject is {facts.age} years old and the "
            "record states that the subject is wilsonbekwaam, so the holders of authority "
            f"represent the subject as in age band {AGE_BANDS[band]}; {source} requires "
            f"consent from {givers_text(kinds)}"
        )
    holders = facts.authority_holders
    if any(k in ("all_authority_holders", "any_authority_holder") for k in kinds):
        text += f" ({_holders(len(holders))} on the request date)"
    text += "."
    if record is None:
        return text
    given = set(record.given_by)
    text += f" Record {record.id} was given by {_givers(facts, given)}."
    missing = [_missing(kind, facts, given) for kind in kinds]
    missing = [m for m in missing if m]
    if missing or not kinds:
        return text + f" Missing: {_and(missing) or 'the band lists nobody'}."
    return text + " That is everyone the rule requires."


def _givers(facts: SubjectFacts, given: set[str]) -> str:
    parts: list[str] = []
    if facts.key in given:
        adult = facts.age is not None and facts.age >= 18
        parts.append("the person themselves" if adult else "the child")
    holders = [h for h in facts.authority_holders if h in given]
    if holders:
        parts.append(_of_holders(len(holders), len(facts.authority_holders)))
    others = len(given - {facts.key} - set(facts.authority_holders))
    if others:
        parts.append(
            f"{others} person{'s' if others != 1 else ''} without parental authority "
            "(who cannot consent for the child)"
        )
    return _and(parts) or "nobody"


def _missing(kind: str, facts: SubjectFacts, given: set[str]) -> str:
    holders = facts.authority_holders
    absent = [h for h in holders if h not in given]
    if kind in ("child", "subject"):
        return "" if facts.key in given else GIVER_NAMES[kind]
    if kind == "all_authority_holders":
        if not holders:
            return "every holder of parental authority (none is known, so this cannot be met)"
        return _of_holders(len(absent), len(holders)) if absent else ""
    if kind == "any_authority_holder":
        if any(h in given for h in holders):
            return ""
        return "at least one holder of parental authority"
    return f"{kind} (a giver kind the engine does not know)"


def _acute_clause(acute: dict[str, Any], recipient: str) -> str:
    released = (acute.get("allowed_elements", {}) or {}).get(recipient) or []
    releases = (
        f"releases to {recipient} only {_list(released)}"
        if released
        else f"releases nothing to {recipient}"
    )
    return (
        f"declarable by {_list(acute.get('declarable_by', []))}; evidence required: "
        f"{acute.get('evidence_required', 'as the agreement states')}; valid for at most "
        f"{format_duration(str(acute.get('max_duration', '')))}; {releases}"
    )


def _acute_not_applied(case: _Case) -> str:
    """Why the acute-danger clause did not rescue a consent denial."""
    acute = case.acute
    if case.consent_mode != "required_unless_acute_danger" or acute is None:
        return ""
    if not case.whitelist(acute=True):
        return f" The acute-danger clause of this purpose releases nothing to {case.recipient}."
    reasons: list[str] = []
    declaration = case.declaration
    if case.policy_input is not None and declaration is None:
        reasons.append("the request names no acute-danger declaration")
    elif declaration is not None and case.item.subject not in declaration.subjects:
        reasons.append(f"declaration {declaration.id} does not list this subject")
    if case.item.element not in case.whitelist(acute=True):
        reasons.append(f"{case.item.element} is not on the acute-danger list for {case.recipient}")
    if not reasons:
        reasons.append("there is no valid acute-danger declaration for this request")
    return (
        f" The acute-danger clause ({_acute_clause(acute, case.recipient)}) does not apply: "
        + "; ".join(reasons)
        + "."
    )


def _step6(case: _Case) -> str:
    item = case.item
    mode = f"{case.consent_mode}, i.e. {CONSENT_MODES.get(case.consent_mode, 'unknown mode')}"
    record = case.consent(item.consent_id)
    match item.reason:
        case ReasonCode.ALLOW_STATUTORY_BASIS:
            return (
                f"Purpose {case.purpose_id} needs no consent (consent: {mode}); {case.provider} "
                f"may give {case.element_name()} to {case.recipient} on the basis of "
                f"{case.bases()}."
            )
        case ReasonCode.ALLOW_CONSENT:
            return (
                f"Purpose {case.purpose_id} needs consent (consent: {mode}). Consent record "
                f"{item.consent_id} covers {case.element_name()} for this subject, purpose and "
                f"recipient and was not withdrawn. {_consent_status(case, record)} Legal basis: "
                f"{case.bases()}."
            )
        case ReasonCode.ALLOW_BREAK_GLASS:
            return _break_glass(case, mode)
        case ReasonCode.DENY_CONSENT_MISSING:
            return (
                f"Purpose {case.purpose_id} needs consent (consent: {mode}), and no consent "
                f"record for this subject covers {case.element_name()} for this agreement, "
                f"purpose and recipient at the request time. {_consent_status(case, None)}"
                + _acute_not_applied(case)
            )
        case ReasonCode.DENY_CONSENT_INCOMPLETE:
            return (
                f"Purpose {case.purpose_id} needs consent (consent: {mode}). Consent record "
                f"{item.consent_id} is the most recent one covering this request, but it was not "
                f"given by everyone the consent rule requires. {_consent_status(case, record)}"
                + _acute_not_applied(case)
            )
        case ReasonCode.DENY_CONSENT_WITHDRAWN:
            when = (
                f" at {format_ns(record.withdrawn_at_ns)}"
                if record is not None and record.withdrawn_at_ns is not None
                else ""
            )
            return (
                f"Purpose {case.purpose_id} needs consent (consent: {mode}). Consent record "
                f"{item.consent_id} was withdrawn{when}, before this request; withdrawal by any "
                "one of the givers ends it, and flows on a statutory basis are not affected."
                + _acute_not_applied(case)
            )
    return item.reason.value  # pragma: no cover - steps 1-5 are handled by their own functions


def _break_glass(case: _Case, mode: str) -> str:
    acute = case.acute or {}
    declaration = case.declaration
    if declaration is not None and case.policy_input is not None:
        named = (
            f"Declaration {declaration.id} by {declaration.declared_by} made at "
            f"{format_ns(declaration.declared_at_ns)}"
        )
    else:
        named = f"Declaration {case.item.acute_declaration_id}"
    duties = [
        f"the provider is notified {acute['notify_provider']}"
        if "notify_provider" in acute
        else "",
        (
            "the privacy officer reviews within "
            f"{format_duration(str(acute['review_by_privacy_officer_within']))}"
            if "review_by_privacy_officer_within" in acute
            else ""
        ),
        (
            f"the data subject is informed {str(acute['inform_data_subject']).replace('_', ' ')}"
            if "inform_data_subject" in acute
            else ""
        ),
    ]
    duty_text = _and([d for d in duties if d])
    return (
        f"Purpose {case.purpose_id} needs consent (consent: {mode}) and no valid consent covers "
        f"this item, but the acute-danger clause applies ({_acute_clause(acute, case.recipient)}). "
        f"{named} is valid, lists this subject, and {case.element_name()} is on the acute-danger "
        f"list for {case.recipient}. Legal basis: {case.bases()}."
        + (f" Because of the declaration {duty_text}." if duty_text else "")
    )


def _step7(case: _Case) -> str:
    form = str((case.purpose or {}).get("response_form", "full"))
    if form == "boolean_only":
        return "Only a yes/no answer is returned (response form boolean_only)."
    return f"The value is returned in full (response form {form})."


_PASSED: dict[int, Callable[..., str]] = {1: _step1, 2: _step2, 3: _step3, 4: _step4, 5: _step5}


# Reasons whose explanation reads no subject facts, consent record or acute
# declaration (steps 1-5, and step 6 on a statutory basis).
_SUBJECT_FREE = frozenset(
    {
        ReasonCode.ALLOW_STATUTORY_BASIS,
        ReasonCode.DENY_AGREEMENT_NOT_IN_FORCE,
        ReasonCode.DENY_UNKNOWN_PURPOSE,
        ReasonCode.DENY_PURPOSE_MISMATCH,
        ReasonCode.DENY_ELEMENT_NOT_ALLOWED,
        ReasonCode.DENY_PRECONDITION_FAILED,
    }
)


def explanation_key(item: ItemDecision, policy_input: PolicyInput) -> tuple[Any, ...] | None:
    """Everything the text of ``explain`` for this item reads besides the policy
    set, agreement, purpose and parties — when that excludes the subject's own
    facts; ``None`` when the text depends on them (consent, acute danger). Items
    with equal keys get equal texts, so a caller may reuse them."""
    if (
        item.reason not in _SUBJECT_FREE
        or item.consent_id is not None
        or item.acute_declaration_id is not None
        or policy_input.acute_declaration is not None
    ):
        return None
    return (
        item.element,
        item.reason,
        item.legal_basis_ids,
        item.failed_preconditions,
        policy_input.request_date,
    )


def explain(
    item: ItemDecision,
    *,
    agreement_id: str,
    purpose_id: str,
    recipient: str,
    provider: str,
    policy_set: PolicySet,
    policy_input: PolicyInput | None = None,
) -> str:
    """The reasons for one item decision, one line per step of the procedure.

    ``policy_input`` (the input the decision was made on) adds the subject's age
    band, who gave the consent record and the acute-danger declaration, and picks
    the agreement version used on its request date (else: the latest version).
    """
    agreement = (
        policy_set.current(agreement_id, policy_input.request_date)
        if policy_input is not None
        else policy_set.agreements.get(agreement_id)
    )
    purpose = agreement.purposes.get(purpose_id) if agreement else None
    case = _Case(
        item=item,
        agreement_id=agreement_id,
        purpose_id=purpose_id,
        recipient=recipient,
        provider=provider,
        policy_set=policy_set,
        policy_input=policy_input,
        agreement=agreement,
        purpose=purpose,
    )
    step = deciding_step(item.reason)
    verdict = "Allowed" if item.allowed else "Denied"
    lines = [
        f"{verdict} ({item.reason.value}): {provider} -> {recipient}, {case.element_name()}; "
        f"decided at step {step} of the decision procedure ({STEP_NAMES[step]})."
    ]
    for n in range(1, step):
        lines.append(f"Step {n}, {STEP_NAMES[n]}: {_PASSED[n](case, passed=True)}")
    decided = _step6(case) if step == 6 else _PASSED[step](case, passed=False)
    lines.append(f"Step {step}, {STEP_NAMES[step]}: {decided}")
    if item.allowed:
        lines.append(f"Step 7, {STEP_NAMES[7]}: {_step7(case)}")
    return "\n".join(lines)


# --------------------------------------------------------------------- the CLI
def parse_value(text: str) -> Any:
    """A command-line value: JSON (true, false, null, numbers, "quoted", lists)
    when it parses as such, otherwise the text itself."""

    def _no_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "a.b", 1)`` sets ``d["a"]["b"] = 1``; raises ValueError on a clash."""
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"bad key {key!r}")
    node = target
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{'.'.join(parts[: i + 1])} is a value, not an object")
        node = child
    if isinstance(node.get(parts[-1]), dict):
        raise ValueError(f"{key} is an object; set its fields instead")
    node[parts[-1]] = value


def parse_context(pairs: Iterable[str]) -> dict[str, Any]:
    """``["vt_safety_assessment.acute_onveilig=true", "n=2"]`` ->
    ``{"vt_safety_assessment": {"acute_onveilig": True}, "n": 2}``."""
    context: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {pair!r}")
        set_dotted(context, key.strip(), parse_value(raw))
    return context


def _fields(text: str, lists: set[str]) -> dict[str, Any]:
    """'given_by=child,H1,given_at=2026-05-21' -> {'given_by': ['child', 'H1'], ...}:
    a comma-separated token without '=' continues the list of the field before it."""
    out: dict[str, Any] = {}
    last: str | None = None
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if sep:
            last = key.strip()
            if last in lists:
                out[last] = [v for v in value.replace("+", " ").split() if v]
            else:
                set_dotted(out, last, parse_value(value))
        elif last in lists:
            out[last].extend(token.replace("+", " ").split())
        else:
            raise ValueError(f"{token!r} is not key=value")
    return out


def parse_moment(text: str) -> datetime:
    """An ISO date or date-time; without an offset it is Dutch local time."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time(0), DUTCH)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an ISO date or date-time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=DUTCH)


SUBJECT_KEY = "S1"
_SUBJECT_ALIASES = {"child", "subject", "self", SUBJECT_KEY.lower()}


def _giver(token: str) -> str:
    return SUBJECT_KEY if token.lower() in _SUBJECT_ALIASES else token


def build_input(
    policy_set: PolicySet,
    *,
    agreement_id: str,
    purpose_id: str,
    recipient: str,
    elements: Sequence[str],
    provider: str | None = None,
    subject_age: int | None = None,
    authority_holders: int | None = None,
    consents: Sequence[str] = (),
    acute: str | None = None,
    context: dict[str, Any] | None = None,
    moment: datetime | None = None,
) -> PolicyInput:
    """The policy input of one synthetic request about one subject ``S1`` whose
    holders of parental authority are ``H1`` .. ``Hk``. Consent givers are written
    as ``child`` (or ``subject``/``self``), ``H1`` .., or any other name (someone
    without authority). Raises ValueError on unreadable options."""
    moment = moment or datetime.now(UTC)
    agreement = policy_set.current(agreement_id, dutch_date(moment))
    purpose = agreement.purposes.get(purpose_id) if agreement else None
    if provider is None:
        providers = (purpose or {}).get("providers") or []
        provider = str(providers[0]) if providers else "unknown"
    request_ns = to_ns(moment)
    if authority_holders is None:
        authority_holders = 2 if subject_age is not None and subject_age < 18 else 0
    known = policy_set.reference.elements
    kinds = {known[e].subject_kind for e in elements if e in known}
    kind = SubjectKind.HOUSEHOLD if kinds == {SubjectKind.HOUSEHOLD} else SubjectKind.PERSON
    subject = SubjectFacts(
        key=SUBJECT_KEY,
        kind=kind,
        age=subject_age if kind is SubjectKind.PERSON else None,
        authority_holders=tuple(f"H{i}" for i in range(1, authority_holders + 1))
        if kind is SubjectKind.PERSON
        else (),
    )
    return PolicyInput(
        agreement=agreement_id,
        purpose=purpose_id,
        provider=provider,
        recipient=recipient,
        request_time_ns=request_ns,
        request_date=dutch_date(moment),
        context=context or {},
        subjects=(subject,),
        items=tuple(RequestedItem(element=e, subject=SUBJECT_KEY) for e in elements),
        consents=tuple(
            _consent(text, i, agreement_id, purpose_id, request_ns)
            for i, text in enumerate(consents, start=1)
        ),
        acute_declaration=_declaration(acute, agreement_id, purpose_id, request_ns)
        if acute
        else None,
    )


def _consent(text: str, n: int, agreement_id: str, purpose_id: str, now_ns: int) -> ConsentFact:
    f = _fields(text, {"given_by", "elements", "recipients"})
    withdrawn = f.get("withdrawn_at")
    return ConsentFact(
        id=str(f.get("id", f"C{n}")),
        subject=_giver(str(f.get("subject", SUBJECT_KEY))),
        given_by=tuple(_giver(g) for g in f.get("given_by", [])),
        agreement=str(f.get("agreement", agreement_id)),
        purpose=str(f.get("purpose", purpose_id)),
        given_at_ns=to_ns(parse_moment(str(f["given_at"]))) if "given_at" in f else now_ns,
        withdrawn_at_ns=to_ns(parse_moment(str(withdrawn))) if withdrawn is not None else None,
        elements=tuple(f["elements"]) if "elements" in f else None,
        recipients=tuple(f["recipients"]) if "recipients" in f else None,
    )


def _declaration(
    text: str, agreement_id: str, purpose_id: str, now_ns: int
) -> AcuteDeclarationFact:
    f = _fields(text, {"subjects"})
    evidence = f.get("evidence", {})
    return AcuteDeclarationFact(
        id=str(f.get("id", "A1")),
        agreement=str(f.get("agreement", agreement_id)),
        purpose=str(f.get("purpose", purpose_id)),
        declared_by=str(f.get("declared_by", "")),
        declared_at_ns=to_ns(parse_moment(str(f["declared_at"]))) if "declared_at" in f else now_ns,
        subjects=tuple(_giver(s) for s in f.get("subjects", [SUBJECT_KEY])),
        evidence=evidence if isinstance(evidence, dict) else {},
    )


def version_moment(
    policy_set: PolicySet, agreement_id: str, version: str, moment: datetime | None
) -> datetime:
    """A request time at which ``version`` of the agreement is the one decided on:
    ``moment`` (default: now), or the first day of the version's window when now
    lies outside it. Raises ValueError for an unknown version or a ``moment``
    outside the window."""
    agreement = policy_set.version(agreement_id, version)
    if agreement is None:
        known = ", ".join(a.version for a in policy_set.versions.get(agreement_id, ())) or "none"
        raise ValueError(f"agreement {agreement_id} has no version {version} (versions: {known})")
    at = moment or datetime.now(UTC)
    if agreement.covers(dutch_date(at)):
        return at
    window = f"{agreement.valid_from}..{agreement.valid_until or ''}"
    if moment is not None:
        raise ValueError(
            f"the date {dutch_date(at)} is outside version {version}'s window {window}"
        )
    return datetime.combine(date.fromisoformat(agreement.valid_from), time(12), DUTCH)


def default_policy_dir() -> Path:
    """BROKER_POLICY_DIR (as the broker's settings read it), else the project's policies/."""
    configured = os.environ.get("BROKER_POLICY_DIR")
    return Path(configured) if configured else PROJECT_ROOT / "policies"


def load_policies(policy_dir: Path | None) -> PolicySet:
    """The policy set for a command, or a click error naming what is wrong."""
    try:
        return load_policy_set(policy_dir or default_policy_dir())
    except (BrokerError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot load the policy set: {exc}") from exc


def select_version(policy_set: PolicySet, agreement_id: str, version: str | None) -> Agreement:
    """The agreement version a policy tool works on: ``version``, else the one in
    force today, else the latest; a click error naming the option when unknown."""
    if agreement_id not in policy_set.versions:
        raise click.BadParameter(f"unknown agreement {agreement_id}", param_hint="--agreement")
    agreement = policy_set.select(agreement_id, version, dutch_date(datetime.now(UTC)))
    if agreement is None:
        known = ", ".join(a.version for a in policy_set.versions[agreement_id])
        raise click.BadParameter(
            f"agreement {agreement_id} has no version {version} (versions: {known})",
            param_hint="--version",
        )
    return agreement


version_option = click.option(
    "--version",
    "version",
    default=None,
    help="Agreement version (default: the one in force today, or the latest)",
)

policy_dir_option = click.option(
    "--policy-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Policy folder (default: BROKER_POLICY_DIR or ./policies of the project)",
)


@click.command("explain")
@click.option("--agreement", "agreement_id", required=True, help="Agreement id")
@click.option("--purpose", "purpose_id", required=True, help="Purpose id")
@click.option("--recipient", required=True, help="Receiving party id")
@click.option("--element", "elements", required=True, multiple=True, help="Element id (repeatable)")
@click.option("--provider", default=None, help="Providing party (default: purpose's first)")
@click.option("--subject-age", type=click.IntRange(min=0), default=None, help="Age on the date")
@click.option(
    "--authority-holders",
    type=click.IntRange(min=0),
    default=None,
    help="Holders of parental authority H1..Hk (default: 2 for a minor, else 0)",
)
@click.option(
    "--consent",
    "consents",
    multiple=True,
    help="A consent record: given_by=child,H1,given_at=DATE[,withdrawn_at=DATE][,id=..]"
    "[,elements=..][,recipients=..] (repeatable)",
)
@click.option(
    "--acute",
    default=None,
    help="An acute-danger declaration: declared_by=PARTY,declared_at=TIME"
    "[,evidence.KEY=VALUE ..][,id=..]",
)
@click.option(
    "--context",
    "context_pairs",
    multiple=True,
    help="Request context key=value; JSON values, dotted keys nest (repeatable)",
)
@click.option(
    "--date",
    "request_date",
    default=None,
    help="Request date YYYY-MM-DD (decided at 12:00 Dutch time; default: now, or with "
    "--version the first day of that version's window when today lies outside it)",
)
@click.option(
    "--version",
    "version",
    default=None,
    help="Agreement version (default: the one in force on the date, or the latest)",
)
@policy_dir_option
def explain_command(
    *,
    agreement_id: str,
    purpose_id: str,
    recipient: str,
    elements: tuple[str, ...],
    provider: str | None,
    subject_age: int | None,
    authority_holders: int | None,
    consents: tuple[str, ...],
    acute: str | None,
    context_pairs: tuple[str, ...],
    request_date: str | None,
    version: str | None,
    policy_dir: Path | None,
) -> None:
    """Decide one synthetic request and explain every item step by step."""
    from broker.policy.regopy_engine import RegopyEngine  # noqa: PLC0415 - compiles Rego

    policy_set = load_policies(policy_dir)
    try:
        moment = (
            datetime.combine(date.fromisoformat(request_date), time(12), DUTCH)
            if request_date
            else None
        )
        if version is not None:
            moment = version_moment(policy_set, agreement_id, version, moment)
        policy_input = build_input(
            policy_set,
            agreement_id=agreement_id,
            purpose_id=purpose_id,
            recipient=recipient,
            elements=elements,
            provider=provider,
            subject_age=subject_age,
            authority_holders=authority_holders,
            consents=consents,
            acute=acute,
            context=parse_context(context_pairs),
            moment=moment,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        engine = RegopyEngine(policy_set, threads=1)
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    try:
        decision = engine.decide_sync(policy_input)
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from exc
    finally:
        asyncio.run(engine.aclose())
    subject = policy_input.subjects[0]
    about = (
        "a household"
        if subject.kind is SubjectKind.HOUSEHOLD
        else f"age {subject.age if subject.age is not None else 'unknown'}, "
        f"{_holders(len(subject.authority_holders))}"
    )
    click.echo(
        f"Request: {policy_input.provider} -> {recipient}, agreement {agreement_id} "
        f"(version {decision.agreement_version or '-'}), purpose {purpose_id}, "
        f"date {policy_input.request_date.isoformat()}, subject {SUBJECT_KEY} ({about})"
    )
    click.echo(f"Policy bundle: {decision.bundle_hash}")
    for item in decision.items:
        click.echo("")
        click.echo(f"{item.element}: {item.outcome.value.upper()} ({item.reason.value})")
        click.echo(
            explain(
                item,
                agreement_id=agreement_id,
                purpose_id=purpose_id,
                recipient=recipient,
                provider=policy_input.provider,
                policy_set=policy_set,
                policy_input=policy_input,
            )
        )
