"""Zero code changes: a brand-new agreement folder dropped into a running broker
(new purposes, a new combination of parties, a precondition, a yes/no-only
answer) is enforced exactly as written."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

from sqlalchemy import select

from audit.models import AuditEntry
from broker.settings import PROJECT_ROOT
from tests.conftest import Harness, broker_settings, clean, register_partners, serve_broker

AGREEMENT = textwrap.dedent(
    """\
    schema_version: 1
    id: agr-test-schuld-raad
    title: Testconvenant schuldhulp - Raad
    title_en: Test covenant debt service to the Child Protection Board
    version: "0.9"
    status: active
    valid_from: 2025-01-01
    valid_until: 2030-12-31
    parties: [schuldhulpverlening, raad_kinderbescherming, gemeente_wijkteam]
    purposes:
      - id: schuld_tijdens_raadsonderzoek
        description: During a running Raad investigation the debt service tells whether it helps.
        providers: [schuldhulpverlening]
        recipients: [raad_kinderbescherming]
        allowed_elements:
          raad_kinderbescherming: [finance.debt_assistance_status, housing.eviction_risk]
        legal_basis_ids: [bw_1_240]
        consent: not_required_with_basis
        preconditions:
          - id: raad_running
            description: Raad investigation running
            check: "context.raad_investigation_status == 'lopend'"
        response_form: full
      - id: bekend_bij_schuldhulp
        description: The local team asks whether a person is known to the debt service (yes/no).
        providers: [schuldhulpverlening]
        recipients: [gemeente_wijkteam]
        allowed_elements:
          gemeente_wijkteam: [finance.debt_assistance_status]
        legal_basis_ids: [avg_publieke_taak]
        consent: not_required_with_basis
        preconditions: []
        response_form: boolean_only
    signatories:
      - {party: schuldhulpverlening, organisation: Test, signed_by: A, signed_on: 2025-01-01}
      - {party: raad_kinderbescherming, organisation: Test, signed_by: C, signed_on: 2025-01-01}
    """
)

POLICY = textwrap.dedent(
    """\
    package agreements.agr_test_schuld_raad.v0_9

    import rego.v1

    precondition contains "raad_running" if {
        input.context.raad_investigation_status == "lopend"
    }
    """
)


async def test_a_new_agreement_folder_is_enforced_as_written(
    sqlite_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    clean(sqlite_url)
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    settings = broker_settings(
        sqlite_url, simulators, tmp_path, policy_dir=policies, policy_poll_seconds=0
    )
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings) as broker:
        harness = Harness(broker, partners)
        raad = harness.client("raad_kinderbescherming")
        team = harness.client("gemeente_wijkteam")
        ask_debt = {
            "agreement_id": "agr-test-schuld-raad",
            "purpose_id": "schuld_tijdens_raadsonderzoek",
            "provider": {"party": "schuldhulpverlening"},
            "subjects": ["999990056"],
            "elements": ["finance.debt_assistance_status", "finance.total_debt_amount"],
            "context": {"raad_investigation_status": "lopend"},
        }
        try:
            before = (await raad.exchange(ask_debt)).json()
            assert {i["reason"] for i in before["items"]} == {"deny_agreement_not_in_force"}

            folder = policies / "agreements" / "agr-test-schuld-raad"
            folder.mkdir()
            (folder / "agreement.yaml").write_text(AGREEMENT)
            (folder / "policy.rego").write_text(POLICY)
            assert await broker.services.watcher.check()
            # Loaded, but not in force until every signatory signed this version.
            unsigned = (await raad.exchange(ask_debt)).json()
            assert {i["reason"] for i in unsigned["items"]} == {"deny_agreement_not_in_force"}
            first = await harness.sign("schuldhulpverlening", "agr-test-schuld-raad")
            assert first.status_code == 201, first.text
            assert first.json()["state"] == "unsigned"
            second = await harness.sign("raad_kinderbescherming", "agr-test-schuld-raad")
            assert second.status_code == 201, second.text
            assert second.json()["state"] == "in_force"
            # A party that is not a signatory cannot sign.
            assert (await harness.sign("politie", "agr-test-schuld-raad")).status_code == 403
            # Signatures and the activation are in the audit log.
            async with broker.services.db.session() as session:
                kinds = [
                    (e.kind, json.loads(e.entry).get("state"))
                    for e in (await session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
                    if e.kind.startswith("agreement") and "agr-test-schuld-raad" in e.entry
                ]
            assert kinds == [
                ("agreement_state", "unsigned"),
                ("agreement_signature", None),
                ("agreement_signature", None),
                ("agreement_state", "in_force"),
            ]

            body = (await raad.exchange(ask_debt)).json()
            reasons = {i["element"]: i["reason"] for i in body["items"]}
            assert reasons == {
                "finance.debt_assistance_status": "allow_statutory_basis",
                "finance.total_debt_amount": "deny_element_not_allowed",
            }
            assert body["agreement"]["version"] == "0.9"
            released = raad.decrypt(body["payload"])
            assert [i["element"] for i in released["items"]] == ["finance.debt_assistance_status"]

            closed = dict(ask_debt, context={"raad_investigation_status": "afgerond"})
            body = (await raad.exchange(closed)).json()
            assert {i["reason"] for i in body["items"]} == {
                "deny_precondition_failed",
                "deny_element_not_allowed",
            }

            # The local team is not a recipient of the first purpose ...
            body = (await team.exchange(ask_debt)).json()
            assert {i["reason"] for i in body["items"]} == {"deny_purpose_mismatch"}
            # ... but gets a yes/no answer under the second.
            body = (
                await team.exchange(
                    {
                        "agreement_id": "agr-test-schuld-raad",
                        "purpose_id": "bekend_bij_schuldhulp",
                        "provider": {"party": "schuldhulpverlening"},
                        "subjects": ["999990056"],
                        "elements": ["finance.debt_assistance_status"],
                    }
                )
            ).json()
            assert body["response_form"] == "boolean_only"
            [item] = team.decrypt(body["payload"])["items"]
            assert isinstance(item["value"], bool)
        finally:
            await raad.aclose()
            await team.aclose()
