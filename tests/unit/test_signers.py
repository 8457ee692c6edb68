"""The Signer interface with file keys: signatures say their alg and kid, JWS made
through it verify with PyJWT, verify-only keys are published, retiring works."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from broker.cli import main
from broker.core.errors import KeyError_
from broker.crypto.keys import BrokerKeyring, file_public_keys, generate_jwk, open_keyring
from broker.crypto.signers import FileSigner, Signer, compact_jws, compact_jws_async
from broker.settings import Settings


def test_file_signer_is_a_signer_and_says_alg_and_kid() -> None:
    jwk = generate_jwk("Ed25519", use="sig")
    signer = FileSigner(jwk)
    assert isinstance(signer, Signer)
    assert (signer.alg, signer.kid) == ("EdDSA", jwk["kid"])
    assert "d" not in signer.public_jwk()
    ring = BrokerKeyring([jwk])
    signed = ring.sign(b"bundle bytes")
    assert (signed.alg, signed.kid) == ("EdDSA", jwk["kid"])
    ring.verification_key(jwk["kid"]).verify(signed.value, b"bundle bytes")
    with pytest.raises(KeyError_):
        FileSigner(generate_jwk("P-256", use="sig"))


async def test_compact_jws_verifies_with_pyjwt() -> None:
    ring = BrokerKeyring([generate_jwk("Ed25519", use="sig")])
    payload = json.dumps({"sub": "x", "n": 1}).encode()
    for token in (
        compact_jws(ring.signer, payload, typ="at+jwt"),
        await compact_jws_async(ring.signer, payload, typ="at+jwt"),
    ):
        assert jwt.get_unverified_header(token) == {
            "alg": "EdDSA",
            "kid": ring.active_kid,
            "typ": "at+jwt",
        }
        key = jwt.PyJWKSet.from_dict(ring.public_jwks())[ring.active_kid].key
        assert jwt.decode(token, key, algorithms=["EdDSA"]) == {"sub": "x", "n": 1}


def test_verify_only_keys_are_published_after_the_signers() -> None:
    old = generate_jwk("Ed25519", use="sig")
    ring = BrokerKeyring([generate_jwk("Ed25519", use="sig")], verify_only=[old])
    assert [k["kid"] for k in ring.public_jwks()["keys"]] == [ring.active_kid, old["kid"]]
    assert all("d" not in k for k in ring.public_jwks()["keys"])
    token = jwt.encode({"n": 1}, jwt.PyJWK(old).key, algorithm="EdDSA")
    assert jwt.decode(token, ring.verification_key(old["kid"]), algorithms=["EdDSA"]) == {"n": 1}


def test_retire_and_the_file_backend(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = open_keyring(Settings(keys_dir=keys)).active_kid
    second = BrokerKeyring.rotate(keys)
    with pytest.raises(KeyError_, match="rotate first"):
        BrokerKeyring.retire(keys, second)
    with pytest.raises(KeyError_, match="unknown"):
        BrokerKeyring.retire(keys, "nope")
    assert [k["kid"] for k in file_public_keys(keys)] == [second, first]
    BrokerKeyring.retire(keys, first)
    assert [k["kid"] for k in file_public_keys(keys)] == [second]
    assert file_public_keys(tmp_path / "none") == []


def test_keys_cli_with_file_keys(tmp_path: Path) -> None:
    env = {"BROKER_KEYS_DIR": str(tmp_path / "keys"), "BROKER_KEY_BACKEND": "file"}
    runner = CliRunner()

    def rows() -> list[dict[str, str]]:
        result = runner.invoke(main, ["keys", "list", "--json"], env=env)
        assert result.exit_code == 0, result.output
        out: list[dict[str, str]] = json.loads(result.output)["keys"]
        return out

    (first,) = rows()
    rotated = runner.invoke(main, ["keys", "rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    new, old = rows()
    assert new["kid"] in rotated.output and old["kid"] == first["kid"]
    assert (new["role"], old["role"]) == ("signs", "verifies")
    assert runner.invoke(main, ["keys", "retire", "--", old["kid"]], env=env).exit_code == 0
    assert [r["kid"] for r in rows()] == [new["kid"]]
    refused = runner.invoke(main, ["keys", "init-hsm"], env=env)
    assert refused.exit_code != 0 and "BROKER_KEY_BACKEND=pkcs11" in refused.output
