"""Property tests of the decision procedure over generated requests (real regopy engine).

Requests are generated from the real agreements (purposes, parties, whitelists),
the scenario registry (persons with birth dates and authority holders), random
request contexts, consent records and acute declarations, and the answers are
checked against invariants of the normative procedure in scenarios.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.core.types import (
    AcuteDeclarationFact,
    ConsentFact,
    Decision,
    PolicyInput,
    ReasonCode,
    RequestedItem,
)
from broker.policy.loader import PolicySet, load_policy_set, with_agreement
from broker.policy.regopy_engine import RegopyEngine
from tests.scenarios.scenario_data import AMSTERDAM, POLICY_ROOT, load_scenarios, to_ns

POLICY_SET = load_policy_set(POLICY_ROOT)
REGISTRY = load_scenarios().registry
AGREEMENT_IDS = sorted(POLICY_SET.agreements)
PARTIES = sorted(POLICY_SET.reference.parties)
ELEMENTS = sorted(POLICY_SET.reference.elements)
PERSONS = sorted(REGISTRY.persons)
SUBJECT_KEYS = PERSONS + sorted(REGISTRY.households)
CONSENT_PURPOSES = sorted(
    (aid, pid)
    for aid, a in POLICY_SET.agreements.items()
    for pid, p in a.purposes.items()
    if p.get("consent") != "not_required_with_basis"
)
HOUR_NS = 3_600 * 1_000_000_000
DAY_NS = 24 * HOUR_NS

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CONSENT_REASONS = {
    ReasonCode.ALLOW_CONSENT,
    ReasonCode.DENY_CONSENT_MISSING,
    ReasonCode.DENY_CONSENT_INCOMPLETE,
    ReasonCode.DENY_CONSENT_WITHDRAWN,
}


@pytest.fixture(scope="module")
def engine() -> Iterator[RegopyEngine]:
    eng = RegopyEngine(POLICY_SET)
    yield eng
    asyncio.run(eng.aclose())


def _with_status(policy_set: PolicySet, status: str) -> PolicySet:
    versions = {
        aid: tuple(dataclasses.replace(a, source={**a.source, "status": status}) for a in vs)
        for aid, vs in policy_set.versions.items()
    }
    return policy_set.with_versions(versions)


@pytest.fixture(scope="module")
def suspended_engine() -> Iterator[RegopyEngine]:
    """The same agreements, every one with ``status: suspended``."""
    eng = RegopyEngine(_with_status(POLICY_SET, "suspended"))
    yield eng
    asyncio.run(eng.aclose())


# ------------------------------------------------------------------ helpers
def _purpose(policy_input: PolicyInput) -> dict[str, Any]:
    agreement = POLICY_SET.agreements.get(policy_input.agreement)
    return agreement.purposes.get(policy_input.purpose, {}) if agreement else {}


def _acute(purpose: dict[str, Any]) -> dict[str, Any]:
    return purpose.get("acute_danger") or {}


def _validity(agreement_id: str) -> tuple[date, date]:
    src = POLICY_SET.agreements[agreement_id].source
    return date.fromisoformat(src["valid_from"]), date.fromisoformat(src["valid_until"])


def _mostly(preferred: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """``preferred`` four times out of five, else ``other``."""
    return st.integers(min_value=0, max_value=4).flatmap(lambda n: preferred if n else other)


def _prefer(preferred: list[str], fallback: list[str]) -> st.SearchStrategy[str]:
    """Mostly a value from ``preferred`` (so requests get past the early steps)."""
    if not preferred:
        return st.sampled_from(fallback)
    return _mostly(st.sampled_from(sorted(set(preferred))), st.sampled_from(fallback))


def _request_ns(day: date, at: time) -> int:
    return to_ns(datetime.combine(day, at, tzinfo=AMSTERDAM))


# ------------------------------------------------------------------ strategies
# A context in which every precondition of every purpose holds.
SATISFYING_CONTEXT: dict[str, Any] = {
    "police_incident_id": "PL-LB-2026-0001",
    "vt_case_status": "onderzoek",
    "vt_case_origin": "politie",
    "vt_safety_assessment": {"acute_onveilig": True, "structureel_onveilig": True},
    "vt_investigation_conclusion": "bevestigd",
    "raad_investigation_status": "lopend",
    "raad_case_origin": "veilig_thuis",
    "kindcheck_decision": "meldcode_stappen_volgen",
    "minor_children_count": 1,
    "requester_role": "behandelaar",
    "prior_kindcheck_answer": True,
    "prior_kindcheck_age_hours": 1.0,
    "mda_case_id": "MDA-LB-2026-015",
    "mda_case_status": "actief",
}

RANDOM_CONTEXT = st.fixed_dictionaries(
    {},
    optional={
        "police_incident_id": st.sampled_from([None, "PL-LB-2026-0001"]),
        "vt_case_status": st.sampled_from(
            ["veiligheidsbeoordeling", "onderzoek", "monitoring", "afgesloten"]
        ),
        "vt_case_origin": st.sampled_from(["politie", "school", "huisarts"]),
        "vt_safety_assessment": st.fixed_dictionaries(
            {"acute_onveilig": st.booleans(), "structureel_onveilig": st.booleans()}
        ),
        "vt_investigation_conclusion": st.sampled_from(["bevestigd", "niet_bevestigd"]),
        "raad_investigation_status": st.sampled_from(["lopend", "afgerond"]),
        "raad_case_origin": st.sampled_from(["veilig_thuis", "rechtbank"]),
        "kindcheck_decision": st.sampled_from(["meldcode_stappen_volgen", "afgesloten_geen_zorg"]),
        "minor_children_count": st.integers(min_value=0, max_value=3),
        "requester_role": st.sampled_from(["behandelaar", "aandachtsfunctionaris", "secretariaat"]),
        "prior_kindcheck_answer": st.booleans(),
        "prior_kindcheck_age_hours": st.floats(min_value=0, max_value=48, allow_nan=False),
        "mda_case_id": st.sampled_from([None, "MDA-LB-2026-015"]),
        "mda_case_status": st.sampled_from(["actief", "afgesloten"]),
    },
)

CONTEXT = _mostly(st.just(SATISFYING_CONTEXT), RANDOM_CONTEXT)

EVIDENCE = st.sampled_from(
    [
        {"vt_safety_assessment": {"acute_onveilig": True}},
        {"vt_safety_assessment": {"acute_onveilig": False}},
        {"police_incident_threat_to_life_within_24h": True},
        {},
    ]
)


@st.composite
def consents(
    draw: st.DrawFn, policy_input: PolicyInput, *, index: int, withdrawn_before_request: bool
) -> ConsentFact:
    subject = draw(_prefer([i.subject for i in policy_input.items], PERSONS))
    facts = next((s for s in policy_input.subjects if s.key == subject), None)
    likely_givers = [subject, *(facts.authority_holders if facts else ())]
    given_by = draw(
        _mostly(st.just(likely_givers), st.lists(_prefer(likely_givers, PERSONS), max_size=4))
    )
    t = policy_input.request_time_ns
    given_at = t + draw(st.integers(min_value=-400 * DAY_NS, max_value=5 * DAY_NS))
    if withdrawn_before_request:
        withdrawn_at: int | None = draw(st.integers(min_value=min(given_at, t), max_value=t))
    else:
        withdrawn_at = draw(
            _mostly(
                st.none(),
                st.integers(min_value=given_at, max_value=given_at + 400 * DAY_NS),
            )
        )
    elements = draw(
        _mostly(
            st.none(),
            st.lists(_prefer([i.element for i in policy_input.items], ELEMENTS), max_size=3),
        )
    )
    recipients = draw(
        _mostly(st.none(), st.lists(_prefer([policy_input.recipient], PARTIES), max_size=2))
    )
    agreement_ids = [policy_input.agreement]
    return ConsentFact(
        id=f"CNS-{index:03d}",
        subject=subject,
        given_by=tuple(given_by),
        agreement=draw(_prefer(agreement_ids, AGREEMENT_IDS)),
        purpose=draw(_prefer([policy_input.purpose], ["zorginformatie_casusoverleg"])),
        given_at_ns=given_at,
        withdrawn_at_ns=withdrawn_at,
        elements=tuple(elements) if elements is not None else None,
        recipients=tuple(recipients) if recipients is not None else None,
    )


@st.composite
def declarations(draw: st.DrawFn, policy_input: PolicyInput) -> AcuteDeclarationFact:
    acute = _acute(_purpose(policy_input))
    return AcuteDeclarationFact(
        id="ACU-" + str(draw(st.integers(min_value=100, max_value=999))),
        agreement=draw(_prefer([policy_input.agreement], AGREEMENT_IDS)),
        purpose=draw(_prefer([policy_input.purpose], ["zorginformatie_casusoverleg"])),
        declared_by=draw(_prefer(list(acute.get("declarable_by", [])), PARTIES)),
        declared_at_ns=policy_input.request_time_ns
        - draw(st.integers(min_value=-5 * HOUR_NS, max_value=100 * HOUR_NS)),
        subjects=tuple(
            draw(
                st.lists(
                    _prefer([i.subject for i in policy_input.items], PERSONS),
                    max_size=3,
                    unique=True,
                )
            )
        ),
        evidence=draw(EVIDENCE),
    )


@st.composite
def policy_inputs(
    draw: st.DrawFn, *, out_of_force: bool = False, consent_based: bool = False
) -> PolicyInput:
    """A request; ``consent_based`` keeps to purposes whose consent mode is not statutory."""
    if consent_based:
        agreement_id, purpose_id = draw(st.sampled_from(CONSENT_PURPOSES))
    else:
        agreement_id = draw(st.sampled_from(AGREEMENT_IDS))
        purpose_id = draw(
            _mostly(
                st.sampled_from(sorted(POLICY_SET.agreements[agreement_id].purposes)),
                st.just("no_such_purpose"),
            )
        )
    agreement = POLICY_SET.agreements[agreement_id]
    purpose = agreement.purposes.get(purpose_id, {})
    acute = _acute(purpose)
    provider = draw(_prefer(list(purpose.get("providers", [])), PARTIES))
    recipient = draw(
        _prefer([*purpose.get("recipients", []), *acute.get("additional_recipients", [])], PARTIES)
    )
    whitelist = [
        *purpose.get("allowed_elements", {}).get(recipient, []),
        *acute.get("allowed_elements", {}).get(recipient, []),
    ]
    valid_from, valid_until = _validity(agreement_id)
    if out_of_force:
        dates = st.one_of(
            st.dates(min_value=date(2000, 1, 1), max_value=valid_from - timedelta(days=1)),
            st.dates(min_value=valid_until + timedelta(days=1), max_value=date(2100, 12, 31)),
        )
    else:
        dates = _mostly(
            st.dates(min_value=valid_from, max_value=valid_until),
            st.dates(
                min_value=valid_from - timedelta(days=60),
                max_value=valid_until + timedelta(days=60),
            ),
        )
    day = draw(dates)
    request_time_ns = _request_ns(day, draw(st.times()))
    items = draw(
        st.lists(
            st.builds(
                RequestedItem,
                element=_prefer(whitelist, ELEMENTS),
                subject=st.sampled_from(SUBJECT_KEYS),
            ),
            min_size=1,
            max_size=5,
        )
    )
    subject_keys = list(dict.fromkeys(i.subject for i in items))
    base = PolicyInput(
        agreement=agreement_id,
        purpose=purpose_id,
        provider=provider,
        recipient=recipient,
        request_time_ns=request_time_ns,
        request_date=day,
        context=draw(CONTEXT),
        subjects=tuple(REGISTRY.subject(k, day) for k in subject_keys),
        items=tuple(items),
    )
    n_consents = draw(st.integers(min_value=1 if consent_based else 0, max_value=5))
    records = tuple(
        draw(consents(base, index=i, withdrawn_before_request=False)) for i in range(n_consents)
    )
    if consent_based:
        declaration = draw(_mostly(declarations(base), st.none()))
    else:
        declaration = draw(st.one_of(st.none(), declarations(base)))
    return dataclasses.replace(base, consents=records, acute_declaration=declaration)


CONSENT_OR_ANY = _mostly(policy_inputs(consent_based=True), policy_inputs())


# ------------------------------------------------------------------ properties
def _pairs(decision: Decision) -> list[tuple[str, str]]:
    return [(i.element, i.subject) for i in decision.items]


@SETTINGS
@given(policy_input=policy_inputs())
def test_every_item_gets_exactly_one_decision_in_order(
    engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    decision = engine.decide_sync(policy_input)
    assert _pairs(decision) == [(i.element, i.subject) for i in policy_input.items]
    assert decision.agreement_id == policy_input.agreement
    assert engine.decide_sync(policy_input).items == decision.items  # deterministic


@SETTINGS
@given(policy_input=policy_inputs())
def test_allowed_items_are_whitelisted_for_the_recipient(
    engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    decision = engine.decide_sync(policy_input)
    purpose = _purpose(policy_input)
    acute = _acute(purpose)
    if policy_input.recipient in purpose.get("recipients", []):
        whitelist = purpose.get("allowed_elements", {}).get(policy_input.recipient, [])
    else:
        whitelist = acute.get("allowed_elements", {}).get(policy_input.recipient, [])
    for item in decision.allowed_items():
        assert item.element in whitelist, item
        assert policy_input.provider in purpose["providers"]


@SETTINGS
@given(policy_input=policy_inputs(out_of_force=True))
def test_request_date_outside_validity_denies_everything(
    engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    decision = engine.decide_sync(policy_input)
    assert decision.allowed_items() == ()
    assert {i.reason for i in decision.items} == {ReasonCode.DENY_AGREEMENT_NOT_IN_FORCE}


@SETTINGS
@given(policy_input=policy_inputs())
def test_agreement_not_active_denies_everything(
    suspended_engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    decision = suspended_engine.decide_sync(policy_input)
    assert {i.reason for i in decision.items} == {ReasonCode.DENY_AGREEMENT_NOT_IN_FORCE}


@SETTINGS
@given(policy_input=policy_inputs())
def test_unknown_agreement_is_not_in_force(engine: RegopyEngine, policy_input: PolicyInput) -> None:
    decision = engine.decide_sync(dataclasses.replace(policy_input, agreement="agr-unknown"))
    assert {i.reason for i in decision.items} == {ReasonCode.DENY_AGREEMENT_NOT_IN_FORCE}


@SETTINGS
@given(policy_input=policy_inputs())
def test_legal_bases_only_on_allow(engine: RegopyEngine, policy_input: PolicyInput) -> None:
    decision = engine.decide_sync(policy_input)
    for item in decision.items:
        if item.allowed:
            assert item.legal_basis_ids
            assert list(item.legal_basis_ids) == _purpose(policy_input)["legal_basis_ids"]
        else:
            assert item.legal_basis_ids == ()


@SETTINGS
@given(policy_input=CONSENT_OR_ANY)
def test_reason_fits_the_purposes_consent_mode(
    engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    decision = engine.decide_sync(policy_input)
    mode = _purpose(policy_input).get("consent")
    for item in decision.items:
        if item.reason is ReasonCode.ALLOW_STATUTORY_BASIS:
            assert mode == "not_required_with_basis"
        if item.reason in CONSENT_REASONS:
            assert mode in {"required", "required_unless_acute_danger"}
        if item.reason is ReasonCode.ALLOW_BREAK_GLASS:
            assert mode == "required_unless_acute_danger"


@SETTINGS
@given(policy_input=CONSENT_OR_ANY)
def test_consent_allow_rests_on_a_live_covering_record(
    engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    decision = engine.decide_sync(policy_input)
    t = policy_input.request_time_ns
    by_id = {c.id: c for c in policy_input.consents}
    for item in decision.items:
        if item.reason is not ReasonCode.ALLOW_CONSENT:
            continue
        record = by_id[item.consent_id or ""]
        assert record.subject == item.subject
        assert (record.agreement, record.purpose) == (policy_input.agreement, policy_input.purpose)
        assert record.given_at_ns <= t
        assert record.withdrawn_at_ns is None or record.withdrawn_at_ns > t
        assert record.elements is None or item.element in record.elements
        assert record.recipients is None or policy_input.recipient in record.recipients
        assert item.subject in record.given_by or any(
            s.key == item.subject and s.age is not None and s.age < 12
            for s in policy_input.subjects
        )


@SETTINGS
@given(policy_input=CONSENT_OR_ANY)
def test_break_glass_needs_a_valid_declaration_for_the_subject(
    engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    decision = engine.decide_sync(policy_input)
    acute = _acute(_purpose(policy_input))
    declaration = policy_input.acute_declaration
    for item in decision.items:
        if item.reason is not ReasonCode.ALLOW_BREAK_GLASS:
            assert item.acute_declaration_id is None
            continue
        assert declaration is not None
        assert item.acute_declaration_id == declaration.id
        assert item.consent_id is None
        assert declaration.declared_by in acute["declarable_by"]
        assert item.subject in declaration.subjects
        assert item.element in acute["allowed_elements"][policy_input.recipient]
        t = policy_input.request_time_ns
        assert declaration.declared_at_ns <= t < declaration.declared_at_ns + 72 * HOUR_NS


@SETTINGS
@given(policy_input=policy_inputs())
def test_preconditions_hold_for_the_request_as_a_whole(
    engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    decision = engine.decide_sync(policy_input)
    failed = [i for i in decision.items if i.reason is ReasonCode.DENY_PRECONDITION_FAILED]
    if failed:
        assert decision.allowed_items() == ()
        assert len({i.failed_preconditions for i in failed}) == 1
        assert all(i.failed_preconditions for i in failed)
    for item in decision.items:
        if item.reason is not ReasonCode.DENY_PRECONDITION_FAILED:
            assert item.failed_preconditions == ()


@SETTINGS
@given(data=st.data(), policy_input=CONSENT_OR_ANY)
def test_adding_a_withdrawn_consent_never_turns_deny_into_allow(
    engine: RegopyEngine, data: st.DataObject, policy_input: PolicyInput
) -> None:
    extra = data.draw(
        consents(policy_input, index=len(policy_input.consents), withdrawn_before_request=True)
    )
    assert extra.withdrawn_at_ns is not None
    assert extra.withdrawn_at_ns <= policy_input.request_time_ns
    before = engine.decide_sync(policy_input)
    after = engine.decide_sync(
        dataclasses.replace(policy_input, consents=(*policy_input.consents, extra))
    )
    for old, new in zip(before.items, after.items, strict=True):
        if not old.allowed:
            assert not new.allowed, (old, new)


@SETTINGS
@given(policy_input=CONSENT_OR_ANY)
def test_withdrawing_every_consent_removes_consent_allows(
    engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    t = policy_input.request_time_ns
    withdrawn = tuple(
        dataclasses.replace(c, withdrawn_at_ns=max(c.given_at_ns, t - HOUR_NS))
        if c.given_at_ns <= t
        else c
        for c in policy_input.consents
    )
    decision = engine.decide_sync(dataclasses.replace(policy_input, consents=withdrawn))
    assert ReasonCode.ALLOW_CONSENT not in {i.reason for i in decision.items}


@SETTINGS
@given(policy_input=policy_inputs(consent_based=True))
def test_consent_records_given_at_the_same_instant_still_decide(
    engine: RegopyEngine, policy_input: PolicyInput
) -> None:
    twins = tuple(
        dataclasses.replace(c, id=c.id + "-twin", given_by=c.given_by[:1])
        for c in policy_input.consents
    )
    decision = engine.decide_sync(
        dataclasses.replace(policy_input, consents=(*policy_input.consents, *twins))
    )
    assert _pairs(decision) == [(i.element, i.subject) for i in policy_input.items]


def _with_consent_rule(policy_set: PolicySet, band: str, givers: list[str]) -> PolicySet:
    agreement = policy_set.agreements["agr-zvh-mdaplusplus"]
    rule = {**agreement.source["consent_rule"], band: givers}
    changed = dataclasses.replace(agreement, source={**agreement.source, "consent_rule": rule})
    return with_agreement(policy_set, changed)


@pytest.fixture(scope="module")
def any_holder_engine() -> Iterator[RegopyEngine]:
    """MDA++ with ``age_0_11: [any_authority_holder]`` instead of all holders."""
    eng = RegopyEngine(_with_consent_rule(POLICY_SET, "age_0_11", ["any_authority_holder"]))
    yield eng
    asyncio.run(eng.aclose())


@SETTINGS
@given(givers=st.lists(st.sampled_from(["P01", "P02", "P05", "P09"]), max_size=4, unique=True))
def test_authority_holder_giver_kinds(
    engine: RegopyEngine, any_holder_engine: RegopyEngine, givers: list[str]
) -> None:
    """P05 (joint authority P01 + P02, under 12): all holders vs any holder; P09 never counts."""
    child = "P05"
    at = datetime(2026, 6, 4, 9, 0, tzinfo=AMSTERDAM)
    policy_input = PolicyInput(
        agreement="agr-zvh-mdaplusplus",
        purpose="zorginformatie_casusoverleg",
        provider="ggz",
        recipient="gemeente_wijkteam",
        request_time_ns=to_ns(at),
        request_date=at.date(),
        context={"mda_case_id": "MDA-LB-2026-015", "mda_case_status": "actief"},
        subjects=(REGISTRY.subject(child, at.date()),),
        items=(RequestedItem(element="health.ggz_treatment_involvement", subject=child),),
        consents=(
            ConsentFact(
                id="CNS-1",
                subject=child,
                given_by=tuple(givers),
                agreement="agr-zvh-mdaplusplus",
                purpose="zorginformatie_casusoverleg",
                given_at_ns=to_ns(at) - DAY_NS,
            ),
        ),
    )
    holders = {"P01", "P02"}
    expect_all = ReasonCode.ALLOW_CONSENT if holders <= set(givers) else None
    expect_any = ReasonCode.ALLOW_CONSENT if holders & set(givers) else None
    for eng, expected in ((engine, expect_all), (any_holder_engine, expect_any)):
        (item,) = eng.decide_sync(policy_input).items
        assert item.reason is (expected or ReasonCode.DENY_CONSENT_INCOMPLETE)
        assert item.consent_id == "CNS-1"
