"""``signals:`` in agreement.yaml: parsed by the loader, checked by ``broker policy
check`` with exact ``file:line: message`` problems; the registration and match
decision over it; the calendar arithmetic of end dates."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.policy.loader import add_calendar_duration, load_policy_set
from broker.policy.render import render_agreement
from broker.policy.validate import validate_policy_dir
from broker.signals.service import decide, expiry_of, match_id
from tests.support.policy_files import (
    POLICIES,
    copy_policies,
    edit_section,
    line_in_section,
    problems,
)

AGREEMENT = "agr-zvh-mdaplusplus"
P = f"agreements/{AGREEMENT}/agreement.yaml"
IN_FORCE = date(2026, 6, 20)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_policies(tmp_path)


def edit(root: Path, old: str, new: str) -> None:
    edit_section(root, P, "signals", old, new)  # edits apply to the signals section


def line_of(root: Path, needle: str) -> int:
    return line_in_section(root, P, "signals", needle)


def test_the_shipped_section_loads() -> None:
    agreement = load_policy_set(POLICIES).agreements[AGREEMENT]
    section = agreement.signals
    assert section is not None
    assert "veilig_thuis" in section["parties"]
    assert "ggz" not in section["parties"] and "politie" not in section["parties"]
    assert section["subject_kinds"] == ["child", "household"]
    assert section["max_duration"] == "P2Y"
    assert load_policy_set(POLICIES).agreements["agr-vt-politie-hg"].signals is None
    assert validate_policy_dir(POLICIES) == []


def test_the_rendered_summary_shows_the_section() -> None:
    policy_set = load_policy_set(POLICIES)
    text = render_agreement(policy_set.agreements[AGREEMENT], policy_set, "markdown")
    section = text[text.index("\n## Signal and match") : text.index("\n## Legal bases used")]
    assert "| Matched on | child, household |" in section
    assert "veilig\\_thuis" in section and "ggz" not in section
    other = render_agreement(policy_set.agreements["agr-vt-politie-hg"], policy_set, "markdown")
    assert "Signal and match" not in other


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            "parties: [zorg_en_veiligheidshuis,",
            "parties: [wijkagent, zorg_en_veiligheidshuis,",
            "parties:",
            "signals.parties: unknown party 'wijkagent'",
        ),
        (
            "parties: [zorg_en_veiligheidshuis,",
            "parties: [ziekenhuis, zorg_en_veiligheidshuis,",
            "parties:",
            "signals.parties: 'ziekenhuis' is not a party of this agreement",
        ),
        (
            "parties: [zorg_en_veiligheidshuis,",
            "parties: [school, zorg_en_veiligheidshuis,",
            "parties:",
            "signals.parties: 'school' is informants-only in this agreement and never "
            "receives (a match is received)",
        ),
        (
            "subject_kinds: [child, household]",
            "subject_kinds: [child, family]",
            "subject_kinds:",
            "signals.subject_kinds: unknown subject kind 'family' (expected child, household)",
        ),
        (
            "legal_basis_ids: [wgs_samenwerkingsverbanden,",
            "legal_basis_ids: [wet_verwijsindex,",
            "legal_basis_ids:",
            "signals.legal_basis_ids: unknown legal basis 'wet_verwijsindex'",
        ),
        (
            "max_duration: P2Y",
            "max_duration: P3Y",
            "max_duration:",
            "signals.max_duration: 'P3Y' must be longer than nothing and at most P2Y",
        ),
        (
            "max_duration: P2Y",
            "max_duration: PT72H",
            "max_duration:",
            "signals.max_duration: 'PT72H' is not an ISO 8601 duration of years, months "
            "and days (e.g. P2Y)",
        ),
        (
            "max_duration: P2Y",
            "max_duration: P0D",
            "max_duration:",
            "signals.max_duration: 'P0D' must be longer than nothing and at most P2Y",
        ),
        (
            "max_duration: P2Y",
            "max_duration: P2Y\n  notify: [politie]",
            "notify:",
            "signals: unknown field 'notify' (expected parties, subject_kinds, "
            "legal_basis_ids, description, max_duration)",
        ),
    ],
)
def test_signal_problems_name_file_and_line(
    root: Path, old: str, new: str, needle: str, message: str
) -> None:
    edit(root, old, new)
    assert problems(root) == [f"{P}:{line_of(root, needle)}: {message}"]


def test_missing_fields_are_reported_at_the_section(root: Path) -> None:
    edit(root, "  subject_kinds: [child, household]\n", "")
    edit(root, "  legal_basis_ids: [wgs_samenwerkingsverbanden, avg_publieke_taak]\n", "")
    line = line_of(root, "  description:")  # where the section's mapping starts
    assert problems(root) == [
        f"{P}:{line}: signals: missing required field 'legal_basis_ids'",
        f"{P}:{line}: signals: missing required field 'subject_kinds'",
    ]


# ---------------------------------------------------------------- the decision
def test_the_decision_follows_the_section() -> None:
    policy_set = load_policy_set(POLICIES)

    def reason(parties: list[str], kind: str = "child", day: date = IN_FORCE) -> str:
        return decide(policy_set, AGREEMENT, parties, kind, day, allow="allow_match").reason

    assert reason(["veilig_thuis", "gemeente_wijkteam"]) == "allow_match"
    assert reason(["veilig_thuis", "gemeente_wijkteam"], "household") == "allow_match"
    assert reason(["veilig_thuis", "ggz"]) == "deny_party_not_in_signals"
    assert reason(["politie"]) == "deny_party_not_in_signals"
    assert reason(["veilig_thuis"], "pet") == "deny_subject_kind_not_allowed"
    # Outside the agreement's validity window (it ends 2027-02-28).
    assert reason(["veilig_thuis"], day=date(2027, 3, 1)) == "deny_agreement_not_in_force"
    other = decide(policy_set, "agr-vt-politie-hg", ["veilig_thuis"], "child", IN_FORCE, allow="x")
    assert other.reason == "deny_signals_not_offered"
    allowed = decide(policy_set, AGREEMENT, ["veilig_thuis"], "child", IN_FORCE, allow="allow_x")
    assert allowed.allowed
    assert allowed.agreement_version == "2.2"
    assert allowed.legal_basis_ids == ("wgs_samenwerkingsverbanden", "avg_publieke_taak")
    assert (
        allowed.decision_id
        != decide(
            policy_set, AGREEMENT, ["veilig_thuis"], "child", IN_FORCE, allow="allow_x"
        ).decision_id
    )


def test_a_match_has_one_id_whichever_side_finds_it() -> None:
    assert match_id("a", "b") == match_id("b", "a") != match_id("a", "c")


def test_a_signal_ends_at_the_end_of_its_last_dutch_day() -> None:
    # Summer time: midnight in Amsterdam is 22:00 UTC the day before.
    assert expiry_of(date(2026, 7, 1)).isoformat() == "2026-07-01T22:00:00+00:00"
    assert expiry_of(date(2026, 12, 31)).isoformat() == "2026-12-31T23:00:00+00:00"


# ---------------------------------------------------------------- calendar arithmetic
@pytest.mark.parametrize(
    ("start", "duration", "end"),
    [
        (date(2026, 6, 20), "P2Y", date(2028, 6, 20)),
        (date(2024, 2, 29), "P1Y", date(2025, 2, 28)),
        (date(2026, 1, 31), "P1M", date(2026, 2, 28)),
        (date(2026, 11, 30), "P3M", date(2027, 2, 28)),
        (date(2026, 1, 1), "P90D", date(2026, 4, 1)),
        (date(2026, 1, 1), "P1Y6M10D", date(2027, 7, 11)),
    ],
)
def test_calendar_durations(start: date, duration: str, end: date) -> None:
    assert add_calendar_duration(start, duration) == end


@pytest.mark.parametrize("duration", ["P", "P2W", "PT1H", "2Y", "P-1Y", "P1.5Y", ""])
def test_unsupported_durations_are_refused(duration: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        add_calendar_duration(date(2026, 1, 1), duration)


@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)),
    st.integers(0, 50),
    st.integers(0, 40),
    st.integers(0, 400),
)
def test_calendar_durations_move_forward_and_keep_the_day(
    start: date, years: int, months: int, days: int
) -> None:
    end = add_calendar_duration(start, f"P{years}Y{months}M{days}D")
    assert end >= start
    months_only = add_calendar_duration(start, f"P{years}Y{months}M")
    assert end == months_only + timedelta(days=days)
    assert (months_only.year * 12 + months_only.month) - (start.year * 12 + start.month) == (
        years * 12 + months
    )
    assert months_only.day == start.day or months_only.day < start.day  # clamped at month end
