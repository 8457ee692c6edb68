"""Consent records as the registry stores them, converted by the registry's own
code (broker.consent.service.consent_fact), decided by the real engine: birth
dates around the 12th, 16th and 18th birthdays x request dates x givers x
expiry and withdrawal, against the age table of consent_rules.md section 2 and
the MDA++ agreement's stricter rule; and records that state the minor subject
is wilsonbekwaam (rule 5: the holders of authority consent for him at any age
under 18)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker.consent.models import ConsentRecord
from broker.consent.service import consent_fact
from broker.core.clock import DUTCH, age_on, dutch_date, to_ns
from broker.core.types import PolicyInput, ReasonCode, RequestedItem, SubjectFacts, SubjectKind
from broker.policy.loader import load_policy_set
from broker.policy.regopy_engine import RegopyEngine
from tests.scenarios.scenario_data import POLICY_ROOT

POLICY_SET = load_policy_set(POLICY_ROOT)
AGREEMENT = "agr-zvh-mdaplusplus"
PURPOSE = "zorginformatie_casusoverleg"
ELEMENT = "health.ggz_treatment_involvement"
SUBJECT, FATHER, MOTHER, STRANGER = "subject-key", "father-key", "mother-key", "stranger-key"
VALID_FROM, VALID_UNTIL = date(2025, 3, 1), date(2027, 2, 28)


@pytest.fixture(scope="module")
def engine() -> Iterator[RegopyEngine]:
    eng = RegopyEngine(POLICY_SET)
    yield eng
    asyncio.run(eng.aclose())


def years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def completed_years(born: date, on: date) -> int:
    """Written out here from the rule (the birthday itself counts as reached)."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def complete(age: int, givers: set[str], holders: tuple[str, ...]) -> bool:
    """The MDA++ consent_rule: under 12 all holders; 12-15 the child and all
    holders; 16 and over the subject alone."""
    all_holders = bool(holders) and set(holders) <= givers
    if age < 12:
        return all_holders
    if age < 16:
        return SUBJECT in givers and all_holders
    return SUBJECT in givers


request_days = st.dates(min_value=VALID_FROM, max_value=VALID_UNTIL)


@st.composite
def birth_dates(draw: st.DrawFn, on: date) -> date:
    """Mostly the days around a boundary birthday (12, 16, 18), else any date."""
    if draw(st.integers(0, 4)):
        years = draw(st.sampled_from([12, 16, 18]))
        return years_before(on, years) + timedelta(days=draw(st.sampled_from([-1, 0, 1])))
    return draw(st.dates(min_value=date(1950, 1, 1), max_value=on))


@st.composite
def cases(draw: st.DrawFn) -> tuple[date, date, frozenset[str], tuple[str, ...], str]:
    on = draw(request_days)
    born = draw(birth_dates(on))
    givers = draw(st.frozensets(st.sampled_from([SUBJECT, FATHER, MOTHER, STRANGER]), min_size=1))
    holders = draw(st.sampled_from([(FATHER, MOTHER), (MOTHER,), ()]))
    ending = draw(st.sampled_from(["none", "expired", "expires_later", "withdrawn"]))
    return on, born, givers, holders, ending


