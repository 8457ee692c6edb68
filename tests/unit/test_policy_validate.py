"""``broker.policy.validate``: one broken thing per test, exact ``file:line: message``.

Every test copies the shipped ``policies/`` to a temporary folder, edits the YAML or
Rego text, and checks the problems the validator reports, line numbers included.
Expected lines are looked up in the edited text, so they follow the shipped files.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.core.errors import PolicyInvalid
from broker.policy import validate
from broker.policy.validate import Problem, assert_valid, check_command, validate_policy_dir
from tests.support.policy_files import POLICIES, copy_policies, problems

K = "agreements/agr-ggz-vt-kindcheck/agreement.yaml"
K_REGO = "agreements/agr-ggz-vt-kindcheck/policy.rego"
P = "agreements/agr-vt-politie-hg/agreement.yaml"
R = "agreements/agr-vt-raad-vto/agreement.yaml"
R_REGO = "agreements/agr-vt-raad-vto/policy.rego"
Z = "agreements/agr-zvh-mdaplusplus/agreement.yaml"
Z_REGO = "agreements/agr-zvh-mdaplusplus/policy.rego"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_policies(tmp_path)


def edit(root: Path, rel: str, old: str, new: str) -> None:
    """Replaces the one occurrence of ``old`` in ``rel``."""
    path = root / rel
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {rel}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def line_of(root: Path, rel: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line of ``rel`` that contains ``needle``
    (that starts with it for ``^needle``, that ends with it for ``needle$``)."""
    text = (root / rel).read_text(encoding="utf-8")
    if needle.startswith("^"):
        lines = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith(needle[1:])]
    elif needle.endswith("$"):
        lines = [n for n, line in enumerate(text.splitlines(), 1) if line.endswith(needle[:-1])]
    else:
        lines = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(lines) >= occurrence, f"{needle!r} not in {rel}"
    return lines[occurrence - 1]


def at(root: Path, rel: str, needle: str, message: str, occurrence: int = 1) -> str:
    return f"{rel}:{line_of(root, rel, needle, occurrence)}: {message}"


# ------------------------------------------------------------------------ the shipped set
def test_shipped_policies_have_no_problems() -> None:
    assert validate_policy_dir(POLICIES) == []
    assert_valid(POLICIES)


def test_problem_renders_as_file_line_message() -> None:
    problem = Problem(Path("agreements/x/agreement.yaml"), 7, "status: 'live' is wrong")
    assert str(problem) == "agreements/x/agreement.yaml:7: status: 'live' is wrong"


# ------------------------------------------------------------------------ YAML and fields
def test_yaml_that_does_not_parse(root: Path) -> None:
    edit(root, K, "parties: [ggz, veilig_thuis]", "parties: [ggz, veilig_thuis")
    libyaml = validate._YamlLoader is getattr(yaml, "CSafeLoader", None)
    problem = "did not find expected ',' or ']'" if libyaml else "expected ',' or ']', but got ':'"
    start = line_of(root, K, "parties: [ggz")
    assert problems(root) == [
        at(
            root,
            K,
            "data_subjects:",
            f"YAML does not parse: {problem} (while parsing a flow sequence at line {start})",
        )
    ]


def test_missing_required_field(root: Path) -> None:
    edit(root, K, "valid_from: 2025-01-01\n", "")
    assert problems(root) == [at(root, K, "schema_version:", "missing required field 'valid_from'")]


def test_a_single_version_may_be_open_ended(root: Path) -> None:
    edit(root, K, "valid_until: 2026-12-31\n", "")
    assert problems(root) == []
    edit(root, K, "valid_from: 2025-01-01\n", "valid_from: 2025-01-01\nvalid_until: null\n")
    assert problems(root) == []


def test_missing_required_purpose_field(root: Path) -> None:
    edit(root, K, "    response_form: boolean_only\n", "")
    assert problems(root) == [
        at(
            root,
            K,
            "- id: kindcheck_bekendheid",
            "purposes[kindcheck_bekendheid]: missing required field 'response_form'",
        )
    ]


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            'version: "1.0"',
            "version: 1.0",
            "^version:",
            "version: expected a non-empty string, got a number",
        ),
        (
            "valid_from: 2025-01-01",
            "valid_from: soon",
            "^valid_from:",
            "valid_from: expected a date (YYYY-MM-DD), got a string",
        ),
        (
            "valid_until: 2026-12-31",
            "valid_until: 2026-02-30",
            "^valid_until:",
            "valid_until: cannot read '2026-02-30' (day is out of range for month)",
        ),
        (
            "ggz: [vt.report_exists]",
            "ggz: vt.report_exists",
            "ggz: vt.report_exists",
            "purposes[kindcheck_bekendheid].allowed_elements.ggz: "
            "expected a list of element ids, got a string",
        ),
    ],
)
def test_wrong_types(root: Path, old: str, new: str, needle: str, message: str) -> None:
    edit(root, K, old, new)
    assert problems(root) == [at(root, K, needle, message)]


