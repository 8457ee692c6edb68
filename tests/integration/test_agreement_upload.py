"""POST /v1/agreements: an agreement administrator uploads a new agreement or a new
version over the API; it takes effect only when the set validates and the folder's
Rego tests pass, and is enforced only once every signatory signed it."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from audit.models import AuditEntry
from broker.settings import PROJECT_ROOT
from tests.conftest import (
    AGENCIES,
    Harness,
    broker_settings,
    clean,
    register_partners,
    serve_broker,
)
from tests.integration.test_exchange import SUSPECT_HISTORY
from tests.integration.test_new_agreement import AGREEMENT, POLICY

ADMIN = "raad_kinderbescherming"
NEW_ID = "agr-test-schuld-raad"
ASK_DEBT = {
    "agreement_id": NEW_ID,
    "purpose_id": "schuld_tijdens_raadsonderzoek",
    "provider": {"party": "schuldhulpverlening"},
    "subjects": ["999990056"],
    "elements": ["finance.debt_assistance_status", "finance.total_debt_amount"],
    "context": {"raad_investigation_status": "lopend"},
}
POLICY_TEST = """\
package agreements.agr_test_schuld_raad.v0_9_test

import rego.v1

test_raad_running if {
    data.agreements.agr_test_schuld_raad.v0_9.precondition["raad_running"]
        with input as {"context": {"raad_investigation_status": "lopend"}}
}
"""
FAILING_TEST = """\
package agreements.agr_test_schuld_raad.v0_9_test

import rego.v1

