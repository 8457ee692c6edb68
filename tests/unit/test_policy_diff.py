"""Agreement diffs (broker.policy.diff) on temp copies of the real folders."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from broker.policy.diff import diff_agreements, diff_command, format_diff
from broker.policy.loader import load_agreement
from tests.scenarios.scenario_data import POLICY_ROOT

AGREEMENTS = POLICY_ROOT / "agreements"


def copy(tmp_path: Path, agreement_id: str, name: str, edit: Callable[[Any], None]) -> Path:
    folder = tmp_path / name
    shutil.copytree(AGREEMENTS / agreement_id, folder)
    path = folder / "agreement.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return folder


def purpose(data: Any, pid: str) -> dict[str, Any]:
    return next(p for p in data["purposes"] if p["id"] == pid)


def run(old: Path, new: Path, code: int) -> list[str]:
    result: Result = CliRunner().invoke(diff_command, [str(old), str(new)])
    assert result.exit_code == code, result.output
    return result.output.splitlines()


def test_whitelist_and_basis_changes(tmp_path: Path) -> None:
    def edit(data: Any) -> None:
        p = purpose(data, "zorgmelding_na_incident")
        p["allowed_elements"]["veilig_thuis"].remove("police.tijdelijk_huisverbod")
        p["allowed_elements"]["veilig_thuis"].append("vt.report")
        p["legal_basis_ids"] = ["wpg_19" if b == "wpg_20" else b for b in p["legal_basis_ids"]]
        data["version"] = "3.1"

    new = copy(tmp_path, "agr-vt-politie-hg", "new", edit)
    lines = run(AGREEMENTS / "agr-vt-politie-hg", new, 1)
    assert lines[0] == "Agreement agr-vt-politie-hg: version 3.0 -> 3.1"
    block = lines[lines.index("  purpose zorgmelding_na_incident") :]
    assert block[1:5] == [
        "    - veilig_thuis may no longer receive police.tijdelijk_huisverbod "
        "(was statutory basis)",
        "    + veilig_thuis may now receive vt.report (statutory basis)",
        "    ~ legal basis added: wpg_19 (Wet politiegegevens (Wpg) art. 19)",
        "    ~ legal basis removed: wpg_20 (Wet politiegegevens (Wpg) art. 20)",
    ]
    assert "Changes in what is allowed:" in lines
    assert "    * version: 3.0 -> 3.1" in lines
    assert lines[-1] == (
        "Result: the new version changes what is allowed (1 newly allowed, 1 newly forbidden, "
        "2 other changes to the rules)."
    )


def test_no_differences_exit_zero(tmp_path: Path) -> None:
    same = copy(tmp_path, "agr-vt-raad-vto", "same", lambda data: None)
    lines = run(AGREEMENTS / "agr-vt-raad-vto", same, 0)
    assert lines == ["Agreement agr-vt-raad-vto: version 1.4 -> 1.4", "", "Result: no differences."]


def test_editorial_changes_exit_zero(tmp_path: Path) -> None:
    def edit(data: Any) -> None:
        data["title_en"] = "Working agreement, revised wording"
        data["signatories"][1]["signed_by"] = "T. Nieuwenhuis"
        p = purpose(data, "verzoek_tot_onderzoek")
        p["retention"]["note"] = "Changed note."
        p["description"] = "New description."
        p["proportionality_notes"].append("One more note.")

    new = copy(tmp_path, "agr-vt-raad-vto", "new", edit)
    lines = run(AGREEMENTS / "agr-vt-raad-vto", new, 0)
    assert "Changes in what is allowed:" not in lines
    assert (
        "    * title_en: Working agreement Veilig Thuis - Child Protection Board on requests for "
        "investigation -> Working agreement, revised wording" in lines
    )
    assert (
        "    * signatory raad_kinderbescherming (Raad voor de Kinderbescherming, regio Lindeburg "
        "(fictional region)) signed_by: T. Wijnbergen -> T. Nieuwenhuis"
    ) in lines
    assert "    * proportionality note added: One more note." in lines
    assert any(line.startswith("    * retention: holder: raad_kinderbescherming") for line in lines)
    assert lines[-1] == "Result: no differences in what is allowed (editorial changes only)."


def test_consent_preconditions_form_validity_and_parties(tmp_path: Path) -> None:
    def edit(data: Any) -> None:
        data["valid_until"] = "2026-12-31"
        data["parties"].append("politie")
        p = purpose(data, "kindcheck_bekendheid")
        p["consent"] = "required"
        p["response_form"] = "full"
        p["providers"].append("ggz")
        p["preconditions"] = [x for x in p["preconditions"] if x["id"] != "client_cares_for_minors"]
        p["preconditions"][0]["description"] = "Kindcheck performed"
        p["preconditions"].append({"id": "new_check", "description": "Something new"})

    new = copy(tmp_path, "agr-ggz-vt-kindcheck", "new", edit)
    d = diff_agreements(load_agreement(AGREEMENTS / "agr-ggz-vt-kindcheck"), load_agreement(new))
    assert d.material
    lines = format_diff(d).splitlines()
    for expected in [
        "    * party added: politie",
        "    ~ provider added: ggz",
        "    ~ consent mode: not_required_with_basis -> required (applies to 1 allowed element "
        "of the purpose)",
        "    ~ precondition added: new_check (Something new)",
        "    ~ precondition removed: client_cares_for_minors (Client cares for at least one minor "
        "child, or this is unknown)",
        "    ~ precondition kindcheck_positive description: Kindcheck performed and parent "
        "signals present (health.kindcheck_outcome.decision == meldcode_stappen_volgen) -> "
        "Kindcheck performed",
        "    ~ response form: boolean_only -> full",
    ]:
        assert expected in lines
    # valid_until was a date and is a string now: the same day, so no change
    assert not any("validity" in line for line in lines)
    # the consent-mode change is reported once, not per element
    assert not any("different footing" in line for line in lines)


def test_validity_consent_rule_acute_and_rego(tmp_path: Path) -> None:
    def edit(data: Any) -> None:
        data["valid_until"] = "2028-02-29"
        data["consent_rule"]["age_12_15"] = ["all_authority_holders"]
        acute = purpose(data, "zorginformatie_casusoverleg")["acute_danger"]
        acute["max_duration"] = "PT48H"
        acute["allowed_elements"]["politie"].remove("health.treating_professional_contact")
        acute["declarable_by"].append("raad_kinderbescherming")

    new = copy(tmp_path, "agr-zvh-mdaplusplus", "new", edit)
    with (new / "policy.rego").open("a", encoding="utf-8") as fh:
        fh.write("\n# reviewed\n")
    lines = run(AGREEMENTS / "agr-zvh-mdaplusplus", new, 1)
    for expected in [
        "    ~ validity: 2025-03-01 to 2027-02-28 -> 2025-03-01 to 2028-02-29",
        "    ~ consent for age 12 to 15: the child and every holder of parental authority -> "
        "every holder of parental authority",
        "    ~ policy.rego changed (the precondition checks may decide differently):",
        "        +# reviewed",
        "    - politie may no longer receive health.treating_professional_contact (was acute "
        "danger only)",
        "    ~ acute-danger declarable_by added: raad_kinderbescherming",
        "    ~ acute-danger max_duration: PT72H -> PT48H",
    ]:
        assert expected in lines


def test_removed_purpose_forbids_its_whole_whitelist(tmp_path: Path) -> None:
    def edit(data: Any) -> None:
        data["purposes"] = [p for p in data["purposes"] if p["id"] != "verzoek_tot_onderzoek"]

    new = copy(tmp_path, "agr-vt-raad-vto", "new", edit)
    d = diff_agreements(load_agreement(AGREEMENTS / "agr-vt-raad-vto"), load_agreement(new))
    assert len(d.newly_forbidden) == 16
    assert not d.newly_allowed
    assert "    ~ purpose removed: verzoek_tot_onderzoek" in format_diff(d).splitlines()


def test_an_unreadable_folder_exits_two(tmp_path: Path) -> None:
    result = CliRunner().invoke(diff_command, [str(AGREEMENTS / "agr-vt-raad-vto"), str(tmp_path)])
    assert result.exit_code == 2
    assert "cannot read agreement" in result.output


@pytest.mark.parametrize("agreement_id", sorted(p.name for p in AGREEMENTS.iterdir()))
def test_every_agreement_equals_itself(agreement_id: str) -> None:
    a = load_agreement(AGREEMENTS / agreement_id)
    assert diff_agreements(a, a).changes == ()
