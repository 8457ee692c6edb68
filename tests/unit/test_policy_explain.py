"""Plain-language explanations (broker.policy.explain) on the real policies and
the acceptance scenarios, and the ``explain`` command."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date, datetime, time

import pytest
from click.testing import CliRunner

from broker.core.clock import DUTCH
from broker.core.types import ItemDecision, PolicyInput, ReasonCode
from broker.policy.explain import (
    build_input,
    deciding_step,
    explain,
    explain_command,
    parse_context,
    parse_value,
)
from broker.policy.loader import PolicySet, load_policy_set
from broker.policy.regopy_engine import RegopyEngine
from tests.scenarios.scenario_data import POLICY_ROOT, load_scenarios


@pytest.fixture(scope="module")
def policy_set() -> PolicySet:
    return load_policy_set(POLICY_ROOT)


@pytest.fixture(scope="module")
def engine(policy_set: PolicySet) -> Iterator[RegopyEngine]:
    engine = RegopyEngine(policy_set, threads=1)
    yield engine
    asyncio.run(engine.aclose())


def _text(engine: RegopyEngine, policy_input: PolicyInput, element: str, subject: str) -> str:
    decision = engine.decide_sync(policy_input)
    item = next(i for i in decision.items if (i.element, i.subject) == (element, subject))
    return explain(
        item,
        agreement_id=policy_input.agreement,
        purpose_id=policy_input.purpose,
        recipient=policy_input.recipient,
        provider=policy_input.provider,
        policy_set=engine.policy_set,
        policy_input=policy_input,
    )


def scenario(engine: RegopyEngine, request_id: str, element: str, subject: str) -> list[str]:
    scenarios = load_scenarios()
    policy_input = scenarios.request(request_id).policy_input(scenarios.registry)
    return _text(engine, policy_input, element, subject).split("\n")


def test_allow_statutory_names_clause_bases_and_shape(engine: RegopyEngine) -> None:
    lines = scenario(engine, "S01-R1", "police.dv_incident", "P01")
    assert lines[0] == (
        "Allowed (allow_statutory_basis): politie -> veilig_thuis, police.dv_incident "
        "(Incidentregistratie huiselijk geweld); decided at step 6 of the decision procedure "
        "(consent or legal basis)."
    )
    assert lines[1] == (
        "Step 1, agreement in force: Agreement agr-vt-politie-hg version 3.0 ('Cooperation "
        "agreement Veilig Thuis - Police on care reports and domestic-violence information') is "
        "active and valid from 2025-01-01 to 2027-12-31."
    )
    assert lines[2].startswith(
        "Step 2, purpose known: Purpose zorgmelding_na_incident: After a domestic-violence"
    )
    assert lines[5] == (
        "Step 5, preconditions: Every precondition holds: incident_registered (A police "
        "incident or concern registration exists for at least one subject)."
    )
    assert "Wet politiegegevens (Wpg) art. 20 [wpg_20]" in lines[6]
    assert "needs no consent (consent: not_required_with_basis" in lines[6]
    assert lines[7] == (
        "Step 7, shape of the answer: The value is returned in full (response form full)."
    )


def test_boolean_only_purpose_says_so(engine: RegopyEngine) -> None:
    lines = scenario(engine, "S05-R1", "vt.report_exists", "P10")
    assert lines[-1] == (
        "Step 7, shape of the answer: Only a yes/no answer is returned (response form "
        "boolean_only)."
    )


def test_deny_element_points_to_the_purpose_that_has_it(engine: RegopyEngine) -> None:
    lines = scenario(engine, "S01-R1", "police.suspect_history_dv", "P01")
    assert lines[0].startswith("Denied (deny_element_not_allowed)")
    assert len(lines) == 5  # steps 1-4, nothing after the deciding step
    assert lines[4].startswith(
        "Step 4, element allowed: police.suspect_history_dv (Eerdere registraties huiselijk "
        "geweld (pleger)) is not on the list of elements veilig_thuis may receive under purpose "
        "zorgmelding_na_incident (8 elements: person.bsn,"
    )
    assert lines[4].endswith(
        "It is on veilig_thuis's list under purpose informatie_voor_veiligheidsbeoordeling of "
        "this agreement, which has its own conditions."
    )


def test_precondition_failure_names_id_and_description(engine: RegopyEngine) -> None:
    lines = scenario(engine, "S02-R3", "vt.safety_assessment", "HH-HOEKSTRA")
    assert lines[-1] == (
        "Step 5, preconditions: Not met: acute_unsafety_established (Latest VT safety "
        "assessment flags acute unsafety). Preconditions are checked once for the whole request."
    )


def test_purpose_mismatch_and_not_in_force(engine: RegopyEngine) -> None:
    lines = scenario(engine, "S02-R2", "health.ggz_treatment_involvement", "P01")
    assert lines[-1] == (
        "Step 3, parties fit the purpose: ggz is not a provider under purpose "
        "terugkoppeling_zorgmelding (providers: veilig_thuis)."
    )
    lines = scenario(engine, "S06-R1", "vt.report_exists", "P10")
    assert lines[-1].endswith(
        "is valid from 2025-01-01 to 2026-12-31; the request date 2027-01-12 is after it."
    )


def test_consent_incomplete_parent_only(engine: RegopyEngine) -> None:
    """S08-R1: Noor (13) - only her mother signed CNS-801."""
    step6 = scenario(engine, "S08-R1", "health.ggz_treatment_involvement", "P03")[-1]
    assert "Consent record CNS-801 is the most recent one covering this request" in step6
    assert (
        "On the request date (2026-05-22) the subject is 13 years old (age band 12 to 15); the "
        "agreement's own consent rule requires consent from the child and every holder of "
        "parental authority (2 holders of parental authority on the request date). Record "
        "CNS-801 was given by 1 of the 2 holders of parental authority. Missing: the child and "
        "1 of the 2 holders of parental authority."
    ) in step6
    assert "The acute-danger clause of this purpose releases nothing to gemeente_wijkteam." in (
        step6
    )


def test_consent_incomplete_child_and_one_parent(engine: RegopyEngine) -> None:
    step6 = scenario(engine, "S08-R2", "health.ggz_treatment_involvement", "P03")[-1]
    assert (
        "Record CNS-802 was given by the child and 1 of the 2 holders of parental authority. "
        "Missing: 1 of the 2 holders of parental authority."
    ) in step6


def test_consent_complete_names_rule_and_bases(engine: RegopyEngine) -> None:
    lines = scenario(engine, "S08-R3", "health.ggz_treatment_involvement", "P03")
    assert lines[0].startswith("Allowed (allow_consent)")
    assert (
        "Record CNS-803 was given by the child and both holders of parental authority. "
        "That is everyone the rule requires."
    ) in lines[6]
    assert (
        "Legal basis: Algemene verordening gegevensbescherming (AVG) art. 6(1)(a); 7(3); "
        "9(2)(a) [avg_toestemming]"
    ) in lines[6]


def test_sixteen_year_old_alone_and_parent_without_authority(engine: RegopyEngine) -> None:
    step6 = scenario(engine, "S08-R4", "school.attendance_absence", "P07")[6]
    assert (
        "the subject is 16 years old (age band 16 or 17); the agreement's own consent rule "
        "requires consent from the child. Record CNS-804 was given by the child."
    ) in step6
    step6 = scenario(engine, "S08-R4", "school.attendance_absence", "P08")[-1]
    assert (
        "the subject is 7 years old (age band under 12); the agreement's own consent rule "
        "requires consent from every holder of parental authority (1 holder of parental "
        "authority on the request date). Record CNS-805 was given by 1 person without parental "
        "authority (who cannot consent for the child). Missing: the holder of parental "
        "authority."
    ) in step6


def test_consent_withdrawn(engine: RegopyEngine) -> None:
    step6 = scenario(engine, "S07-R1", "finance.debt_assistance_status", "P06")[-1]
    assert "Consent record CNS-1001 was withdrawn at 2026-06-15 09:12 CEST" in step6


def test_break_glass_names_clause_and_declaration(engine: RegopyEngine) -> None:
    lines = scenario(engine, "S09-R1", "health.ggz_treatment_involvement", "P01")
    assert lines[0].startswith("Allowed (allow_break_glass)")
    assert (
        "the acute-danger declaration ACU-901 is valid, so the request is decided in" in (lines[3])
    )
    assert "is on the acute-danger list of elements politie may receive" in lines[4]
    assert (
        "valid for at most 72 hours (PT72H); releases to politie only "
        "health.ggz_treatment_involvement, health.treating_professional_contact)"
    ) in lines[6]
    assert (
        "Declaration ACU-901 by veilig_thuis made at 2026-09-02 23:05 CEST is valid" in (lines[6])
    )
    assert "the privacy officer reviews within 5 days (P5D)" in lines[6]


def test_break_glass_expired_and_not_covering(engine: RegopyEngine) -> None:
    lines = scenario(engine, "S09-R5", "health.treating_professional_contact", "P01")
    assert lines[-1].endswith(
        "declaration ACU-901 by veilig_thuis was made at 2026-09-02 23:05 CEST and expired at "
        "2026-09-05 23:05 CEST, before the request at 2026-09-06 09:00 CEST."
    )
    step6 = scenario(engine, "S09-R4", "health.diagnosis", "P01")[-1]
    assert step6.endswith(
        "does not apply: health.diagnosis is not on the acute-danger list for veilig_thuis."
    )


def test_every_scenario_item_is_explained(engine: RegopyEngine) -> None:
    scenarios = load_scenarios()
    for request in scenarios.requests:
        policy_input = request.policy_input(scenarios.registry)
        for item in engine.decide_sync(policy_input).items:
            text = explain(
                item,
                agreement_id=policy_input.agreement,
                purpose_id=policy_input.purpose,
                recipient=policy_input.recipient,
                provider=policy_input.provider,
                policy_set=engine.policy_set,
                policy_input=policy_input,
            )
            lines = text.split("\n")
            step = deciding_step(item.reason)
            assert lines[0].startswith(("Allowed" if item.allowed else "Denied") + " (")
            assert f"decided at step {step} " in lines[0]
            assert len(lines) == 1 + step + (1 if item.allowed else 0)


def test_without_policy_input_the_api_call_still_works(policy_set: PolicySet) -> None:
    """The API's call (no policy_input) names the consent rule in general terms."""
    item = ItemDecision(
        element="health.ggz_treatment_involvement",
        subject="x",
        reason=ReasonCode.DENY_CONSENT_INCOMPLETE,
        consent_id="CNS-1",
    )
    text = explain(
        item,
        agreement_id="agr-zvh-mdaplusplus",
        purpose_id="zorginformatie_casusoverleg",
        recipient="gemeente_wijkteam",
        provider="ggz",
        policy_set=policy_set,
    )
    assert (
        "Who must consent follows the agreement's own consent rule for the subject's age on the "
        "request date (under 12: every holder of parental authority; 12 to 15: the child and "
        "every holder of parental authority; 16 or 17: the child; 18 or older: the person "
        "themselves)."
    ) in text
    unknown = ItemDecision(element="x.y", subject="x", reason=ReasonCode.DENY_UNKNOWN_PURPOSE)
    text = explain(
        unknown,
        agreement_id="agr-ggz-vt-kindcheck",
        purpose_id="nope",
        recipient="ggz",
        provider="veilig_thuis",
        policy_set=policy_set,
    )
    assert text.split("\n")[-1] == (
        "Step 2, purpose known: Agreement agr-ggz-vt-kindcheck has no purpose nope (its "
        "purposes: kindcheck_bekendheid, kindcheck_contact_professional)."
    )
    missing = ItemDecision(element="x", subject="x", reason=ReasonCode.DENY_AGREEMENT_NOT_IN_FORCE)
    text = explain(
        missing,
        agreement_id="agr-none",
        purpose_id="p",
        recipient="r",
        provider="q",
        policy_set=policy_set,
    )
    assert text.endswith(
        "Step 1, agreement in force: There is no agreement agr-none in the policy set."
    )


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("false", False),
        ("null", None),
        ("3", 3),
        ("0.33", 0.33),
        ('"42"', "42"),
        ("onderzoek", "onderzoek"),
        ("NaN", "NaN"),
        ("", ""),
    ],
)
def test_parse_value(raw: str, value: object) -> None:
    assert parse_value(raw) == value


