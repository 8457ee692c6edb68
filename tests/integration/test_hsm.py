"""The broker's signing keys in a PKCS#11 token (SoftHSM2), over loopback HTTP.

A fresh SoftHSM2 token in a temporary folder; the broker key is created in it
with ``broker keys init-hsm`` (a separate process), the broker runs with
BROKER_KEY_BACKEND=pkcs11, and the access token, the release receipt and the
checkpoint verify with the public keys it publishes, using stock libraries
(PyJWT, cryptography through the stand-alone verifier). Rotation generates the
new key inside the token; what the old key signed keeps verifying. The private
key is sensitive and not extractable: reading its value fails."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner
from pkcs11.exceptions import AttributeSensitive

from audit import verifier
from broker.cli import main
from broker.core.errors import KeyError_, KeyUnavailable
from broker.crypto.hsm import Pkcs11Token
from broker.crypto.keys import BrokerKeyring, open_keyring
from broker.settings import PROJECT_ROOT, Settings
from tests.conftest import (
    Harness,
    RunningBroker,
    broker_settings,
    clean,
    free_port,
    register_partners,
    serve_broker,
)
from tests.integration.test_exchange import SUSPECT_HISTORY
from tests.integration.test_receipts import fetch_jwks, stock_verify

MODULE_CANDIDATES = (
    os.environ.get("SOFTHSM2_MODULE", ""),
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
MODULE = next((m for m in MODULE_CANDIDATES if m and Path(m).is_file()), None)

pytestmark = pytest.mark.skipif(
    MODULE is None or shutil.which("softhsm2-util") is None,
    reason="SoftHSM2 is not installed (libsofthsm2.so / softhsm2-util; apt-get install softhsm2)",
)

TOKEN_LABEL = "broker-test"
USER_PIN = "20261125"
SO_PIN = "so-20261125"


@dataclass(frozen=True)
class SoftHsm:
    conf: Path
    module: str

    def env(self, settings: Settings) -> dict[str, str]:
        """The environment a broker command needs to reach this token with ``settings``."""
        env = dict(os.environ)
        env.update(
            SOFTHSM2_CONF=str(self.conf),
            BROKER_KEY_BACKEND="pkcs11",
            BROKER_PKCS11_MODULE=self.module,
            BROKER_PKCS11_TOKEN_LABEL=TOKEN_LABEL,
            BROKER_PKCS11_PIN=USER_PIN,
            BROKER_PKCS11_KEY_LABEL=settings.pkcs11_key_label,
            BROKER_KEYS_DIR=str(settings.keys_dir),
            BROKER_DATABASE_URL=settings.database_url,
        )
        return env

    def settings(self, base: Settings, label: str, **overrides: Any) -> Settings:
        values = base.model_dump()
        values.update(
            key_backend="pkcs11",
            pkcs11_module=self.module,
            pkcs11_token_label=TOKEN_LABEL,
            pkcs11_pin=USER_PIN,
            pkcs11_key_label=label,
        )
        values.update(overrides)
        return Settings(**values)


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """One fresh token for the module: SoftHSM reads its configuration once per
    process, so every test uses it, each under its own key label."""
    assert MODULE is not None
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\n",
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                TOKEN_LABEL,
                "--so-pin",
                SO_PIN,
                "--pin",
                USER_PIN,
            ],
            check=True,
            capture_output=True,
        )
        yield SoftHsm(conf, MODULE)


def broker_cli(hsm: SoftHsm, settings: Settings, *args: str) -> str:
    """Runs ``broker <args>`` as its own process, as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        env=hsm.env(settings),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def listed(hsm: SoftHsm, settings: Settings) -> list[dict[str, Any]]:
    """``broker keys list --json``, in this process (no broker is running then)."""
    env = {k: v for k, v in hsm.env(settings).items() if k.startswith("BROKER_")}
    result = CliRunner().invoke(main, ["keys", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)["keys"]
    return rows


@pytest.fixture
def label() -> str:
    return f"broker-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def base_settings(sqlite_url: str, simulators: dict[str, Any], tmp_path: Path) -> Settings:
    clean(sqlite_url)
    return broker_settings(sqlite_url, simulators, tmp_path)


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_key(jwks: dict[str, Any], kid: str) -> bytes:
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert "d" not in jwk
    return b64u_decode(jwk["x"])


def verify_note_with_jwk(note: str, jwks: dict[str, Any], kid: str) -> None:
    """The checkpoint's Ed25519 signature, checked with the JWKS key through PyJWT's
    key object (cryptography), independent of the broker's code."""
    body, _, signatures = note.partition("\n\n")
    blob = base64.b64decode(signatures.strip().rsplit(" ", 1)[1])
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid)).key
    key.verify(blob[4:], (body + "\n").encode())


