"""``broker policy test`` (broker.policy.testing): Rego unit tests, scenario cases, coverage.

The command object is exercised with click's CliRunner, against the shipped
policies and against temporary copies with a deliberately failing test, an
uncovered precondition rule or an untested whitelist entry.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
import regorus
import yaml
from click.testing import CliRunner, Result

import broker.policy.testing as testing
from broker.policy.loader import load_policy_set
from broker.policy.regorus_engine import build_regorus
from broker.policy.scenarios import SCENARIOS_FILE, load_scenarios
from broker.settings import PROJECT_ROOT

POLICIES = PROJECT_ROOT / "policies"
POLITIE_TESTS = Path("agreements/agr-vt-politie-hg/policy_test.rego")
RAAD_POLICY = Path("agreements/agr-vt-raad-vto/policy.rego")
RAAD_TESTS = Path("agreements/agr-vt-raad-vto/policy_test.rego")


def invoke(policy_dir: Path, *args: str) -> Result:
    result = CliRunner().invoke(
        testing.test_command, ["--policy-dir", str(policy_dir), *args], catch_exceptions=False
    )
    assert "Traceback" not in result.output
    return result


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


@pytest.fixture(scope="module")
def shipped() -> testing.PolicyTestReport:
    return testing.run_policy_tests(POLICIES)


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    """A private copy of the policy folder to break things in."""
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


# ------------------------------------------------------------------ shipped tests
def test_shipped_tests_pass(shipped: testing.PolicyTestReport) -> None:
    assert shipped.failed == (), [(c.name, c.message) for c in shipped.failed]
    rego = [c for c in shipped.cases if c.kind == "rego"]
    packages = {c.package for c in rego}
    assert packages == {
        "broker.decision_test",
        "agreements.agr_ggz_vt_kindcheck.v1_0_test",
        "agreements.agr_vt_politie_hg.v3_0_test",
        "agreements.agr_vt_raad_vto.v1_4_test",
        "agreements.agr_zvh_mdaplusplus.v2_2_test",
    }
    assert len(rego) >= 100
    assert all(c.name.startswith("test_") for c in rego)


def test_cli_reports_every_test_and_totals() -> None:
    result = invoke(POLICIES, "--min-coverage", "100")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "FAIL" not in out
    assert re.search(
        r"^  PASS  agreements\.agr_zvh_mdaplusplus\.v2_2_test\s+"
        r"test_break_glass_expired_after_72_hours  \(\d+\.\d ms\)$",
        out,
        re.M,
    )
    assert re.search(
        r"^  PASS  scenarios\.S09\s+S09-R5-health\.treating_professional_contact-P01", out, re.M
    )
    assert re.search(
        r"^\d+ Rego tests \(\d+ passed\), 113 scenario cases \(113 passed\): PASS$", out, re.M
    )
    assert "rule coverage 100.0% (minimum 100%): ok" in out


def test_shipped_unit_tests_cover_every_rule_purpose_and_whitelist_entry() -> None:
    """The Rego tests alone (without the scenarios) exercise the whole policy set."""
    report = testing.run_policy_tests(POLICIES, scenarios=False)
    assert report.failed == ()
    assert report.coverage.uncovered == ()
    assert report.coverage.percent == 100.0
    assert report.coverage.line_covered == report.coverage.line_total
    policy_set = load_policy_set(POLICIES)
    assert {a.agreement for a in report.domain.agreements} == set(policy_set.agreements)
    for a in report.domain.agreements:
        assert a.untouched_purposes == (), a.agreement
        assert set(a.purposes) == set(policy_set.agreements[a.agreement].purposes)
        assert a.untouched_entries == (), (a.agreement, a.untouched_entries)
    assert report.domain.reasons_never_produced == ()


def test_scenario_cases_all_pass(shipped: testing.PolicyTestReport) -> None:
    scenarios = load_scenarios(POLICIES / SCENARIOS_FILE)
    cases = [c for c in shipped.cases if c.kind == "scenario"]
    assert [c.name for c in cases] == [item.case_id for _, item in scenarios.items()]
    assert all(c.passed for c in cases)
    assert {c.package for c in cases} == {f"scenarios.S{n:02d}" for n in range(1, 11)}


def test_test_files_stay_out_of_the_decision_bundle() -> None:
    policy_set = load_policy_set(POLICIES)
    assert not [m for m in policy_set.modules() if m.endswith("_test.rego")]
    files = testing.discover_test_files(policy_set)
    assert {str(p.relative_to(POLICIES)) for p in files} == {
        "lib/decision_test.rego",
        *(f"agreements/{a}/policy_test.rego" for a in policy_set.agreements),
    }


# ------------------------------------------------------------------ failures
def test_a_wrong_test_fails_with_exit_1(policies: Path) -> None:
    append(
        policies / POLITIE_TESTS,
        "\n# deliberately wrong: suspect history is not allowed under this purpose\n"
        "test_deliberately_wrong if {\n"
        '\treasons(object.union(zorgmelding, {"items": items(["police.suspect_history_dv"], '
        '"P01")})) == {"allow_statutory_basis"}\n'
        "}\n\n"
        'test_errors if {\n\tprint("about to divide")\n\t1 / 0 == 1\n}\n',
    )
    result = invoke(policies)
    assert result.exit_code == 1
    out = result.output
    assert re.search(
        r"^  FAIL  agreements\.agr_vt_politie_hg\.v3_0_test\s+test_deliberately_wrong  \(",
        out,
        re.M,
    )
    assert re.search(r"policy_test\.rego:\d+: undefined$", out, re.M)
    assert re.search(
        r"^  FAIL  agreements\.agr_vt_politie_hg\.v3_0_test\s+test_errors  \(", out, re.M
    )
    assert "divide by zero" in out
    assert "| " in out and "about to divide" in out  # a failing test's own prints are shown
    assert re.search(
        r"^  PASS  agreements\.agr_vt_politie_hg\.v3_0_test\s+test_unknown_purpose", out, re.M
    )
    assert re.search(
        r"Rego tests \(\d+ passed\), 113 scenario cases \(113 passed\): FAIL$", out, re.M
    )


def test_a_wrong_scenario_expectation_fails(policies: Path) -> None:
    path = policies / SCENARIOS_FILE
    text = path.read_text(encoding="utf-8")
    wrong = text.replace(
        "{element: police.suspect_history_dv, subjects: [P01], expect: deny_element_not_allowed}",
        "{element: police.suspect_history_dv, subjects: [P01], expect: allow_statutory_basis}",
    )
    assert wrong != text
    path.write_text(wrong, encoding="utf-8")
    result = invoke(policies, "--agreement", "agr-vt-politie-hg")
    assert result.exit_code == 1
    assert "FAIL  scenarios.S01" in result.output
    assert "reason deny_element_not_allowed, expected allow_statutory_basis" in result.output


def test_min_coverage_above_100_fails() -> None:
    result = invoke(POLICIES, "--min-coverage", "101", "--no-scenarios")
    assert result.exit_code == 1
    assert "FAIL  " not in result.output
    assert "rule coverage 100.0% (minimum 101%): BELOW MINIMUM" in result.output


def test_unknown_agreement_is_a_usage_error() -> None:
    result = invoke(POLICIES, "--agreement", "agr-does-not-exist")
    assert result.exit_code == 2
    assert "unknown agreement" in result.output


# ------------------------------------------------------------------ rule coverage
NEW_RULE = """
precondition contains "never_tested" if {
\tinput.context.never_tested == true
}

