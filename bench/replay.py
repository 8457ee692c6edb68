"""Impact-replay benchmark: records N decisions, then replays them against a
draft agreement and prints the time.

    PYTHONPATH=. python bench/replay.py [--decisions 100000] [--backend sqlite|postgresql]

The recorded decisions are real decisions (made by the regorus engine on the
shipped agreements) of a few request shapes under agr-vt-politie-hg, with
10 items each; the draft drops one element from a whitelist so part of the
items flip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert

from broker.core.types import PolicyInput, RequestedItem, SubjectFacts, SubjectKind
from broker.db.migrate import upgrade
from broker.db.session import Database
from broker.exchange.models import DecisionRecord, Exchange
from broker.policy.loader import load_policy_set
from broker.policy.regorus_engine import RegorusEngine
from broker.policy.replay import replay
from broker.settings import PROJECT_ROOT, Settings

AGREEMENT = "agr-vt-politie-hg"
SHAPES = [
    (
        "informatie_voor_veiligheidsbeoordeling",
        "politie",
        "veilig_thuis",
        {"vt_case_status": "veiligheidsbeoordeling"},
        [
            "police.dv_incident",
            "police.suspect_history_dv",
            "police.tijdelijk_huisverbod",
            "health.diagnosis",
            "police.zorgmelding",
        ],
    ),
    (
        "zorgmelding_na_incident",
        "politie",
        "veilig_thuis",
        {"police_incident_id": "PL-1"},
        [
            "person.name",
            "person.birth_date",
            "police.dv_incident",
            "police.tijdelijk_huisverbod",
            "police.suspect_history_dv",
        ],
    ),
    (
        "terugkoppeling_zorgmelding",
        "veilig_thuis",
        "politie",
        {"vt_case_origin": "politie"},
        [
            "vt.case_status",
            "vt.investigation_conclusion",
            "vt.report",
            "person.name",
            "police.dv_incident",
        ],
    ),
]


def templates() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    engine = RegorusEngine(load_policy_set(PROJECT_ROOT / "policies"), threads=0)
    out = []
    for purpose, provider, recipient, context, elements in SHAPES:
        subjects = (
            SubjectFacts(key="psn:" + "a" * 40, kind=SubjectKind.PERSON, age=37),
            SubjectFacts(key="psn:" + "b" * 40, kind=SubjectKind.PERSON, age=35),
        )
        policy_input = PolicyInput(
            agreement=AGREEMENT,
            purpose=purpose,
            provider=provider,
            recipient=recipient,
            request_time_ns=1_775_000_000_000_000_000,
            request_date=date(2026, 4, 1),
            context=context,
            subjects=subjects,
            items=tuple(RequestedItem(e, s.key) for e in elements for s in subjects),
        )
        decision = engine.decide_sync(policy_input)
        result = {
            "items": [
                {"element": d.element, "subject": d.subject, "reason": d.reason.value}
                for d in decision.items
            ]
        }
        out.append((policy_input.to_document(), result))
    return out


async def record(db: Database, n: int) -> None:
    shapes = templates()
    now = datetime.now(UTC)
    batch_ex: list[dict[str, Any]] = []
    batch_dec: list[dict[str, Any]] = []
    async with db.write_engine.begin() as conn:
        for i in range(n):
            document, result = shapes[i % len(shapes)]
            ex_id, dec_id = str(uuid.uuid4()), str(uuid.uuid4())
            batch_ex.append(
                {
                    "id": ex_id,
                    "request_id": "bench",
                    "created_at": now,
                    "requester_oin": f"{i % 5:020d}",
                    "recipient_party": document["recipient"],
                    "provider_oin": None,
                    "provider_party": document["provider"],
                    "agreement_id": AGREEMENT,
                    "agreement_version": "3.0",
                    "purpose_id": document["purpose"],
                    "case_reference": None,
                    "decision_id": dec_id,
                    "item_count": 10,
                    "allowed_count": 0,
                    "released_count": 0,
                }
            )
            batch_dec.append(
                {
                    "id": dec_id,
                    "exchange_id": ex_id,
                    "created_at": now,
                    "engine": "regorus",
                    "bundle_hash": "sha256:bench",
                    "agreement_id": AGREEMENT,
                    "agreement_version": "3.0",
                    "agreement_hash": None,
                    "input": document,
                    "result": result,
                }
            )
            if len(batch_dec) == 5000:
                await conn.execute(insert(Exchange.__table__), batch_ex)
                await conn.execute(insert(DecisionRecord.__table__), batch_dec)
                batch_ex, batch_dec = [], []
        if batch_dec:
            await conn.execute(insert(Exchange.__table__), batch_ex)
            await conn.execute(insert(DecisionRecord.__table__), batch_dec)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pg_name = None
        if args.backend == "sqlite":
            url = f"sqlite:///{tmp / 'replay.db'}"
        else:
            admin = os.environ.get(
                "BROKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
            )
            pg_name = f"broker_replay_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{pg_name}"')
            url = admin.rsplit("/", 1)[0] + "/" + pg_name
        settings = Settings(database_url=url)
        upgrade(settings.sync_database_url)
        db = Database(settings.async_database_url)
        try:
            t0 = time.perf_counter()
            await record(db, args.decisions)
            recorded = time.perf_counter() - t0
            draft = tmp / "draft"
            shutil.copytree(PROJECT_ROOT / "policies" / "agreements" / AGREEMENT, draft)
            path = draft / "agreement.yaml"
            path.write_text(
                path.read_text().replace(
                    "        - police.suspect_history_dv\n        - police.tijdelijk_huisverbod\n",
                    "        - police.suspect_history_dv\n",
                    1,
                )
            )
            report = await replay(db, load_policy_set(PROJECT_ROOT / "policies"), draft)
        finally:
            await db.dispose()
            if pg_name:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    print(
        json.dumps(
            {
                "backend": args.backend,
                "decisions": report.decisions,
                "items": report.items,
                "record_seconds": round(recorded, 1),
                "replay_seconds": round(report.seconds, 1),
                "decisions_per_s": round(report.decisions / report.seconds),
                "allow_to_deny": report.count("allow->deny"),
                "deny_to_allow": report.count("deny->allow"),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
