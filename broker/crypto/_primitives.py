"""The one module that touches ``cryptography.hazmat``: key generation and
(de)serialisation. Everything else uses the recipes in keys/jose/signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def generate(kind: str) -> PrivateKey:
    """kind: 'Ed25519' | 'P-256' | 'X25519'."""
    if kind == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "P-256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "X25519":
        return x25519.X25519PrivateKey.generate()
    raise ValueError(f"unsupported key kind {kind}")


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_pem(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey
    ):
        raise ValueError("unsupported private key type")
    return key


def private_jwk(key: PrivateKey) -> dict[str, Any]:
    """Private JWK (RFC 7517/8037) of an Ed25519, X25519 or P-256 key."""
    raw = serialization.Encoding.Raw
    if isinstance(key, ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey):
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "X25519"
        d = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        x = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": crv, "x": b64u(x), "d": b64u(d)}
    numbers = key.private_numbers()
    pub = numbers.public_numbers
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64u(pub.x.to_bytes(32, "big")),
        "y": b64u(pub.y.to_bytes(32, "big")),
        "d": b64u(numbers.private_value.to_bytes(32, "big")),
    }


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k != "d"}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) used as key id."""
    if jwk["kty"] == "OKP":
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    else:
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    canonical = ",".join(f'"{k}":"{v}"' for k, v in sorted(members.items()))
    return b64u(hashlib.sha256(("{" + canonical + "}").encode()).digest())


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def constant_time_equal(a: bytes | str, b: bytes | str) -> bool:
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)


def ed25519_sign(private_jwk: dict[str, Any], message: bytes) -> bytes:
    """A raw Ed25519 signature (RFC 8032) with the key of an OKP/Ed25519 private JWK."""
    if private_jwk.get("kty") != "OKP" or private_jwk.get("crv") != "Ed25519":
        raise ValueError("not an Ed25519 key")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(b64u_decode(private_jwk["d"]))
    return key.sign(message)


def ed25519_public_raw(jwk: dict[str, Any]) -> bytes:
    """The 32-byte public key of an OKP/Ed25519 JWK."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("not an Ed25519 key")
    raw = b64u_decode(jwk["x"])
    ed25519.Ed25519PublicKey.from_public_bytes(raw)  # validates the length
    return raw


def ed25519_signer(private_jwk: dict[str, Any]) -> Callable[[bytes], bytes]:
    """A function that signs with the key of an OKP/Ed25519 private JWK (parsed once)."""
    if private_jwk.get("kty") != "OKP" or private_jwk.get("crv") != "Ed25519":
        raise ValueError("not an Ed25519 key")
    return ed25519.Ed25519PrivateKey.from_private_bytes(b64u_decode(private_jwk["d"])).sign


def _p256_private(private_jwk: dict[str, Any]) -> ec.EllipticCurvePrivateKey:
    if private_jwk.get("kty") != "EC" or private_jwk.get("crv") != "P-256":
        raise ValueError("not a P-256 key")
    d = int.from_bytes(b64u_decode(private_jwk["d"]), "big")
    return ec.derive_private_key(d, ec.SECP256R1())


def es256_sign_deterministic(private_jwk: dict[str, Any], message: bytes) -> bytes:
    """A JWS ES256 signature (raw r || s) made with deterministic ECDSA (RFC 6979),
    so the same message and key always give the same signature."""
    key = _p256_private(private_jwk)
    der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_pem(jwk: dict[str, Any]) -> str:
    """The SubjectPublicKeyInfo PEM ("PUBLIC KEY") of a P-256 JWK."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("not a P-256 key")
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64u_decode(jwk["x"]), "big"),
        int.from_bytes(b64u_decode(jwk["y"]), "big"),
        ec.SECP256R1(),
    )
    pem = numbers.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def aes256gcm_seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a fresh random 96-bit nonce; returns nonce || ciphertext || tag."""
    if len(key) != 32:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aes256gcm_open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Opens ``aes256gcm_seal`` output; raises ValueError when the key, the associated
    data or the bytes do not match."""
    if len(key) != 32 or len(sealed) < 28:
        raise ValueError("not an AES-256-GCM ciphertext for this key")
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)
    except InvalidTag as exc:
        raise ValueError("the ciphertext does not open with this key and associated data") from exc