def record(
    givers: frozenset[str], at: datetime, ending: str, *, wilsonbekwaam: bool = False
) -> ConsentRecord:
    given_at = at - timedelta(days=1)
    entries: list[dict[str, str]] = [
        {"key": g, "capacity": "child" if g == SUBJECT else "authority_holder"}
        for g in sorted(givers)
    ]
    return ConsentRecord(
        id="CNS-P1",
        subject_key=SUBJECT,
        givers=entries,
        # As the registry stores the statement (broker.consent.service.record).
        wilsonbekwaam=(
            {
                "established_by": "ggz:behandelaar:4711",
                "established_at": given_at.isoformat(),
                "evidence_ref": "ggz-dms:WOB-1",
            }
            if wilsonbekwaam
            else None
        ),
        agreement_id=AGREEMENT,
        purpose_id=PURPOSE,
        elements=[ELEMENT],
        recipients=None,
        given_at=given_at,
        valid_until={"expired": at, "expires_later": at + timedelta(seconds=1)}.get(ending),
        withdrawn_at=at - timedelta(hours=1) if ending == "withdrawn" else None,
        withdrawn_by_key=None,
        evidence_ref="property",
        recorded_by_oin="0" * 20,
        recorded_at=given_at,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
@example(
    case=(date(2026, 9, 3), date(2014, 9, 3), frozenset({FATHER, MOTHER}), (FATHER, MOTHER), "none")
)
@example(
    case=(date(2026, 9, 2), date(2014, 9, 3), frozenset({FATHER, MOTHER}), (FATHER, MOTHER), "none")
)
@example(case=(date(2026, 9, 3), date(2010, 9, 3), frozenset({SUBJECT}), (FATHER, MOTHER), "none"))
@example(case=(date(2026, 9, 2), date(2010, 9, 3), frozenset({SUBJECT}), (FATHER, MOTHER), "none"))
def test_consent_follows_the_age_table(
    engine: RegopyEngine, case: tuple[date, date, frozenset[str], tuple[str, ...], str]
) -> None:
    on, born, givers, holders, ending = case
    at = datetime.combine(on, time(12, 0), tzinfo=DUTCH).astimezone(UTC)
    today = dutch_date(at)
    assert today == on
    age = completed_years(born, on)
    assert age_on(born, today) == age
    fact = consent_fact(record(givers, at, ending))
    decision = engine.decide_sync(
        PolicyInput(
            agreement=AGREEMENT,
            purpose=PURPOSE,
            provider="ggz",
            recipient="gemeente_wijkteam",
            request_time_ns=to_ns(at),
            request_date=today,
            context={"mda_case_id": "MDA-LB-2026-015", "mda_case_status": "actief"},
            subjects=(
                SubjectFacts(
                    key=SUBJECT,
                    kind=SubjectKind.PERSON,
                    birth_date=born,
                    age=age,
                    authority_holders=holders if age < 18 else (),
                ),
            ),
            items=(RequestedItem(element=ELEMENT, subject=SUBJECT),),
            consents=(fact,),
        )
    )
    [item] = decision.items
    assert item.consent_id == "CNS-P1"
    assert fact.wilsonbekwaam is False
    if ending in ("expired", "withdrawn"):
        # valid_until at or before the request time counts as a withdrawal.
        assert item.reason is ReasonCode.DENY_CONSENT_WITHDRAWN
    elif complete(age, set(givers), holders if age < 18 else ()):
        assert item.reason is ReasonCode.ALLOW_CONSENT
    else:
        assert item.reason is ReasonCode.DENY_CONSENT_INCOMPLETE


def decide_one(
    engine: RegopyEngine,
    on: date,
    born: date,
    holders: tuple[str, ...],
    record_: ConsentRecord,
    agreement: str = AGREEMENT,
    purpose: str = PURPOSE,
    context: dict[str, str] | None = None,
) -> ReasonCode:
    at = datetime.combine(on, time(12, 0), tzinfo=DUTCH).astimezone(UTC)
    age = completed_years(born, on)
    decision = engine.decide_sync(
        PolicyInput(
            agreement=agreement,
            purpose=purpose,
            provider="ggz",
            recipient="gemeente_wijkteam",
            request_time_ns=to_ns(at),
            request_date=dutch_date(at),
            context=context or {"mda_case_id": "MDA-LB-2026-015", "mda_case_status": "actief"},
            subjects=(
                SubjectFacts(
                    key=SUBJECT,
                    kind=SubjectKind.PERSON,
                    birth_date=born,
                    age=age,
                    authority_holders=holders if age < 18 else (),
                ),
            ),
            items=(RequestedItem(element=ELEMENT, subject=SUBJECT),),
            consents=(consent_fact(record_),),
        )
    )
    [item] = decision.items
    assert item.consent_id == "CNS-P1"
    return item.reason


@st.composite
def flagged_cases(draw: st.DrawFn) -> tuple[date, date, frozenset[str], tuple[str, ...]]:
    on = draw(request_days)
    born = draw(birth_dates(on))
    # Among the drawn givers the subject himself may appear: a wilsonbekwaam
    # minor's own signature neither helps nor is needed.
    givers = draw(st.frozensets(st.sampled_from([SUBJECT, FATHER, MOTHER, STRANGER]), min_size=1))
    holders = draw(st.sampled_from([(FATHER, MOTHER), (MOTHER,), ()]))
    return on, born, givers, holders


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=flagged_cases())
# The 12th birthday: before it and on it, the holders alone suffice (represented).
@example(case=(date(2026, 9, 2), date(2014, 9, 3), frozenset({FATHER, MOTHER}), (FATHER, MOTHER)))
@example(case=(date(2026, 9, 3), date(2014, 9, 3), frozenset({FATHER, MOTHER}), (FATHER, MOTHER)))
@example(case=(date(2026, 9, 3), date(2014, 9, 3), frozenset({SUBJECT}), (FATHER, MOTHER)))
# The 16th birthday: the young person's own consent does not count; the holders do.
@example(case=(date(2026, 9, 2), date(2010, 9, 3), frozenset({FATHER, MOTHER}), (FATHER, MOTHER)))
@example(case=(date(2026, 9, 3), date(2010, 9, 3), frozenset({FATHER, MOTHER}), (FATHER, MOTHER)))
@example(case=(date(2026, 9, 3), date(2010, 9, 3), frozenset({SUBJECT}), (FATHER, MOTHER)))
# The 18th birthday: the flag no longer applies; the adult consents himself.
@example(case=(date(2026, 9, 3), date(2008, 9, 3), frozenset({SUBJECT}), (FATHER, MOTHER)))
@example(case=(date(2026, 9, 2), date(2008, 9, 3), frozenset({SUBJECT}), (FATHER, MOTHER)))
def test_wilsonbekwaam_minor_is_represented_by_the_holders(
    engine: RegopyEngine, case: tuple[date, date, frozenset[str], tuple[str, ...]]
) -> None:
    on, born, givers, holders = case
    at = datetime.combine(on, time(12, 0), tzinfo=DUTCH).astimezone(UTC)
    age = completed_years(born, on)
    flagged = record(givers, at, "none", wilsonbekwaam=True)
    fact = consent_fact(flagged)
    assert fact.wilsonbekwaam is True
    assert fact.given_by == tuple(sorted(givers))  # the statement is not a giver
    reason = decide_one(engine, on, born, holders, flagged)
    # Represented: every holder of authority (the MDA++ under-12 band), at any age
    # under 18; an adult consents himself.
    expected = (bool(holders) and set(holders) <= givers) if age < 18 else SUBJECT in givers
    assert reason is (ReasonCode.ALLOW_CONSENT if expected else ReasonCode.DENY_CONSENT_INCOMPLETE)
    # Without the flag the age table applies as before.
    plain = decide_one(engine, on, born, holders, record(givers, at, "none"))
    assert plain is (
        ReasonCode.ALLOW_CONSENT
        if complete(age, set(givers), holders if age < 18 else ())
        else ReasonCode.DENY_CONSENT_INCOMPLETE
    )
    # A withdrawal ends a represented consent the same way.
    ended = decide_one(
        engine, on, born, holders, record(givers, at, "withdrawn", wilsonbekwaam=True)
    )
    assert ended is ReasonCode.DENY_CONSENT_WITHDRAWN