def test_wrong_type_of_preconditions(root: Path) -> None:
    edit(
        root,
        K,
        "    preconditions:\n      - {id: prior_yes_answer",
        "    preconditions: none\n    x_preconditions:\n      - {id: prior_yes_answer",
    )
    assert at(
        root,
        K,
        "preconditions: none",
        "purposes[kindcheck_contact_professional].preconditions: "
        "expected a list of preconditions, got a string",
    ) in problems(root)


def test_wrong_type_of_a_list(root: Path) -> None:
    edit(root, K, "parties: [ggz, veilig_thuis]", "parties: ggz")
    # Providers and recipients are then not held against an unreadable list of parties.
    assert problems(root) == [
        at(root, K, "parties: ggz", "parties: expected a list of party ids, got a string")
    ]


def test_status_not_allowed(root: Path) -> None:
    edit(root, K, "status: active", "status: live")
    assert problems(root) == [
        at(
            root,
            K,
            "status: live",
            "status: 'live' is not one of draft, active, suspended, expired, superseded",
        )
    ]


def test_valid_from_after_valid_until(root: Path) -> None:
    edit(root, K, "valid_from: 2025-01-01", "valid_from: 2027-01-01")
    assert problems(root) == [
        at(root, K, "^valid_from:", "valid_from 2027-01-01 is after valid_until 2026-12-31")
    ]


def test_duplicate_key(root: Path) -> None:
    edit(root, K, "status: active\n", "status: active\nstatus: draft\n")
    first = line_of(root, K, "status: active")
    assert problems(root) == [
        at(root, K, "status: draft", f"duplicate key 'status' (first at line {first})")
    ]


def test_document_that_is_not_a_mapping(root: Path) -> None:
    (root / K).write_text("- just\n- a list\n", encoding="utf-8")
    assert problems(root) == [f"{K}:1: document: expected a mapping, got a list"]


def test_empty_document(root: Path) -> None:
    (root / K).write_text("# nothing yet\n", encoding="utf-8")
    assert problems(root) == [f"{K}:1: the file is empty"]


# ------------------------------------------------------------------------ reference ids
@pytest.mark.parametrize(
    ("rel", "old", "new", "message"),
    [
        (
            K,
            "ggz: [vt.report_exists]",
            "ggz: [vt.report_exist]",
            "purposes[kindcheck_bekendheid].allowed_elements.ggz: unknown element "
            "'vt.report_exist'",
        ),
        (
            K,
            "[person.bsn, person.birth_date, household",
            "[person.bsn, person.birthdate, household",
            "purposes[kindcheck_bekendheid].request_payload_elements: unknown element "
            "'person.birthdate'",
        ),
        (
            Z,
            "politie: [health.ggz_treatment_involvement, health.treating_professional_contact]",
            "politie: [health.ggz_treatment, health.treating_professional_contact]",
            "purposes[zorginformatie_casusoverleg].acute_danger.allowed_elements.politie: "
            "unknown element 'health.ggz_treatment'",
        ),
        (
            R,
            "        - vt.investigation_conclusion\n        - vt.safety_plan\n        - vt.contact"
            "_person\n        - police",
            "        - vt.investigation_conclusion\n        - vt.safetyplan\n        - vt.contact"
            "_person\n        - police",
            "purposes[verzoek_tot_onderzoek].allowed_elements.raad_kinderbescherming: unknown "
            "element 'vt.safetyplan'",
        ),
    ],
)
def test_unknown_element(root: Path, rel: str, old: str, new: str, message: str) -> None:
    edit(root, rel, old, new)
    unknown = re.search(r"'([^']+)'$", message)
    assert unknown is not None
    word = re.compile(re.escape(unknown.group(1)) + r"(?![\w.])")
    text = (root / rel).read_text(encoding="utf-8").splitlines()
    (line,) = [n for n, content in enumerate(text, 1) if word.search(content)]
    assert problems(root) == [f"{rel}:{line}: {message}"]


@pytest.mark.parametrize(
    ("rel", "old", "new", "needle", "message"),
    [
        (
            K,
            "parties: [ggz, veilig_thuis]",
            "parties: [ggz, veilig_thuis, jeugdzorg]",
            "parties:",
            "parties: unknown party 'jeugdzorg'",
        ),
        (
            K,
            "    allowed_elements:\n      ggz: [vt.report_exists]",
            "    allowed_elements:\n      ggzz: [vt.report_exists]",
            "ggzz:",
            "purposes[kindcheck_bekendheid].allowed_elements: unknown party 'ggzz'",
        ),
        (
            Z,
            "declarable_by: [veilig_thuis, politie]",
            "declarable_by: [veilig_thuis, polizei]",
            "declarable_by:",
            "purposes[zorginformatie_casusoverleg].acute_danger.declarable_by: unknown party "
            "'polizei'",
        ),
        (
            Z,
            "additional_recipients: [politie]",
            "additional_recipients: [politie, polizei]",
            "additional_recipients:",
            "purposes[zorginformatie_casusoverleg].acute_danger.additional_recipients: unknown "
            "party 'polizei'",
        ),
        (
            P,
            "  - party: gemeente_wijkteam",
            "  - party: gemeente",
            "- party: gemeente",
            "signatories[2].party: unknown party 'gemeente'",
        ),
    ],
)
def test_unknown_party(root: Path, rel: str, old: str, new: str, needle: str, message: str) -> None:
    edit(root, rel, old, new)
    assert problems(root) == [at(root, rel, needle, message)]


