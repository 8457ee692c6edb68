"""The OPA engine on a signed bundle: decisions like the embedded engine, and
fail closed when the OPA server serves another revision than the broker enforces.

The OPA binary cannot be installed here, so the server is a stand-in speaking
OPA's REST Data API (tests/support/opa_server.py) that loads the bundle
*tarball* into regorus, after checking its signature and layout as OPA does.
The broker's OPA engine talks to it through opa-python-client over loopback.
tests/integration/test_opa_engine.py runs the same comparison against a real
OPA whenever OPA_URL is set."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner

from broker.cli import main
from broker.core.errors import PolicyUnavailable
from broker.core.types import Decision
from broker.crypto.keys import BundleSigningKey
from broker.policy.bundle import build_bundle, read_tarball
from broker.policy.loader import PolicySet, load_policy_set
from broker.policy.opa_engine import OpaEngine
from broker.policy.regopy_engine import RegopyEngine
from broker.settings import EngineKind
from tests.conftest import (
    Harness,
    broker_settings,
    clean,
    free_port,
    register_partners,
    serve_broker,
)
from tests.integration.test_exchange import SUSPECT_HISTORY
from tests.scenarios.scenario_data import POLICY_ROOT, load_scenarios
from tests.support.opa_server import OpaStandIn


def comparable(decision: Decision) -> Decision:
    return dataclasses.replace(decision, decision_id="", engine="")


def tampered(tarball: bytes, name: str) -> bytes:
    """The tarball with one byte appended to file ``name`` (signature untouched)."""
    files = read_tarball(tarball)
    files[name] += b"\n# changed\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for member, content in files.items():
            info = tarfile.TarInfo("/" + member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


@pytest.fixture(scope="module")
def policy_set() -> PolicySet:
    return load_policy_set(POLICY_ROOT)


@pytest.fixture
def key(tmp_path: Path) -> BundleSigningKey:
    return BundleSigningKey.load_or_create(tmp_path / "keys")


async def test_opa_engine_decides_every_scenario_like_the_embedded_engine(
    policy_set: PolicySet, key: BundleSigningKey
) -> None:
    tarball = build_bundle(policy_set, key).tarball()
    embedded = RegopyEngine(policy_set)
    with OpaStandIn(tarball, public_pem=key.public_pem(), keyid=key.kid) as server:
        assert server.active is not None, server.rejected
        assert server.active.revision == policy_set.bundle_hash
        opa = OpaEngine(server.url, policy_set)
        try:
            scenarios = load_scenarios()
            assert scenarios.requests
            for request in scenarios.requests:
                policy_input = request.policy_input(scenarios.registry)
                ours = embedded.decide_sync(policy_input)
                theirs = await opa.decide(policy_input)
                assert theirs.engine == "opa"
                assert comparable(theirs) == comparable(ours), request.id
        finally:
            await opa.aclose()
            await embedded.aclose()


async def test_revision_mismatch_fails_closed(policy_set: PolicySet, key: BundleSigningKey) -> None:
    # The same files, but nothing signed yet: another data document, another revision.
    unsigned = policy_set.with_enforced(frozenset())
    assert unsigned.bundle_hash != policy_set.bundle_hash
    scenarios = load_scenarios()
    policy_input = scenarios.requests[0].policy_input(scenarios.registry)
    tarball = build_bundle(policy_set, key).tarball()
    with OpaStandIn(tarball, public_pem=key.public_pem(), keyid=key.kid) as server:
        current = OpaEngine(server.url, policy_set)
        ahead = OpaEngine(server.url, unsigned)
        try:
            assert (await current.decide(policy_input)).bundle_hash == policy_set.bundle_hash
            with pytest.raises(PolicyUnavailable, match="revision") as refused:
                await ahead.decide(policy_input)
            assert refused.value.status == 503
            assert str(refused.value.code) == "policy_unavailable"

            # A tampered bundle is not activated: the previous revision stays.
            next_tarball = build_bundle(unsigned, key).tarball()
            server.offer_bundle(tampered(next_tarball, "lib/decision.rego"))
            assert (await current.decide(policy_input)).bundle_hash == policy_set.bundle_hash
            assert server.rejected and "digest mismatch" in server.rejected[-1]

            # The OPA server moves on to the new revision: now the old one is refused.
            server.offer_bundle(next_tarball)
            assert (await ahead.decide(policy_input)).bundle_hash == unsigned.bundle_hash
            with pytest.raises(PolicyUnavailable, match="revision"):
                await current.decide(policy_input)

            # After a reload the engine expects the new revision.
            await current.reload(unsigned)
            assert (await current.decide(policy_input)).bundle_hash == unsigned.bundle_hash
        finally:
            await current.aclose()
            await ahead.aclose()


async def test_opa_engine_without_a_server_fails_closed(policy_set: PolicySet) -> None:
    scenarios = load_scenarios()
    policy_input = scenarios.requests[0].policy_input(scenarios.registry)
    engine = OpaEngine(f"http://127.0.0.1:{free_port()}", policy_set)  # nothing listens
    try:
        with pytest.raises(PolicyUnavailable):
            await engine.decide(policy_input)
    finally:
        await engine.aclose()


async def test_broker_on_opa_serves_the_cli_bundle_and_refuses_another_revision(
    sqlite_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    clean(sqlite_url)
    settings = broker_settings(sqlite_url, simulators, tmp_path)
    partners = await register_partners(settings, simulators)  # signs every agreement
    out = tmp_path / "bundle" / "broker.tar.gz"
    pem = tmp_path / "bundle" / "verify.pem"
    env = {"BROKER_DATABASE_URL": sqlite_url, "BROKER_KEYS_DIR": str(settings.keys_dir)}
    args = ["policy", "bundle", "--out", str(out), "--public-key", str(pem)]
    result = await asyncio.to_thread(CliRunner().invoke, main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "revision sha256:" in result.output
    tarball = out.read_bytes()
    key = BundleSigningKey.load_or_create(settings.keys_dir)
    assert pem.read_text(encoding="ascii") == key.public_pem()

    with OpaStandIn(tarball, public_pem=pem.read_text(encoding="ascii"), keyid=key.kid) as opa:
        assert opa.active is not None, opa.rejected
        opa_settings = settings.model_copy(
            update={"policy_engine": EngineKind.OPA, "opa_url": opa.url}
        )
        async with serve_broker(opa_settings) as broker:
            assert broker.services.engine.name == "opa"
            assert broker.services.engine.bundle_hash == opa.active.revision
            client = Harness(broker, partners).client("veilig_thuis")
            try:
                response = await client.exchange(SUSPECT_HISTORY)
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["policy_bundle"] == opa.active.revision
                assert {i["outcome"] for i in body["items"]} == {"allow", "deny"}

                # The broker publishes the bundle key: a stock library verifies the bundle.
                jwks = (await client.http.get(broker.base_url + "/oauth/jwks")).json()
                token = json.loads(read_tarball(tarball)[".signatures.json"])["signatures"][0]
                published = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
                claims = jwt.decode(token, published.key, algorithms=["ES256"])
                assert {f["name"] for f in claims["files"]} >= {".manifest", "lib/decision.rego"}

                # OPA is handed a bundle of another policy set: nothing is released.
                other = broker.services.policy_set.with_enforced(frozenset())
                opa.offer_bundle(build_bundle(other, key).tarball())
                refused = await client.exchange(SUSPECT_HISTORY)
                assert refused.status_code == 503
                problem = refused.json()
                assert problem["code"] == "policy_unavailable"
                assert "revision" in problem["detail"]
                assert "payload" not in problem
                assert refused.headers["content-type"].startswith("application/problem+json")
            finally:
                await client.aclose()
