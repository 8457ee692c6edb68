"""Publish/subscribe end to end over loopback HTTP, on SQLite and PostgreSQL:
the police publish a care report (zorgmelding), the broker decides per recipient
agency with the agreement's purpose, audits, and keeps an encrypted inbox
message for Veilig Thuis until it is acknowledged or its webhook accepts it."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from click.testing import CliRunner
from joserfc import jwe, jws
from joserfc.jwk import OKPKey
from sqlalchemy import func, select

from audit.models import AuditEntry
from audit.verify import verify_chain
from broker.cli import main as cli_main
from broker.db.session import Database
from broker.exchange.models import DecisionRecord
from broker.publications.delivery import (
    SIGNATURE_HEADER,
    WebhookRegistry,
    WebhookWorker,
    backoff_seconds,
)
from broker.publications.models import InboxMessage, Publication
from tests.conftest import (
    AGENCIES,
    Harness,
    broker_settings,
    free_port,
    register_partners,
    serve_broker,
)

POLICE, VT, RAAD = "politie", "veilig_thuis", "raad_kinderbescherming"
ZORGMELDING = {
    "registered": "2026-03-14T01:55:00+01:00",
    "category": "zorgmelding_huiselijk_geweld",
    "children_present": True,
    "summary": "Neighbours reported shouting; mother had a red mark on cheek.",
}
DV_INCIDENT = {"incident_id": "PL-LB-2026-0314-0042", "type": "mishandeling"}
HISTORY = {"lookback_years": 5, "count": 3, "last_date": "2025-11-02"}
BSNS = ("999990007", "999990019", "999990020")


def event(event_id: str = "PL-LB-2026-0314-0042-ZM", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "event_type": "police.zorgmelding",
        "agreement_id": "agr-vt-politie-hg",
        "occurred_at": "2026-03-14T01:55:00+01:00",
        "subjects": list(BSNS),
        "context": {"police_incident_id": "PL-LB-2026-0314-0042"},
        "elements": [
            {"element": "police.zorgmelding", "subject": "999990020", "value": ZORGMELDING},
            {"element": "police.dv_incident", "subject": "999990007", "value": DV_INCIDENT},
            {"element": "person.name", "subject": "999990020", "value": "Noor Hoekstra"},
            # Attached by the police system, not allowed by the purpose (scenario S01).
            {"element": "police.suspect_history_dv", "subject": "999990007", "value": HISTORY},
        ],
    }
    body.update(changes)
    return body


async def call(
    harness: Harness, party: str, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    client = harness.client(party)
    try:
        token = await client.token()
        return await client.http.request(
            method,
            harness.broker.base_url + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    finally:
        await client.aclose()


def decrypt(harness: Harness, party: str, payload: str) -> dict[str, Any]:
    """With a stock JOSE library and the partner's own private key."""
    enc = next(k for k in harness.partners[party]["keys"] if k["use"] == "enc")
    plaintext = jwe.decrypt_compact(payload, OKPKey.import_key(enc)).plaintext
    data: dict[str, Any] = json.loads(plaintext or b"{}")
    return data


@asynccontextmanager
async def pubsub(
    database_url: str, simulators: dict[str, Any], tmp: Path, **overrides: Any
) -> AsyncIterator[Harness]:
    settings = broker_settings(database_url, simulators, tmp, **overrides)
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings) as broker:
        yield Harness(broker, partners)


