"""The exchange flow end to end over loopback HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
from joserfc import jwe
from joserfc.jwk import OKPKey
from sqlalchemy import func, select

from audit.models import AuditEntry
from audit.verify import verify_chain
from broker.exchange.models import DecisionRecord, Exchange
from tests.conftest import Harness

SUSPECT_HISTORY = {
    "agreement_id": "agr-vt-politie-hg",
    "purpose_id": "informatie_voor_veiligheidsbeoordeling",
    "provider": {"party": "politie"},
    "case_reference": "VT-LB-2026-0042",
    "subjects": ["999990007"],
    "elements": ["police.suspect_history_dv", "police.tijdelijk_huisverbod", "health.diagnosis"],
    "context": {"vt_case_status": "veiligheidsbeoordeling"},
}


async def test_exchange_releases_exactly_what_is_allowed(harness: Harness) -> None:
    client = harness.client("veilig_thuis")
    try:
        response = await client.exchange(SUSPECT_HISTORY)
        assert response.status_code == 200, response.text
        body = response.json()
        by_element = {i["element"]: i for i in body["items"]}
        assert by_element["police.suspect_history_dv"]["reason"] == "allow_statutory_basis"
        assert by_element["police.suspect_history_dv"]["status"] == "released"
        assert {b["id"] for b in by_element["police.suspect_history_dv"]["legal_basis"]} >= {
            "wpg_20"
        }
        assert by_element["health.diagnosis"]["reason"] == "deny_element_not_allowed"
        assert by_element["health.diagnosis"]["status"] == "denied"
        assert body["agreement"] == {
            "id": "agr-vt-politie-hg",
            "version": "3.0",
            "content_hash": body["agreement"]["content_hash"],
        }
        assert body["policy_bundle"].startswith("sha256:")

        # Decrypt with a stock JOSE library and the partner's own private key.
        enc = next(k for k in harness.partners["veilig_thuis"]["keys"] if k["use"] == "enc")
        header = json.loads(base64.urlsafe_b64decode(body["payload"].split(".")[0] + "=="))
        assert header["alg"] == "ECDH-ES+A256KW" and header["enc"] == "A256GCM"
        plaintext = jwe.decrypt_compact(body["payload"], OKPKey.import_key(enc)).plaintext
        released = json.loads(plaintext or b"{}")
        assert released["exchange_id"] == body["exchange_id"]
        assert {i["element"] for i in released["items"]} == {
            "police.suspect_history_dv",
            "police.tijdelijk_huisverbod",
        }
        assert all(i["subject"] == "999990007" for i in released["items"])
    finally:
        await client.aclose()

    # The audit record was written: one entry per item plus one release entry,
    # with pseudonymised subjects only.
    services = harness.broker.services
    async with services.db.session() as session:
        entries = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.exchange_id == body["exchange_id"])
                .order_by(AuditEntry.seq)
            )
        ).all()
        assert [e.seq for e in entries] == body["audit_indices"]
        assert [e.kind for e in entries] == ["decision"] * 3 + ["release"]
        for e in entries:
            assert "999990007" not in e.entry
        exchanges = await session.scalar(select(func.count()).select_from(Exchange))
        decisions = await session.get(DecisionRecord, body["decision_id"])
    assert exchanges == 1
    assert decisions is not None and decisions.input["purpose"] == SUSPECT_HISTORY["purpose_id"]
    # The log also holds the agreement signatures and activations; it verifies whole.
    summary = await verify_chain(services.db)
    assert summary.size > max(body["audit_indices"])


async def test_household_elements_and_boolean_only(harness: Harness) -> None:
    client = harness.client("ggz")
    try:
        response = await client.exchange(
            {
                "agreement_id": "agr-ggz-vt-kindcheck",
                "purpose_id": "kindcheck_bekendheid",
                "provider": {"party": "veilig_thuis"},
                "subjects": ["999990111", "999990147"],
                "elements": ["vt.report_exists", "vt.case_status"],
                "context": {
                    "kindcheck_decision": "meldcode_stappen_volgen",
                    "minor_children_count": 1,
                    "requester_role": "behandelaar",
                },
            }
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["response_form"] == "boolean_only"
        reasons = {(i["element"], i["subject"]): i["reason"] for i in body["items"]}
        assert reasons[("vt.report_exists", "999990111")] == "allow_statutory_basis"
        assert reasons[("vt.case_status", "999990111")] == "deny_element_not_allowed"
        released = client.decrypt(body["payload"])
        values = {i["subject"]: i["value"] for i in released["items"]}
        assert values == {"999990111": True, "999990147": False}
        assert all(set(i) == {"element", "subject", "value"} for i in released["items"])
    finally:
        await client.aclose()


async def test_unauthenticated_and_bad_tokens_get_one_generic_401(harness: Harness) -> None:
    url = harness.broker.base_url
    async with httpx.AsyncClient() as http:
        for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic x"}):
            r = await http.post(url + "/v1/exchanges", json=SUSPECT_HISTORY, headers=headers)
            assert r.status_code == 401
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "unauthorized"
            assert r.json()["detail"] == "Authentication failed"


async def test_client_assertion_replay_is_refused(harness: Harness) -> None:
    client = harness.client("politie")
    url = harness.broker.base_url + "/oauth/token"
    assertion = client.client_assertion(jti="fixed-jti-0001")
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    try:
        first = await client.http.post(url, data=form)
        assert first.status_code == 200
        assert first.json()["token_type"] == "Bearer"
        second = await client.http.post(url, data=form)
        assert second.status_code == 401
        assert second.json()["code"] == "invalid_client"
        assert second.json()["error"] == "invalid_client"
        # Too long-lived an assertion (exp beyond 5 minutes) is refused too.
        long = dict(form, client_assertion=client.client_assertion(lifetime=3600))
        assert (await client.http.post(url, data=long)).status_code == 401
        # An assertion for another audience is refused.
        import jwt as pyjwt

        sig = next(k for k in harness.partners["politie"]["keys"] if k["use"] == "sig")
        claims = pyjwt.decode(client.client_assertion(), options={"verify_signature": False})
        claims.update(aud="https://elsewhere.example/oauth/token", jti="other-audience-1")
        wrong = pyjwt.encode(
            claims, pyjwt.PyJWK(sig).key, algorithm="EdDSA", headers={"kid": sig["kid"]}
        )
        r = await client.http.post(url, data=dict(form, client_assertion=wrong))
        assert r.status_code == 401
    finally:
        await client.aclose()


async def test_client_assertion_with_the_fully_specified_ed25519_alg(harness: Harness) -> None:
    """RFC 9864 names EdDSA over Ed25519 "Ed25519"; a partner whose JOSE library
    (here joserfc) signs with that name gets a token as with "EdDSA"."""
    from joserfc import jwt as jose_jwt

    client = harness.client("politie")
    url = harness.broker.base_url + "/oauth/token"
    sig = next(k for k in harness.partners["politie"]["keys"] if k["use"] == "sig")
    key = OKPKey.import_key({k: v for k, v in sig.items() if k != "alg"})
    now = int(time.time())
    claims = {
        "iss": client.oin,
        "sub": client.oin,
        "aud": url,
        "iat": now,
        "exp": now + 120,
        "jti": f"ed25519-alg-{now}",
    }
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    try:
        header = {"alg": "Ed25519", "kid": sig["kid"]}
        assertion = jose_jwt.encode(header, claims, key, algorithms=["Ed25519"])
        r = await client.http.post(url, data=dict(form, client_assertion=assertion))
        assert r.status_code == 200, r.text
        assert r.json()["token_type"] == "Bearer"
        # The same with a key the agency did not register is refused.
        other = OKPKey.generate_key("Ed25519")
        forged = jose_jwt.encode(
            header, dict(claims, jti=f"forged-{now}"), other, algorithms=["Ed25519"]
        )
        r = await client.http.post(url, data=dict(form, client_assertion=forged))
        assert r.status_code == 401
        metadata = (
            await client.http.get(
                harness.broker.base_url + "/.well-known/oauth-authorization-server"
            )
        ).json()
        assert "Ed25519" in metadata["token_endpoint_auth_signing_alg_values_supported"]
    finally:
        await client.aclose()


async def test_assertion_signed_by_unregistered_key_is_refused(harness: Harness) -> None:
    from broker.crypto.keys import generate_jwk
    from broker.partner_kit import PartnerClient

    oin = harness.partners["politie"]["oin"]
    impostor = PartnerClient(
        harness.broker.base_url,
        oin,
        {"keys": [generate_jwk("Ed25519", use="sig"), generate_jwk("X25519", use="enc")]},
    )
    try:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": impostor.client_assertion(),
        }
        r = await impostor.http.post(harness.broker.base_url + "/oauth/token", data=form)
        assert r.status_code == 401
        assert r.json()["code"] == "invalid_client"
    finally:
        await impostor.aclose()


async def _post(harness: Harness, party: str, body: Any, **kw: Any) -> httpx.Response:
    client = harness.client(party)
    try:
        token = await client.token()
        return await client.http.post(
            harness.broker.base_url + "/v1/exchanges",
            headers={"Authorization": f"Bearer {token}", **kw.pop("headers", {})},
            **({"json": body} if body is not None else {}),
            **kw,
        )
    finally:
        await client.aclose()


async def test_bad_bsn_is_a_clear_422(harness: Harness) -> None:
    r = await _post(
        harness, "veilig_thuis", dict(SUSPECT_HISTORY, subjects=["999990007", "123456789"])
    )
    assert r.status_code == 422
    problem = r.json()
    assert problem["code"] == "invalid_bsn"
    assert problem["field"] == "subjects[1]"
    assert "123456789" not in r.text
    assert problem["request_id"]


async def test_unknown_element_is_a_clear_422(harness: Harness) -> None:
    r = await _post(
        harness,
        "veilig_thuis",
        dict(SUSPECT_HISTORY, elements=["police.dv_incident", "police.no_such_thing"]),
    )
    assert r.status_code == 422
    assert r.json()["code"] == "unknown_element"
    assert r.json()["field"] == "elements[1]"


async def test_oversized_and_non_json_bodies(harness: Harness) -> None:
    big = dict(SUSPECT_HISTORY, context={"note": "x" * (300 * 1024)})
    r = await _post(harness, "veilig_thuis", big)
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
    r = await _post(
        harness,
        "veilig_thuis",
        None,
        content=b"subjects=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415
    r = await _post(
        harness,
        "veilig_thuis",
        None,
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_unknown_agreement_is_a_decision_not_an_error(harness: Harness) -> None:
    r = await _post(harness, "veilig_thuis", dict(SUSPECT_HISTORY, agreement_id="agr-nope"))
    assert r.status_code == 200
    assert {i["reason"] for i in r.json()["items"]} == {"deny_agreement_not_in_force"}
    assert r.json()["payload"] is None


async def test_policy_engine_down_fails_closed(harness: Harness) -> None:
    await harness.broker.services.engine.aclose()
    r = await _post(harness, "veilig_thuis", SUSPECT_HISTORY)
    assert r.status_code == 503
    assert r.json()["code"] == "policy_unavailable"
    assert "payload" not in r.json()


async def test_audit_failure_fails_closed(harness: Harness) -> None:
    services = harness.broker.services
    await services.audit.stop()
    r = await _post(harness, "veilig_thuis", SUSPECT_HISTORY)
    assert r.status_code == 503
    assert r.json()["code"] == "audit_unavailable"
    assert "payload" not in r.json()