# Holds in kindcheck requests; regorus evaluates this package for those too.
precondition contains "kindcheck_context" if {
\tinput.context.kindcheck_decision == "meldcode_stappen_volgen"
}
"""


def test_an_uncovered_precondition_rule_is_named(policies: Path) -> None:
    append(policies / RAAD_POLICY, NEW_RULE)
    lines = (policies / RAAD_POLICY).read_text(encoding="utf-8").splitlines()
    never = lines.index('precondition contains "never_tested" if {') + 1
    kindcheck = lines.index('precondition contains "kindcheck_context" if {') + 1

    result = invoke(policies)
    assert result.exit_code == 0, result.output  # all tests pass; no minimum asked
    out = result.output
    assert "Rules no test exercised:" in out
    assert (
        f'agreements/agr-vt-raad-vto/policy.rego:{never}  precondition contains "never_tested"'
        in out
    )
    # Made true only by decisions on *another* agreement: not credited to this one.
    assert (
        f"agreements/agr-vt-raad-vto/policy.rego:{kindcheck}"
        '  precondition contains "kindcheck_context"'
    ) in out
    assert re.search(r"agr-vt-raad-vto/policy\.rego\s+rules 5/7 ", out)
    assert invoke(policies, "--min-coverage", "100").exit_code == 1

    # A direct unit test of the rule (no decision) covers it.
    append(
        policies / RAAD_TESTS,
        "\ntest_never_tested_rule if {\n"
        '\t"never_tested" in data.agreements.agr_vt_raad_vto.v1_4.precondition'
        ' with input as {"context": {"never_tested": true}, "subjects": []}\n}\n',
    )
    out = invoke(policies).output
    assert '"never_tested"' not in out.split("Rules no test exercised:")[1]
    assert '"kindcheck_context"' in out.split("Rules no test exercised:")[1]


def test_rule_coverage_counts_success_not_evaluation(policies: Path) -> None:
    """A failing body is evaluated by every raad decision but never succeeds."""
    append(policies / RAAD_POLICY, NEW_RULE)
    report = testing.run_policy_tests(policies, agreement="agr-vt-raad-vto")
    (raad,) = report.coverage.files
    assert {c.label for c in raad.uncovered_clauses} == {
        'precondition contains "never_tested"',
        'precondition contains "kindcheck_context"',
    }
    never_line = next(c.line for c in raad.uncovered_clauses if "never_tested" in c.label)
    assert never_line + 1 in raad.covered_lines  # its body line was evaluated ...
    assert never_line + 1 in raad.lines


def test_instrumentation_keeps_every_decision() -> None:
    """The coverage markers change no decision: instrumented == plain engine."""
    policy_set = load_policy_set(POLICIES)
    modules = policy_set.modules()
    packages = {p: testing._package_of(s, p) for p, s in modules.items()}
    instrumented = testing._instrument(modules, testing._ast(modules), packages)
    assert instrumented.warnings == []
    assert instrumented.traced
    # Line numbers are preserved.
    for path, source in modules.items():
        assert instrumented.modules[path].count("\n") == source.count("\n")
    engine = regorus.Engine()
    engine.add_data_json(orjson.dumps(policy_set.data_document()).decode())
    for path, source in instrumented.modules.items():
        engine.add_policy(path, source)
    engine.set_gather_prints(True)
    plain = build_regorus(policy_set)
    scenarios = load_scenarios(POLICIES / SCENARIOS_FILE)
    for request in scenarios.requests:
        document = orjson.dumps(request.policy_input(scenarios.registry).to_document()).decode()
        engine.set_input_json(document)
        plain.set_input_json(document)
        got: Any = engine.eval_rule("data.broker.decision.result")
        assert got == plain.eval_rule("data.broker.decision.result"), request.id
        assert got is not None


# ------------------------------------------------------------------ domain coverage
def test_untouched_purpose_and_whitelist_entry_are_named(policies: Path) -> None:
    path = policies / "agreements/agr-vt-politie-hg/agreement.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    purposes = {p["id"]: p for p in doc["purposes"]}
    purposes["terugkoppeling_zorgmelding"]["allowed_elements"]["politie"].append("vt.safety_plan")
    extra = dict(copy.deepcopy(purposes["terugkoppeling_zorgmelding"]), id="terugkoppeling_nieuw")
    doc["purposes"].append(extra)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    result = invoke(policies, "--agreement", "agr-vt-politie-hg", "--verbose")
    assert result.exit_code == 0, result.output  # domain coverage informs, it does not fail
    out = result.output
    assert "purposes no test decided: terugkoppeling_nieuw" in out
    assert (
        "not touched: terugkoppeling_zorgmelding allowed_elements[politie]: vt.safety_plan" in out
    )
    assert "not touched: terugkoppeling_nieuw allowed_elements[politie]: vt.case_status" in out
    assert "agr-vt-politie-hg: purposes 4/5 (80.0%), whitelist entries 19/22 (86.4%)" in out


def test_agreement_filter(policies: Path) -> None:
    result = invoke(policies, "--agreement", "agr-ggz-vt-kindcheck")
    assert result.exit_code == 0, result.output
    out = result.output
    packages = set(re.findall(r"^  (?:PASS|FAIL)  (\S+)", out, re.M))
    assert packages == {
        "agreements.agr_ggz_vt_kindcheck.v1_0_test",
        "scenarios.S05",
        "scenarios.S06",
    }
    assert "agreements/agr-ggz-vt-kindcheck/policy.rego" in out
    assert "lib/decision.rego" not in out
    assert "agr-zvh-mdaplusplus" not in out
