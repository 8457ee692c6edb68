"""Key recipes: JWK sets of agencies, the broker's ordered signing keyring, and
the pseudonymisation key.

The broker's keyring is ordered: the first key signs, every key verifies, so
rotation is routine (add a new key in front, retire the old one later).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from joserfc.jwk import ECKey, OKPKey
from jwt.algorithms import OKPAlgorithm, get_default_algorithms

from broker.core.errors import KeyError_
from broker.crypto import _primitives as p
from broker.crypto.signers import FileSigner, Signature, Signer, public_signing_jwk
from broker.settings import KeyBackend

if TYPE_CHECKING:
    from broker.crypto.hsm import Pkcs11Token
    from broker.settings import Settings

SIGNING_ALGS = {"EdDSA": ("OKP", "Ed25519"), "ES256": ("EC", "P-256")}
# RFC 9864 gives EdDSA over Ed25519 its fully specified name "Ed25519"; RFC 8037's
# "EdDSA" stays accepted. Keys are stored under the broker's name ("EdDSA").
SIGNING_ALG_ALIASES = {"Ed25519": "EdDSA"}
# What partners may put in a JWS header "alg" (client assertions, agreement signatures).
ACCEPTED_JWS_ALGS = ("EdDSA", "Ed25519", "ES256")


def signing_alg(alg: str) -> str:
    """The broker's name of a signature algorithm ("Ed25519" -> "EdDSA")."""
    return SIGNING_ALG_ALIASES.get(alg, alg)


def _register_fully_specified_algs() -> None:
    """Lets PyJWT verify ``"alg": "Ed25519"`` (RFC 9864) where it does not yet know
    the name; keys are checked to be Ed25519 before they are used."""
    if "Ed25519" not in get_default_algorithms():
        with contextlib.suppress(ValueError):  # registered already
            jwt.register_algorithm("Ed25519", OKPAlgorithm())


_register_fully_specified_algs()
ENCRYPTION_CURVES = {"X25519": "OKP", "P-256": "EC"}
ENCRYPTION_ALG = "ECDH-ES+A256KW"
CONTENT_ENC = "A256GCM"
KEYRING_FILE = "broker-signing.jwks.json"


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
        alg = signing_alg(str(jwk.get("alg") or ("EdDSA" if crv == "Ed25519" else "ES256")))
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
    """The broker's own signing keys (Ed25519), newest first: the first signs,
    every key verifies. Each key is a ``Signer``: a file key (the default) or a
    key pair inside a PKCS#11 token (``broker.crypto.hsm``); ``open_keyring``
    picks the backend from the settings. ``verify_only`` public keys (the file
    keys of a broker that moved to an HSM) keep verifying what they signed."""

    def __init__(
        self,
        private_jwks: list[dict[str, Any]] | None = None,
        *,
        signers: Sequence[Signer] = (),
        verify_only: Sequence[dict[str, Any]] = (),
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._private_jwks = list(private_jwks or [])
        self._signers: list[Signer] = [FileSigner(k) for k in self._private_jwks]
        self._signers += list(signers)
        if not self._signers:
            raise KeyError_("the broker keyring is empty")
        self._public = [s.public_jwk() for s in self._signers]
        known = {k["kid"] for k in self._public}
        self._public += [
            k for k in (public_signing_jwk(v) for v in verify_only) if k["kid"] not in known
        ]
        self._verifiers = {k["kid"]: jwt.PyJWK(k) for k in self._public}
        self._on_close = on_close

    @property
    def signer(self) -> Signer:
        """The active key: what the broker signs with now."""
        return self._signers[0]

    @property
    def active_kid(self) -> str:
        return self._signers[0].kid

    @property
    def active_alg(self) -> str:
        return self._signers[0].alg

    def signing_key(self) -> Any:
        """The active private key object (file keys only; an HSM key never leaves it)."""
        if not self._private_jwks:
            raise KeyError_("the active broker key is held in a PKCS#11 token")
        return jwt.PyJWK(self._private_jwks[0]).key

    def verification_key(self, kid: str) -> Any:
        try:
            return self._verifiers[kid].key
        except KeyError as exc:
            raise KeyError_("unknown broker key id") from exc

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [dict(k) for k in self._public]}

    def sign(self, message: bytes) -> Signature:
        """Signs ``message`` with the active key; says which algorithm and key id."""
        signer = self._signers[0]
        return Signature(signer.sign(message), signer.alg, signer.kid)

    async def sign_async(self, message: bytes) -> Signature:
        signer = self._signers[0]
        return Signature(await signer.sign_async(message), signer.alg, signer.kid)

    def sign_raw(self, message: bytes) -> bytes:
        """A raw Ed25519 signature by the active key (signed notes, checkpoints)."""
        return self._signers[0].sign(message)

    def public_key_raw(self) -> bytes:
        """The active key's raw 32-byte Ed25519 public key."""
        try:
            return p.ed25519_public_raw(self._public[0])
        except ValueError as exc:
            raise KeyError_("the active broker key is not an Ed25519 key") from exc

    def public_keys_raw(self) -> list[bytes]:
        """Every Ed25519 key's raw public key, active first: rotated-out keys still
        verify the checkpoints they signed."""
        out: list[bytes] = []
        for jwk in self._public:
            try:
                out.append(p.ed25519_public_raw(jwk))
            except ValueError:
                continue
        return out

    def close(self) -> None:
        """Releases the backend (PKCS#11 sessions); file keys hold nothing."""
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> BrokerKeyring:
        path = keys_dir / KEYRING_FILE
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
        path = keys_dir / KEYRING_FILE
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"keys": []}
        new = generate_jwk("Ed25519", use="sig")
        data["keys"].insert(0, new)
        keys_dir.mkdir(parents=True, exist_ok=True)
        write_secret_json(path, data)
        return str(new["kid"])

    @staticmethod
    def retire(keys_dir: Path, kid: str) -> None:
        """Removes a key that no longer signs; what it signed stops verifying."""
        path = keys_dir / KEYRING_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyError_("the broker keyring cannot be read") from exc
        kids = [k.get("kid") for k in data["keys"]]
        if kid not in kids:
            raise KeyError_("unknown broker key id")
        if kids[0] == kid:
            raise KeyError_("the active key cannot be retired; rotate first")
        data["keys"] = [k for k in data["keys"] if k.get("kid") != kid]
        write_secret_json(path, data)


