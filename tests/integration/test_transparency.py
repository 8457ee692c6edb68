"""The public transparency endpoints over loopback HTTP, on SQLite and
PostgreSQL: after an exchange the signed checkpoint covers its audit entries,
their inclusion proofs and a consistency proof verify with the stand-alone
verifier, and bad parameters are RFC 9457 problems."""

from __future__ import annotations

import asyncio
import base64

import httpx
from sqlalchemy import select

from audit import verifier
from audit.models import AuditEntry
from tests.conftest import Harness
from tests.integration.test_exchange import SUSPECT_HISTORY


def b64(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


async def test_checkpoint_and_proofs_after_an_exchange(harness: Harness) -> None:
    base = harness.broker.base_url
    services = harness.broker.services
    origin = harness.broker.settings.log_origin
    public = services.keyring.public_key_raw()
    async with httpx.AsyncClient(base_url=base) as http:
        before = await http.get("/v1/audit/checkpoint")
        assert before.status_code == 200
        assert before.headers["content-type"].startswith("text/plain")
        old = verifier.verify_checkpoint(before.text, key_name=origin, public_key=public)
        assert verifier.parse_verifier_key(before.headers["x-verifier-key"]) == (origin, public)

        client = harness.client("veilig_thuis")
        try:
            response = await client.exchange(SUSPECT_HISTORY)
            assert response.status_code == 200, response.text
            indices = response.json()["audit_indices"]
        finally:
            await client.aclose()

        await asyncio.sleep(1.05)  # the served checkpoint is at most a second old
        text = (await http.get("/v1/audit/checkpoint")).text
        new = verifier.verify_checkpoint(text, key_name=origin, public_key=public)
        assert new.origin == origin and new.size > max(indices) and new.size > old.size

        async with services.db.session() as session:
            entries = {
                e.seq: e.entry.encode()
                for e in await session.scalars(
                    select(AuditEntry).where(AuditEntry.seq.in_(indices))
                )
            }
        for index in indices:
            r = await http.get(
                "/v1/audit/proof/inclusion", params={"index": index, "size": new.size}
            )
            assert r.status_code == 200, r.text
            proof = r.json()
            leaf = verifier.leaf_hash(entries[index])
            assert base64.b64decode(proof["leaf_hash"]) == leaf
            assert base64.b64decode(proof["root_hash"]) == new.root_hash
            verifier.verify_inclusion(leaf, index, new.size, b64(proof["hashes"]), new.root_hash)

        r = await http.get("/v1/audit/proof/consistency", params={"from": old.size, "to": new.size})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["from"], body["to"]) == (old.size, new.size)
        verifier.verify_consistency(
            old.size, new.size, old.root_hash, new.root_hash, b64(body["hashes"])
        )

        # Bad or out-of-range parameters: RFC 9457 problems, no server errors.
        for path, params, field in [
            ("/v1/audit/proof/inclusion", {"index": new.size, "size": new.size}, "index"),
            ("/v1/audit/proof/inclusion", {"index": 0, "size": new.size + 1}, "size"),
            ("/v1/audit/proof/inclusion", {"index": -1, "size": 1}, "index"),
            ("/v1/audit/proof/inclusion", {"index": "x", "size": 1}, "index"),
            ("/v1/audit/proof/consistency", {"from": 2, "to": 1}, "from"),
            ("/v1/audit/proof/consistency", {"from": 0, "to": new.size + 1}, "to"),
        ]:
            r = await http.get(path, params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["field"] == field
