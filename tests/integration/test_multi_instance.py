"""Several broker instances on one PostgreSQL database behave as one broker.

Two instances run as their own uvicorn processes (``broker serve``) on loopback,
with one database, one keys folder, one policy folder and one public URL (as
behind a load balancer): a client assertion is single-use across them; exchanges
at both append to one hash chain and Merkle tree that ``broker audit verify``
accepts and both serve the same checkpoint of; an agreement uploaded and signed
at one is enforced at the other within seconds. A second test gives each
instance its own policy folder: the upload reaches the other through the
database."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import create_engine, text

from broker.crypto.keys import BrokerKeyring, load_or_create_pseudonym_key
from broker.partner_kit import ASSERTION_TYPE, PartnerClient
from broker.settings import PROJECT_ROOT
from tests.conftest import (
    AGENCIES,
    broker_settings,
    clean,
    free_port,
    register_partners,
    serve_broker,
)
from tests.instances import broker_env, spawn_broker, stop_broker
from tests.integration.test_agreement_upload import ADMIN, ASK_DEBT, NEW_ID, POLICY_TEST
from tests.integration.test_new_agreement import AGREEMENT, POLICY

PUBLIC_URL = "http://broker.test"  # what partners use; the token audience
EXCHANGES = 200
PROPAGATION_SECONDS = 5.0
REQUEST = {  # 10 items: 6 allowed and fetched from the police simulator, 4 denied
    "agreement_id": "agr-vt-politie-hg",
    "purpose_id": "informatie_voor_veiligheidsbeoordeling",
    "provider": {"party": "politie"},
    "case_reference": "VT-LB-2026-0042",
    "subjects": ["999990007", "999990019"],
    "elements": [
        "police.dv_incident",
        "police.suspect_history_dv",
        "police.tijdelijk_huisverbod",
        "health.diagnosis",
        "health.medication",
    ],
    "context": {"vt_case_status": "veiligheidsbeoordeling"},
}

UPLOAD = {"agreement.yaml": AGREEMENT, "policy.rego": POLICY, "policy_test.rego": POLICY_TEST}


@dataclass
class Cluster:
    urls: list[str]
    partners: dict[str, dict[str, Any]]
    env: dict[str, str]
    database_url: str
    http: httpx.AsyncClient
    audit_indices: list[int]

    def kit(self, party: str) -> PartnerClient:
        """Makes client assertions for the public URL and decrypts payloads."""
        p = self.partners[party]
        return PartnerClient(PUBLIC_URL, p["oin"], {"keys": p["keys"]}, http=self.http)

    async def post_assertion(self, url: str, assertion: str) -> httpx.Response:
        return await self.http.post(
            url + "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
        )

    async def token(self, url: str, party: str) -> str:
        response = await self.post_assertion(url, self.kit(party).client_assertion())
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def call(
        self, url: str, token: str, method: str, path: str, body: Any = None
    ) -> httpx.Response:
        response = await self.http.request(
            method, url + path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        if path == "/v1/exchanges" and response.status_code == 200:
            self.audit_indices.extend(response.json()["audit_indices"])
        return response

    async def sign(self, url: str, party: str, agreement_id: str) -> httpx.Response:
        """The agency signs the agreement's current version at ``url`` (PyJWT JWS)."""
        token = await self.token(url, party)
        listed = (await self.call(url, token, "GET", "/v1/agreements")).json()
        agreement = next(a for a in listed if a["id"] == agreement_id)
        sig = next(k for k in self.partners[party]["keys"] if k["use"] == "sig")
        payload = json.dumps(
            {
                "agreement_id": agreement_id,
                "version": agreement["version"],
                "content_hash": agreement["content_hash"],
                "party": party,
                "oin": self.partners[party]["oin"],
                "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        jws = jwt.api_jws.encode(
            payload, jwt.PyJWK(sig).key, algorithm=sig["alg"], headers={"kid": sig["kid"]}
        )
        return await self.call(
            url, token, "POST", f"/v1/agreements/{agreement_id}/signatures", {"jws": jws}
        )

    def scalar(self, sql: str) -> Any:
        engine = create_engine(self.database_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                return conn.execute(text(sql)).scalar()
        finally:
            engine.dispose()

    def entries(self, kind: str) -> list[dict[str, Any]]:
        engine = create_engine(self.database_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT entry FROM audit_entries WHERE kind = :kind ORDER BY seq"),
                    {"kind": kind},
                )
                return [json.loads(r[0]) for r in rows]
        finally:
            engine.dispose()

    def exchange_entry_seqs(self) -> list[int]:
        engine = create_engine(self.database_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT seq FROM audit_entries WHERE exchange_id IS NOT NULL")
                )
                return sorted(int(r[0]) for r in rows)
        finally:
            engine.dispose()


def shared_keys(keys: Path) -> None:
    """The instances share the broker's keys: made once, before either starts."""
    BrokerKeyring.load_or_create(keys)
    load_or_create_pseudonym_key(keys)


@pytest.fixture
async def cluster(
    pg_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Cluster]:
    clean(pg_url)
    policies = tmp_path / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    keys = tmp_path / "keys"
    shared_keys(keys)
    settings = broker_settings(pg_url, simulators, tmp_path, policy_dir=policies)
    partners = await register_partners(settings, simulators)
    env = broker_env(
        database_url=pg_url,
        keys_dir=str(keys),
        policy_dir=str(policies),
        register_url=simulators["brp"],
        public_url=PUBLIC_URL,
        agreement_admins=AGENCIES[ADMIN],
        log_level="WARNING",
    )
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, port in enumerate(ports):
            procs.append(
                await asyncio.to_thread(
                    spawn_broker, port, env, log=tmp_path / f"broker-{'ab'[i]}.log"
                )
            )
        async with httpx.AsyncClient(timeout=30.0) as http:
            yield Cluster(
                urls=[f"http://127.0.0.1:{p}" for p in ports],
                partners=partners,
                env=env,
                database_url=pg_url,
                http=http,
                audit_indices=[],
            )
    finally:
        for proc in procs:
            stop_broker(proc)
        clean(pg_url)


async def test_two_instances_behave_as_one_broker(cluster: Cluster) -> None:
    a, b = cluster.urls

    # 1. A client assertion used at A is refused at B; a fresh one works there.
    assertion = cluster.kit("veilig_thuis").client_assertion()
    first = await cluster.post_assertion(a, assertion)
    assert first.status_code == 200, first.text
    replay = await cluster.post_assertion(b, assertion)
    assert replay.status_code == 401, replay.text
    assert replay.headers["content-type"] == "application/problem+json"
    assert replay.json()["code"] == "invalid_client"
    again = await cluster.post_assertion(a, assertion)
    assert again.status_code == 401, again.text
    token_a = str(first.json()["access_token"])
    token_b = await cluster.token(b, "veilig_thuis")

    # 2. Many exchanges at both at once (tokens from either instance work at both).
    limit = asyncio.Semaphore(32)

    async def exchange(i: int) -> httpx.Response:
        url = (a, b)[i % 2]
        token = (token_a, token_b)[(i // 2) % 2]
        async with limit:
            return await cluster.call(url, token, "POST", "/v1/exchanges", REQUEST)

    responses = await asyncio.gather(*(exchange(i) for i in range(EXCHANGES)))
    assert [r.status_code for r in responses] == [200] * EXCHANGES, next(
        r.text for r in responses if r.status_code != 200
    )
    bodies = [r.json() for r in responses]
    assert len({body["exchange_id"] for body in bodies}) == EXCHANGES
    # Per exchange: one decision entry per item (10) and one release entry.
    assert {len(body["audit_indices"]) for body in bodies} == {11}
    # 6 allowed items: the police source holds the incident for both parents and the
    # suspect history and house ban for the father only (the mother's are not found).
    statuses = sorted(i["status"] for i in bodies[-1]["items"] if i["outcome"] == "allow")
    assert statuses == ["not_found"] * 2 + ["released"] * 4, statuses
    released = cluster.kit("veilig_thuis").decrypt(bodies[-1]["payload"])
    assert len(released["items"]) == 4

    # 3. An agreement uploaded and signed at A is enforced at B within seconds.
    admin = await cluster.token(a, ADMIN)
    uploaded = await cluster.call(a, admin, "POST", "/v1/agreements", {"files": UPLOAD})
    assert uploaded.status_code == 201, uploaded.text
    content_hash = uploaded.json()["content_hash"]
    raad_b = await cluster.token(b, "raad_kinderbescherming")

    async def reasons_at_b() -> set[str]:
        response = await cluster.call(b, raad_b, "POST", "/v1/exchanges", ASK_DEBT)
        if response.status_code != 200:
            return {response.json().get("code", str(response.status_code))}
        return {item["reason"] for item in response.json()["items"]}

    async def until(expected: set[str]) -> float:
        started = time.monotonic()
        while (seen := await reasons_at_b()) != expected:
            elapsed = time.monotonic() - started
            assert elapsed < PROPAGATION_SECONDS, f"B still answers {seen} after {elapsed:.1f} s"
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    await until({"deny_agreement_not_in_force"})  # known at B, not yet signed
    for party in ("schuldhulpverlening", "raad_kinderbescherming"):
        signed = await cluster.sign(a, party, NEW_ID)
        assert signed.status_code == 201, signed.text
    assert signed.json()["state"] == "in_force"
    await until({"allow_statutory_basis", "deny_element_not_allowed"})
    listed = (await cluster.call(b, raad_b, "GET", "/v1/agreements")).json()
    new = next(x for x in listed if x["id"] == NEW_ID)
    assert (new["state"], new["content_hash"]) == ("in_force", content_hash)

    # 4. One log: every exchange entry at the position the answer named, no gaps,
    #    no forks; `broker audit verify` accepts chain and tree.
    assert sorted(cluster.audit_indices) == cluster.exchange_entry_seqs()
    assert len(set(cluster.audit_indices)) == len(cluster.audit_indices)
    # Each change of an agreement's state is recorded once, not once per instance.
    states = [
        (e["agreement"]["id"], e["agreement"]["version"], e["agreement"]["hash"], e["state"])
        for e in cluster.entries("agreement_state")
    ]
    assert len(states) == len(set(states)), states
    assert [s[3] for s in states if s[0] == NEW_ID] == ["unsigned", "in_force"]
    [upload] = cluster.entries("agreement_uploaded")
    assert upload["agreement"]["hash"] == content_hash
    await asyncio.sleep(1.5)  # past the checkpoint cache of both instances
    size = int(cluster.scalar("SELECT size FROM audit_head WHERE id = 1"))
    assert size == int(cluster.scalar("SELECT count(*) FROM audit_entries"))
    verified = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "broker.cli", "audit", "verify"],
        env=cluster.env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"audit log verified: {size} entries" in verified.stdout

    # 5. Both instances serve the same signed checkpoint of that tree.
    checkpoints = [(await cluster.http.get(url + "/v1/audit/checkpoint")).text for url in (a, b)]
    assert checkpoints[0] == checkpoints[1]
    assert checkpoints[0].splitlines()[1] == str(size)


async def test_an_upload_reaches_an_instance_with_its_own_policy_folder(
    pg_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    clean(pg_url)
    keys = tmp_path / "keys"
    shared_keys(keys)
    folders = [tmp_path / "policies-a", tmp_path / "policies-b"]
    for folder in folders:
        shutil.copytree(PROJECT_ROOT / "policies", folder)
    settings = [
        broker_settings(
            pg_url,
            simulators,
            tmp_path,
            policy_dir=folder,
            policy_poll_seconds=1.0,
            agreement_admins=[AGENCIES[ADMIN]],
        )
        for folder in folders
    ]
    partners = await register_partners(settings[0], simulators)
    try:
        async with serve_broker(settings[0]) as a, serve_broker(settings[1]) as b:
            raad = partners[ADMIN]
            client = PartnerClient(a.base_url, raad["oin"], {"keys": raad["keys"]})

            async def upload_at_a_seen_at_b(files: dict[str, str]) -> Path:
                response = await client.http.post(
                    a.base_url + "/v1/agreements",
                    json={"files": files},
                    headers={"Authorization": f"Bearer {await client.token()}"},
                )
                assert response.status_code == 201, response.text
                content_hash = response.json()["content_hash"]
                started = time.monotonic()
                while (
                    loaded := b.services.policy_set.agreements.get(NEW_ID)
                ) is None or loaded.content_hash != content_hash:
                    assert time.monotonic() - started < PROPAGATION_SECONDS, "not at B"
                    await asyncio.sleep(0.1)
                assert not list(folders[1].glob(".upload-*"))
                return loaded.folder

            try:
                installed = await upload_at_a_seen_at_b(UPLOAD)
                assert installed == (folders[1] / "agreements" / NEW_ID).resolve()
                assert (installed / "policy_test.rego").read_text() == POLICY_TEST
                # A new version replaces the folder at B too; the old one is kept aside.
                newer = {
                    "agreement.yaml": AGREEMENT.replace('version: "0.9"', 'version: "1.0"'),
                    "policy.rego": POLICY.replace(".v0_9", ".v1_0"),
                    "policy_test.rego": POLICY_TEST.replace(".v0_9", ".v1_0"),
                }
                await upload_at_a_seen_at_b(newer)
                assert b.services.policy_set.agreements[NEW_ID].version == "1.0"
                assert [p.name for p in (folders[1] / "previous").iterdir()] == [
                    f"{NEW_ID}.previous-0.9"
                ]
            finally:
                await client.aclose()
            assert b.services.changes.listening
    finally:
        clean(pg_url)