def test_unknown_provider_and_recipient(root: Path) -> None:
    edit(
        root,
        P,
        "    providers: [politie]\n    recipients: [veilig_thuis]\n    initiation: push",
        "    providers: [politie, polcie]\n    recipients: [veilig_thuis, vt]\n"
        "    initiation: push",
    )
    assert problems(root) == [
        at(
            root,
            P,
            "polcie",
            "purposes[zorgmelding_na_incident].providers: unknown party 'polcie'",
        ),
        at(
            root,
            P,
            "[veilig_thuis, vt]",
            "purposes[zorgmelding_na_incident].recipients: unknown party 'vt'",
        ),
    ]


def test_provider_and_recipient_must_be_parties_of_the_agreement(root: Path) -> None:
    edit(
        root,
        P,
        "    providers: [politie]\n    recipients: [veilig_thuis]\n    initiation: push",
        "    providers: [politie, huisarts]\n    recipients: [veilig_thuis, ggz]\n    initiation: "
        "push",
    )
    assert problems(root) == [
        at(
            root,
            P,
            "huisarts]",
            "purposes[zorgmelding_na_incident].providers: 'huisarts' is not a party of this "
            "agreement",
        ),
        at(
            root,
            P,
            "[veilig_thuis, ggz]",
            "purposes[zorgmelding_na_incident].recipients: 'ggz' is not a party of this agreement",
        ),
    ]


def test_unknown_legal_basis(root: Path) -> None:
    edit(
        root,
        K,
        "legal_basis_ids: [wmo_4_1_1, wmo_vt_verwerking]",
        "legal_basis_ids: [wmo_4_1_1, wmo_vt]",
    )
    assert problems(root) == [
        at(
            root,
            K,
            "[wmo_4_1_1, wmo_vt]",
            "purposes[kindcheck_contact_professional].legal_basis_ids: unknown legal basis "
            "'wmo_vt'",
        )
    ]


def test_empty_legal_basis_ids(root: Path) -> None:
    edit(root, K, "legal_basis_ids: [wmo_4_1_1, wmo_vt_verwerking]", "legal_basis_ids: []")
    assert problems(root) == [
        at(
            root,
            K,
            "legal_basis_ids: []",
            "purposes[kindcheck_contact_professional].legal_basis_ids: a purpose needs at least "
            "one legal basis",
        )
    ]


def test_whitelist_for_a_party_that_does_not_receive(root: Path) -> None:
    edit(root, K, "ggz: [vt.contact_person]", "veilig_thuis: [vt.contact_person]")
    assert problems(root) == [
        at(
            root,
            K,
            "veilig_thuis: [vt.contact_person]",
            "purposes[kindcheck_contact_professional].allowed_elements: 'veilig_thuis' is "
            "neither a recipient nor an acute additional recipient",
        )
    ]


def test_acute_whitelist_for_a_party_that_does_not_receive(root: Path) -> None:
    old = "        gecertificeerde_instelling: [health.ggz_treatment_involvement"
    edit(root, Z, old, "        openbaar_ministerie: [health.ggz_treatment_involvement")
    assert problems(root) == [
        at(
            root,
            Z,
            "        openbaar_ministerie: [health",
            "purposes[zorginformatie_casusoverleg].acute_danger.allowed_elements: "
            "'openbaar_ministerie' is neither a recipient nor an acute additional recipient",
        )
    ]


# ------------------------------------------------------------------------ consent
def test_consent_value_not_allowed(root: Path) -> None:
    edit(
        root,
        K,
        "    consent: not_required_with_basis\n    preconditions:\n      - {id: kindcheck_pos",
        "    consent: maybe\n    preconditions:\n      - {id: kindcheck_pos",
    )
    assert problems(root) == [
        at(
            root,
            K,
            "consent: maybe",
            "purposes[kindcheck_bekendheid].consent: 'maybe' is not one of required, "
            "not_required_with_basis, required_unless_acute_danger",
        )
    ]


def test_consent_required_needs_a_consent_rule(root: Path) -> None:
    edit(
        root,
        K,
        "    consent: not_required_with_basis\n    preconditions:\n      - {id: kindcheck_pos",
        "    consent: required\n    preconditions:\n      - {id: kindcheck_pos",
    )
    assert problems(root) == [
        at(
            root,
            K,
            "consent: required",
            "purposes[kindcheck_bekendheid].consent: 'required' needs a top-level consent_rule",
        )
    ]


