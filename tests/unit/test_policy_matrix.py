"""The sharing matrix (broker.policy.matrix) on the real agreements."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.core.clock import to_ns
from broker.core.types import PolicyInput, RequestedItem, SubjectFacts, SubjectKind
from broker.policy.loader import PolicySet, load_policy_set
from broker.policy.matrix import (
    CSV_HEADER,
    Access,
    build_matrices,
    build_matrix,
    matrix_command,
    matrix_csv,
    matrix_html,
    matrix_text,
)
from broker.policy.regopy_engine import RegopyEngine
from tests.scenarios.scenario_data import POLICY_ROOT

VOID = {"meta", "br", "link", "img", "hr", "input", "col", "wbr"}


class StrictHTML(HTMLParser):
    """Fails on unbalanced or misnested tags (a small validity check)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[str] = []
        self.attributes: set[str] = set()
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append(tag)
        self.attributes.update(name for name, _ in attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def check_html(text: str) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(text)
    parser.close()
    assert parser.doctype
    assert parser.stack == []
    assert parser.seen[:4] == ["html", "head", "meta", "title"]
    assert parser.seen.count("body") == 1
    # self-contained and inert: no scripts, no external resources, no event handlers
    assert not {"script", "img", "iframe", "link", "object"} & set(parser.seen)
    assert parser.attributes <= {"lang", "charset", "class", "title"}
    return parser


@pytest.fixture(scope="module")
def policy_set() -> PolicySet:
    return load_policy_set(POLICY_ROOT)


def test_counts_equal_the_whitelist_sizes(policy_set: PolicySet) -> None:
    checked = 0
    for agreement in policy_set.agreements.values():
        m = build_matrix(agreement)
        for pid, purpose in agreement.purposes.items():
            regular = purpose["recipients"]
            for recipient, elements in purpose["allowed_elements"].items():
                assert m.count(pid, recipient) == len(elements), (agreement.id, pid, recipient)
                checked += 1
            acute = purpose.get("acute_danger") or {}
            for recipient in acute.get("additional_recipients", []):
                if recipient not in regular:
                    expected = len(acute["allowed_elements"].get(recipient, []))
                    assert m.count(pid, recipient, Access.ACUTE_ONLY) == expected
                    assert m.count(pid, recipient) == expected
            for recipient in m.recipients:
                if recipient not in purpose["allowed_elements"] and recipient not in acute.get(
                    "additional_recipients", []
                ):
                    assert m.count(pid, recipient) == 0
    assert checked == 25


def test_cells_follow_the_procedure(policy_set: PolicySet) -> None:
    mda = build_matrix(policy_set.agreements["agr-zvh-mdaplusplus"])
    cell = mda.cell("zorginformatie_casusoverleg", "politie", "health.ggz_treatment_involvement")
    assert cell.access is Access.ACUTE_ONLY
    cell = mda.cell(
        "zorginformatie_casusoverleg", "veilig_thuis", "addiction.substance_use_indicator"
    )
    assert (cell.access, cell.acute_fallback, cell.label) == (
        Access.CONSENT,
        True,
        "consent | acute",
    )
    cell = mda.cell("zorginformatie_casusoverleg", "veilig_thuis", "health.diagnosis")
    assert (cell.access, cell.acute_fallback) == (Access.CONSENT, False)
    assert "avg_toestemming" in cell.legal_basis_ids
    assert not mda.cell(
        "zorginformatie_casusoverleg", "gemeente_wijkteam", "health.diagnosis"
    ).allowed
    assert mda.cell("plan_van_aanpak_en_voortgang", "politie", "mda.progress_phase").access is (
        Access.CONSENT
    )
    hg = build_matrix(policy_set.agreements["agr-vt-politie-hg"])
    cell = hg.cell("zorgmelding_na_incident", "veilig_thuis", "police.dv_incident")
    assert cell.access is Access.STATUTORY
    assert cell.legal_basis_ids == (
        "wpg_20",
        "wmo_5_2_6",
        "wmo_vt_verwerking",
        "avg_publieke_taak",
        "avg_10_strafrechtelijk",
    )
    assert cell.description.startswith("statutory basis: wpg_20, wmo_5_2_6")
    assert not hg.cell(
        "zorgmelding_na_incident", "veilig_thuis", "police.suspect_history_dv"
    ).allowed


def test_statutory_cells_agree_with_the_engine(policy_set: PolicySet) -> None:
    """With the preconditions met, the engine allows exactly the matrix's cells."""
    agreement = policy_set.agreements["agr-vt-politie-hg"]
    m = build_matrix(agreement)
    engine = RegopyEngine(policy_set, threads=1)
    moment = datetime(2026, 3, 14, 12, tzinfo=UTC)
    context = {
        "police_incident_id": "PL-1",
        "vt_case_status": "onderzoek",
        "vt_case_origin": "politie",
        "vt_safety_assessment": {"acute_onveilig": True},
    }
    for pid, purpose in agreement.purposes.items():
        for recipient in m.recipients:
            policy_input = PolicyInput(
                agreement=agreement.id,
                purpose=pid,
                provider=purpose["providers"][0],
                recipient=recipient,
                request_time_ns=to_ns(moment),
                request_date=date(2026, 3, 14),
                context=context,
                subjects=(SubjectFacts(key="S", kind=SubjectKind.PERSON, age=30),),
                items=tuple(RequestedItem(element=e, subject="S") for e in m.elements),
            )
            decision = engine.decide_sync(policy_input)
            got = {i.element for i in decision.items if i.allowed}
            want = {e for e in m.elements if m.cell(pid, recipient, e).allowed}
            assert got == want, (pid, recipient)
    asyncio.run(engine.aclose())


def test_text_rows_and_counts(policy_set: PolicySet) -> None:
    text = matrix_text(build_matrices(policy_set, "agr-ggz-vt-kindcheck"), policy_set.reference)
    lines = text.splitlines()
    assert lines[0] == (
        'Agreement agr-ggz-vt-kindcheck version 1.0: Kindcheck covenant - "is this household '
        'known?" query from adult mental-health care to Veilig Thuis'
    )
    rows = [line.split() for line in lines if line.startswith("ggz ")]
    assert rows == [
        ["ggz", "vt.contact_person", "-", "statutory"],
        ["ggz", "vt.report_exists", "statutory", "-"],
    ]
    assert "  kindcheck_bekendheid: 1 to ggz" in lines
    assert any(
        line.startswith("  P1 kindcheck_bekendheid: providers veilig_thuis;") for line in lines
    )


def test_text_full_shows_empty_rows(policy_set: PolicySet) -> None:
    m = build_matrices(policy_set, "agr-zvh-mdaplusplus")
    compact = matrix_text(m).splitlines()
    full = matrix_text(m, full=True).splitlines()
    assert len(full) - len(compact) == len(m[0].rows(full=True)) - len(m[0].rows())
    assert any(line.split()[:2] == ["ggz", "health.diagnosis"] for line in full if line)


def test_csv_is_long_form_and_complete(policy_set: PolicySet) -> None:
    matrices = build_matrices(policy_set)
    rows = list(csv.reader(io.StringIO(matrix_csv(matrices))))
    assert tuple(rows[0]) == CSV_HEADER
    expected = sum(len(m.purposes) * len(m.recipients) * len(m.elements) for m in matrices)
    assert len(rows) - 1 == expected
    allowed = [r for r in rows[1:] if r[5] != "not_allowed"]
    whitelist_total = sum(
        len(elements)
        for a in policy_set.agreements.values()
        for p in a.purposes.values()
        for elements in p["allowed_elements"].values()
    )
    assert len(allowed) == whitelist_total + 2  # + the police's two acute-only elements
    assert [
        "agr-zvh-mdaplusplus",
        "2.2",
        "zorginformatie_casusoverleg",
        "politie",
        "health.ggz_treatment_involvement",
        "acute_only",
        "",
        "avg_toestemming uavg_5_minderjarigen wgbo_toestemming_minderjarigen "
        "jeugdwet_toestemming bw_7_457 avg_vitaal_belang conflict_van_plichten",
        "ggz huisarts school schuldhulpverlening gemeente_wijkteam",
        "required_unless_acute_danger",
        "case_on_table",
    ] in rows


def test_html_is_valid_and_self_contained(policy_set: PolicySet) -> None:
    text = matrix_html(build_matrices(policy_set), policy_set.reference)
    check_html(text)
    assert '<td class="acute_only" title="acute danger only: avg_toestemming,' in text
    assert text.count("<table>") == len(policy_set.agreements)


def test_command_formats_and_out_file(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(matrix_command, ["--agreement", "agr-vt-raad-vto"])
    assert result.exit_code == 0, result.output
    assert "  verzoek_tot_onderzoek: 16 to raad_kinderbescherming" in result.output
    out = tmp_path / "m.csv"
    result = runner.invoke(matrix_command, ["--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").startswith(",".join(CSV_HEADER) + "\n")
    result = runner.invoke(matrix_command, ["--format", "html", "--agreement", "agr-vt-politie-hg"])
    assert result.exit_code == 0
    check_html(result.output)
    result = runner.invoke(matrix_command, ["--agreement", "agr-nope"])
    assert result.exit_code == 2
    assert "unknown agreement agr-nope" in result.output