async def test_publication_reaches_veilig_thuis_with_only_the_allowed_elements(
    harness: Harness,
) -> None:
    response = await call(harness, POLICE, "POST", "/v1/publications", event())
    assert response.status_code == 202, response.text
    body = response.json()
    assert all(bsn not in response.text for bsn in BSNS)
    assert "red mark" not in response.text  # no payload echoed
    # Every registered Veilig Thuis agency, and nobody else, is a recipient.
    assert [r["recipient"] for r in body["recipients"]] == [{"oin": AGENCIES[VT], "party": VT}]
    recipient = body["recipients"][0]
    reasons = {(i["element"], i["subject_index"]): i["reason"] for i in recipient["items"]}
    assert reasons == {
        ("police.zorgmelding", 2): "allow_statutory_basis",
        ("police.dv_incident", 0): "allow_statutory_basis",
        ("person.name", 2): "allow_statutory_basis",
        ("police.suspect_history_dv", 0): "deny_element_not_allowed",
    }
    assert body["agreement"]["id"] == "agr-vt-politie-hg"
    assert body["purpose_id"] == "zorgmelding_na_incident"
    message_id = recipient["message_id"]
    assert message_id

    inbox = await call(harness, VT, "GET", "/v1/inbox")
    assert inbox.status_code == 200, inbox.text
    messages = inbox.json()["messages"]
    assert [m["id"] for m in messages] == [message_id]
    message = messages[0]
    assert message["event_id"] == "PL-LB-2026-0314-0042-ZM"
    assert message["event_type"] == "police.zorgmelding"
    assert message["publisher"] == {"oin": AGENCIES[POLICE], "party": POLICE}
    assert message["purpose_id"] == "zorgmelding_na_incident"
    assert message["items"] == recipient["items"]
    released = decrypt(harness, VT, message["payload"])
    assert released["message_id"] == message_id
    assert released["event_id"] == "PL-LB-2026-0314-0042-ZM"
    assert sorted(released["items"], key=lambda i: i["element"]) == [
        {"element": "person.name", "subject": "999990020", "value": "Noor Hoekstra"},
        {"element": "police.dv_incident", "subject": "999990007", "value": DV_INCIDENT},
        {"element": "police.zorgmelding", "subject": "999990020", "value": ZORGMELDING},
    ]

    # A party the subscription does not name receives nothing; nor does the publisher.
    for party in (RAAD, POLICE, "ggz"):
        other = await call(harness, party, "GET", "/v1/inbox")
        assert other.json() == {"messages": [], "next_after": None}

    # Audited before it was stored: a decision entry per item (the refusal too),
    # one release entry; pseudonymised subjects, no BSNs and no values.
    db = harness.broker.services.db
    async with db.session() as session:
        entries = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.exchange_id.in_([message_id, body["publication_id"]]))
                .order_by(AuditEntry.seq)
            )
        ).all()
    assert [e.seq for e in entries] == body["audit_indices"]
    assert [e.kind for e in entries] == ["publication"] + ["decision"] * 4 + ["release"]
    outcomes = {e.element: e.outcome for e in entries if e.kind == "decision"}
    assert outcomes["police.suspect_history_dv"] == "deny"
    assert outcomes["police.zorgmelding"] == "allow"
    for e in entries:
        assert all(bsn not in e.entry for bsn in BSNS)
        assert "red mark" not in e.entry and "Noor" not in e.entry
    release = json.loads(entries[-1].entry)
    assert {i["element"] for i in release["items"]} == {
        "police.zorgmelding",
        "police.dv_incident",
        "person.name",
    }
    assert release["requester"] == AGENCIES[VT] and release["provider"] == AGENCIES[POLICE]
    await verify_chain(db)
    # The decision input's personal detail (facts, context) is sealed for retention.
    async with db.session() as session:
        stored = await session.get(DecisionRecord, recipient["decision_id"])
    assert stored is not None
    assert "sealed" in stored.input and "context" not in stored.input


async def test_republishing_the_same_event_is_idempotent(harness: Harness) -> None:
    first = await call(harness, POLICE, "POST", "/v1/publications", event())
    again = await call(harness, POLICE, "POST", "/v1/publications", event())
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json()
    async with harness.broker.services.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(InboxMessage)) == 1
        assert await session.scalar(select(func.count()).select_from(Publication)) == 1
    inbox = (await call(harness, VT, "GET", "/v1/inbox")).json()
    assert len(inbox["messages"]) == 1

    # The same event id with another shape is refused, not merged.
    changed = await call(
        harness, POLICE, "POST", "/v1/publications", event(subjects=["999990020", "999990007"])
    )
    assert changed.status_code == 409, changed.text
    assert changed.json()["code"] == "event_id_reused"
    # Concurrent re-publications still make one message.
    answers = await asyncio.gather(
        *(call(harness, POLICE, "POST", "/v1/publications", event("EV-2")) for _ in range(4))
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["publication_id"] for a in answers}) == 1
    async with harness.broker.services.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(InboxMessage)) == 2


