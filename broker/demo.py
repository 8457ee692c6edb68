"""``broker demo``: the whole broker on the embedded default, with simulated
partner systems, demo agencies whose private keys are written to disk so a
person can play the partner, and a few scripted exchanges."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import uvicorn

from adapters.simulators.runner import spawn_process
from audit.log import AuditWriter
from broker.agencies.service import AgencyService
from broker.agreements.service import AgreementService
from broker.app import create_app
from broker.crypto.keys import generate_jwk, public_only, write_secret_json
from broker.db.migrate import upgrade
from broker.db.session import Database
from broker.partner_kit import PartnerClient
from broker.policy.loader import load_policy_set
from broker.reference import ReferenceData
from broker.settings import Settings

# Fictional organisations of the region "Lindeburg" (OINs as in the agreements).
DEMO_AGENCIES: list[tuple[str, str, str]] = [
    ("veilig_thuis", "00000001800006185000", "Veilig Thuis Lindeburg e.o."),
    ("politie", "00000001800014844000", "Politie eenheid Oost-Lindeburg"),
    ("raad_kinderbescherming", "00000001800034636000", "Raad voor de Kinderbescherming Lindeburg"),
    ("ggz", "00000003812345670000", "GGZ Lindeburg"),
    ("huisarts", "00000003812345680000", "Huisartsenkring Lindeburg"),
    ("school", "00000003812345690000", "Samenwerkingsverband Passend Onderwijs Lindeburg"),
    ("schuldhulpverlening", "00000003812345700000", "Stichting Schuldhulp Lindeburg"),
    ("gemeente_wijkteam", "00000001812345678000", "Gemeente Lindeburg - Sociaal Team"),
    ("gecertificeerde_instelling", "00000003812345710000", "Jeugdbescherming Lindeburg"),
    ("openbaar_ministerie", "00000001812345679000", "Openbaar Ministerie arr. Lindeburg"),
    ("zorg_en_veiligheidshuis", "00000001812345680000", "Zorg- en Veiligheidshuis Lindeburg"),
]

SCRIPT: list[tuple[str, str, dict[str, Any]]] = [
    (
        "veilig_thuis",
        "Veilig Thuis asks the police for earlier domestic-violence registrations of the "
        "father (safety assessment running), and - wrongly - for his diagnosis",
        {
            "agreement_id": "agr-vt-politie-hg",
            "purpose_id": "informatie_voor_veiligheidsbeoordeling",
            "provider": {"party": "politie"},
            "case_reference": "VT-LB-2026-0042",
            "subjects": ["999990007"],
            "elements": [
                "police.suspect_history_dv",
                "police.tijdelijk_huisverbod",
                "health.diagnosis",
            ],
            "context": {"vt_case_status": "veiligheidsbeoordeling"},
        },
    ),
    (
        "politie",
        "The police ask Veilig Thuis what happened with their care report, and for its "
        "investigation conclusion (not on the police whitelist)",
        {
            "agreement_id": "agr-vt-politie-hg",
            "purpose_id": "terugkoppeling_zorgmelding",
            "provider": {"party": "veilig_thuis"},
            "subjects": ["999990020"],
            "elements": ["vt.case_status", "vt.investigation_conclusion"],
            "context": {"vt_case_origin": "politie", "vt_case_status": "onderzoek"},
        },
    ),
    (
        "ggz",
        "Kindcheck: GGZ asks whether Veilig Thuis knows the household of an adult client "
        "(answer is yes/no only)",
        {
            "agreement_id": "agr-ggz-vt-kindcheck",
            "purpose_id": "kindcheck_bekendheid",
            "provider": {"party": "veilig_thuis"},
            "subjects": ["999990111"],
            "elements": ["vt.report_exists"],
            "context": {
                "kindcheck_decision": "meldcode_stappen_volgen",
                "minor_children_count": 1,
                "requester_role": "behandelaar",
            },
        },
    ),
]


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _register_agencies(
    settings: Settings, state_dir: Path, urls: dict[str, Any]
) -> dict[str, tuple[str, dict[str, Any]]]:
    database = Database(settings.async_database_url)
    service = AgencyService(database, ReferenceData.load(settings.policy_dir))
    partners: dict[str, tuple[str, dict[str, Any]]] = {}
    try:
        for party, oin, name in DEMO_AGENCIES:
            sig = generate_jwk("Ed25519", use="sig")
            enc = generate_jwk("X25519", use="enc")
            folder = state_dir / "partners" / party
            folder.mkdir(parents=True, exist_ok=True)
            private = {"keys": [sig, enc]}
            public = {"keys": [public_only(sig), public_only(enc)]}
            write_secret_json(folder / "private.jwks.json", private)
            (folder / "public.jwks.json").write_text(json.dumps(public, indent=2), encoding="utf-8")
            (folder / "oin.txt").write_text(oin + "\n", encoding="utf-8")
            fhir = urls.get("fhir") or {}  # ggz and huisarts answer over HL7 FHIR R4
            await service.add(
                oin=oin,
                name=name,
                party_type=party,
                jwks=public,
                endpoint_url=fhir.get(party) or urls["parties"].get(party),
                adapter_kind="fhir" if party in fhir else "partner_api",
            )
            partners[party] = (oin, private)
        await sign_agreements(database, settings, partners)
    finally:
        await database.dispose()
    return partners


async def sign_agreements(
    database: Database, settings: Settings, partners: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    """Every agency signs the agreements that list it as a signatory."""
    audit = AuditWriter(database)
    await audit.start()
    try:
        agencies = AgencyService(database, ReferenceData.load(settings.policy_dir))
        agreements = AgreementService(database, audit)
        policy_set = load_policy_set(settings.policy_dir)
        for oin, private in partners.values():
            sig = next(k for k in private["keys"] if k["use"] == "sig")
            await agreements.sign_as(policy_set, await agencies.get(oin), sig)
    finally:
        await audit.stop()


async def _script(base_url: str, partners: dict[str, tuple[str, dict[str, Any]]]) -> None:
    for party, story, request in SCRIPT:
        oin, private = partners[party]
        client = PartnerClient(base_url, oin, private)
        try:
            _say(f"\n--- {party}: {story}")
            response = await client.exchange(request)
            body = response.json()
            if response.status_code != 200:
                _say(f"    HTTP {response.status_code}: {body.get('code')} {body.get('detail')}")
                continue
            for item in body["items"]:
                _say(
                    f"    {item['element']:<34} {item['outcome']:<5} {item['reason']:<26} "
                    f"{item['status']}"
                )
            if body["payload"]:
                released = client.decrypt(body["payload"])
                for item in released["items"]:
                    value = json.dumps(item["value"], ensure_ascii=False)
                    _say(f"    decrypted {item['element']}: {value[:90]}")
            _say(
                f"    audit entries {body['audit_indices'][0]}..{body['audit_indices'][-1]}, "
                f"decision {body['decision_id']}"
            )
        finally:
            await client.aclose()


async def run_demo(*, port: int, sim_port: int, state_dir: Path, once: bool) -> None:
    state_dir = state_dir.resolve()
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    base_url = f"http://127.0.0.1:{port}"
    proc, urls = spawn_process(state_dir / "simulators.json", base_port=sim_port)
    server: uvicorn.Server | None = None
    serve_task: asyncio.Task[None] | None = None
    try:
        settings = Settings(
            database_url=f"sqlite:///{state_dir / 'broker.db'}",
            keys_dir=state_dir / "keys",
            register_url=urls["brp"],
            public_url=base_url,
            log_level="WARNING",
        )
        upgrade(settings.sync_database_url)
        partners = await _register_agencies(settings, state_dir, urls)
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        serve_task = asyncio.create_task(server.serve())
        while not server.started:
            if serve_task.done():
                serve_task.result()
            await asyncio.sleep(0.05)

        _say("Broker demo (embedded default: SQLite + in-process Rego)")
        _say(f"  broker API        {base_url}   (OpenAPI: {base_url}/docs)")
        _say(f"  token endpoint    {base_url}/oauth/token")
        _say(f"  population reg.   {urls['brp']}")
        for party, url in urls["parties"].items():
            _say(f"  partner system    {party:<27} {url}")
        for party, url in (urls.get("fhir") or {}).items():
            _say(f"  FHIR R4 server    {party:<27} {url}")
        _say(f"  partner keys      {state_dir / 'partners'}/<party>/private.jwks.json")
        _say(f"  database          {state_dir / 'broker.db'}")
        await _script(base_url, partners)
        _say("\nVerify the audit chain with:")
        _say(
            f"  BROKER_DATABASE_URL=sqlite:///{state_dir / 'broker.db'} "
            f"BROKER_KEYS_DIR={state_dir / 'keys'} broker audit verify"
        )
        if not once:
            _say("\nRunning; press Ctrl-C to stop.")
            await serve_task  # uvicorn stops on SIGINT/SIGTERM
    finally:
        if server is not None and serve_task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await serve_task
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
