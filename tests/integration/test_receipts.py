"""Signed release receipts over loopback HTTP, on SQLite and PostgreSQL: every
exchange response carries a receipt that verifies with the broker's JWKS (with a
stock JOSE library and with the stand-alone verifier), matches the response
items with pseudonymised subjects only, cites audit entries whose inclusion
proofs verify against a signed checkpoint, fails on any one-byte change, and
keeps verifying after the broker's signing key is rotated."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from audit import verifier
from audit.models import AuditEntry
from broker.crypto.keys import BrokerKeyring, generate_jwk, public_only
from tests.conftest import (
    AGENCIES,
    Harness,
    RunningBroker,
    broker_settings,
    register_partners,
    serve_broker,
)
from tests.integration.test_exchange import SUSPECT_HISTORY

KINDCHECK = {
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


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def stock_verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Verifies with PyJWT only: the key is the JWKS entry the header's kid names."""
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    payload = jwt.api_jws.decode(token, key.key, algorithms=["EdDSA"])
    out: dict[str, Any] = json.loads(payload)
    return out


async def fetch_jwks(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url) as http:
        r = await http.get("/oauth/jwks")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


async def exchange(harness: Harness, party: str, request: dict[str, Any]) -> dict[str, Any]:
    client = harness.client(party)
    try:
        response = await client.exchange(request)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body
    finally:
        await client.aclose()


def check_items(body: dict[str, Any], payload: dict[str, Any]) -> None:
    assert len(payload["items"]) == len(body["items"])
    for got, item in zip(payload["items"], body["items"], strict=True):
        prefix = "hh:" if item["subject_kind"] == "household" else "psn:"
        assert got["subject_key"].startswith(prefix)
        assert got == {
            "element": item["element"],
            "subject_key": got["subject_key"],
            "outcome": item["outcome"],
            "reason": item["reason"],
            "legal_basis_ids": [b["id"] for b in item["legal_basis"]],
            "consent_id": item["consent_id"],
            "acute_declaration_id": item["acute_declaration_id"],
            "status": item["status"],
            "source": item["source"],
        }


async def test_receipt_verifies_matches_and_is_included(harness: Harness) -> None:
    broker = harness.broker
    services = broker.services
    body = await exchange(harness, "veilig_thuis", SUSPECT_HISTORY)
    token = body["receipt"]
    jwks = await fetch_jwks(broker.base_url)

    header = jwt.get_unverified_header(token)
    assert header == {
        "alg": "EdDSA",
        "kid": services.keyring.active_kid,
        "typ": verifier.RECEIPT_TYPE,
    }
    payload = stock_verify(token, jwks)
    assert verifier.verify_receipt(token, jwks) == payload
    active = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert verifier.verify_receipt(token, active) == payload  # one JWK works too
    # The payload is the canonical JSON (RFC 8785) of the document.
    raw = b64u_decode(token.split(".")[1])
    assert raw == json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    assert payload["v"] == 1
    assert payload["exchange_id"] == body["exchange_id"]
    assert payload["decision_id"] == body["decision_id"]
    assert payload["request_id"] == body["request_id"]
    assert payload["requester"] == {"oin": AGENCIES["veilig_thuis"], "party": "veilig_thuis"}
    assert payload["provider"] == {"oin": AGENCIES["politie"], "party": "politie"}
    assert payload["purpose_id"] == SUSPECT_HISTORY["purpose_id"]
    assert payload["agreement"] == body["agreement"]
    assert payload["policy_bundle"] == body["policy_bundle"]
    assert payload["response_form"] == body["response_form"]
    assert payload["issued_at"].endswith("+00:00")
    check_items(body, payload)
    for subject in SUSPECT_HISTORY["subjects"]:
        assert subject not in raw.decode()
        assert subject not in token

    audit = payload["audit"]
    assert audit["log_origin"] == broker.settings.log_origin
    assert audit["leaf_indices"] == body["audit_indices"]
    assert audit["tree_size"] == max(audit["leaf_indices"]) + 1

    # The cited entries are this exchange's, with the receipt's subject keys.
    async with services.db.session() as session:
        entries = {
            e.seq: e
            for e in await session.scalars(
                select(AuditEntry).where(AuditEntry.seq.in_(audit["leaf_indices"]))
            )
        }
    assert all(e.exchange_id == body["exchange_id"] for e in entries.values())
    decisions = [entries[i] for i in audit["leaf_indices"] if entries[i].kind == "decision"]
    assert [(e.element, e.subject_key, e.outcome) for e in decisions] == [
        (i["element"], i["subject_key"], i["outcome"]) for i in payload["items"]
    ]

    # Inclusion of every cited entry: at the receipt's tree size and in a signed
    # checkpoint, which is consistent with the receipt's tree.
    await asyncio.sleep(1.05)  # the served checkpoint is at most a second old
    async with httpx.AsyncClient(base_url=broker.base_url) as http:
        note = (await http.get("/v1/audit/checkpoint")).text
        cp = verifier.verify_checkpoint(
            note, key_name=broker.settings.log_origin, public_key=services.keyring.public_key_raw()
        )
        assert cp.size >= audit["tree_size"]
        roots: dict[int, bytes] = {}
        for index in audit["leaf_indices"]:
            leaf = verifier.leaf_hash(entries[index].entry.encode())
            for size in (audit["tree_size"], cp.size):
                r = await http.get(
                    "/v1/audit/proof/inclusion", params={"index": index, "size": size}
                )
                assert r.status_code == 200, r.text
                proof = r.json()
                assert base64.b64decode(proof["leaf_hash"]) == leaf
                root = base64.b64decode(proof["root_hash"])
                roots.setdefault(size, root)
                assert roots[size] == root
                hashes = [base64.b64decode(h) for h in proof["hashes"]]
                verifier.verify_inclusion(leaf, index, size, hashes, root)
        assert roots[cp.size] == cp.root_hash
        r = await http.get(
            "/v1/audit/proof/consistency", params={"from": audit["tree_size"], "to": cp.size}
        )
        assert r.status_code == 200, r.text
        verifier.verify_consistency(
            audit["tree_size"],
            cp.size,
            roots[audit["tree_size"]],
            cp.root_hash,
            [base64.b64decode(h) for h in r.json()["hashes"]],
        )


