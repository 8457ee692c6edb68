"""Key recipes with real crypto: JWKS validation, JWE sealing, pseudonyms and the
broker's rotating signing keyring (files on disk, verified with pyjwt/joserfc)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from broker.core.errors import KeyError_
from broker.crypto import _primitives as p
from broker.crypto.jose import Sealer
from broker.crypto.keys import (
    BrokerKeyring,
    Pseudonymizer,
    generate_jwk,
    load_or_create_pseudonym_key,
    parse_jwks,
    public_only,
    validate_public_jwk,
    write_secret_json,
)

KEY_SETS = [("Ed25519", "X25519"), ("P-256", "P-256")]


def key_set(sig_kind: str, enc_kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return generate_jwk(sig_kind, use="sig"), generate_jwk(enc_kind, use="enc")


def public_jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": [public_only(k) for k in keys]}


def joserfc_key(private: dict[str, Any]) -> OKPKey | ECKey:
    return (OKPKey if private["kty"] == "OKP" else ECKey).import_key(private)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ----------------------------------------------------------------- generate_jwk


@pytest.mark.parametrize(
    ("kind", "use", "kty", "alg"),
    [
        ("Ed25519", "sig", "OKP", "EdDSA"),
        ("P-256", "sig", "EC", "ES256"),
        ("X25519", "enc", "OKP", "ECDH-ES+A256KW"),
        ("P-256", "enc", "EC", "ECDH-ES+A256KW"),
    ],
)
def test_generate_jwk_shape_and_rfc7638_kid(kind: str, use: str, kty: str, alg: str) -> None:
    jwk = generate_jwk(kind, use=use)
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == (kty, kind, use, alg)
    assert "d" in jwk
    # The kid is the RFC 7638 thumbprint, as computed by an independent library.
    assert jwk["kid"] == joserfc_key(jwk).thumbprint()
    pub = public_only(jwk)
    assert "d" not in pub
    assert pub["kid"] == jwk["kid"]


def test_generate_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unsupported key kind"):
        generate_jwk("RSA", use="sig")


def test_private_key_pem_round_trip() -> None:
    for kind in ("Ed25519", "P-256", "X25519"):
        key = p.generate(kind)
        again = p.load_private_pem(p.private_pem(key))
        assert p.private_jwk(again) == p.private_jwk(key)


# ----------------------------------------------------------------- parse_jwks


@pytest.mark.parametrize(("sig_kind", "enc_kind"), KEY_SETS)
def test_parse_jwks_accepts_supported_sets(sig_kind: str, enc_kind: str) -> None:
    sig, enc = key_set(sig_kind, enc_kind)
    keys = parse_jwks(public_jwks(sig, enc))
    assert [(k.kid, k.use) for k in keys] == [(sig["kid"], "sig"), (enc["kid"], "enc")]
    assert keys[0].alg == sig["alg"]
    assert keys[1].alg == "ECDH-ES+A256KW"
    assert all("d" not in k.jwk for k in keys)


def test_parse_jwks_fills_in_missing_kid_and_alg() -> None:
    sig, enc = key_set("Ed25519", "X25519")
    bare = [
        {k: v for k, v in public_only(j).items() if k not in ("kid", "alg")} for j in (sig, enc)
    ]
    keys = parse_jwks({"keys": bare})
    assert [k.kid for k in keys] == [sig["kid"], enc["kid"]]
    assert [k.alg for k in keys] == ["EdDSA", "ECDH-ES+A256KW"]
    assert keys[0].jwk["kid"] == sig["kid"]


def test_a_signing_key_named_ed25519_is_stored_as_eddsa() -> None:
    """RFC 9864's fully specified "Ed25519" and RFC 8037's "EdDSA" are one algorithm;
    the broker keeps its own name, and "Ed25519" on a P-256 key is refused."""
    sig, enc = key_set("Ed25519", "X25519")
    keys = parse_jwks({"keys": [dict(public_only(sig), alg="Ed25519"), public_only(enc)]})
    assert (keys[0].alg, keys[0].jwk["alg"], keys[0].kid) == ("EdDSA", "EdDSA", sig["kid"])
    ec, _ = key_set("P-256", "X25519")
    with pytest.raises(ValueError, match="signing keys must be"):
        validate_public_jwk(dict(public_only(ec), alg="Ed25519"))


def test_parse_jwks_refuses_private_keys() -> None:
    sig, enc = key_set("Ed25519", "X25519")
    for doc in ({"keys": [sig, public_only(enc)]}, {"keys": [public_only(sig), enc]}):
        with pytest.raises(ValueError, match="private key"):
            parse_jwks(doc)


RSA_PUBLIC = {
    "kty": "RSA",
    "n": p.b64u(b"\xc1" + bytes(255)),
    "e": "AQAB",
    "kid": "rsa-1",
}


@pytest.mark.parametrize(
    "bad",
    [
        dict(RSA_PUBLIC, use="sig", alg="RS256"),
        dict(RSA_PUBLIC, use="sig"),
        dict(RSA_PUBLIC, use="enc", alg="RSA-OAEP-256"),
        dict(RSA_PUBLIC, use="enc"),
    ],
)
def test_parse_jwks_refuses_rsa(bad: dict[str, Any]) -> None:
    sig, enc = key_set("Ed25519", "X25519")
    keys = [public_only(sig), public_only(enc), bad]
    with pytest.raises(ValueError, match="keys must be"):
        parse_jwks({"keys": keys})


def test_parse_jwks_refuses_wrong_curves_for_a_use() -> None:
    sig, enc = key_set("Ed25519", "X25519")
    as_enc = dict(public_only(sig), use="enc", alg="ECDH-ES+A256KW")
    as_sig = dict(public_only(enc), use="sig", alg="EdDSA")
    with pytest.raises(ValueError, match="encryption keys must be"):
        parse_jwks({"keys": [public_only(sig), as_enc]})
    with pytest.raises(ValueError, match="signing keys must be"):
        parse_jwks({"keys": [as_sig, public_only(enc)]})
    with pytest.raises(ValueError, match="encryption keys must be"):
        parse_jwks({"keys": [public_only(sig), dict(public_only(enc), alg="ECDH-ES")]})


def test_parse_jwks_needs_both_uses() -> None:
    sig, enc = key_set("Ed25519", "X25519")
    with pytest.raises(ValueError, match="one signing and one encryption"):
        parse_jwks(public_jwks(sig))
    with pytest.raises(ValueError, match="one signing and one encryption"):
        parse_jwks(public_jwks(enc))
    with pytest.raises(ValueError, match="one signing and one encryption"):
        parse_jwks({"keys": []})
    no_use = {k: v for k, v in public_only(enc).items() if k != "use"}
    with pytest.raises(ValueError, match='"use"'):
        parse_jwks({"keys": [public_only(sig), no_use]})


def test_parse_jwks_refuses_duplicate_kids() -> None:
    sig, enc = key_set("Ed25519", "X25519")
    enc2 = generate_jwk("X25519", use="enc")
    with pytest.raises(ValueError, match="unique"):
        parse_jwks({"keys": [public_only(sig), public_only(enc), public_only(enc)]})
    with pytest.raises(ValueError, match="unique"):
        parse_jwks(
            {"keys": [public_only(sig), public_only(enc), dict(public_only(enc2), kid=enc["kid"])]}
        )


@pytest.mark.parametrize("doc", [None, [], "keys", {"keys": None}, {"keys": {}}, {"keys": ["x"]}])
def test_parse_jwks_refuses_malformed_documents(doc: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - several messages, all ValueError
        parse_jwks(doc)


@pytest.mark.parametrize(
    "bad",
    [
        {"kty": "OKP", "crv": "X25519", "x": "AAAA", "use": "enc"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "use": "enc"},
        {"kty": "OKP", "crv": "X25519", "use": "enc"},
    ],
)
def test_malformed_encryption_keys_are_value_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="encryption key is malformed"):
        validate_public_jwk(bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "use": "sig"},
        {"kty": "OKP", "crv": "Ed25519", "use": "sig"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "use": "sig"},
        {"kty": "EC", "crv": "P-256", "use": "sig"},
    ],
)
def test_malformed_signing_keys_are_value_errors(bad: dict[str, Any]) -> None:
    # Regression: jwt.PyJWK raises jwt.InvalidKeyError (not a PyJWKError) for a bad
    # Ed25519/P-256 public key; it must surface as ValueError from parse_jwks.
    with pytest.raises(ValueError, match="signing key is malformed"):
        validate_public_jwk(bad)


# ----------------------------------------------------------------- Sealer


@pytest.mark.parametrize(("sig_kind", "enc_kind"), KEY_SETS)
def test_sealer_round_trip_with_joserfc(sig_kind: str, enc_kind: str) -> None:
    sig, enc = key_set(sig_kind, enc_kind)
    enc_key = next(k for k in parse_jwks(public_jwks(sig, enc)) if k.use == "enc")
    payload = {"bsn": "999990020", "items": [1, 2.5, None, True], "naam": "Jänsen"}
    token = Sealer().seal("00000001800006185000", enc_key, payload)
    assert token.count(".") == 4
    result = jwe.decrypt_compact(token, joserfc_key(enc))
    assert json.loads(result.plaintext) == payload
    header = result.protected
    assert header["kid"] == enc["kid"] == enc_key.kid
    assert (header["alg"], header["enc"], header["cty"]) == (
        "ECDH-ES+A256KW",
        "A256GCM",
        "application/json",
    )
    # Only the ephemeral public key travels; nothing private is in the header.
    assert set(header) == {"alg", "enc", "kid", "cty", "epk"}
    assert "d" not in header["epk"]
    assert header["epk"]["crv"] == enc_kind


def test_sealer_does_not_decrypt_for_another_key() -> None:
    sig, enc = key_set("Ed25519", "X25519")
    other = generate_jwk("X25519", use="enc")
    enc_key = next(k for k in parse_jwks(public_jwks(sig, enc)) if k.use == "enc")
    token = Sealer().seal("a", enc_key, {"x": 1})
    with pytest.raises(JoseError):
        jwe.decrypt_compact(token, joserfc_key(other))


def test_sealer_cache_is_per_owner_and_forget_drops_it() -> None:
    sealer = Sealer()
    sig, enc = key_set("Ed25519", "X25519")
    enc_key = next(k for k in parse_jwks(public_jwks(sig, enc)) if k.use == "enc")
    sealer.seal("a", enc_key, {})
    sealer.seal("b", enc_key, {})
    sealer.forget("a")
    token = sealer.seal("a", enc_key, {"again": True})
    assert json.loads(jwe.decrypt_compact(token, joserfc_key(enc)).plaintext) == {"again": True}


# ----------------------------------------------------------------- Pseudonymizer


def test_pseudonyms_are_deterministic_keyed_and_separated() -> None:
    key_a, key_b = b"a" * 32, b"b" * 32
    one, again, other = Pseudonymizer(key_a), Pseudonymizer(key_a), Pseudonymizer(key_b)
    bsn = "999990020"
    assert one.person(bsn) == again.person(bsn)
    assert one.person(bsn) != other.person(bsn)
    assert one.person(bsn) != one.person("999990032")
    assert one.person(bsn).startswith("psn:")
    assert len(one.person(bsn)) == 44
    assert bsn not in one.person(bsn)
    # The same identifier as person and as household gives unrelated pseudonyms.
    assert one.household(bsn).startswith("hh:")
    assert one.household(bsn)[3:] != one.person(bsn)[4:]
    assert one.household("hh-1") == again.household("hh-1") != other.household("hh-1")


def test_pseudonym_key_must_be_long_enough() -> None:
    with pytest.raises(KeyError_):
        Pseudonymizer(b"short")
    Pseudonymizer(b"x" * 16)


def test_pseudonym_key_file_is_created_once_and_private(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    key = load_or_create_pseudonym_key(keys_dir)
    assert len(key) == 32
    assert load_or_create_pseudonym_key(keys_dir) == key
    assert mode(keys_dir / "pseudonym.key") == 0o600


# ----------------------------------------------------------------- BrokerKeyring


def test_keyring_load_or_create_persists(tmp_path: Path) -> None:
    ring = BrokerKeyring.load_or_create(tmp_path / "keys")
    path = tmp_path / "keys" / "broker-signing.jwks.json"
    assert path.exists()
    assert mode(path) == 0o600
    again = BrokerKeyring.load_or_create(tmp_path / "keys")
    assert again.active_kid == ring.active_kid
    assert ring.active_alg == "EdDSA"
    published = ring.public_jwks()["keys"]
    assert [k["kid"] for k in published] == [ring.active_kid]
    assert all("d" not in k for k in published)


def test_keyring_rotation_keeps_old_signatures_valid(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    old = BrokerKeyring.load_or_create(keys_dir)
    old_kid = old.active_kid
    token = jwt.encode(
        {"sub": "psn:1", "aud": "partner"},
        old.signing_key(),
        algorithm=old.active_alg,
        headers={"kid": old_kid},
    )

    new_kid = BrokerKeyring.rotate(keys_dir)
    assert mode(keys_dir / "broker-signing.jwks.json") == 0o600
    ring = BrokerKeyring.load_or_create(keys_dir)
    assert new_kid != old_kid
    assert ring.active_kid == new_kid
    assert [k["kid"] for k in ring.public_jwks()["keys"]] == [new_kid, old_kid]

    kid = jwt.get_unverified_header(token)["kid"]
    claims = jwt.decode(token, ring.verification_key(kid), algorithms=["EdDSA"], audience="partner")
    assert claims["sub"] == "psn:1"

    fresh = jwt.encode({"n": 2}, ring.signing_key(), algorithm="EdDSA", headers={"kid": new_kid})
    assert jwt.decode(fresh, ring.verification_key(new_kid), algorithms=["EdDSA"]) == {"n": 2}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(fresh, ring.verification_key(old_kid), algorithms=["EdDSA"])
    with pytest.raises(KeyError_):
        ring.verification_key("no-such-kid")


def test_keyring_refuses_empty_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(KeyError_):
        BrokerKeyring([])
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / "broker-signing.jwks.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(KeyError_):
        BrokerKeyring.load_or_create(keys_dir)
    write_secret_json(keys_dir / "broker-signing.jwks.json", {"nokeys": []})
    with pytest.raises(KeyError_):
        BrokerKeyring.load_or_create(keys_dir)


def test_write_secret_json_is_owner_only_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "secret.json"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)
    write_secret_json(path, {"k": 1})
    assert json.loads(path.read_text(encoding="utf-8")) == {"k": 1}
    assert mode(path) == 0o600
    assert not (tmp_path / "secret.json.tmp").exists()