def test_no_consent_rule_for_consent_based_purposes(root: Path) -> None:
    text = (root / Z).read_text(encoding="utf-8")
    block = re.search(r"\nconsent_rule:\n(  .*\n)+", text)
    assert block is not None
    (root / Z).write_text(text.replace(block.group(0), "\n"), encoding="utf-8")
    assert problems(root) == [
        at(
            root,
            Z,
            "consent: required_unless_acute_danger",
            "purposes[zorginformatie_casusoverleg].consent: 'required_unless_acute_danger' "
            "needs a top-level consent_rule",
        ),
        at(
            root,
            Z,
            "consent: required$",
            "purposes[plan_van_aanpak_en_voortgang].consent: 'required' needs a top-level "
            "consent_rule",
        ),
    ]


def test_required_unless_acute_danger_needs_an_acute_danger_block(root: Path) -> None:
    edit(
        root,
        Z,
        "    consent: required\n",
        "    consent: required_unless_acute_danger\n",
    )
    assert problems(root) == [
        at(
            root,
            Z,
            "consent: required_unless_acute_danger",
            "purposes[plan_van_aanpak_en_voortgang].consent: 'required_unless_acute_danger' "
            "needs an acute_danger block",
            occurrence=2,
        )
    ]


def test_acute_danger_only_with_required_unless_acute_danger(root: Path) -> None:
    edit(
        root,
        Z,
        "    consent: required_unless_acute_danger\n",
        "    consent: not_required_with_basis\n",
    )
    assert problems(root) == [
        at(
            root,
            Z,
            "    acute_danger:",
            "purposes[zorginformatie_casusoverleg].acute_danger: only allowed with consent "
            "'required_unless_acute_danger'",
        )
    ]


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            "age_12_15: [child, all_authority_holders]",
            "age_12_15: [child, parents]",
            "age_12_15:",
            "consent_rule.age_12_15: unknown consent giver 'parents' (expected child, "
            "all_authority_holders, any_authority_holder, subject)",
        ),
        (
            "age_16_17: [child]",
            "age_16_17: []",
            "age_16_17:",
            "consent_rule.age_16_17: expected a non-empty list of consent givers",
        ),
        (
            "  age_18_plus: [subject]\n",
            "",
            "age_0_11:",
            "consent_rule: missing required field 'age_18_plus'",
        ),
        (
            "  age_18_plus: [subject]\n",
            "  age_18_plus: [subject]\n  age_99: [subject]\n",
            "age_99:",
            "consent_rule: unknown age band 'age_99' (expected age_0_11, age_12_15, age_16_17, "
            "age_18_plus)",
        ),
        (
            "  age_0_11: [all_authority_holders]\n",
            "  age_0_11: all_authority_holders\n",
            "age_0_11:",
            "consent_rule.age_0_11: expected a list of consent givers, got a string",
        ),
    ],
)
def test_consent_rule_block(root: Path, old: str, new: str, needle: str, message: str) -> None:
    edit(root, Z, old, new)
    assert problems(root) == [at(root, Z, needle, message)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "72 hours",
            "'72 hours' is not an ISO 8601 duration (days, hours, minutes, seconds, e.g. PT72H)",
        ),
        ("P1M", "'P1M' is not an ISO 8601 duration (days, hours, minutes, seconds, e.g. PT72H)"),
        ("PT0S", "must be longer than zero"),
    ],
)
def test_acute_max_duration(root: Path, value: str, message: str) -> None:
    edit(root, Z, "max_duration: PT72H", f"max_duration: {value}")
    assert problems(root) == [
        at(
            root,
            Z,
            "max_duration:",
            f"purposes[zorginformatie_casusoverleg].acute_danger.max_duration: {message}",
        )
    ]


def test_acute_danger_missing_required_field(root: Path) -> None:
    edit(root, Z, "      max_duration: PT72H\n", "")
    assert problems(root) == [
        at(
            root,
            Z,
            "declarable_by:",
            "purposes[zorginformatie_casusoverleg].acute_danger: missing required field "
            "'max_duration'",
        )
    ]


# ------------------------------------------------------------------------ preconditions
def test_declared_precondition_without_rule(root: Path) -> None:
    edit(root, K, "{id: prior_yes_answer,", "{id: prior_yes_answr,")
    assert problems(root) == [
        at(
            root,
            K,
            "prior_yes_answr",
            "purposes[kindcheck_contact_professional].preconditions: no rule precondition "
            'contains "prior_yes_answr" in policy.rego',
        ),
        at(
            root,
            K_REGO,
            '"prior_yes_answer"',
            'precondition "prior_yes_answer" is not declared in agreement.yaml',
        ),
    ]