async def test_household_receipt_has_household_pseudonyms(harness: Harness) -> None:
    body = await exchange(harness, "ggz", KINDCHECK)
    jwks = await fetch_jwks(harness.broker.base_url)
    payload = verifier.verify_receipt(body["receipt"], jwks)
    assert stock_verify(body["receipt"], jwks) == payload
    assert payload["response_form"] == "boolean_only"
    check_items(body, payload)
    assert any(i["subject_key"].startswith("hh:") for i in payload["items"])
    assert payload["audit"]["leaf_indices"] == body["audit_indices"]
    for subject in KINDCHECK["subjects"]:
        assert subject not in json.dumps(payload)


def tampered(token: str, part: int, position: int) -> str:
    """``token`` with one byte of one decoded segment changed."""
    segments = token.split(".")
    data = bytearray(b64u_decode(segments[part]))
    data[position % len(data)] ^= 0x01
    segments[part] = b64u(bytes(data))
    return ".".join(segments)


async def test_any_one_byte_change_fails(harness: Harness) -> None:
    body = await exchange(harness, "veilig_thuis", SUSPECT_HISTORY)
    token = body["receipt"]
    jwks = await fetch_jwks(harness.broker.base_url)
    verifier.verify_receipt(token, jwks)

    payload = b64u_decode(token.split(".")[1])
    # A meaningful change: one letter of a denied item's status.
    assert b'"status":"denied"' in payload
    forged = payload.replace(b'"status":"denied"', b'"status":"deniee"', 1)
    head, _, sig = token.split(".")
    variants = [f"{head}.{b64u(forged)}.{sig}"]
    variants += [tampered(token, part, pos) for part in (0, 1, 2) for pos in (0, 7, -1)]
    for bad in variants:
        assert bad != token
        with pytest.raises(verifier.VerificationError):
            verifier.verify_receipt(bad, jwks)
        with pytest.raises(jwt.InvalidTokenError):
            stock_verify(bad, jwks)

    # A key the broker never used, even under the same kid, does not verify it.
    kid = jwt.get_unverified_header(token)["kid"]
    other = dict(public_only(generate_jwk("Ed25519", use="sig")), kid=kid)
    with pytest.raises(verifier.VerificationError):
        verifier.verify_receipt(token, {"keys": [other]})
    with pytest.raises(jwt.InvalidTokenError):
        stock_verify(token, {"keys": [other]})


async def test_receipt_verifies_after_key_rotation(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    settings = broker_settings(database_url, simulators, tmp_path)
    partners = await register_partners(settings, simulators)

    async def run(broker: RunningBroker) -> tuple[str, dict[str, Any]]:
        body = await exchange(Harness(broker, partners), "veilig_thuis", SUSPECT_HISTORY)
        return body["receipt"], await fetch_jwks(broker.base_url)

    async with serve_broker(settings) as broker:
        old_receipt, old_jwks = await run(broker)
        old_kid = broker.services.keyring.active_kid
    assert jwt.get_unverified_header(old_receipt)["kid"] == old_kid

    new_kid = BrokerKeyring.rotate(settings.keys_dir)
    assert new_kid != old_kid
    restarted = broker_settings(database_url, simulators, tmp_path)  # same keys, new port
    async with serve_broker(restarted) as broker:
        assert broker.services.keyring.active_kid == new_kid
        new_receipt, jwks = await run(broker)
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
    assert jwt.get_unverified_header(new_receipt)["kid"] == new_kid

    # The receipt signed before the rotation verifies with the JWKS served after it.
    old_payload = stock_verify(old_receipt, jwks)
    assert verifier.verify_receipt(old_receipt, jwks) == old_payload
    assert verifier.verify_receipt(new_receipt, jwks) == stock_verify(new_receipt, jwks)
    # ...and the new one was not signed by the old key.
    with pytest.raises(verifier.VerificationError):
        verifier.verify_receipt(new_receipt, old_jwks)
    with pytest.raises(verifier.VerificationError):
        verifier.verify_receipt(old_receipt, next(k for k in jwks["keys"] if k["kid"] == new_kid))
