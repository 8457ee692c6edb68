"""``information_duty`` on an agreement purpose: read by the broker (fail closed on a
malformed block), checked by ``broker policy check`` with exact ``file:line:
message`` problems; the calendar arithmetic of due dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core.clock import DUTCH
from broker.information_duties.rules import (
    Period,
    RuleInvalid,
    add_period,
    duty_rule,
    parse_period,
)
from broker.policy.loader import load_policy_set
from broker.policy.validate import validate_policy_dir
from tests.support.policy_files import POLICIES, copy_policies, problems

P = "agreements/agr-vt-politie-hg/agreement.yaml"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_policies(tmp_path)


def edit(root: Path, old: str, new: str) -> int:
    """Replaces the first ``old`` inside the first information_duty block; returns
    the line number of the replacement's first line."""
    path = root / P
    text = path.read_text(encoding="utf-8")
    start = text.index("    information_duty:")
    at = text.index(old, start)
    path.write_text(text[:at] + new + text[at + len(old) :], encoding="utf-8")
    return text[:at].count("\n") + 1


def test_the_shipped_blocks_read() -> None:
    policy_set = load_policy_set(POLICIES)
    purposes = policy_set.agreements["agr-vt-politie-hg"].purposes
    rule = duty_rule(purposes["zorgmelding_na_incident"])
    assert rule is not None
    assert (rule.informed_by, rule.within, rule.legal_basis_ids) == (
        "recipient",
        Period(months=1),
        ("avg_14_informatieplicht",),
    )
    assert rule.embargo is not None and rule.embargo.lapses_after == Period(months=3)
    assert rule.embargo.investigated_by == {"veilig_thuis", "politie"}
    # No block, or an exemption: no duty.
    assert duty_rule(purposes["terugkoppeling_zorgmelding"]) is None
    kindcheck = policy_set.agreements["agr-ggz-vt-kindcheck"].purposes
    assert duty_rule(kindcheck["kindcheck_bekendheid"]) is None
    mda = policy_set.agreements["agr-zvh-mdaplusplus"].purposes
    acute_only = duty_rule(mda["zorginformatie_casusoverleg"])
    assert acute_only is not None and acute_only.on == {"allow_break_glass"}
    assert validate_policy_dir(POLICIES) == []


@pytest.mark.parametrize(
    "block",
    [
        {"required": "yes"},
        {"required": True, "informed_by": "recipient", "within": "P1M"},
        {"required": True, "legal_basis_ids": ["a"], "informed_by": "x", "within": "P1M"},
        {"required": True, "legal_basis_ids": ["a"], "informed_by": "recipient", "within": "1M"},
        {
            "required": True,
            "legal_basis_ids": ["a"],
            "informed_by": "recipient",
            "within": "P1M",
            "outcomes": ["deny_consent_missing"],
        },
        {
            "required": True,
            "legal_basis_ids": ["a"],
            "informed_by": "recipient",
            "within": "P1M",
            "embargo": {"legal_basis_ids": ["b"], "investigated_by": ["veilig_thuis"]},
        },
    ],
)
def test_a_malformed_block_fails_closed(block: dict[str, object]) -> None:
    with pytest.raises(RuleInvalid):
        duty_rule({"information_duty": block})


def test_policy_check_names_each_fault(root: Path) -> None:
    line = edit(root, "informed_by: recipient", "informed_by: parents")
    assert problems(root) == [
        f"{P}:{line}: purposes[zorgmelding_na_incident].information_duty.informed_by: "
        "'parents' is not one of recipient, provider"
    ]


def test_policy_check_reports_periods_bases_and_parties(root: Path) -> None:
    within = edit(root, "within: P1M", "within: PT72H")
    basis = edit(root, "[avg_23_uavg_41_beperking]", "[avg_23]")
    party = edit(root, "investigated_by: [veilig_thuis, politie]", "investigated_by: [raad]")
    where = "purposes[zorgmelding_na_incident].information_duty"
    assert problems(root) == [
        f"{P}:{within}: {where}.within: 'PT72H' is not an ISO 8601 period of years, months, "
        "weeks or days (e.g. P1M)",
        f"{P}:{basis}: {where}.embargo.legal_basis_ids: unknown legal basis 'avg_23'",
        f"{P}:{party}: {where}.embargo.investigated_by: unknown party 'raad'",
    ]


def test_policy_check_refuses_unknown_fields_and_bare_exemptions(root: Path) -> None:
    line = edit(root, "      within: P1M\n", "      within: P1M\n      whitin: P2M\n") + 1
    assert problems(root) == [
        f"{P}:{line}: purposes[zorgmelding_na_incident].information_duty: unknown field "
        "'whitin' (expected required, legal_basis_ids, informed_by, within, outcomes, embargo, "
        "note)"
    ]


def test_periods() -> None:
    assert parse_period("P1M") == Period(months=1)
    assert parse_period("P1Y2W3D") == Period(months=12, days=17)
    for bad in ("P", "P0D", "PT1H", "1M", "P-1M", ""):
        with pytest.raises(ValueError, match="period"):
            parse_period(bad)


def test_one_month_on_the_dutch_calendar() -> None:
    def at(text: str) -> datetime:
        return datetime.fromisoformat(text)

    # The last day of a shorter month; across the start of summer time.
    assert add_period(at("2026-01-31T10:00:00+01:00"), Period(months=1)) == at(
        "2026-02-28T10:00:00+01:00"
    )
    assert add_period(at("2026-03-14T02:40:00+01:00"), Period(months=1)) == at(
        "2026-04-14T02:40:00+02:00"
    )
    assert add_period(at("2026-12-15T09:00:00+01:00"), Period(months=3)) == at(
        "2027-03-15T09:00:00+01:00"
    )


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2090, 1, 1),
        timezones=st.just(UTC),
    ),
    st.integers(min_value=0, max_value=36),
    st.integers(min_value=0, max_value=400),
)
def test_a_period_never_shortens_and_keeps_the_local_time(
    start: datetime, months: int, days: int
) -> None:
    if months == days == 0:
        return
    due = add_period(start, Period(months=months, days=days))
    assert due > start
    assert due.tzinfo is not None
    assert due - start >= timedelta(days=28 * months + days - 1)
    if days == 0:  # a month end is clamped, never carried into the next month
        assert due.astimezone(DUTCH).day <= start.astimezone(DUTCH).day
