"""Witness cosignatures (C2SP tlog-cosignature) and fork evidence, over loopback
HTTP on SQLite and PostgreSQL: agencies cosign a checkpoint with their
registered Ed25519 keys, the broker serves it with their cosignature lines,
``broker audit verify --require-witnesses N`` counts them, and the stand-alone
verifier turns two inconsistent broker-signed heads into fork evidence."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from audit import verifier
from audit.models import AuditEntry
from audit.tree import tree_head
from broker.cli import main
from broker.transparency.checkpoint import checkpoint_body, sign_checkpoint
from tests.conftest import Harness

PATH = "/v1/audit/checkpoint/cosignatures"


def _b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sig_jwk(harness: Harness, party: str) -> dict[str, Any]:
    return next(k for k in harness.partners[party]["keys"] if k["use"] == "sig")


def public_key(harness: Harness, party: str) -> bytes:
    return _b64u(sig_jwk(harness, party)["x"])


def cosign_blob(harness: Harness, party: str, body: str, timestamp: int | None = None) -> str:
    """What a witness does with its own tools: cosignature/v1 over the body."""
    jwk = sig_jwk(harness, party)
    oin = harness.partners[party]["oin"]
    t = int(time.time()) if timestamp is None else timestamp
    sig = Ed25519PrivateKey.from_private_bytes(_b64u(jwk["d"])).sign(
        verifier.cosigned_message(body, t)
    )
    kid = verifier.cosignature_key_id(oin, public_key(harness, party))
    return base64.b64encode(kid + t.to_bytes(8, "big") + sig).decode("ascii")


async def post(harness: Harness, party: str, body: dict[str, Any]) -> httpx.Response:
    client = harness.client(party)
    try:
        token = await client.token()
        return await client.http.post(
            harness.broker.base_url + PATH,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    finally:
        await client.aclose()


async def cosign(harness: Harness, party: str, body: str, **kw: Any) -> httpx.Response:
    return await post(
        harness,
        party,
        {
            "checkpoint": body,
            "kid": sig_jwk(harness, party)["kid"],
            "signature": cosign_blob(harness, party, body, **kw),
        },
    )


def verify_cli(harness: Harness, *args: str) -> Any:
    settings = harness.broker.settings
    return CliRunner().invoke(
        main,
        ["audit", "verify", *args],
        env={
            "BROKER_DATABASE_URL": settings.database_url,
            "BROKER_KEYS_DIR": str(settings.keys_dir),
            "BROKER_LOG_ORIGIN": settings.log_origin,
        },
    )


async def test_two_agencies_cosign_and_the_verifier_counts_them(harness: Harness) -> None:
    origin = harness.broker.settings.log_origin
    broker_key = harness.broker.services.keyring.public_key_raw()
    async with httpx.AsyncClient(base_url=harness.broker.base_url) as http:
        r = await http.get("/v1/audit/checkpoint/cosigned")
        assert r.status_code == 404, r.text
        note = (await http.get("/v1/audit/checkpoint")).text
    cp = verifier.verify_checkpoint(note, key_name=origin, public_key=broker_key)
    body = note.partition("\n\n")[0] + "\n"
    assert body == checkpoint_body(origin, cp.size, cp.root_hash)

    for party in ("veilig_thuis", "politie"):
        r = await cosign(harness, party, body)
        assert r.status_code == 201, r.text
        out = r.json()
        assert (out["tree_size"], out["agency"]) == (cp.size, harness.partners[party]["oin"])
    # The same agency again at the same size: a conflict.
    r = await cosign(harness, "politie", body)
    assert r.status_code == 409, r.text

    async with httpx.AsyncClient(base_url=harness.broker.base_url) as http:
        r = await http.get("/v1/audit/checkpoint/cosigned", params={"witnesses": 2})
        assert r.status_code == 200, r.text
        assert (await http.get("/v1/audit/checkpoint/cosigned?witnesses=3")).status_code == 404
    served = r.text
    assert verifier.verify_checkpoint(served, key_name=origin, public_key=broker_key) == cp
    for party in ("veilig_thuis", "politie"):
        cos = verifier.verify_cosignature(
            served, key_name=harness.partners[party]["oin"], public_key=public_key(harness, party)
        )
        assert cos.checkpoint == cp and abs(cos.timestamp - time.time()) < 60
    with pytest.raises(verifier.VerificationError):
        verifier.verify_cosignature(
            served,
            key_name=harness.partners["ggz"]["oin"],
            public_key=public_key(harness, "ggz"),
        )

    async with harness.broker.services.db.session() as session:
        entries = (
            await session.scalars(
                select(AuditEntry.entry).where(AuditEntry.kind == "checkpoint_cosigned")
            )
        ).all()
    assert sorted(json.loads(e)["agency"] for e in entries) == sorted(
        harness.partners[p]["oin"] for p in ("veilig_thuis", "politie")
    )

    # The CLI runs its own event loop: call it from a worker thread.
    ok = await asyncio.to_thread(verify_cli, harness, "--require-witnesses", "2")
    assert ok.exit_code == 0, ok.output
    assert "witnesses verified: 2 agencies" in ok.output
    fail = await asyncio.to_thread(verify_cli, harness, "--require-witnesses", "3")
    assert fail.exit_code != 0
    assert "only 2 of the 3 required witnesses" in fail.output


async def test_rejected_cosignatures(harness: Harness) -> None:
    origin = harness.broker.settings.log_origin
    head = await tree_head(harness.broker.services.db)
    body = checkpoint_body(origin, head.size, head.root_hash)
    never = [
        checkpoint_body(origin, head.size, hashlib.sha256(b"another history").digest()),
        checkpoint_body(origin, head.size + 10, head.root_hash),
        checkpoint_body("other.example/log", head.size, head.root_hash),
        "not a checkpoint",
    ]
    for bad in never:
        r = await cosign(harness, "veilig_thuis", bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    # A signature over another time than the one it claims, by another key, an unknown kid.
    good = base64.b64decode(cosign_blob(harness, "veilig_thuis", body))
    tampered = good[:4] + (int.from_bytes(good[4:12], "big") - 1).to_bytes(8, "big") + good[12:]
    other = cosign_blob(harness, "politie", body)
    kid = sig_jwk(harness, "veilig_thuis")["kid"]
    for fields in [
        {"kid": kid, "signature": base64.b64encode(tampered).decode()},
        {"kid": kid, "signature": other},
        {"kid": "no-such-key", "signature": base64.b64encode(good).decode()},
    ]:
        r = await post(harness, "veilig_thuis", {"checkpoint": body, **fields})
        assert r.status_code == 403, (fields, r.text)
    r = await cosign(harness, "veilig_thuis", body, timestamp=int(time.time()) + 3600)
    assert r.status_code == 422, r.text
    async with httpx.AsyncClient(base_url=harness.broker.base_url) as http:
        r = await http.post(PATH, json={"checkpoint": body, "kid": kid, "signature": "x"})
        assert r.status_code == 401, r.text
    assert (await cosign(harness, "veilig_thuis", body)).status_code == 201


async def test_fork_evidence(harness: Harness) -> None:
    services = harness.broker.services
    origin = harness.broker.settings.log_origin
    key = services.keyring.public_key_raw()
    old = await tree_head(services.db)
    honest_old = sign_checkpoint(services.keyring, origin, old.size, old.root_hash)
    # A head over another history, signed with the broker's own key.
    forked = sign_checkpoint(
        services.keyring, origin, old.size, hashlib.sha256(b"other history").digest()
    )
    evidence = verifier.prove_fork(honest_old, forked, key_name=origin, public_key=key)
    assert evidence.older.root_hash != evidence.newer.root_hash

    # The log grows (a cosignature is an audit entry); a newer honest head.
    assert (
        await cosign(harness, "veilig_thuis", honest_old.partition("\n\n")[0] + "\n")
    ).status_code == 201
    new = await tree_head(services.db)
    assert new.size > old.size
    honest_new = sign_checkpoint(services.keyring, origin, new.size, new.root_hash)
    async with httpx.AsyncClient(base_url=harness.broker.base_url) as http:
        r = await http.get("/v1/audit/proof/consistency", params={"from": old.size, "to": new.size})
    assert r.status_code == 200, r.text
    proof = [base64.b64decode(h) for h in r.json()["hashes"]]
    prefix = base64.b64decode(r.json()["from_root"])

    # Honest heads: consistent, no evidence.
    verifier.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    with pytest.raises(verifier.VerificationError, match="consistent"):
        verifier.prove_fork(
            honest_old, honest_new, proof, key_name=origin, public_key=key, prefix_root=prefix
        )
    # The forked head the agency kept vs the newer honest one: a provable fork.
    evidence = verifier.prove_fork(
        forked, honest_new, proof, key_name=origin, public_key=key, prefix_root=prefix
    )
    assert evidence.prefix_root == old.root_hash != evidence.older.root_hash
    assert evidence.newer.size == new.size
    if old.size & (old.size - 1):  # not a power of two: the proof itself names the prefix
        assert verifier.prove_fork(forked, honest_new, proof, key_name=origin, public_key=key)
    # A proof that does not lead to the newer head proves nothing.
    with pytest.raises(verifier.VerificationError, match="no evidence"):
        verifier.prove_fork(
            forked,
            honest_new,
            [hashlib.sha256(b"junk").digest(), *proof[1:]],
            key_name=origin,
            public_key=key,
            prefix_root=prefix,
        )
    # Checkpoints the broker did not sign are no evidence at all.
    with pytest.raises(verifier.VerificationError):
        verifier.prove_fork(forked, honest_new, proof, key_name=origin, public_key=b"\x01" * 32)
