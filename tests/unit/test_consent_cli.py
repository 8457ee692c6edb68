"""``broker consent`` and ``broker breakglass`` on a fresh SQLite file."""

from __future__ import annotations

import asyncio
import json

import pytest

from audit.verify import verify_chain
from broker.breakglass.schemas import DeclarationIn
from broker.consent.cli import cli_context
from tests.unit.test_cli import Broker, broker  # noqa: F401 - the fixture

GGZ = "00000003812345670000"
VT = "00000001800006185000"
OFFICER = "00000001812345680000"
P01, P03 = "999990007", "999990020"


def record_args(*extra: str) -> list[str]:
    return [
        "consent",
        "record",
        "--oin",
        GGZ,
        "--subject",
        P03,
        "--giver",
        f"{P03}:child",
        "--giver",
        f"{P01}:authority_holder",
        "--agreement",
        "agr-zvh-mdaplusplus",
        "--purpose",
        "zorginformatie_casusoverleg",
        "--element",
        "health.ggz_treatment_involvement",
        "--given-at",
        "2026-01-10T10:00:00+01:00",
        "--evidence-ref",
        "ggz-dms:TOE-1",
        *extra,
    ]


def test_consent_record_list_withdraw(broker: Broker) -> None:  # noqa: F811
    broker.add(oin=GGZ, party="ggz")
    recorded = json.loads(broker(*record_args("--id", "CNS-C1")).output)
    assert recorded["id"] == "CNS-C1"
    assert [g["bsn"] for g in recorded["givers"]] == [P03, P01]
    assert recorded["elements"] == ["health.ggz_treatment_involvement"]

    listed = json.loads(broker("consent", "list", "--oin", GGZ, "--subject", P03).output)
    assert [r["id"] for r in listed] == ["CNS-C1"]
    assert [g["bsn"] for g in listed[0]["givers"]] == [P03, None]

    withdrawn = json.loads(
        broker("consent", "withdraw", "CNS-C1", "--oin", GGZ, "--subject", P03, "--by", P01).output
    )
    assert withdrawn["status"] == "withdrawn"
    assert withdrawn["withdrawn_by"] == P01

    again = broker(
        "consent", "withdraw", "CNS-C1", "--oin", GGZ, "--subject", P03, "--by", P01, code=1
    )
    assert "already_withdrawn" in again.output
    bad = broker(*[a if a != P03 else "123456789" for a in record_args()], code=1)
    assert "invalid_bsn" in bad.output and "123456789" not in bad.output
    statutory = broker(
        *[a if a != "zorginformatie_casusoverleg" else "veiligheidsoverleg" for a in record_args()],
        code=1,
    )
    assert "consent_not_applicable" in statutory.output
    unknown = broker(*[a if a != GGZ else VT for a in record_args()], code=1)
    assert "no active agency" in unknown.output
    assert broker("audit", "verify").output.startswith("audit log verified: 2 entries")


def test_breakglass_list_and_review(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    broker.add(oin=VT, party="veilig_thuis")
    broker.add(oin=OFFICER, party="zorg_en_veiligheidshuis")
    broker.runner.env["BROKER_PRIVACY_OFFICERS"] = OFFICER
    for name, value in broker.runner.env.items():
        monkeypatch.setenv(name, value or "")

    async def declare() -> None:
        async with cli_context() as ctx:
            await ctx.breakglass.declare(
                DeclarationIn(
                    id="ACU-C1",
                    agreement_id="agr-zvh-mdaplusplus",
                    purpose_id="zorginformatie_casusoverleg",
                    subjects=[P01],
                    justification="acute",
                    evidence={"vt_safety_assessment": {"acute_onveilig": True}},
                ),
                actor_oin=VT,
                actor_party="veilig_thuis",
                policy_set=ctx.policy_set,
            )
            summary = await verify_chain(ctx.db)
            assert summary.size >= 1

    asyncio.run(declare())

    lines = broker("breakglass", "list", "--oin", OFFICER).output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ACU-C1")
    assert "pending" in lines[0] and "OVERDUE" not in lines[0]
    refused = broker("breakglass", "list", "--oin", VT, code=1)
    assert "not_a_privacy_officer" in refused.output
    broker("breakglass", "review", "ACU-C1", "--oin", OFFICER, "--question", code=1)
    reviewed = json.loads(
        broker("breakglass", "review", "ACU-C1", "--oin", OFFICER, "--approve").output
    )
    assert reviewed["review_status"] == "approved"
    assert reviewed["reviewed_by"] == OFFICER
    assert broker("breakglass", "list", "--oin", OFFICER).output == ""
    listed = json.loads(
        broker("breakglass", "list", "--oin", OFFICER, "--status", "all", "--json").output
    )
    assert [d["review_status"] for d in listed] == ["approved"]
