"""Key recipes: JWK sets of agencies, the broker's ordered signing keyring, and
the pseudonymisation key.

The broker's keyring is ordered: the first key signs, every key verifies, so
rotation is routine (add a new key in front, retire the old one later).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from joserfc.jwk import ECKey, OKPKey

from broker.core.errors import KeyError_
from broker.crypto import _primitives as p

SIGNING_ALGS = {"EdDSA": ("OKP", "Ed25519"), "ES256": ("EC", "P-256")}
ENCRYPTION_CURVES = {"X25519": "OKP", "P-256": "EC"}
ENCRYPTION_ALG = "ECDH-ES+A256KW"
CONTENT_ENC = "A256GCM"


def generate_jwk(kind: str, *, use: str) -> dict[str, Any]:
    """A new private JWK with kid (RFC 7638 thumbprint), use and alg."""
    jwk = p.private_jwk(p.generate(kind))
    jwk["kid"] = p.thumbprint(jwk)
    jwk["use"] = use
    if use == "sig":
        jwk["alg"] = "EdDSA" if kind == "Ed25519" else "ES256"
    else:
        jwk["alg"] = ENCRYPTION_ALG
    return jwk


def public_only(jwk: dict[str, Any]) -> dict[str, Any]:
    return p.public_jwk(jwk)


@dataclass(frozen=True, slots=True)
class PartnerKey:
    """A validated public key of an agency, parsed once."""

    kid: str
    use: str
    alg: str
    jwk: dict[str, Any]


def validate_public_jwk(jwk: dict[str, Any]) -> PartnerKey:
    """Checks a public JWK for the broker's rules; raises ValueError with a safe text."""
    if not isinstance(jwk, dict):
        raise ValueError("a key must be a JSON object")
    if "d" in jwk:
        raise ValueError("a private key was supplied; only public keys are registered")
    kty, crv, use = jwk.get("kty"), jwk.get("crv"), jwk.get("use")
    if use == "sig":
        alg = jwk.get("alg") or ("EdDSA" if crv == "Ed25519" else "ES256")
        if SIGNING_ALGS.get(alg) != (kty, crv):
            raise ValueError("signing keys must be Ed25519 (EdDSA) or P-256 (ES256)")
        try:
            jwt.PyJWK(dict(jwk, alg=alg))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise ValueError("signing key is malformed") from exc
    elif use == "enc":
        alg = jwk.get("alg") or ENCRYPTION_ALG
        if alg != ENCRYPTION_ALG or ENCRYPTION_CURVES.get(str(crv)) != kty:
            raise ValueError("encryption keys must be X25519 or P-256 for ECDH-ES+A256KW")
        try:
            (OKPKey if kty == "OKP" else ECKey).import_key(p.public_jwk(jwk))
        except Exception as exc:
            raise ValueError("encryption key is malformed") from exc
    else:
        raise ValueError('every key needs "use": "sig" or "enc"')
    kid = str(jwk.get("kid") or p.thumbprint(jwk))
    return PartnerKey(kid=kid, use=str(use), alg=str(alg), jwk=dict(jwk, kid=kid, alg=alg))


def parse_jwks(document: Any) -> list[PartnerKey]:
    """Validates a public JWKS document ({"keys": [...]}) with a sig and an enc key."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS is a JSON object with a "keys" array')
    keys = [validate_public_jwk(k) for k in document["keys"]]
    if not any(k.use == "sig" for k in keys) or not any(k.use == "enc" for k in keys):
        raise ValueError("a JWKS needs at least one signing and one encryption key")
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        raise ValueError("key ids must be unique")
    return keys


class BrokerKeyring:
    """The broker's own signing keys (Ed25519), newest first. File-based by default."""

    def __init__(self, private_jwks: list[dict[str, Any]]) -> None:
        if not private_jwks:
            raise KeyError_("the broker keyring is empty")
        self._keys = private_jwks
        self._signers = [jwt.PyJWK(k) for k in private_jwks]
        self._verifiers = {k["kid"]: jwt.PyJWK(p.public_jwk(k)) for k in private_jwks}

    @property
    def active_kid(self) -> str:
        return str(self._keys[0]["kid"])

    @property
    def active_alg(self) -> str:
        return str(self._keys[0]["alg"])

    def signing_key(self) -> Any:
        return self._signers[0].key

    def verification_key(self, kid: str) -> Any:
        try:
            return self._verifiers[kid].key
        except KeyError as exc:
            raise KeyError_("unknown broker key id") from exc

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [p.public_jwk(k) for k in self._keys]}

    def sign_raw(self, message: bytes) -> bytes:
        """A raw Ed25519 signature by the active key (signed notes, checkpoints)."""
        try:
            return p.ed25519_sign(self._keys[0], message)
        except ValueError as exc:
            raise KeyError_("the active broker key is not an Ed25519 key") from exc

    def public_key_raw(self) -> bytes:
        """The active key's raw 32-byte Ed25519 public key."""
        try:
            return p.ed25519_public_raw(self._keys[0])
        except ValueError as exc:
            raise KeyError_("the active broker key is not an Ed25519 key") from exc

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> BrokerKeyring:
        path = keys_dir / "broker-signing.jwks.json"
        if not path.exists():
            keys_dir.mkdir(parents=True, exist_ok=True)
            write_secret_json(path, {"keys": [generate_jwk("Ed25519", use="sig")]})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(list(data["keys"]))
        except (OSError, ValueError, KeyError, jwt.PyJWKError) as exc:
            raise KeyError_("the broker keyring cannot be read") from exc

    @staticmethod
    def rotate(keys_dir: Path) -> str:
        """Adds a new signing key in front; older keys keep verifying."""
        path = keys_dir / "broker-signing.jwks.json"
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"keys": []}
        new = generate_jwk("Ed25519", use="sig")
        data["keys"].insert(0, new)
        write_secret_json(path, data)
        return str(new["kid"])


def write_secret_json(path: Path, data: Any) -> None:
    """Writes a JSON file readable by the owner only, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    tmp.replace(path)


def load_or_create_pseudonym_key(keys_dir: Path) -> bytes:
    path = keys_dir / "pseudonym.key"
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(p.random_bytes(32).hex())
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


class Pseudonymizer:
    """Keyed HMAC pseudonyms for data subjects: never store or log the BSN."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise KeyError_("the pseudonym key is too short")
        self._key = key

    def person(self, bsn: str) -> str:
        return "psn:" + p.hmac_sha256(self._key, b"person:" + bsn.encode()).hex()[:40]

    def household(self, household_id: str) -> str:
        return "hh:" + p.hmac_sha256(self._key, b"household:" + household_id.encode()).hex()[:40]
