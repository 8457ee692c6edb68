"""``subscriptions:`` in agreement.yaml: parsed by the loader, checked by
``broker policy check`` with exact ``file:line: message`` problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.policy.loader import load_policy_set
from broker.policy.render import render_agreement
from broker.policy.validate import check_command, validate_policy_dir
from tests.support.policy_files import (
    POLICIES,
    copy_policies,
    edit_section,
    line_in_section,
    problems,
)

P = "agreements/agr-vt-politie-hg/agreement.yaml"
WHERE = "subscriptions[police.zorgmelding]"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_policies(tmp_path)


def edit(root: Path, old: str, new: str) -> None:
    edit_section(root, P, "subscriptions", old, new)  # edits apply to the subscriptions section


def line_of(root: Path, needle: str) -> int:
    return line_in_section(root, P, "subscriptions", needle)


def test_the_shipped_subscription_loads() -> None:
    agreement = load_policy_set(POLICIES).agreements["agr-vt-politie-hg"]
    subscription = agreement.subscriptions["police.zorgmelding"]
    assert subscription["purpose"] == "zorgmelding_na_incident"
    assert subscription["publishers"] == ["politie"]
    assert subscription["recipients"] == ["veilig_thuis"]
    assert "police.zorgmelding" in subscription["elements"]
    assert validate_policy_dir(POLICIES) == []


def test_the_rendered_summary_shows_the_subscription() -> None:
    policy_set = load_policy_set(POLICIES)
    text = render_agreement(policy_set.agreements["agr-vt-politie-hg"], policy_set, "markdown")
    section = text[text.index("\n## Subscriptions") : text.index("\n## Legal bases used")]
    assert "### Event police.zorgmelding" in section
    assert "| Purpose | zorgmelding\\_na\\_incident |" in section


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            "      - police.suspect_history_dv\n",
            "      - police.no_such_element\n",
            "police.no_such_element",
            f"{WHERE}.elements: unknown element 'police.no_such_element'",
        ),
        (
            "purpose: zorgmelding_na_incident",
            "purpose: zorgmelding_elders",
            "purpose: zorgmelding_elders",
            f"{WHERE}.purpose: unknown purpose 'zorgmelding_elders'",
        ),
        (
            "publishers: [politie]",
            "publishers: [politie, wijkagent]",
            "publishers:",
            f"{WHERE}.publishers: unknown party 'wijkagent'",
        ),
        (
            "recipients: [veilig_thuis]",
            "recipients: [veilig_thuis, ggz]",
            "recipients:",
            f"{WHERE}.recipients: 'ggz' is not a party of this agreement",
        ),
        (
            "publishers: [politie]",
            "publishers: [veilig_thuis]",
            "publishers:",
            f"{WHERE}.publishers: 'veilig_thuis' is not a provider of the purpose",
        ),
        (
            "recipients: [veilig_thuis]",
            "recipients: [politie]",
            "recipients:",
            f"{WHERE}.recipients: 'politie' is not a recipient of the purpose",
        ),
        (
            "event_type: police.zorgmelding",
            "event_type: Zorgmelding",
            "event_type:",
            "subscriptions[Zorgmelding].event_type: 'Zorgmelding' is not a dotted lower-case "
            "name (e.g. police.zorgmelding)",
        ),
    ],
)
def test_subscription_problems_name_file_and_line(
    root: Path, old: str, new: str, needle: str, message: str
) -> None:
    edit(root, old, new)
    assert problems(root) == [f"{P}:{line_of(root, needle)}: {message}"]


def test_a_recipient_must_be_allowed_one_of_the_elements(root: Path) -> None:
    text = (root / P).read_text(encoding="utf-8")
    start = text.index("    elements:\n", text.index("subscriptions:"))
    end = text.index("\nsignatories:")
    (root / P).write_text(
        text[:start] + "    elements: [police.suspect_history_dv]\n" + text[end:], encoding="utf-8"
    )
    assert problems(root) == [
        f"{P}:{line_of(root, 'recipients:')}: {WHERE}.recipients: the purpose allows none of "
        "the subscription's elements to 'veilig_thuis'"
    ]


def test_missing_field_and_duplicate_event_type(root: Path) -> None:
    edit(root, "    purpose: zorgmelding_na_incident\n", "")
    text = (root / P).read_text(encoding="utf-8")
    duplicate = (
        "  - event_type: police.zorgmelding\n"
        "    purpose: zorgmelding_na_incident\n"
        "    publishers: [politie]\n"
        "    recipients: [veilig_thuis]\n"
        "    elements: [police.zorgmelding]\n"
    )
    (root / P).write_text(
        text.replace("\nsignatories:", duplicate + "\nsignatories:"), encoding="utf-8"
    )
    first = line_of(root, "event_type: police.zorgmelding")
    lines = (root / P).read_text(encoding="utf-8").splitlines()
    second = next(
        n
        for n, line in enumerate(lines, 1)
        if n > first and "event_type: police.zorgmelding" in line
    )
    assert problems(root) == [
        f"{P}:{first}: {WHERE}: missing required field 'purpose'",
        f"{P}:{second}: subscriptions: duplicate event type 'police.zorgmelding' "
        f"(first at line {first})",
    ]


def test_policy_check_prints_the_problem(root: Path) -> None:
    edit(root, "publishers: [politie]", "publishers: [wijkagent]")
    result = CliRunner().invoke(check_command, ["--policy-dir", str(root)])
    assert result.exit_code != 0
    line = line_of(root, "publishers:")
    assert f"{P}:{line}: {WHERE}.publishers: unknown party 'wijkagent'" in result.output