def test_parse_context_nests_dotted_keys() -> None:
    assert parse_context(
        ["vt_safety_assessment.acute_onveilig=true", "vt_safety_assessment.x=1", "a=b=c"]
    ) == {"vt_safety_assessment": {"acute_onveilig": True, "x": 1}, "a": "b=c"}
    with pytest.raises(ValueError, match="is a value"):
        parse_context(["a=1", "a.b=2"])
    with pytest.raises(ValueError, match="key=value"):
        parse_context(["novalue"])


# ---------------------------------------------------------------------- CLI
def run(*args: str) -> str:
    result = CliRunner().invoke(explain_command, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


MDA = (
    "--agreement",
    "agr-zvh-mdaplusplus",
    "--purpose",
    "zorginformatie_casusoverleg",
    "--recipient",
    "gemeente_wijkteam",
    "--element",
    "health.ggz_treatment_involvement",
    "--context",
    "mda_case_id=MDA-LB-2026-015",
    "--context",
    "mda_case_status=actief",
    "--date",
    "2026-05-27",
    "--subject-age",
    "13",
)


def test_cli_consent_incomplete_then_complete() -> None:
    out = run(*MDA, "--consent", "given_by=child,H1,given_at=2026-05-26")
    assert out.startswith(
        "Request: ggz -> gemeente_wijkteam, agreement agr-zvh-mdaplusplus (version 2.2), purpose "
        "zorginformatie_casusoverleg, date 2026-05-27, subject S1 (age 13, 2 holders of "
        "parental authority)\n"
    )
    assert "\nhealth.ggz_treatment_involvement: DENY (deny_consent_incomplete)\n" in out
    assert "Record C1 was given by the child and 1 of the 2 holders" in out
    out = run(*MDA, "--consent", "given_by=child+H1+H2,given_at=2026-05-26")
    assert "\nhealth.ggz_treatment_involvement: ALLOW (allow_consent)\n" in out
    out = run(*MDA, "--consent", "given_by=child,H1,H2,given_at=2026-05-20,withdrawn_at=2026-05-27")
    assert "ALLOW" not in out and "(deny_consent_withdrawn)" in out


def test_cli_prints_the_same_text_as_explain(policy_set: PolicySet, engine: RegopyEngine) -> None:
    out = run(*MDA, "--consent", "given_by=H1,given_at=2026-05-26", "--authority-holders", "1")
    policy_input = build_input(
        policy_set,
        agreement_id="agr-zvh-mdaplusplus",
        purpose_id="zorginformatie_casusoverleg",
        recipient="gemeente_wijkteam",
        elements=["health.ggz_treatment_involvement"],
        subject_age=13,
        authority_holders=1,
        consents=["given_by=H1,given_at=2026-05-26"],
        context={"mda_case_id": "MDA-LB-2026-015", "mda_case_status": "actief"},
        moment=datetime.combine(date(2026, 5, 27), time(12), DUTCH),
    )
    text = _text(engine, policy_input, "health.ggz_treatment_involvement", "S1")
    assert text in out
    assert "Missing: the child." in text


def test_cli_dotted_context_and_default_provider() -> None:
    base = (
        "--agreement",
        "agr-vt-politie-hg",
        "--purpose",
        "acute_onveiligheid_inschakelen_politie",
        "--recipient",
        "politie",
        "--element",
        "vt.safety_assessment",
        "--element",
        "health.diagnosis",
        "--date",
        "2026-03-20",
    )
    out = run(*base, "--context", "vt_safety_assessment.acute_onveilig=true")
    assert out.startswith("Request: veilig_thuis -> politie,")
    assert "\nvt.safety_assessment: ALLOW (allow_statutory_basis)\n" in out
    assert "\nhealth.diagnosis: DENY (deny_element_not_allowed)\n" in out
    out = run(*base, "--context", "vt_safety_assessment.acute_onveilig=false")
    assert "\nvt.safety_assessment: DENY (deny_precondition_failed)\n" in out


def test_cli_acute_declaration() -> None:
    out = run(
        "--agreement",
        "agr-zvh-mdaplusplus",
        "--purpose",
        "zorginformatie_casusoverleg",
        "--recipient",
        "politie",
        "--element",
        "health.treating_professional_contact",
        "--subject-age",
        "38",
        "--context",
        "mda_case_id=M",
        "--context",
        "mda_case_status=actief",
        "--date",
        "2026-09-03",
        "--acute",
        "id=ACU-1,declared_by=veilig_thuis,declared_at=2026-09-02T23:05,"
        "evidence.vt_safety_assessment.acute_onveilig=true",
    )
    assert "\nhealth.treating_professional_contact: ALLOW (allow_break_glass)\n" in out
    assert "Declaration ACU-1 by veilig_thuis made at 2026-09-02 23:05 CEST is valid" in out


def test_cli_rejects_bad_context() -> None:
    result = CliRunner().invoke(explain_command, [*MDA, "--context", "oops"])
    assert result.exit_code == 2
    assert "expected key=value" in result.output