def file_public_keys(keys_dir: Path) -> list[dict[str, Any]]:
    """The public halves of the file keyring, if there is one (verify-only use)."""
    path = keys_dir / KEYRING_FILE
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [public_signing_jwk(k) for k in data["keys"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyError_("the broker keyring cannot be read") from exc


def open_pkcs11_token(settings: Settings) -> Pkcs11Token:
    """The configured token, logged in (imported here: the file backend needs no PKCS#11)."""
    from broker.crypto.hsm import Pkcs11Token  # noqa: PLC0415

    if (
        settings.pkcs11_module is None
        or settings.pkcs11_token_label is None
        or settings.pkcs11_pin is None
    ):
        raise KeyError_(
            "BROKER_PKCS11_MODULE, BROKER_PKCS11_TOKEN_LABEL and BROKER_PKCS11_PIN are required"
        )
    return Pkcs11Token(
        settings.pkcs11_module,
        settings.pkcs11_token_label,
        settings.pkcs11_pin.get_secret_value(),
    )


def open_keyring(settings: Settings) -> BrokerKeyring:
    """The broker's keyring from the configured backend (BROKER_KEY_BACKEND).

    ``file``: the keys folder, created on first use. ``pkcs11``: every key pair
    under BROKER_PKCS11_KEY_LABEL in the token, newest first; the token must hold
    one already (``broker keys init-hsm``). File keys left in the keys folder
    keep verifying (public halves only)."""
    if settings.key_backend is KeyBackend.FILE:
        return BrokerKeyring.load_or_create(settings.keys_dir)
    from broker.crypto.hsm import Pkcs11Signer  # noqa: PLC0415

    token = open_pkcs11_token(settings)
    try:
        keys = token.keys(settings.pkcs11_key_label)
        signers = [Pkcs11Signer(token, keys[0])] if keys else []
        verify_only = [k.public_jwk for k in keys[1:]] + file_public_keys(settings.keys_dir)
    except BaseException:
        token.close()
        raise
    if not signers:
        token.close()
        raise KeyError_(
            f"the PKCS#11 token holds no key labelled {settings.pkcs11_key_label}/...; "
            "run: broker keys init-hsm"
        )
    return BrokerKeyring(signers=signers, verify_only=verify_only, on_close=token.close)


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


class BundleSigningKey:
    """The broker's key for signing OPA policy bundles: ES256 (P-256), because
    OPA verifies bundle signatures with RSA, ECDSA or HMAC keys (EdDSA only in
    recent releases). Kept beside the broker keys, published in its JWKS."""

    FILE = "bundle-signing.jwks.json"
    alg = "ES256"

    def __init__(self, private_jwk: dict[str, Any]) -> None:
        if private_jwk.get("kty") != "EC" or private_jwk.get("crv") != "P-256":
            raise KeyError_("the bundle-signing key is not a P-256 key")
        self._jwk = private_jwk

    @property
    def kid(self) -> str:
        return str(self._jwk["kid"])

    def public_jwk(self) -> dict[str, Any]:
        return p.public_jwk(self._jwk)

    def public_pem(self) -> str:
        """The public key as OPA's bundle verification configuration takes it."""
        return p.public_pem(self._jwk)

    def sign_jws(self, header: dict[str, Any], payload: dict[str, Any]) -> str:
        """A compact JWS (ES256) over compact JSON with sorted keys; deterministic
        ECDSA, so the same header and payload always give the same token."""
        signing_input = (
            p.b64u(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
            + "."
            + p.b64u(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
        )
        signature = p.es256_sign_deterministic(self._jwk, signing_input.encode("ascii"))
        return signing_input + "." + p.b64u(signature)

    @classmethod
    def load(cls, keys_dir: Path) -> BundleSigningKey | None:
        """The key in ``keys_dir``, or None when no bundle was ever signed there."""
        return cls.load_or_create(keys_dir) if (keys_dir / cls.FILE).exists() else None

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> BundleSigningKey:
        path = keys_dir / cls.FILE
        if not path.exists():
            keys_dir.mkdir(parents=True, exist_ok=True)
            write_secret_json(path, {"keys": [generate_jwk("P-256", use="sig")]})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(dict(data["keys"][0]))
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise KeyError_("the bundle-signing key cannot be read") from exc
