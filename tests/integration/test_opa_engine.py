"""The OPA engine against a real OPA server: runs whenever OPA_URL is set.

The OPA binary cannot be installed on the build machines, so this test is
skipped there (tests/integration/test_opa_bundle.py runs the same comparison
against a stand-in). A real OPA gets the policies as a real deployment does: it
downloads the signed bundle from a bundle server and verifies its signature.
This test is that bundle server: it serves ``broker.tar.gz`` at OPA_BUNDLE_LISTEN
(default 127.0.0.1:8282), signed with the bundle key in OPA_BUNDLE_KEYS_DIR.
Set up once (docs/decisions/0005-opa-server.md)::

    export BROKER_KEYS_DIR=/tmp/opa-test/keys
    broker policy bundle --out /tmp/opa-test/broker.tar.gz --public-key /tmp/opa-test/verify.pem
    # config.yaml as in the decision record, with services.bundle-server.url
    # http://127.0.0.1:8282, polling 1-2 s and keys.broker-bundle.key the PEM
    opa run --server --addr 127.0.0.1:8181 --config-file config.yaml &
    OPA_URL=http://127.0.0.1:8181 OPA_BUNDLE_KEYS_DIR=/tmp/opa-test/keys \\
        .venv/bin/pytest tests/integration/test_opa_engine.py

It requires the same decisions as the embedded engine for every scenario
request, and that decisions are refused once OPA serves another revision."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker.core.errors import PolicyUnavailable
from broker.core.types import PolicyInput
from broker.crypto.keys import BundleSigningKey
from broker.policy.bundle import build_bundle
from broker.policy.loader import PolicySet, load_policy_set
from broker.policy.opa_engine import OpaEngine
from broker.policy.regopy_engine import RegopyEngine
from tests.integration.test_opa_bundle import comparable
from tests.scenarios.scenario_data import POLICY_ROOT, load_scenarios

OPA_URL = os.environ.get("OPA_URL")
KEYS_DIR = os.environ.get("OPA_BUNDLE_KEYS_DIR")
LISTEN = os.environ.get("OPA_BUNDLE_LISTEN", "127.0.0.1:8282")
WAIT_SECONDS = float(os.environ.get("OPA_BUNDLE_WAIT_SECONDS", "60"))

pytestmark = pytest.mark.skipif(
    not (OPA_URL and KEYS_DIR),
    reason="OPA_URL and OPA_BUNDLE_KEYS_DIR are not set (no OPA server here)",
)


class BundleServer:
    """Serves the current bundle tarball at /broker.tar.gz, as OPA's bundle service."""

    def __init__(self, listen: str) -> None:
        host, port = listen.rsplit(":", 1)
        self.tarball = b""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                body = owner.tarball
                if self.path.split("?")[0] != "/broker.tar.gz" or not body:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer((host, int(port)), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> BundleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def bundle_server() -> Iterator[BundleServer]:
    with BundleServer(LISTEN) as server:
        yield server


async def until_served(engine: OpaEngine, policy_input: PolicyInput) -> None:
    """Waits until OPA has activated the engine's bundle revision."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        try:
            await engine.decide(policy_input)
            return
        except PolicyUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_opa_decides_every_scenario_like_the_embedded_engine(
    bundle_server: BundleServer,
) -> None:
    assert OPA_URL is not None and KEYS_DIR is not None
    key = BundleSigningKey.load_or_create(Path(KEYS_DIR))
    policy_set: PolicySet = load_policy_set(POLICY_ROOT)
    unsigned = policy_set.with_enforced(frozenset())
    scenarios = load_scenarios()
    first_input = scenarios.requests[0].policy_input(scenarios.registry)
    embedded = RegopyEngine(policy_set)
    opa = OpaEngine(OPA_URL, policy_set, timeout=5.0)
    ahead = OpaEngine(OPA_URL, unsigned, timeout=5.0)
    try:
        bundle_server.tarball = build_bundle(policy_set, key).tarball()
        await until_served(opa, first_input)
        for request in scenarios.requests:
            policy_input = request.policy_input(scenarios.registry)
            ours = embedded.decide_sync(policy_input)
            theirs = await opa.decide(policy_input)
            assert comparable(theirs) == comparable(ours), request.id
        with pytest.raises(PolicyUnavailable, match="revision"):
            await ahead.decide(first_input)

        # OPA downloads a bundle of another policy set: the old revision is refused.
        bundle_server.tarball = build_bundle(unsigned, key).tarball()
        await until_served(ahead, first_input)
        with pytest.raises(PolicyUnavailable, match="revision"):
            await opa.decide(first_input)
    finally:
        await opa.aclose()
        await ahead.aclose()
        await embedded.aclose()