def test_rule_without_declared_precondition(root: Path) -> None:
    rego = root / R_REGO
    rego.write_text(
        rego.read_text(encoding="utf-8")
        + '\nprecondition contains "court_date_set" if {\n\tinput.context.court_date != null\n}\n',
        encoding="utf-8",
    )
    assert problems(root) == [
        at(
            root,
            R_REGO,
            '"court_date_set"',
            'precondition "court_date_set" is not declared in agreement.yaml',
        )
    ]


def test_precondition_without_id(root: Path) -> None:
    edit(root, K, "{id: prior_yes_answer, description", "{ident: prior_yes_answer, description")
    found = problems(root)
    assert (
        at(
            root,
            K,
            "{ident: prior_yes_answer",
            "purposes[kindcheck_contact_professional].preconditions[0]: missing required field "
            "'id'",
        )
        in found
    )


def test_acute_danger_without_acute_evidence_rule(root: Path) -> None:
    edit(
        root,
        Z_REGO,
        "acute_evidence if {\n\tinput.acute_declaration.evidence.vt",
        "x if {\n\tinput.acute_declaration.evidence.vt",
    )
    edit(
        root,
        Z_REGO,
        "acute_evidence if {\n\tinput.acute_declaration.evidence.police",
        "y if {\n\tinput.acute_declaration.evidence.police",
    )
    assert problems(root) == [
        at(
            root,
            Z,
            "    acute_danger:",
            "purposes[zorginformatie_casusoverleg].acute_danger: policy.rego has no "
            "acute_evidence rule, so acute danger can never be established",
        )
    ]


def test_package_must_match_the_agreement_id(root: Path) -> None:
    edit(root, K_REGO, "package agreements.agr_ggz_vt_kindcheck.v1_0", "package agreements.kc")
    assert problems(root) == [
        at(
            root,
            K_REGO,
            "package",
            "package agreements.kc does not match agreement agr-ggz-vt-kindcheck version 1.0 "
            "(expected package agreements.agr_ggz_vt_kindcheck.v1_0)",
        )
    ]


def test_policy_rego_without_agreement_yaml(root: Path) -> None:
    (root / "agreements" / "orphan").mkdir()
    shutil.copy(root / K_REGO, root / "agreements" / "orphan" / "policy.rego")
    assert problems(root) == [
        "agreements/orphan/policy.rego:1: no agreement.yaml next to this policy.rego; "
        "the folder is ignored"
    ]


# ------------------------------------------------------------------------ purposes
def test_response_form_not_allowed(root: Path) -> None:
    edit(root, K, "response_form: boolean_only", "response_form: summary")
    assert problems(root) == [
        at(
            root,
            K,
            "response_form: summary",
            "purposes[kindcheck_bekendheid].response_form: 'summary' is not one of full, "
            "boolean_only",
        )
    ]


def test_duplicate_purpose_id(root: Path) -> None:
    edit(root, K, "  - id: kindcheck_contact_professional", "  - id: kindcheck_bekendheid")
    first = line_of(root, K, "- id: kindcheck_bekendheid")
    assert problems(root) == [
        at(
            root,
            K,
            "- id: kindcheck_bekendheid",
            f"purposes: duplicate purpose id 'kindcheck_bekendheid' (first at line {first})",
            occurrence=2,
        )
    ]


# ------------------------------------------------------------------------ versions
def test_supersedes_mapping_overlaps_this_version(root: Path) -> None:
    edit(
        root,
        P,
        "valid_from: 2022-01-01, valid_until: 2024-12-31}",
        "valid_from: 2022-01-01, valid_until: 2025-03-31}",
    )
    assert problems(root) == [
        at(
            root,
            P,
            "supersedes:",
            "supersedes: version 2.1 (2022-01-01..2025-03-31) overlaps version 3.0 "
            "(2025-01-01..2027-12-31)",
        )
    ]


def test_supersedes_list_entries_overlap(root: Path) -> None:
    edit(
        root,
        P,
        'supersedes: {version: "2.1", valid_from: 2022-01-01, valid_until: 2024-12-31}',
        'supersedes:\n  - {version: "2.1", valid_from: 2022-01-01, valid_until: 2024-12-31}\n'
        '  - version: "2.0"\n    valid_from: 2020-01-01\n    valid_until: 2022-06-30',
    )
    assert problems(root) == [
        at(
            root,
            P,
            '{version: "2.1"',
            "supersedes: version 2.1 (2022-01-01..2024-12-31) overlaps version 2.0 "
            "(2020-01-01..2022-06-30)",
        )
    ]


def test_supersedes_entry_missing_field(root: Path) -> None:
    edit(root, P, '{version: "2.1", valid_from: 2022-01-01, ', '{version: "2.1", ')
    assert problems(root) == [
        at(root, P, "supersedes:", "supersedes: missing required field 'valid_from'")
    ]