async def test_acknowledge_and_page(harness: Harness) -> None:
    ids = []
    for n in range(3):
        response = await call(harness, POLICE, "POST", "/v1/publications", event(f"EV-{n}"))
        assert response.status_code == 202, response.text
        ids.append(response.json()["recipients"][0]["message_id"])

    page = (await call(harness, VT, "GET", "/v1/inbox?limit=2")).json()
    assert [m["id"] for m in page["messages"]] == ids[:2]
    assert page["next_after"] == ids[1]
    rest = (await call(harness, VT, "GET", f"/v1/inbox?limit=2&after={ids[1]}")).json()
    assert [m["id"] for m in rest["messages"]] == ids[2:]
    assert rest["next_after"] is None

    ack = await call(harness, VT, "POST", f"/v1/inbox/{ids[0]}/ack")
    assert ack.status_code == 200, ack.text
    assert ack.json()["acked_by"] == "inbox"
    again = await call(harness, VT, "POST", f"/v1/inbox/{ids[0]}/ack")
    assert again.status_code == 200 and again.json() == ack.json()
    remaining = (await call(harness, VT, "GET", "/v1/inbox")).json()
    assert [m["id"] for m in remaining["messages"]] == ids[1:]
    async with harness.broker.services.db.session() as session:
        acked = await session.get(InboxMessage, ids[0])
    assert acked is not None and acked.payload == ""  # the broker keeps no copy

    # Another agency's message is not yours to see or acknowledge.
    foreign = await call(harness, RAAD, "POST", f"/v1/inbox/{ids[1]}/ack")
    assert foreign.status_code == 404
    assert foreign.headers["content-type"] == "application/problem+json"
    async with harness.broker.services.db.session() as session:
        acks = (
            await session.scalars(select(AuditEntry).where(AuditEntry.kind == "inbox_acknowledged"))
        ).all()
    assert [json.loads(a.entry)["message_id"] for a in acks] == [ids[0]]


@pytest.mark.parametrize(
    ("party", "changes", "status", "code", "field"),
    [
        (POLICE, {"subjects": ["999990008"]}, 422, "invalid_bsn", "subjects[0]"),
        (
            POLICE,
            {"elements": [{"element": "police.unknown", "subject": BSNS[0], "value": 1}]},
            422,
            "unknown_element",
            "elements[0].element",
        ),
        (
            POLICE,
            {"elements": [{"element": "health.diagnosis", "subject": BSNS[0], "value": 1}]},
            422,
            "element_not_in_subscription",
            "elements[0].element",
        ),
        (
            POLICE,
            {"elements": [{"element": "person.name", "subject": "999990032", "value": "x"}]},
            422,
            "validation_failed",
            "elements[0].subject",
        ),
        (POLICE, {"agreement_id": "agr-unknown"}, 422, "unknown_agreement", "agreement_id"),
        (POLICE, {"event_type": "police.unknown"}, 422, "unknown_event_type", "event_type"),
        (
            POLICE,
            {"agreement_id": "agr-vt-raad-vto"},
            422,
            "unknown_event_type",
            "event_type",
        ),
        (VT, {}, 403, "not_a_publisher", None),
        (RAAD, {}, 403, "not_a_publisher", None),
    ],
)
async def test_bad_publications_are_problems(
    harness: Harness,
    party: str,
    changes: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    response = await call(harness, party, "POST", "/v1/publications", event(**changes))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code
    assert problem.get("field") == field
    assert "999990008" not in response.text
    async with harness.broker.services.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(InboxMessage)) == 0


async def test_publications_and_inbox_need_a_token(harness: Harness) -> None:
    async with httpx.AsyncClient(base_url=harness.broker.base_url) as http:
        for method, path in (("POST", "/v1/publications"), ("GET", "/v1/inbox")):
            response = await http.request(method, path, json=event())
            assert response.status_code == 401, response.text
            assert response.json()["code"] == "unauthorized"