async def checkpoint(base_url: str) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/v1/audit/checkpoint")
        assert response.status_code == 200, response.text
        return response.text, response.headers["x-verifier-key"]


async def exchange(harness: Harness) -> tuple[str, dict[str, Any]]:
    """An access token and an exchange answer for Veilig Thuis."""
    client = harness.client("veilig_thuis")
    try:
        token = await client.token()
        response = await client.exchange(SUSPECT_HISTORY)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return token, body
    finally:
        await client.aclose()


async def test_broker_signs_with_the_hsm_key(
    softhsm: SoftHsm, base_settings: Settings, simulators: dict[str, Any], label: str
) -> None:
    settings = softhsm.settings(base_settings, label)
    out = broker_cli(softhsm, settings, "keys", "init-hsm")
    (row,) = listed(softhsm, settings)
    kid = row["kid"]
    assert kid in out and row["role"] == "signs" and row["where"].startswith(f"pkcs11:{label}/")
    assert "already holds 1" in broker_cli(softhsm, settings, "keys", "init-hsm")  # idempotent

    partners = await register_partners(settings, simulators)
    async with serve_broker(settings) as broker:
        harness = Harness(broker, partners)
        access_token, body = await exchange(harness)
        jwks = await fetch_jwks(broker.base_url)
        note, verifier_key = await checkpoint(broker.base_url)
        services = broker.services

        # Only the public key left the token; the keyring has no private key object.
        assert [k["kid"] for k in jwks["keys"]] == [kid]
        with pytest.raises(KeyError_):
            services.keyring.signing_key()

        # Concurrent signing from the event loop, and from threads.
        messages = [f"message {i}".encode() for i in range(64)]
        signatures = await asyncio.gather(*(services.keyring.sign_async(m) for m in messages))
        with ThreadPoolExecutor(max_workers=4) as pool:
            threaded = list(pool.map(services.keyring.sign, messages))
        public = jwt.PyJWK(jwks["keys"][0]).key
        for message, signature in zip(messages + messages, signatures + threaded, strict=True):
            assert (signature.alg, signature.kid) == ("EdDSA", kid)
            public.verify(signature.value, message)

    # The access token: a stock JWT library with the published JWKS.
    header = jwt.get_unverified_header(access_token)
    assert header == {"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}
    claims = jwt.decode(
        access_token,
        jwt.PyJWKSet.from_dict(jwks)[kid].key,
        algorithms=["EdDSA"],
        audience=settings.public_url + "/v1",
        issuer=settings.public_url,
    )
    assert claims["sub"] == partners["veilig_thuis"]["oin"]

    # The release receipt: PyJWT and the stand-alone verifier.
    receipt = body["receipt"]
    assert jwt.get_unverified_header(receipt)["kid"] == kid
    assert verifier.verify_receipt(receipt, jwks) == stock_verify(receipt, jwks)

    # The checkpoint: the published verifier key is the JWKS key; both verify it.
    origin = settings.log_origin
    assert verifier.parse_verifier_key(verifier_key) == (origin, raw_key(jwks, kid))
    cp = verifier.verify_checkpoint(note, key_name=origin, public_key=raw_key(jwks, kid))
    assert cp.size >= max(body["audit_indices"]) + 1
    verify_note_with_jwk(note, jwks, kid)

    # `broker audit verify` signs and checks a checkpoint with the token's key.
    assert "checkpoint signature verifies" in broker_cli(softhsm, settings, "audit", "verify")

    # No key material was written to the keys folder.
    assert not (settings.keys_dir / "broker-signing.jwks.json").exists()


async def test_rotation_keeps_old_signatures_verifying(
    softhsm: SoftHsm, base_settings: Settings, simulators: dict[str, Any], label: str
) -> None:
    settings = softhsm.settings(base_settings, label)
    broker_cli(softhsm, settings, "keys", "init-hsm")
    partners = await register_partners(settings, simulators)

    async def run(broker: RunningBroker) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
        token, body = await exchange(Harness(broker, partners))
        await asyncio.sleep(1.05)  # a checkpoint at least as new as the exchange
        note, _ = await checkpoint(broker.base_url)
        return token, body, note, await fetch_jwks(broker.base_url)

    async with serve_broker(settings) as broker:
        old_kid = broker.services.keyring.active_kid
        old_token, old_body, old_note, old_jwks = await run(broker)

    out = broker_cli(softhsm, settings, "keys", "rotate")
    rows = listed(softhsm, settings)
    new_kid = rows[0]["kid"]
    assert new_kid in out and new_kid != old_kid
    assert [(r["kid"], r["role"]) for r in rows] == [(new_kid, "signs"), (old_kid, "verifies")]

    port = free_port()  # same database and token, new port
    restarted = softhsm.settings(base_settings, label, public_url=f"http://127.0.0.1:{port}")
    async with serve_broker(restarted) as broker:
        assert broker.services.keyring.active_kid == new_kid
        new_token, new_body, new_note, jwks = await run(broker)
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]

    # New signatures name and use the new key ...
    for signed in (new_token, new_body["receipt"]):
        assert jwt.get_unverified_header(signed)["kid"] == new_kid
    origin = settings.log_origin
    verifier.verify_checkpoint(new_note, key_name=origin, public_key=raw_key(jwks, new_kid))
    with pytest.raises(verifier.VerificationError):
        verifier.verify_receipt(new_body["receipt"], old_jwks)
    with pytest.raises(verifier.VerificationError):
        verifier.verify_checkpoint(new_note, key_name=origin, public_key=raw_key(jwks, old_kid))

    # ... and what the old key signed verifies with the keys published after the rotation.
    old_receipt = old_body["receipt"]
    assert verifier.verify_receipt(old_receipt, jwks) == stock_verify(old_receipt, jwks)
    jwt.decode(
        old_token,
        jwt.PyJWKSet.from_dict(jwks)[old_kid].key,
        algorithms=["EdDSA"],
        audience=settings.public_url + "/v1",
    )
    verifier.verify_checkpoint(old_note, key_name=origin, public_key=raw_key(jwks, old_kid))
    verify_note_with_jwk(old_note, jwks, old_kid)

    # Retiring the old key removes it from the token and from what is published.
    env = {k: v for k, v in softhsm.env(settings).items() if k.startswith("BROKER_")}
    result = CliRunner().invoke(main, ["keys", "retire", "--", new_kid], env=env)
    assert result.exit_code != 0 and "rotate first" in result.output
    result = CliRunner().invoke(main, ["keys", "retire", "--", old_kid], env=env)
    assert result.exit_code == 0, result.output
    assert [r["kid"] for r in listed(softhsm, settings)] == [new_kid]