def add_kindcheck_version(root: Path, version: str, window: str) -> str:
    """Puts the kindcheck agreement into the ``<id>/<version>/`` layout (1.0) and adds
    ``version`` as a copy of it with the validity lines ``window``; returns the new
    version's agreement.yaml path."""
    folder = root / "agreements" / "agr-ggz-vt-kindcheck"
    first = folder / "1.0"
    if not first.exists():
        first.mkdir()
        for path in [p for p in folder.iterdir() if p.is_file()]:
            path.rename(first / path.name)
    shutil.copytree(first, folder / version)
    rel = f"agreements/agr-ggz-vt-kindcheck/{version}/agreement.yaml"
    edit(root, rel, 'version: "1.0"', f'version: "{version}"')
    edit(root, rel, "valid_from: 2025-01-01\nvalid_until: 2026-12-31", window)
    package = "agreements.agr_ggz_vt_kindcheck.v"
    v_package = version.replace(".", "_")
    for name in ("policy.rego", "policy_test.rego"):
        edit(root, rel.replace("agreement.yaml", name), f"{package}1_0", f"{package}{v_package}")
    return rel


K1 = "agreements/agr-ggz-vt-kindcheck/1.0/agreement.yaml"


def test_versions_side_by_side_validate(root: Path) -> None:
    add_kindcheck_version(root, "2.0", "valid_from: 2027-01-01\nvalid_until: 2028-12-31")
    add_kindcheck_version(root, "3.0", "valid_from: 2029-01-01")
    assert problems(root) == []


def test_overlapping_versions(root: Path) -> None:
    rel = add_kindcheck_version(root, "2.0", "valid_from: 2026-07-01\nvalid_until: 2028-12-31")
    assert problems(root) == [
        at(
            root,
            rel,
            "^valid_from:",
            "version 2.0 (2026-07-01..2028-12-31) overlaps version 1.0 (2025-01-01..2026-12-31) "
            f"in {K1}",
        )
    ]


def test_only_the_latest_version_may_be_open_ended(root: Path) -> None:
    add_kindcheck_version(root, "2.0", "valid_from: 2027-01-01\nvalid_until: 2028-12-31")
    edit(root, K1, "valid_until: 2026-12-31\n", "")
    rel2 = "agreements/agr-ggz-vt-kindcheck/2.0/agreement.yaml"
    assert problems(root) == [
        at(
            root,
            K1,
            "^valid_from:",
            "version 1.0 has no valid_until, but version 2.0 starts later (2027-01-01); "
            "only the latest version may be open-ended",
        ),
        at(
            root,
            rel2,
            "^valid_from:",
            f"version 2.0 (2027-01-01..2028-12-31) overlaps version 1.0 (2025-01-01..) in {K1}",
        ),
    ]


def test_version_folder_must_match_the_file(root: Path) -> None:
    rel = add_kindcheck_version(root, "2.0", "valid_from: 2027-01-01\nvalid_until: 2028-12-31")
    (root / "agreements/agr-ggz-vt-kindcheck/2.0").rename(
        root / "agreements/agr-ggz-vt-kindcheck/2"
    )
    rel = rel.replace("/2.0/", "/2/")
    assert problems(root) == [
        at(
            root,
            rel,
            "^version:",
            "version 2.0 does not match its folder agr-ggz-vt-kindcheck/2/",
        )
    ]


def test_a_single_version_folder_may_not_hold_version_folders(root: Path) -> None:
    folder = root / "agreements" / "agr-ggz-vt-kindcheck"
    shutil.copytree(folder, root / "nested")
    (root / "nested").rename(folder / "2.0")
    assert problems(root) == [
        "agreements/agr-ggz-vt-kindcheck/2.0/agreement.yaml:1: agr-ggz-vt-kindcheck/ holds an "
        "agreement.yaml itself; put every version in its own folder <id>/<version>/; this "
        "folder is ignored"
    ]


def test_two_folders_with_the_same_id_and_version(root: Path) -> None:
    copy = root / "agreements" / "agr-ggz-vt-kindcheck-copy"
    shutil.copytree(root / "agreements" / "agr-ggz-vt-kindcheck", copy)
    rel = "agreements/agr-ggz-vt-kindcheck-copy/agreement.yaml"
    assert problems(root) == [
        at(
            root,
            rel,
            "^version:",
            f"agreement agr-ggz-vt-kindcheck version 1.0 is also defined in {K}",
        )
    ]


# ------------------------------------------------------------------------ Rego compilation
def test_rego_syntax_error_regorus(root: Path) -> None:
    edit(
        root,
        K_REGO,
        '\tinput.context.requester_role in ["behandelaar", "aandachtsfunctionaris"]\n}',
        "\tinput.context.requester_role ==\n}",
    )
    line = line_of(root, K_REGO, "requester_role ==") + 1
    assert problems(root) == [
        f"{K_REGO}:{line}: Rego does not compile (regorus): expecting expression"
    ]


