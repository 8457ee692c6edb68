"""Two versions of one sharing agreement side by side (``agreements/<id>/<version>/``),
each with its own validity window and its own signatures, over loopback HTTP on
SQLite and PostgreSQL. A request is decided under the version whose window covers
the request date and that every signatory signed; the decision, the audit record
and the release receipt name that version and its content hash."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from audit import verifier
from audit.models import AuditEntry
from broker.agreements.service import signatories
from broker.policy.loader import load_agreement
from broker.settings import PROJECT_ROOT
from tests.conftest import (
    AGENCIES,
    Harness,
    RunningBroker,
    broker_settings,
    register_partners,
    serve_broker,
)
from tests.integration.conftest import Clock
from tests.integration.test_exchange import SUSPECT_HISTORY
from tests.integration.test_receipts import fetch_jwks

AGREEMENT_ID = "agr-vt-politie-hg"
ADMIN = "raad_kinderbescherming"  # an agreement administrator (POST /v1/agreements)
HOUSE_BAN = "police.tijdelijk_huisverbod"
WINDOW_3_0 = "valid_from: 2025-01-01\nvalid_until: 2026-06-30"
WINDOW_3_1 = "valid_from: 2026-07-01\nvalid_until: 2027-12-31"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def two_versions(policies: Path) -> None:
    """Moves the police agreement into ``<id>/3.0/`` with a window ending 2026-06-30
    and adds ``<id>/3.1/`` from 2026-07-01 without the house-ban element."""
    folder = policies / "agreements" / AGREEMENT_ID
    v30, v31 = folder / "3.0", folder / "3.1"
    v30.mkdir()
    for path in [p for p in folder.iterdir() if p.is_file()]:
        path.rename(v30 / path.name)
    (v30 / "policy_test.rego").unlink()  # its tests are about the shipped window
    _edit(v30 / "agreement.yaml", "valid_from: 2025-01-01\nvalid_until: 2027-12-31", WINDOW_3_0)
    shutil.copytree(v30, v31)
    yaml_31 = v31 / "agreement.yaml"
    _edit(yaml_31, 'version: "3.0"', 'version: "3.1"')
    _edit(yaml_31, WINDOW_3_0, WINDOW_3_1)
    _edit(
        yaml_31,
        "        - police.suspect_history_dv\n        - police.tijdelijk_huisverbod\n",
        "        - police.suspect_history_dv\n",
    )
    _edit(
        v31 / "policy.rego",
        "package agreements.agr_vt_politie_hg.v3_0",
        "package agreements.agr_vt_politie_hg.v3_1",
    )


@dataclass
class Versions:
    harness: Harness
    clock: Clock
    policies: Path

    @property
    def broker(self) -> RunningBroker:
        return self.harness.broker

    async def exchange(self, day: str) -> dict[str, Any]:
        self.clock.now = datetime.fromisoformat(f"{day}T10:00:00+01:00")
        client = self.harness.client("veilig_thuis")
        try:
            response = await client.exchange(SUSPECT_HISTORY)
        finally:
            await client.aclose()
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def sign_all(self, version: str) -> dict[str, Any]:
        agreement = load_agreement(self.policies / "agreements" / AGREEMENT_ID / version)
        answer: dict[str, Any] = {}
        for entry in signatories(agreement):
            response = await self.harness.sign(str(entry["party"]), AGREEMENT_ID, version)
            assert response.status_code == 201, response.text
            answer = response.json()
            assert answer["version"] == version
        return answer


@pytest.fixture
async def versions(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Versions]:
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    two_versions(policies)
    clock = Clock(datetime.fromisoformat("2026-03-16T10:00:00+01:00"))
    settings = broker_settings(
        database_url,
        simulators,
        tmp_path,
        policy_dir=policies,
        policy_poll_seconds=0,
        agreement_admins=[AGENCIES[ADMIN]],
    )
    partners = await register_partners(settings, simulators, sign=False)
    async with serve_broker(settings, clock) as broker:
        yield Versions(Harness(broker, partners), clock, policies)


def _reasons(body: dict[str, Any]) -> dict[str, str]:
    return {i["element"]: i["reason"] for i in body["items"]}


async def test_each_request_date_gets_its_version(versions: Versions) -> None:
    services = versions.broker.services
    v30 = services.policy_set.version(AGREEMENT_ID, "3.0")
    v31 = services.policy_set.version(AGREEMENT_ID, "3.1")
    assert v30 is not None and v31 is not None
    assert v30.content_hash != v31.content_hash

    # Listed side by side, each with its own window; neither signed yet.
    unsigned = await versions.exchange("2026-03-16")
    assert set(_reasons(unsigned).values()) == {"deny_agreement_not_in_force"}
    assert unsigned["agreement"]["version"] == "3.0"  # the version whose window covers it

    # Signing 3.0 (through the API) puts it in force for its window only.
    assert (await versions.sign_all("3.0"))["state"] == "in_force"
    in_30 = await versions.exchange("2026-03-16")
    assert _reasons(in_30)[HOUSE_BAN] == "allow_statutory_basis"
    assert _reasons(in_30)["police.suspect_history_dv"] == "allow_statutory_basis"
    assert in_30["agreement"] == {
        "id": AGREEMENT_ID,
        "version": "3.0",
        "content_hash": v30.content_hash,
    }
    not_yet = await versions.exchange("2026-09-15")
    assert set(_reasons(not_yet).values()) == {"deny_agreement_not_in_force"}
    assert not_yet["agreement"]["version"] == "3.1"

    # Once 3.1 is signed too, a request in its window is decided under 3.1.
    await versions.sign_all("3.1")
    in_31 = await versions.exchange("2026-09-15")
    assert _reasons(in_31)[HOUSE_BAN] == "deny_element_not_allowed"
    assert _reasons(in_31)["police.suspect_history_dv"] == "allow_statutory_basis"
    assert in_31["agreement"] == {
        "id": AGREEMENT_ID,
        "version": "3.1",
        "content_hash": v31.content_hash,
    }
    # ... and one in the window of 3.0 still under 3.0.
    again_30 = await versions.exchange("2026-06-30")
    assert _reasons(again_30)[HOUSE_BAN] == "allow_statutory_basis"
    assert again_30["agreement"]["version"] == "3.0"

    # Outside both windows nothing is in force.
    for day in ("2024-12-31", "2028-01-01"):
        outside = await versions.exchange(day)
        assert set(_reasons(outside).values()) == {"deny_agreement_not_in_force"}

    # The audit log and the receipt name the version actually used.
    jwks = await fetch_jwks(versions.broker.base_url)
    for body, version in ((in_30, v30), (in_31, v31), (again_30, v30)):
        receipt = verifier.verify_receipt(body["receipt"], jwks)
        assert receipt["agreement"] == {
            "id": AGREEMENT_ID,
            "version": version.version,
            "content_hash": version.content_hash,
        }
        async with services.db.session() as session:
            entries = (
                await session.scalars(
                    select(AuditEntry).where(AuditEntry.exchange_id == body["exchange_id"])
                )
            ).all()
        decisions = [json.loads(e.entry) for e in entries if e.kind == "decision"]
        assert len(decisions) == len(body["items"])
        for entry in decisions:
            assert entry["agreement"] == {
                "id": AGREEMENT_ID,
                "version": version.version,
                "hash": version.content_hash,
            }


async def test_each_version_is_signed_and_listed_on_its_own(versions: Versions) -> None:
    await versions.sign_all("3.1")
    client = versions.harness.client("politie")
    try:
        token = await client.token()
        listed = await client.http.get(
            versions.broker.base_url + "/v1/agreements",
            headers={"Authorization": f"Bearer {token}"},
        )
    finally:
        await client.aclose()
    mine = {a["version"]: a for a in listed.json() if a["id"] == AGREEMENT_ID}
    assert set(mine) == {"3.0", "3.1"}
    assert (mine["3.0"]["valid_from"], mine["3.0"]["valid_until"]) == ("2025-01-01", "2026-06-30")
    assert (mine["3.1"]["valid_from"], mine["3.1"]["valid_until"]) == ("2026-07-01", "2027-12-31")
    assert not any(s["signed"] for s in mine["3.0"]["signatories"])
    assert all(s["signed"] for s in mine["3.1"]["signatories"])
    # 3.1 is signed but its window has not started on the broker's date.
    assert mine["3.1"]["state"] == "not_yet_valid"
    # A signature names the version it is for: one for 3.1 again is a conflict.
    again = await versions.harness.sign("politie", AGREEMENT_ID, "3.1")
    assert again.status_code == 409, again.text


async def test_an_upload_adds_a_version_beside_the_others(versions: Versions) -> None:
    folder = versions.policies / "agreements" / AGREEMENT_ID
    files = {
        name: (folder / "3.1" / name).read_text() for name in ("agreement.yaml", "policy.rego")
    }

    def version(label: str, window: str) -> dict[str, str]:
        return {
            "agreement.yaml": files["agreement.yaml"]
            .replace('version: "3.1"', f'version: "{label}"')
            .replace(WINDOW_3_1, window),
            "policy.rego": files["policy.rego"].replace(
                ".v3_1\n", f".v{label.replace('.', '_')}\n", 1
            ),
        }

    async def upload(body: dict[str, str]) -> Any:
        client = versions.harness.client(ADMIN)
        try:
            token = await client.token()
            return await client.http.post(
                versions.broker.base_url + "/v1/agreements",
                json={"files": body},
                headers={"Authorization": f"Bearer {token}"},
            )
        finally:
            await client.aclose()

    overlapping = await upload(version("3.2", "valid_from: 2027-06-01"))
    assert overlapping.status_code == 422, overlapping.text
    assert any("overlaps version 3.1" in e for e in overlapping.json()["errors"])

    added = await upload(version("3.2", "valid_from: 2028-01-01"))
    assert added.status_code == 201, added.text
    assert (added.json()["version"], added.json()["state"]) == ("3.2", "not_yet_valid")
    assert not any(s["signed"] for s in added.json()["signatories"])
    assert sorted(p.name for p in folder.iterdir()) == ["3.0", "3.1", "3.2"]
    assert not (versions.policies / "previous").exists()  # nothing was replaced
    loaded = versions.broker.services.policy_set.versions[AGREEMENT_ID]
    assert [a.version for a in loaded] == ["3.0", "3.1", "3.2"]

    again = await upload(version("3.2", "valid_from: 2029-01-01"))
    assert again.status_code == 409, again.text
