"""Policy files edited under a running broker: a valid edit takes effect,
an invalid one leaves the last valid set in force."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from broker.settings import PROJECT_ROOT
from tests.conftest import Harness, broker_settings, register_partners, serve_broker
from tests.integration.test_exchange import SUSPECT_HISTORY


async def test_reload_applies_valid_edits_and_keeps_last_valid_set(
    sqlite_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    from tests.conftest import clean

    clean(sqlite_url)
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    settings = broker_settings(
        sqlite_url, simulators, tmp_path, policy_dir=policies, policy_poll_seconds=0
    )
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings) as broker:
        services = broker.services
        client = Harness(broker, partners).client("veilig_thuis")
        try:
            before = (await client.exchange(SUSPECT_HISTORY)).json()
            reasons = {i["element"]: i["reason"] for i in before["items"]}
            assert reasons["police.tijdelijk_huisverbod"] == "allow_statutory_basis"

            # A new version of the agreement drops the house-ban element.
            path = policies / "agreements" / "agr-vt-politie-hg" / "agreement.yaml"
            text = path.read_text()
            edited = text.replace(
                "        - police.suspect_history_dv\n        - police.tijdelijk_huisverbod\n",
                "        - police.suspect_history_dv\n",
                1,
            ).replace('version: "3.0"', 'version: "3.1"')
            assert edited != text
            path.write_text(edited)
            # Each version's Rego is in its own package.
            rego = path.with_name("policy.rego")
            rego.write_text(rego.read_text().replace(".v3_0\n", ".v3_1\n", 1))
            assert await services.watcher.check()
            # A changed file invalidates the signatures: not in force until re-signed.
            unsigned = (await client.exchange(SUSPECT_HISTORY)).json()
            assert {i["reason"] for i in unsigned["items"]} == {"deny_agreement_not_in_force"}
            harness = Harness(broker, partners)
            for party in ("veilig_thuis", "politie", "gemeente_wijkteam", "openbaar_ministerie"):
                signed = await harness.sign(party, "agr-vt-politie-hg")
                assert signed.status_code == 201, signed.text
            assert signed.json()["state"] == "in_force"
            after = (await client.exchange(SUSPECT_HISTORY)).json()
            reasons = {i["element"]: i["reason"] for i in after["items"]}
            assert reasons["police.tijdelijk_huisverbod"] == "deny_element_not_allowed"
            assert after["agreement"]["version"] == "3.1"
            assert after["policy_bundle"] != before["policy_bundle"]

            # Broken Rego: refused, the last valid set stays in force.
            rego = policies / "agreements" / "agr-vt-politie-hg" / "policy.rego"
            rego.write_text(rego.read_text() + "\nthis is not rego {\n")
            assert not await services.watcher.check()
            assert services.watcher.last_error is not None
            still = (await client.exchange(SUSPECT_HISTORY)).json()
            assert still["policy_bundle"] == after["policy_bundle"]
            assert {i["element"]: i["reason"] for i in still["items"]} == reasons
        finally:
            await client.aclose()