def test_rego_unknown_function_regorus(root: Path) -> None:
    edit(
        root,
        K_REGO,
        "\tinput.context.kindcheck_decision ==",
        "\tlowercase(input.context.kindcheck_decision) ==",
    )
    assert problems(root) == [
        at(
            root,
            K_REGO,
            "lowercase(",
            "Rego does not compile (regorus): could not find function lowercase",
        )
    ]


def test_rego_error_only_regopy_sees(root: Path) -> None:
    rego = root / R_REGO
    rego.write_text(
        rego.read_text(encoding="utf-8")
        + "\ndefault acute_evidence := false\n\ndefault acute_evidence := true\n",
        encoding="utf-8",
    )
    assert problems(root) == [
        f"{R_REGO}:1: Rego does not compile (regopy): the bundle did not build "
        "(rego-cpp gives no location)"
    ]


def test_regopy_errors_are_located() -> None:
    source = (
        'package agreements.x\n\nimport rego.v1\n\n# é\nprecondition contains "a" if {\n'
        "\tinput.x ==\n}\n"
    )
    library = [
        validate._Module(
            "lib/decision.rego",
            (POLICIES / "lib" / "decision.rego").read_text(encoding="utf-8"),
            Path("lib/decision.rego"),
        )
    ]
    module = validate._Module("agreements/x/policy.rego", source, Path("agreements/x/policy.rego"))
    assert [str(p) for p in validate._check_regopy(library, [module])] == [
        "agreements/x/policy.rego:7: Rego does not compile (regopy): Invalid boolean operator"
    ]


def test_library_error_is_reported_in_the_library(root: Path) -> None:
    edit(root, "lib/decision.rego", '\tagreement.status == "active"', "\tnot_a_builtin(agreement)")
    assert problems(root) == [
        at(
            root,
            "lib/decision.rego",
            "not_a_builtin(",
            "Rego does not compile (regorus): could not find function not_a_builtin",
        )
    ]


# ------------------------------------------------------------------------ robustness
def test_missing_reference_file_skips_those_checks(root: Path) -> None:
    (root / "parties" / "parties.yaml").unlink()
    assert problems(root) == ["parties/parties.yaml:0: reference file is missing"]


def test_reference_file_with_duplicate_id(root: Path) -> None:
    path = root / "parties" / "parties.yaml"
    path.write_text(
        path.read_text(encoding="utf-8") + "  - id: ggz\n    name_nl: GGZ again\n",
        encoding="utf-8",
    )
    first = line_of(root, "parties/parties.yaml", "- id: ggz")
    assert problems(root) == [
        at(
            root,
            "parties/parties.yaml",
            "- id: ggz",
            f"parties: duplicate id 'ggz' (first at line {first})",
            occurrence=2,
        )
    ]


def test_missing_directory() -> None:
    found = validate_policy_dir(Path("/nonexistent/policies"))
    assert [str(p) for p in found] == ["/nonexistent/policies:0: policy directory does not exist"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    junk=st.sampled_from(
        ["", "-", ":", "  x: [", "}", "'", "&a *a", "- {id: 1}", "purposes: 3", "\t", "? ]"]
    ),
)
def test_mutated_files_never_raise(root: Path, data: st.DataObject, junk: str) -> None:
    rel = data.draw(st.sampled_from([K, Z, Z_REGO, "parties/parties.yaml"]))
    path = root / rel
    original = path.read_text(encoding="utf-8")
    lines = original.splitlines()
    index = data.draw(st.integers(0, len(lines) - 1))
    keep = data.draw(st.booleans())
    lines[index] = (lines[index] + junk) if keep else junk
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        found = validate_policy_dir(root)
        assert all(isinstance(p, Problem) and p.line >= 0 for p in found)
        assert not any(p.message.startswith("validation stopped") for p in found), found
    finally:
        path.write_text(original, encoding="utf-8")


# ------------------------------------------------------------------------ assert_valid
def test_assert_valid_lists_the_problems(root: Path) -> None:
    edit(root, K, "status: active", "status: live")
    with pytest.raises(PolicyInvalid) as info:
        assert_valid(root)
    assert info.value.message == (
        "the policy set has 1 problem:\n"
        + at(
            root,
            K,
            "status: live",
            "status: 'live' is not one of draft, active, suspended, expired, superseded",
        )
    )


def test_assert_valid_lists_at_most_twenty(root: Path) -> None:
    edit(
        root,
        R,
        "legal_basis_ids: [wmo_4_1_1, wmo_vt_verwerking, jeugdwet_2_4",
        "legal_basis_ids: [" + ", ".join(f"a{n}" for n in range(1, 23)) + ", jeugdwet_2_4",
    )
    with pytest.raises(PolicyInvalid) as info:
        assert_valid(root)
    lines = info.value.message.splitlines()
    assert lines[0] == "the policy set has 22 problems:"
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "... and 2 more"


