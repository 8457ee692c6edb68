"""``broker duties`` on a fresh SQLite file: the overdue list, an embargo with its
reason, ending the investigation, fulfilment and ``run``; all audited."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from audit.log import AuditWriter
from audit.verify import verify_chain
from broker.core.types import SubjectFacts, SubjectKind
from broker.db.session import Database
from broker.information_duties.recording import DutyRecorder, Release, ReleasedItem
from broker.policy.loader import load_policy_set
from broker.settings import PROJECT_ROOT, Settings
from tests.unit.test_cli import Broker, broker  # noqa: F401 - the fixture

VT = "00000001800006185000"
POLICE = "00000001800006180000"
OFFICER = "00000001812345680000"


async def _seed(settings: Settings, released_at: datetime) -> str:
    """A release of police data to Veilig Thuis about one adult: one duty."""
    db = Database(settings.async_database_url)
    audit = AuditWriter(db)
    await audit.start()
    try:
        records, rows = DutyRecorder().for_release(
            load_policy_set(PROJECT_ROOT / "policies"),
            Release(
                exchange_id="ex-cli-1",
                request_id="req-cli-1",
                agreement_id="agr-vt-politie-hg",
                agreement_version="3.0",
                purpose_id="zorgmelding_na_incident",
                recipient_oin=VT,
                recipient_party="veilig_thuis",
                provider_oin=POLICE,
                provider_party="politie",
                released_at=released_at,
                items=(
                    ReleasedItem(
                        subject_key="psn:" + "a" * 40,
                        element="police.dv_incident",
                        reason="allow_statutory_basis",
                        legal_basis_ids=("wpg_20",),
                    ),
                ),
                subjects=(SubjectFacts(key="psn:" + "a" * 40, kind=SubjectKind.PERSON, age=37),),
            ),
        )
        await audit.append(records, rows)
        return str(rows[0][1]["id"])
    finally:
        await audit.stop()
        await db.dispose()


def test_duties_commands(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for name, value in (broker.runner.env or {}).items():
        monkeypatch.setenv(name, value or "")
    monkeypatch.setenv("BROKER_PRIVACY_OFFICERS", OFFICER)
    broker.add(oin=VT, party="veilig_thuis")
    broker.add(oin=POLICE, party="politie")
    broker.add(oin=OFFICER, party="zorg_en_veiligheidshuis")
    duty_id = asyncio.run(_seed(Settings(), datetime.now(UTC) - timedelta(days=40)))

    listed = broker("duties", "list", "--oin", OFFICER, "--overdue").output
    assert duty_id in listed and "OVERDUE" in listed
    assert broker("duties", "list", "--oin", OFFICER, "--status", "fulfilled").output == ""

    refused = broker(
        "duties", "embargo", duty_id, "--oin", VT, "--reason", "", "--investigation", "VT-1", code=1
    )
    assert "(reason)" in refused.output
    embargoed = json.loads(
        broker(
            "duties", "embargo", duty_id, "--oin", VT, "--reason", "Safety first",
            "--investigation", "VT-1",
        ).output
    )  # fmt: skip
    assert embargoed["status"] == "embargoed"
    assert embargoed["embargo"]["reason"] == "Safety first"
    assert broker("duties", "list", "--oin", OFFICER, "--overdue").output == ""

    ended = json.loads(broker("duties", "end-investigation", "VT-1", "--oin", VT).output)
    assert (ended["running"], ended["embargoes_lifted"]) == (False, 1)
    assert "lifted 0" in broker("duties", "run").output

    # Every open duty of one exchange at once; exactly one of DUTY_ID and --exchange.
    neither = broker(
        "duties", "embargo", "--oin", VT, "--reason", "R", "--investigation", "VT-2", code=2
    )
    assert "DUTY_ID or --exchange" in neither.output
    together = json.loads(
        broker(
            "duties", "embargo", "--exchange", "ex-cli-1", "--oin", VT,
            "--reason", "Safety first", "--investigation", "VT-2",
        ).output
    )  # fmt: skip
    assert [(d["id"], d["status"]) for d in together] == [(duty_id, "embargoed")]
    ended = json.loads(broker("duties", "end-investigation", "VT-2", "--oin", VT).output)
    assert ended["embargoes_lifted"] == 1

    informed = datetime.now(UTC).isoformat()
    fulfilled = json.loads(
        broker(
            "duties", "fulfil", duty_id, "--oin", VT, "--informed-at", informed,
            "--method", "letter", "--evidence", "VT-DOC-1",
        ).output
    )  # fmt: skip
    assert fulfilled["status"] == "fulfilled"
    as_json = json.loads(broker("duties", "list", "--oin", VT, "--json").output)
    assert [d["status"] for d in as_json] == ["fulfilled"]

    async def verified() -> None:
        db = Database(Settings().async_database_url)
        try:
            await verify_chain(db)
        finally:
            await db.dispose()

    asyncio.run(verified())
