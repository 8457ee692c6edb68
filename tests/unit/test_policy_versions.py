"""Several versions of one agreement side by side (``agreements/<id>/<version>/``):
loading, the version a decision uses on each date (both embedded engines), the
package of each version, drafts, and the policy tools with a version."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.cli import main
from broker.core.clock import DUTCH
from broker.core.errors import PolicyInvalid
from broker.core.types import Decision, PolicyInput
from broker.policy.explain import build_input
from broker.policy.loader import PolicySet, load_agreement, load_policy_set, with_agreement
from broker.policy.regopy_engine import RegopyEngine
from broker.policy.regorus_engine import RegorusEngine
from broker.settings import PROJECT_ROOT
from tests.integration.test_agreement_versions import AGREEMENT_ID, HOUSE_BAN, two_versions

PURPOSE = "informatie_voor_veiligheidsbeoordeling"
ELEMENTS = ("police.suspect_history_dv", HOUSE_BAN)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    policies = tmp_path / "policies"
    # The scenarios are dated in the shipped windows; these tests bring their own.
    shutil.copytree(PROJECT_ROOT / "policies", policies, ignore=shutil.ignore_patterns("scenarios"))
    two_versions(policies)
    return policies


@pytest.fixture
def policy_set(root: Path) -> PolicySet:
    return load_policy_set(root)


def _input(policy_set: PolicySet, day: str) -> PolicyInput:
    return build_input(
        policy_set,
        agreement_id=AGREEMENT_ID,
        purpose_id=PURPOSE,
        recipient="veilig_thuis",
        elements=ELEMENTS,
        context={"vt_case_status": "veiligheidsbeoordeling"},
        moment=datetime.combine(date.fromisoformat(day), time(12), DUTCH),
    )


def _decide(engine: RegopyEngine | RegorusEngine, policy_set: PolicySet, day: str) -> Decision:
    return engine.decide_sync(_input(policy_set, day))


@pytest.fixture
def engines(policy_set: PolicySet) -> Iterator[list[RegopyEngine | RegorusEngine]]:
    made: list[RegopyEngine | RegorusEngine] = [
        RegopyEngine(policy_set, threads=1),
        RegorusEngine(policy_set, threads=0),
    ]
    yield made
    for engine in made:
        asyncio.run(engine.aclose())


def _reasons(decision: Decision) -> dict[str, str]:
    return {i.element: i.reason.value for i in decision.items}


# ------------------------------------------------------------------ loading
def test_versions_load_side_by_side(policy_set: PolicySet) -> None:
    versions = policy_set.versions[AGREEMENT_ID]
    assert [a.version for a in versions] == ["3.0", "3.1"]
    assert policy_set.agreements[AGREEMENT_ID].version == "3.1"  # the latest
    assert [a.package for a in versions] == [
        "agreements.agr_vt_politie_hg.v3_0",
        "agreements.agr_vt_politie_hg.v3_1",
    ]
    assert policy_set.current(AGREEMENT_ID, date(2026, 6, 30)) is versions[0]
    assert policy_set.current(AGREEMENT_ID, date(2026, 7, 1)) is versions[1]
    assert policy_set.current(AGREEMENT_ID, date(2030, 1, 1)) is versions[1]
    data = policy_set.data_document()["broker"]["agreements"][AGREEMENT_ID]
    assert set(data["versions"]) == {"3.0", "3.1"}
    assert data["versions"]["3.1"]["rego_version"] == "v3_1"
    modules = policy_set.modules()
    assert "agreements/agr-vt-politie-hg/3.0/policy.rego" in modules
    assert "agreements/agr-vt-politie-hg/3.1/policy.rego" in modules
    # A single version keeps its folder <id>/.
    assert "agreements/agr-vt-raad-vto/policy.rego" in modules


def test_a_version_in_another_versions_package_does_not_load(root: Path) -> None:
    rego = root / "agreements" / AGREEMENT_ID / "3.1" / "policy.rego"
    rego.write_text(rego.read_text().replace(".v3_1\n", ".v3_0\n", 1))
    with pytest.raises(
        PolicyInvalid, match=r"expected package agreements\.agr_vt_politie_hg\.v3_1"
    ):
        load_policy_set(root)


def test_two_folders_with_one_version_do_not_load(root: Path) -> None:
    folder = root / "agreements" / AGREEMENT_ID
    shutil.copytree(folder / "3.1", root / "agreements" / "copy")
    with pytest.raises(
        PolicyInvalid, match=r"duplicate version 3\.1 of agreement agr-vt-politie-hg"
    ):
        load_policy_set(root)


# ------------------------------------------------------------------ decisions
def test_each_date_is_decided_under_its_version(
    policy_set: PolicySet, engines: list[RegopyEngine | RegorusEngine]
) -> None:
    v30, v31 = policy_set.versions[AGREEMENT_ID]
    for engine in engines:
        in_30 = _decide(engine, policy_set, "2026-03-16")
        assert _reasons(in_30) == dict.fromkeys(ELEMENTS, "allow_statutory_basis")
        assert (in_30.agreement_version, in_30.agreement_hash) == ("3.0", v30.content_hash)

        in_31 = _decide(engine, policy_set, "2026-07-01")
        assert _reasons(in_31)[HOUSE_BAN] == "deny_element_not_allowed"
        assert _reasons(in_31)["police.suspect_history_dv"] == "allow_statutory_basis"
        assert (in_31.agreement_version, in_31.agreement_hash) == ("3.1", v31.content_hash)

        before = _decide(engine, policy_set, "2024-12-31")
        after = _decide(engine, policy_set, "2028-01-01")
        for outside in (before, after):
            assert set(_reasons(outside).values()) == {"deny_agreement_not_in_force"}
            assert outside.agreement_version == "3.1"  # none covers the date: the latest


def test_only_signed_versions_are_in_force(policy_set: PolicySet) -> None:
    v30, v31 = policy_set.versions[AGREEMENT_ID]
    others = {a.content_hash for a in policy_set.all_versions() if a.id != AGREEMENT_ID}
    only_30 = policy_set.with_enforced(frozenset(others | {v30.content_hash}))
    engine = RegorusEngine(only_30, threads=0)
    try:
        assert _reasons(_decide(engine, only_30, "2026-03-16"))[HOUSE_BAN] == (
            "allow_statutory_basis"
        )
        unsigned = _decide(engine, only_30, "2026-09-15")
        assert set(_reasons(unsigned).values()) == {"deny_agreement_not_in_force"}
        # The decision names the version that covers the date, though it is not in force.
        assert (unsigned.agreement_version, unsigned.agreement_hash) == ("3.1", v31.content_hash)
    finally:
        asyncio.run(engine.aclose())
    assert only_30.current(AGREEMENT_ID, date(2026, 9, 15)) is v31
    assert not only_30.is_enforced(v31)


def test_a_draft_replaces_the_versions_its_window_overlaps(
    policy_set: PolicySet, root: Path, tmp_path: Path
) -> None:
    draft_folder = tmp_path / "draft"
    shutil.copytree(root / "agreements" / AGREEMENT_ID / "3.1", draft_folder)
    text = (draft_folder / "agreement.yaml").read_text()
    (draft_folder / "agreement.yaml").write_text(
        text.replace('version: "3.1"', 'version: "3.2"').replace(
            "valid_from: 2026-07-01", "valid_from: 2027-01-01"
        )
    )
    rego = draft_folder / "policy.rego"
    rego.write_text(rego.read_text().replace(".v3_1\n", ".v3_2\n", 1))
    draft = load_agreement(draft_folder)
    signed = policy_set.with_enforced(frozenset(a.content_hash for a in policy_set.all_versions()))
    drafted = with_agreement(signed, draft)
    assert [a.version for a in drafted.versions[AGREEMENT_ID]] == ["3.0", "3.2"]
    assert drafted.is_enforced(draft)  # simulated as in force
    assert "agreements/agr-vt-politie-hg/3.2/policy.rego" in drafted.modules()


# ------------------------------------------------------------------ the policy tools
def _run(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["policy", *args], env={"BROKER_POLICY_DIR": str(root)})
    return result.exit_code, result.output


def test_check_and_test_cover_every_version(root: Path) -> None:
    tests = """package agreements.agr_vt_politie_hg.{v}_test

