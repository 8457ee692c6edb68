"""``broker demo``: the whole broker on the embedded default, with simulated
partner systems, demo agencies whose private keys are written to disk so a
person can play the partner, a few scripted exchanges (one of them asking two
providers at once) and a police care report published to Veilig Thuis's inbox."""

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

from adapters.simulators.endpoints import agency_endpoint
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
    (
        "gecertificeerde_instelling",
        "MDA++ safety table: the youth-protection organisation asks the police and Veilig "
        "Thuis at once, each for its own part (two providers, one answer)",
        {
            "agreement_id": "agr-zvh-mdaplusplus",
            "purpose_id": "veiligheidsoverleg",
            "providers": [
                {"party": "politie", "elements": ["police.dv_incident"]},
                {"party": "veilig_thuis", "elements": ["vt.safety_assessment"]},
            ],
            "case_reference": "GI-LB-2026-0042",
            "subjects": ["999990007"],
            "elements": ["police.dv_incident", "vt.safety_assessment"],
            "context": {"mda_case_id": "MDA-LB-2026-0007", "mda_case_status": "actief"},
        },
    ),
]

# The police publish a care report (zorgmelding) after an incident at the household of
# scenario S01; the subscription in agr-vt-politie-hg delivers it to Veilig Thuis.
ZORGMELDING_EVENT: dict[str, Any] = {
    "event_id": "PL-LB-2026-0314-0042-ZM",
    "event_type": "police.zorgmelding",
    "agreement_id": "agr-vt-politie-hg",
    "occurred_at": "2026-03-14T01:55:00+01:00",
    "subjects": ["999990007", "999990019", "999990020"],
    "context": {"police_incident_id": "PL-LB-2026-0314-0042"},
    "elements": [
        {
            "element": "police.zorgmelding",
            "subject": "999990020",
            "value": {
                "registered": "2026-03-14T01:55:00+01:00",
                "category": "zorgmelding_huiselijk_geweld",
                "children_present": True,
                "summary": "Neighbours reported shouting; three children at home.",
            },
        },
        {
            "element": "police.dv_incident",
            "subject": "999990007",
            "value": {"incident_id": "PL-LB-2026-0314-0042", "type": "mishandeling"},
        },
        # Attached by the police system; the purpose does not allow it (scenario S01).
        {
            "element": "police.suspect_history_dv",
            "subject": "999990007",
            "value": {"lookback_years": 5, "count": 3, "last_date": "2025-11-02"},
        },
    ],
}


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
            # ggz/huisarts: HL7 FHIR R4; police, Raad, Veilig Thuis, wijkteam and
            # schuldhulpverlening: their own source APIs; others: the generic partner API.
            adapter_kind, endpoint_url = agency_endpoint(party, urls)
            await service.add(
                oin=oin,
                name=name,
                party_type=party,
                jwks=public,
                endpoint_url=endpoint_url,
                adapter_kind=adapter_kind,
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
            several = len(body.get("providers") or []) > 1
            for item in body["items"]:
                source = f"{item['provider']['party']:<13} " if several else ""
                _say(
                    f"    {source}{item['element']:<34} {item['outcome']:<5} "
                    f"{item['reason']:<26} {item['status']}"
                )
            if body["payload"]:
                released = client.decrypt(body["payload"])
                for item in released["items"]:
                    value = json.dumps(item["value"], ensure_ascii=False)
                    source = f" (from {item['provider']['party']})" if "provider" in item else ""
                    _say(f"    decrypted {item['element']}{source}: {value[:90]}")
            decisions = (
                ", ".join(f"{p['party']} {p['decision_id']}" for p in body["providers"])
                if several
                else body["decision_id"]
            )
            _say(
                f"    audit entries {body['audit_indices'][0]}..{body['audit_indices'][-1]}, "
                f"decision {decisions}"
            )
        finally:
            await client.aclose()


async def _publication(base_url: str, partners: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """The police publish a care report; Veilig Thuis reads it from its inbox, decrypts it
    with its own key (only the allowed elements are there) and acknowledges it."""
    _say(
        "\n--- politie: the police publish a care report (zorgmelding) after an incident; "
        "it reaches Veilig Thuis without a phone call, minus what the purpose does not allow"
    )
    police_oin, police_keys = partners["politie"]
    police = PartnerClient(base_url, police_oin, police_keys)
    try:
        token = await police.token()
        response = await police.http.post(
            base_url + "/v1/publications",
            json=ZORGMELDING_EVENT,
            headers={"Authorization": f"Bearer {token}"},
        )
        body = response.json()
        if response.status_code != 202:
            _say(f"    HTTP {response.status_code}: {body.get('code')} {body.get('detail')}")
            return
        for recipient in body["recipients"]:
            _say(f"    to {recipient['recipient']['party']} ({recipient['recipient']['oin']}):")
            for item in recipient["items"]:
                _say(f"      {item['element']:<32} {item['outcome']:<5} {item['reason']}")
    finally:
        await police.aclose()

    _say("\n--- veilig_thuis: reads its inbox and decrypts the message with its own key")
    vt_oin, vt_keys = partners["veilig_thuis"]
    vt = PartnerClient(base_url, vt_oin, vt_keys)
    try:
        headers = {"Authorization": f"Bearer {await vt.token()}"}
        inbox = (await vt.http.get(base_url + "/v1/inbox", headers=headers)).json()
        for message in inbox["messages"]:
            _say(
                f"    message {message['id']} {message['event_type']} from "
                f"{message['publisher']['party']}"
            )
            opened = vt.decrypt(message["payload"])
            for item in opened["items"]:
                value = json.dumps(item["value"], ensure_ascii=False)
                _say(f"    decrypted {item['element']}: {value[:90]}")
            ack = await vt.http.post(base_url + f"/v1/inbox/{message['id']}/ack", headers=headers)
            _say(f"    acknowledged: HTTP {ack.status_code}")
    finally:
        await vt.aclose()


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
        for party, url in (urls.get("sources") or {}).items():
            _say(f"  source system     {party:<27} {url}")
        _say(f"  partner keys      {state_dir / 'partners'}/<party>/private.jwks.json")
        _say(f"  database          {state_dir / 'broker.db'}")
        await _script(base_url, partners)
        await _publication(base_url, partners)
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