async def test_unacknowledged_messages_survive_a_restart(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    settings = broker_settings(database_url, simulators, tmp_path)
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings) as broker:
        harness = Harness(broker, partners)
        response = await call(harness, POLICE, "POST", "/v1/publications", event())
        assert response.status_code == 202, response.text
        message_id = response.json()["recipients"][0]["message_id"]
    # A new broker process state on the same database.
    async with serve_broker(settings) as broker:
        harness = Harness(broker, partners)
        inbox = (await call(harness, VT, "GET", "/v1/inbox")).json()
        assert [m["id"] for m in inbox["messages"]] == [message_id]
        assert decrypt(harness, VT, inbox["messages"][0]["payload"])["message_id"] == message_id
        again = await call(harness, POLICE, "POST", "/v1/publications", event())
        assert again.json() == response.json()


class Receiver:
    """A partner's webhook endpoint on loopback that fails its first attempts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[bytes, dict[str, str]]] = []
        self.times: list[float] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/broker-inbox"

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((await request.read(), dict(request.headers)))
        self.times.append(time.monotonic())
        if len(self.calls) <= self.failures:
            return web.Response(status=503)
        return web.Response(status=204)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        app = web.Application()
        app.router.add_post("/broker-inbox", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        try:
            yield self
        finally:
            await runner.cleanup()


async def until(check: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_webhook_delivery_retries_with_backoff_and_is_signed(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    async with (
        Receiver(failures=2).running() as receiver,
        pubsub(
            database_url,
            simulators,
            tmp_path,
            webhook_poll_seconds=0.05,
            webhook_backoff_seconds=0.2,
        ) as harness,
    ):
        # The command runs its own event loop: in a thread, as from a shell.
        cli = await asyncio.to_thread(
            CliRunner().invoke,
            cli_main,
            ["agency", "webhook", "--oin", AGENCIES[VT], "--url", receiver.url],
            env={"BROKER_DATABASE_URL": database_url},
        )
        assert cli.exit_code == 0, cli.output
        assert receiver.url in cli.output
        response = await call(harness, POLICE, "POST", "/v1/publications", event())
        assert response.status_code == 202, response.text
        message_id = response.json()["recipients"][0]["message_id"]

        async def acknowledged() -> bool:
            inbox = (await call(harness, VT, "GET", "/v1/inbox")).json()
            return not inbox["messages"]

        await until(acknowledged)

    assert len(receiver.calls) == 3
    jwks = harness.broker.services.keyring.public_jwks()["keys"]
    sent = []
    for body, headers in receiver.calls:
        # The signature verifies over the exact body (detached JWS) with /oauth/jwks.
        signature = headers[SIGNATURE_HEADER]
        protected = json.loads(_b64d(signature.split(".")[0]))
        assert protected["typ"] == "broker-webhook+jws"
        key = OKPKey.import_key(next(k for k in jwks if k["kid"] == protected["kid"]))
        verified = jws.deserialize_compact(signature, key, algorithms=["EdDSA"], payload=body)
        assert verified.payload == body
        delivery = json.loads(body)
        assert delivery["recipient_oin"] == AGENCIES[VT]
        assert delivery["message"]["id"] == message_id == headers["Broker-Message-Id"]
        sent.append(delivery["attempt"])
        decrypted = decrypt(harness, VT, delivery["message"]["payload"])
        assert decrypted["message_id"] == message_id
    assert sent == [1, 2, 3]
    # Exponential backoff with equal jitter: the n-th retry waits at least
    # base * 2**(n-1) / 2 (0.1 s, then 0.2 s).
    gaps = [b - a for a, b in zip(receiver.times, receiver.times[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps
    async with harness.broker.services.db.session() as session:
        row = await session.get(InboxMessage, message_id)
        acks = (
            await session.scalars(select(AuditEntry).where(AuditEntry.kind == "inbox_acknowledged"))
        ).all()
    assert row is not None and row.acked_by == "webhook" and row.attempts == 3
    assert row.last_error == "HTTP 503"
    assert [json.loads(a.entry)["via"] for a in acks] == ["webhook"]
    tampered = body.replace(b'"attempt":3', b'"attempt":1')
    assert tampered != body
    with pytest.raises(jws.BadSignatureError):
        jws.deserialize_compact(signature, key, algorithms=["EdDSA"], payload=tampered)


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempts, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)):
        delays = [backoff_seconds(attempts, 2.0, 60.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


async def test_workers_of_several_instances_attempt_each_message_once(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    async with (
        Receiver(failures=0).running() as receiver,
        pubsub(database_url, simulators, tmp_path, webhook_poll_seconds=0) as harness,
    ):
        for n in range(8):
            response = await call(harness, POLICE, "POST", "/v1/publications", event(f"EV-{n}"))
            assert response.status_code == 202, response.text
        services = harness.broker.services
        await WebhookRegistry(services.db).set(AGENCIES[VT], receiver.url)
        # Two instances: each its own database engine and worker; one audit log.
        databases = [Database(services.settings.async_database_url) for _ in range(2)]
        workers = [
            WebhookWorker(db=db, keyring=services.keyring, audit=services.audit, batch=3)
            for db in databases
        ]
        try:

            async def drain(worker: WebhookWorker) -> None:
                while await worker.run_once():
                    pass

            await asyncio.gather(*(drain(w) for w in workers))
        finally:
            for w in workers:
                await w.stop()
            for db in databases:
                await db.dispose()
        delivered = [json.loads(body)["message"]["id"] for body, _ in receiver.calls]
        assert len(delivered) == 8 and len(set(delivered)) == 8
        inbox = (await call(harness, VT, "GET", "/v1/inbox")).json()
        assert inbox["messages"] == []


async def test_webhook_gives_up_and_leaves_the_message_for_polling(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    async with (
        Receiver(failures=100).running() as receiver,
        pubsub(database_url, simulators, tmp_path, webhook_poll_seconds=0) as harness,
    ):
        services = harness.broker.services
        await WebhookRegistry(services.db).set(AGENCIES[VT], receiver.url)
        response = await call(harness, POLICE, "POST", "/v1/publications", event())
        message_id = response.json()["recipients"][0]["message_id"]
        worker = WebhookWorker(
            db=services.db,
            keyring=services.keyring,
            audit=services.audit,
            max_attempts=2,
            backoff_seconds=0.01,
        )
        try:
            await worker.run_once()
            await asyncio.sleep(0.05)
            await worker.run_once()
            await asyncio.sleep(0.05)
            assert await worker.run_once() == 0  # gave up: no third attempt
        finally:
            await worker.stop()
        assert len(receiver.calls) == 2
        inbox = (await call(harness, VT, "GET", "/v1/inbox")).json()
        assert [m["id"] for m in inbox["messages"]] == [message_id]
        # Registering the (fixed) endpoint again re-arms the message.
        receiver.failures = 0
        await WebhookRegistry(services.db).set(AGENCIES[VT], receiver.url)
        try:
            assert await worker.run_once() == 1
        finally:
            await worker.stop()
        assert len(receiver.calls) == 3
        assert (await call(harness, VT, "GET", "/v1/inbox")).json()["messages"] == []


async def test_subject_access_overview_lists_what_an_event_delivered(harness: Harness) -> None:
    response = await call(harness, POLICE, "POST", "/v1/publications", event())
    message_id = response.json()["recipients"][0]["message_id"]
    report = await harness.broker.services.subject_access.report("999990007")
    entries = [e for e in report.entries if e.exchange_id == message_id]
    released = {e.element: e.released for e in entries}
    # The care report concerns the household, so the father's overview lists it too.
    assert released == {
        "police.dv_incident": True,
        "police.suspect_history_dv": False,
        "police.zorgmelding": True,
    }
    assert all(e.requester and e.requester.oin == AGENCIES[VT] for e in entries)
    assert all(e.provider and e.provider.oin == AGENCIES[POLICE] for e in entries)