import rego.v1

test_house_ban if {{
\td := data.broker.decision.result with input as {{
\t\t"agreement": "agr-vt-politie-hg", "purpose": "informatie_voor_veiligheidsbeoordeling",
\t\t"provider": "politie", "recipient": "veilig_thuis", "request_time_ns": 0,
\t\t"request_date": "{day}", "context": {{"vt_case_status": "onderzoek"}},
\t\t"subjects": [{{"key": "P1", "kind": "person", "age": 40, "authority_holders": []}}],
\t\t"items": [{{"element": "police.tijdelijk_huisverbod", "subject": "P1"}}],
\t\t"consents": [], "acute_declaration": null,
\t}}
\td.agreement_version == "{version}"
\td.items[0].reason == "{reason}"
}}
"""
    folder = root / "agreements" / AGREEMENT_ID
    for version, day, reason in (
        ("3.0", "2026-03-16", "allow_statutory_basis"),
        ("3.1", "2026-09-15", "deny_element_not_allowed"),
    ):
        v = "v" + version.replace(".", "_")
        (folder / version / "policy_test.rego").write_text(
            tests.format(v=v, day=day, version=version, reason=reason)
        )
    code, out = _run(root, "check")
    assert code == 0, out
    assert "agr-vt-politie-hg v3.0:" in out and "agr-vt-politie-hg v3.1:" in out
    code, out = _run(root, "test", "--agreement", AGREEMENT_ID)
    assert code == 0, out
    assert "PASS  agreements.agr_vt_politie_hg.v3_0_test" in out
    assert "PASS  agreements.agr_vt_politie_hg.v3_1_test" in out
    assert "agreements/agr-vt-politie-hg/3.0/policy.rego" in out
    assert "agreements/agr-vt-politie-hg/3.1/policy.rego" in out


def test_explain_with_a_version(root: Path) -> None:
    args = (
        "explain",
        "--agreement",
        AGREEMENT_ID,
        "--purpose",
        PURPOSE,
        "--recipient",
        "veilig_thuis",
        "--element",
        HOUSE_BAN,
        "--context",
        "vt_case_status=onderzoek",
    )
    code, out = _run(root, *args, "--version", "3.0", "--date", "2026-03-16")
    assert code == 0, out
    assert "(version 3.0)" in out and "ALLOW (allow_statutory_basis)" in out
    code, out = _run(root, *args, "--version", "3.1", "--date", "2026-09-15")
    assert code == 0, out
    assert "(version 3.1)" in out and "DENY (deny_element_not_allowed)" in out
    assert "version 3.1" in out.split("Step 1", 1)[1]
    code, out = _run(root, *args, "--version", "3.0", "--date", "2026-09-15")
    assert code == 2
    assert "outside version 3.0's window 2025-01-01..2026-06-30" in out
    code, out = _run(root, *args, "--version", "9.9")
    assert code == 2
    assert "has no version 9.9 (versions: 3.0, 3.1)" in out


def test_matrix_render_and_diff_with_versions(root: Path) -> None:
    def house_ban_rows(version: str) -> list[str]:
        code, out = _run(
            root, "matrix", "--agreement", AGREEMENT_ID, "--version", version, "--format", "csv"
        )
        assert code == 0, out
        return [r for r in out.splitlines() if f",{PURPOSE},veilig_thuis,{HOUSE_BAN}," in r]

    [row_30] = house_ban_rows("3.0")
    [row_31] = house_ban_rows("3.1")
    assert row_30.startswith(f"{AGREEMENT_ID},3.0,") and ",statutory," in row_30
    assert row_31.startswith(f"{AGREEMENT_ID},3.1,") and ",statutory," not in row_31
    code, out = _run(root, "matrix", "--version", "3.0")
    assert code == 2 and "--version needs --agreement" in out

    code, out = _run(root, "render", "--agreement", AGREEMENT_ID, "--version", "3.0")
    assert code == 0 and "agr-vt-politie-hg version 3.0" in out
    code, out = _run(root, "render", "--agreement", AGREEMENT_ID, "--format", "markdown")
    assert code == 0 and "3.1" in out  # no version: the one of today, else the latest

    code, out = _run(root, "diff", "--agreement", AGREEMENT_ID, "3.0", "3.1")
    assert code == 1, out  # something material changed
    assert HOUSE_BAN in out
    code, out = _run(root, "diff", "--agreement", AGREEMENT_ID, "3.0", "4.0")
    assert code == 2 and "has no version 4.0" in out
    folder = root / "agreements" / AGREEMENT_ID
    code, out = _run(root, "diff", str(folder / "3.0"), str(folder / "3.1"))
    assert code == 1 and HOUSE_BAN in out


def test_regopy_without_threads_decides_on_the_event_loop(policy_set: PolicySet) -> None:
    """BROKER_POLICY_THREADS=0: both embedded engines evaluate on the caller's thread."""
    engine = RegopyEngine(policy_set, threads=0)
    policy_input = _input(policy_set, "2026-05-28")

    async def decide() -> Decision:
        try:
            return await engine.decide(policy_input)
        finally:
            await engine.aclose()

    decided = asyncio.run(decide())
    assert _reasons(decided) == _reasons(
        RegopyEngine(policy_set, threads=1).decide_sync(policy_input)
    )
    assert any(i.reason.outcome.value == "allow" for i in decided.items)
