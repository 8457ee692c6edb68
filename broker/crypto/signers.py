"""Signers: one signing key of the broker, wherever its private half lives.

A ``Signer`` signs bytes and says which algorithm and key id it used; its public
JWK is what the broker publishes (``/oauth/jwks``). Two kinds exist:

* ``FileSigner``: an Ed25519 private JWK from the keys folder (the default);
* ``broker.crypto.hsm.Pkcs11Signer``: an Ed25519 key pair generated inside a
  PKCS#11 token; only the public key is ever read out.

Both produce raw RFC 8032 Ed25519 signatures (``alg`` EdDSA, RFC 8037), so
access tokens, release receipts, checkpoints and bundle signatures are the same
bytes whichever backend made them. ``compact_jws`` builds a JWS (RFC 7515) with
any signer.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from broker.core.canonical import canonical_json
from broker.core.errors import KeyError_
from broker.crypto import _primitives as p

SIGNATURE_ALG = "EdDSA"


@dataclass(frozen=True, slots=True)
class Signature:
    """A signature with the algorithm and key id that verify it."""

    value: bytes
    alg: str
    kid: str


@runtime_checkable
class Signer(Protocol):
    """One signing key: ``sign`` takes the message bytes, returns the raw signature."""

    @property
    def kid(self) -> str: ...

    @property
    def alg(self) -> str: ...

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK (``kty``, ``crv``, ``x``, ``kid``, ``alg``, ``use``)."""
        ...

    def sign(self, message: bytes) -> bytes: ...

    async def sign_async(self, message: bytes) -> bytes:
        """``sign`` without holding up the event loop for a slow device."""
        ...


class FileSigner:
    """An Ed25519 private JWK held in memory (keys folder, tests)."""

    def __init__(self, private_jwk: dict[str, Any]) -> None:
        if private_jwk.get("kty") != "OKP" or private_jwk.get("crv") != "Ed25519":
            raise KeyError_("broker signing keys are Ed25519 keys")
        try:
            self._sign = p.ed25519_signer(private_jwk)
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyError_("a broker signing key is malformed") from exc
        self._public = public_signing_jwk(p.public_jwk(private_jwk))

    @property
    def kid(self) -> str:
        return str(self._public["kid"])

    @property
    def alg(self) -> str:
        return SIGNATURE_ALG

    def public_jwk(self) -> dict[str, Any]:
        return dict(self._public)

    def sign(self, message: bytes) -> bytes:
        return self._sign(message)

    async def sign_async(self, message: bytes) -> bytes:
        return self._sign(message)  # ~50 µs in process: not worth a thread hop


def public_signing_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """The published form of a broker signing key: OKP/Ed25519 with kid, alg, use."""
    out = {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]}
    out["kid"] = str(jwk.get("kid") or p.thumbprint(out))
    out["use"] = "sig"
    out["alg"] = SIGNATURE_ALG
    return out


def ed25519_jwk_from_raw(public_key: bytes) -> dict[str, Any]:
    """The published JWK of a raw 32-byte Ed25519 public key (kid: RFC 7638 thumbprint)."""
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": p.b64u(public_key)}
    p.ed25519_public_raw(jwk)  # validates the length
    return public_signing_jwk(jwk)


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jws_signing_input(signer: Signer, payload: bytes, typ: str) -> str:
    header = {"alg": signer.alg, "kid": signer.kid, "typ": typ}
    return _b64u(canonical_json(header)) + "." + _b64u(payload)


def compact_jws(signer: Signer, payload: bytes, *, typ: str) -> str:
    """A compact JWS of ``payload`` with the protected header {alg, kid, typ}."""
    signing_input = jws_signing_input(signer, payload, typ)
    return signing_input + "." + _b64u(signer.sign(signing_input.encode("ascii")))


async def compact_jws_async(signer: Signer, payload: bytes, *, typ: str) -> str:
    signing_input = jws_signing_input(signer, payload, typ)
    signature = await signer.sign_async(signing_input.encode("ascii"))
    return signing_input + "." + _b64u(signature)