test_raad_running_when_closed if {
    data.agreements.agr_test_schuld_raad.v0_9.precondition["raad_running"]
        with input as {"context": {"raad_investigation_status": "afgerond"}}
}
"""


class Uploads:
    def __init__(self, harness: Harness, policies: Path) -> None:
        self.harness = harness
        self.policies = policies

    async def post(self, party: str, body: dict[str, Any]) -> httpx.Response:
        client = self.harness.client(party)
        try:
            token = await client.token()
            return await client.http.post(
                self.harness.broker.base_url + "/v1/agreements",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        finally:
            await client.aclose()

    async def upload(self, files: dict[str, str], party: str = ADMIN) -> httpx.Response:
        return await self.post(party, {"files": files})

    async def audit(self, kind: str) -> list[dict[str, Any]]:
        async with self.harness.broker.services.db.session() as session:
            entries = await session.scalars(
                select(AuditEntry).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)
            )
            return [json.loads(e.entry) for e in entries]


@pytest.fixture
async def uploads(
    sqlite_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Uploads]:
    clean(sqlite_url)
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    settings = broker_settings(
        sqlite_url,
        simulators,
        tmp_path,
        policy_dir=policies,
        policy_poll_seconds=0,
        agreement_admins=[AGENCIES[ADMIN]],
    )
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings) as broker:
        yield Uploads(Harness(broker, partners), policies)


async def test_an_uploaded_agreement_is_enforced_once_signed(uploads: Uploads) -> None:
    harness = uploads.harness
    raad = harness.client("raad_kinderbescherming")
    try:
        response = await uploads.upload(
            {"agreement.yaml": AGREEMENT, "policy.rego": POLICY, "policy_test.rego": POLICY_TEST}
        )
        assert response.status_code == 201, response.text
        listed = response.json()
        assert listed["id"] == NEW_ID
        assert listed["version"] == "0.9"
        assert listed["state"] == "unsigned"
        assert [s["signed"] for s in listed["signatories"]] == [False, False]
        folder = uploads.policies / "agreements" / NEW_ID
        assert (folder / "policy_test.rego").read_text() == POLICY_TEST
        assert not list(uploads.policies.glob(".upload-*"))

        # Loaded at once, but not in force until every signatory signed this version.
        body = (await raad.exchange(ASK_DEBT)).json()
        assert {i["reason"] for i in body["items"]} == {"deny_agreement_not_in_force"}
        assert (await harness.sign("schuldhulpverlening", NEW_ID)).status_code == 201
        # RFC 9864's fully specified name for the same Ed25519 signature is accepted.
        signed = await harness.sign("raad_kinderbescherming", NEW_ID, alg="Ed25519")
        assert signed.status_code == 201, signed.text
        assert signed.json()["state"] == "in_force"
        assert signed.json()["content_hash"] == listed["content_hash"]

        body = (await raad.exchange(ASK_DEBT)).json()
        assert {i["element"]: i["reason"] for i in body["items"]} == {
            "finance.debt_assistance_status": "allow_statutory_basis",
            "finance.total_debt_amount": "deny_element_not_allowed",
        }
        assert body["agreement"]["content_hash"] == listed["content_hash"]

        [entry] = await uploads.audit("agreement_uploaded")
        assert entry["agreement"] == {
            "id": NEW_ID,
            "version": "0.9",
            "hash": listed["content_hash"],
        }
        assert entry["uploader"] == AGENCIES[ADMIN]
        assert entry["replaces"] is None
        states = [e for e in await uploads.audit("agreement_state") if NEW_ID in json.dumps(e)]
        assert [s["state"] for s in states] == ["unsigned", "in_force"]
    finally:
        await raad.aclose()


async def test_rejected_uploads_change_nothing(uploads: Uploads) -> None:
    services = uploads.harness.broker.services
    bundle = services.policy_set.bundle_hash
    files = {"agreement.yaml": AGREEMENT, "policy.rego": POLICY}

    unknown = AGREEMENT.replace("housing.eviction_risk", "housing.no_such_element")
    response = await uploads.upload(dict(files, **{"agreement.yaml": unknown}))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "policy_invalid"
    assert any(
        re.fullmatch(r"agreement\.yaml:\d+: .*housing\.no_such_element.*", e)
        for e in problem["errors"]
    ), problem["errors"]

    response = await uploads.upload(dict(files, **{"policy_test.rego": FAILING_TEST}))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "policy_tests_failed"
    [failed] = problem["errors"]
    assert failed.startswith("policy_test.rego:5: test_raad_running_when_closed failed")

    broken_test = "package agreements.agr_test_schuld_raad.v0_9_test\n\ntest_x if {\n"
    response = await uploads.upload(dict(files, **{"policy_test.rego": broken_test}))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "policy_tests_failed"
    assert response.json()["errors"] == [
        "Rego does not parse: policy_test.rego:4:1: expecting expression"
    ]

    response = await uploads.upload(files, party="politie")
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"
    response = await uploads.post("politie", {"files": {"other.rego": ""}})
    assert response.status_code == 403, response.text

    unsafe = AGREEMENT.replace(f"id: {NEW_ID}", "id: ../escape")
    response = await uploads.upload(dict(files, **{"agreement.yaml": unsafe}))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0].startswith("agreement.yaml:2: id '../escape'")

    response = await uploads.upload(dict(files, **{"other.rego": POLICY}))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed"
    response = await uploads.upload({"policy.rego": POLICY})
    assert response.status_code == 422, response.text
    response = await uploads.upload(dict(files, **{"policy.rego": "#" * (256 * 1024 + 1)}))
    assert response.status_code == 422, response.text
    assert "256 KiB" in response.text

    # The same version of an agreement in force is not a new version.
    current = (PROJECT_ROOT / "policies/agreements/agr-vt-politie-hg/agreement.yaml").read_text()
    response = await uploads.upload({"agreement.yaml": current})
    assert response.status_code == 409, response.text

    assert services.policy_set.bundle_hash == bundle
    assert NEW_ID not in services.policy_set.agreements
    assert not (uploads.policies / "agreements" / NEW_ID).exists()
    assert not list(uploads.policies.glob(".upload-*"))
    assert await uploads.audit("agreement_uploaded") == []


async def test_a_new_version_replaces_the_folder_and_needs_new_signatures(
    uploads: Uploads,
) -> None:
    harness = uploads.harness
    source = uploads.policies / "agreements" / "agr-vt-politie-hg"
    files = {name: (source / name).read_text() for name in ("policy.rego", "policy_test.rego")}
    text = (source / "agreement.yaml").read_text()
    files["agreement.yaml"] = text.replace('version: "3.0"', 'version: "3.1"').replace(
        "title_en: Cooperation agreement", "title_en: Revised cooperation agreement"
    )
    assert files["agreement.yaml"].count("3.1") == 1 and "Revised" in files["agreement.yaml"]
    files["policy_test.rego"] = files["policy_test.rego"].replace(
        'd.agreement_version == "3.0"', 'd.agreement_version == "3.1"'
    )
    # Each version's Rego is in its own package.
    for name in ("policy.rego", "policy_test.rego"):
        files[name] = files[name].replace(
            "package agreements.agr_vt_politie_hg.v3_0", "package agreements.agr_vt_politie_hg.v3_1"
        )
    client = harness.client("veilig_thuis")
    try:
        before = (await client.exchange(SUSPECT_HISTORY)).json()
        old_hash = before["agreement"]["content_hash"]
        assert before["agreement"]["version"] == "3.0"

        response = await uploads.upload(files)
        assert response.status_code == 201, response.text
        listed = response.json()
        assert listed["version"] == "3.1"
        assert listed["content_hash"] != old_hash
        assert listed["state"] == "unsigned"
        assert not any(s["signed"] for s in listed["signatories"])
        previous = uploads.policies / "previous" / "agr-vt-politie-hg.previous-3.0"
        assert 'version: "3.0"' in (previous / "agreement.yaml").read_text()
        assert sorted(p.name for p in (uploads.policies / "agreements").iterdir()) == sorted(
            p.name for p in (PROJECT_ROOT / "policies" / "agreements").iterdir()
        )

        unsigned = (await client.exchange(SUSPECT_HISTORY)).json()
        assert {i["reason"] for i in unsigned["items"]} == {"deny_agreement_not_in_force"}
        for party in ("veilig_thuis", "politie", "gemeente_wijkteam", "openbaar_ministerie"):
            signed = await harness.sign(party, "agr-vt-politie-hg")
            assert signed.status_code == 201, signed.text
        assert signed.json()["state"] == "in_force"
        after = (await client.exchange(SUSPECT_HISTORY)).json()
        assert after["agreement"]["version"] == "3.1"
        assert after["agreement"]["content_hash"] == listed["content_hash"]
        assert {i["element"]: i["reason"] for i in after["items"]} == {
            i["element"]: i["reason"] for i in before["items"]
        }

        [entry] = await uploads.audit("agreement_uploaded")
        assert entry["agreement"]["hash"] == listed["content_hash"]
        assert entry["replaces"] == {"version": "3.0", "hash": old_hash}
    finally:
        await client.aclose()


async def test_an_upload_that_does_not_load_is_undone(
    uploads: Uploads, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.core.errors import PolicyInvalid

    services = uploads.harness.broker.services
    bundle = services.policy_set.bundle_hash

    async def refuse(policy_set: Any) -> None:
        raise PolicyInvalid("the engine refused the set")

    monkeypatch.setattr(services.engine, "reload", refuse)
    response = await uploads.upload({"agreement.yaml": AGREEMENT, "policy.rego": POLICY})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "policy_invalid"
    assert "the engine refused the set" in response.json()["errors"][0]
    assert not (uploads.policies / "agreements" / NEW_ID).exists()
    assert not list(uploads.policies.glob(".upload-*"))
    assert services.policy_set.bundle_hash == bundle
    [uploaded] = await uploads.audit("agreement_uploaded")
    [undone] = await uploads.audit("agreement_upload_undone")
    assert undone["agreement"] == uploaded["agreement"]