def test_private_key_is_not_extractable(softhsm: SoftHsm, label: str, tmp_path: Path) -> None:
    token = Pkcs11Token(softhsm.module, TOKEN_LABEL, USER_PIN)
    try:
        key = token.generate(label)
        assert token.private_key_attributes(key.label) == {
            "sensitive": True,
            "extractable": False,
            "never_extractable": True,
        }
        with pytest.raises(AttributeSensitive):
            token.export_private(key.label)
        (listed_key,) = token.keys(label)
        assert listed_key.has_private and listed_key.kid == key.kid
        assert "d" not in listed_key.public_jwk
    finally:
        token.close()


def test_keyring_from_the_token_keeps_file_keys_verifying(
    softhsm: SoftHsm, base_settings: Settings, label: str
) -> None:
    """A broker moving from file keys to an HSM: the file keys' public halves keep
    verifying what they signed; the HSM key signs."""
    file_ring = BrokerKeyring.load_or_create(base_settings.keys_dir)
    old = jwt.encode({"n": 1}, file_ring.signing_key(), algorithm="EdDSA")
    settings = softhsm.settings(base_settings, label)
    with pytest.raises(KeyError_, match="init-hsm"):
        open_keyring(settings)  # no broker key in the token yet
    broker_cli(softhsm, settings, "keys", "init-hsm")
    ring = open_keyring(settings)
    try:
        kids = [k["kid"] for k in ring.public_jwks()["keys"]]
        assert kids[1:] == [file_ring.active_kid] and kids[0] == ring.active_kid
        assert all("d" not in k for k in ring.public_jwks()["keys"])
        assert jwt.decode(old, ring.verification_key(file_ring.active_kid), algorithms=["EdDSA"])
        signed = ring.sign(b"checkpoint body")
        assert signed.kid == ring.active_kid != file_ring.active_kid
        ring.verification_key(signed.kid).verify(signed.value, b"checkpoint body")
    finally:
        ring.close()


def test_wrong_pin_and_unknown_token_are_key_unavailable(softhsm: SoftHsm) -> None:
    with pytest.raises(KeyUnavailable, match="PinIncorrect"):
        Pkcs11Token(softhsm.module, TOKEN_LABEL, "000000")
    with pytest.raises(KeyUnavailable, match="not found"):
        Pkcs11Token(softhsm.module, "no-such-token", USER_PIN)