# ------------------------------------------------------------------------ the command
def test_check_command_success() -> None:
    result = CliRunner().invoke(check_command, ["--policy-dir", str(POLICIES)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    *lines, bundle = result.stdout.splitlines()
    assert re.match(r"^bundle sha256:[0-9a-f]{64}$", bundle)
    assert len(lines) == 4
    pattern = re.compile(r"^agr-[a-z-]+ v[0-9.]+: [0-9]+ purposes, sha256:[0-9a-f]{64}$")
    assert all(pattern.match(line) for line in lines), lines
    assert "agr-zvh-mdaplusplus v2.2: 4 purposes, sha256:" in result.stdout


def test_check_command_reports_problems(root: Path) -> None:
    edit(root, K, "status: active", "status: live")
    edit(root, K, "response_form: boolean_only", "response_form: summary")
    result = CliRunner().invoke(check_command, ["--policy-dir", str(root)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        at(
            root,
            K,
            "status: live",
            "status: 'live' is not one of draft, active, suspended, expired, superseded",
        ),
        at(
            root,
            K,
            "response_form: summary",
            "purposes[kindcheck_bekendheid].response_form: 'summary' is not one of full, "
            "boolean_only",
        ),
    ]


def test_check_command_defaults_to_the_settings_policy_dir(root: Path) -> None:
    edit(root, K, "status: active", "status: live")
    runner = CliRunner(env={"BROKER_POLICY_DIR": str(root)})
    result = runner.invoke(check_command, [])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{K}:")


def test_check_command_lists_every_version(root: Path) -> None:
    add_kindcheck_version(root, "2.0", "valid_from: 2027-01-01\nvalid_until: 2028-12-31")
    result = CliRunner().invoke(check_command, ["--policy-dir", str(root)])
    assert result.exit_code == 0, result.output
    assert "agr-ggz-vt-kindcheck v1.0:" in result.output
    assert "agr-ggz-vt-kindcheck v2.0:" in result.output


PRIOR = "prior_answer: {purpose: kindcheck_bekendheid, element: vt.report_exists, window_hours: 24}"
PRIOR_WHERE = "purposes[kindcheck_contact_professional].prior_answer"


@pytest.mark.parametrize(
    ("new", "message"),
    [
        (
            "prior_answer: {purpose: kindcheck_elders, element: vt.report_exists, "
            "window_hours: 24}",
            f"{PRIOR_WHERE}.purpose: unknown purpose 'kindcheck_elders' of this agreement",
        ),
        (
            "prior_answer: {purpose: kindcheck_contact_professional, element: vt.contact_person, "
            "window_hours: 24}",
            f"{PRIOR_WHERE}.purpose: a purpose cannot rest on an earlier answer of its own",
        ),
        (
            "prior_answer: {purpose: kindcheck_bekendheid, element: vt.contact_person, "
            "window_hours: 24}",
            f"{PRIOR_WHERE}.element: 'vt.contact_person' is not released under purpose "
            "'kindcheck_bekendheid'",
        ),
        (
            "prior_answer: {purpose: kindcheck_bekendheid, element: vt.report_exist, "
            "window_hours: 24}",
            f"{PRIOR_WHERE}.element: unknown element 'vt.report_exist'",
        ),
        (
            "prior_answer: {purpose: kindcheck_bekendheid, element: vt.report_exists, "
            "window_hours: 0}",
            f"{PRIOR_WHERE}.window_hours: expected more than 0 and at most 8784 hours, got 0",
        ),
        (
            "prior_answer: {purpose: kindcheck_bekendheid, element: vt.report_exists, "
            "window_hours: a day}",
            f"{PRIOR_WHERE}.window_hours: expected a number of hours, got a string",
        ),
        (
            "prior_answer: {purpose: kindcheck_bekendheid, element: vt.report_exists}",
            f"{PRIOR_WHERE}: missing required field 'window_hours'",
        ),
        (
            "prior_answer: {purpose: kindcheck_bekendheid, element: vt.report_exists, "
            "window_hours: 24, agency: same}",
            f"{PRIOR_WHERE}: unknown field 'agency' (expected purpose, element, window_hours)",
        ),
    ],
)
def test_prior_answer_block(root: Path, new: str, message: str) -> None:
    """The earlier answer a precondition needs must be one the broker records: a
    yes/no-only purpose of the same agreement and an element it releases."""
    edit(root, K, PRIOR, new)
    assert problems(root) == [at(root, K, "prior_answer:", message)]


def test_prior_answer_of_a_purpose_answered_in_full(root: Path) -> None:
    edit(root, K, "    response_form: boolean_only\n", "    response_form: full\n")
    assert problems(root) == [
        at(
            root,
            K,
            "prior_answer:",
            f"{PRIOR_WHERE}.purpose: 'kindcheck_bekendheid' is not answered yes/no only "
            "(response_form: boolean_only), so it leaves no answer to look up",
        )
    ]
