"""The broker's signing keys in a PKCS#11 token (HSM; SoftHSM2 in development).

Key pairs are Ed25519 (``CKK_EC_EDWARDS``), generated inside the token with
``CKM_EC_EDWARDS_KEY_PAIR_GEN`` and used with ``CKM_EDDSA``; the private half is
created sensitive and non-extractable, so only the public key (``CKA_EC_POINT``)
is ever read out. Each broker key pair carries the label
``<key label>/<UTC generation time>``; the keyring orders them newest first, so
the newest key signs and every key verifies.

Sessions: one session holds the user login for the lifetime of the keyring
(PKCS#11 shares the login between an application's sessions); a second one does
the work. Calls into the module are serialised per process (python-pkcs11
initialises it without OS locking), and the async path signs on the token's own
thread, keeping the event loop free while a (network) HSM works. Throughput
scales with broker processes, each with its own sessions.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pkcs11
import structlog
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    MultipleObjectsReturned,
    NoSuchKey,
    NoSuchToken,
    PKCS11Error,
    UserAlreadyLoggedIn,
)
from pkcs11.types import SignMixin

from broker.core.errors import KeyError_, KeyUnavailable
from broker.crypto.signers import SIGNATURE_ALG, ed25519_jwk_from_raw

log = structlog.get_logger("hsm")

# DER of the Ed25519 curve OID 1.3.101.112 (RFC 8410), the CKA_EC_PARAMS of the key pair.
ED25519_PARAMS = bytes.fromhex("06032b6570")
LABEL_SEPARATOR = "/"


def _ed25519_point(value: bytes) -> bytes:
    """The raw public key from CKA_EC_POINT: a DER OCTET STRING (PKCS#11 3.0) or raw."""
    if len(value) == 34 and value[0] == 0x04 and value[1] == 32:
        return value[2:]
    if len(value) == 32:
        return value
    raise KeyError_("the token returned an Ed25519 public key in an unknown encoding")


@dataclass(frozen=True, slots=True)
class HsmKey:
    """One broker key pair in the token, as the public half shows it."""

    label: str
    public_jwk: dict[str, Any]
    has_private: bool

    @property
    def kid(self) -> str:
        return str(self.public_jwk["kid"])


# python-pkcs11 initialises a module with C_Initialize(NULL): the application
# promises never to call into it from two threads at once, and the module may
# then skip its own locking (SoftHSM2 does). Every call goes through this lock.
_CALLS = threading.Lock()


@dataclass(slots=True)
class _Session:
    session: pkcs11.Session
    keys: dict[str, SignMixin] = field(default_factory=dict)


class Pkcs11Token:
    """A logged-in token; thread-safe (calls are serialised, see ``_CALLS``)."""

    def __init__(self, module: Path | str, token_label: str, pin: str) -> None:
        with _CALLS:
            try:
                # python-pkcs11 loads (C_Initialize) a module once per process.
                self._token = pkcs11.lib(str(module)).get_token(token_label=token_label)
            except NoSuchToken as exc:
                raise KeyUnavailable(
                    "the PKCS#11 token was not found (BROKER_PKCS11_TOKEN_LABEL)"
                ) from exc
            except (PKCS11Error, OSError) as exc:
                raise KeyUnavailable(
                    "the PKCS#11 module cannot be loaded (BROKER_PKCS11_MODULE)"
                ) from exc
            self._login: pkcs11.Session | None = None
            try:
                self._login = self._token.open(user_pin=pin)
            except UserAlreadyLoggedIn:
                self._login = None  # this process is logged in already (another keyring)
            except PKCS11Error as exc:
                raise KeyUnavailable(f"the PKCS#11 login failed ({type(exc).__name__})") from exc
        self._work: _Session | None = None
        self._closed = False
        # One thread signs for the event loop, so a slow device never holds it up.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkcs11")

    # ------------------------------------------------------------ sessions
    @contextmanager
    def _session(self) -> Iterator[_Session]:
        """The working session, opened on first use and after a failure."""
        with _CALLS:
            if self._closed:
                raise KeyUnavailable("the PKCS#11 token is closed")
            if self._work is None:
                try:
                    self._work = _Session(self._token.open(rw=True))
                except PKCS11Error as exc:
                    raise KeyUnavailable("no PKCS#11 session could be opened") from exc
            work = self._work
            try:
                yield work
            except PKCS11Error:
                self._work = None  # a failed session is not reused
                with suppress(PKCS11Error):
                    work.session.close()
                raise

    def close(self) -> None:
        """Closes the working session, then the login session (it logs out)."""
        self._executor.shutdown(wait=True)
        with _CALLS:
            if self._closed:
                return
            self._closed = True
            if self._work is not None:
                with suppress(PKCS11Error):
                    self._work.session.close()
                self._work = None
            if self._login is not None:
                with suppress(PKCS11Error):
                    self._login.close()

    # ------------------------------------------------------------ keys
    def keys(self, key_label: str) -> list[HsmKey]:
        """The broker's key pairs under ``key_label``, newest first."""
        prefix = key_label + LABEL_SEPARATOR
        try:
            with self._session() as pooled:
                found: dict[str, HsmKey] = {}
                for obj in pooled.session.get_objects(
                    {
                        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                        Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                    }
                ):
                    label = str(obj[Attribute.LABEL])
                    if not label.startswith(prefix):
                        continue
                    public = ed25519_jwk_from_raw(_ed25519_point(bytes(obj[Attribute.EC_POINT])))
                    found[label] = HsmKey(label, public, has_private=False)
                privates = {
                    str(obj[Attribute.LABEL])
                    for obj in pooled.session.get_objects(
                        {
                            Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                            Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                        }
                    )
                }
        except PKCS11Error as exc:
            raise KeyUnavailable(
                f"the PKCS#11 token cannot list keys ({type(exc).__name__})"
            ) from exc
        keys = [
            HsmKey(k.label, k.public_jwk, has_private=k.label in privates) for k in found.values()
        ]
        return sorted(keys, key=lambda k: k.label, reverse=True)

    def generate(self, key_label: str) -> HsmKey:
        """A new Ed25519 key pair inside the token; the private key never leaves it."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        label = f"{key_label}{LABEL_SEPARATOR}{stamp}"
        key_id = secrets.token_bytes(16)
        try:
            with self._session() as pooled:
                params = pooled.session.create_domain_parameters(
                    KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: ED25519_PARAMS}, local=True
                )
                public, _ = params.generate_keypair(
                    store=True,
                    label=label,
                    id=key_id,
                    mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                    capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                    public_template={Attribute.TOKEN: True, Attribute.VERIFY: True},
                    private_template={
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.SIGN: True,
                    },
                )
                raw = _ed25519_point(bytes(public[Attribute.EC_POINT]))
        except PKCS11Error as exc:
            raise KeyUnavailable(
                f"the PKCS#11 token did not generate an Ed25519 key pair ({type(exc).__name__})"
            ) from exc
        key = HsmKey(label, ed25519_jwk_from_raw(raw), has_private=True)
        log.info("hsm_key_generated", kid=key.kid, label=label)
        return key

    def destroy(self, label: str) -> None:
        """Removes both halves of the key pair ``label`` from the token."""
        try:
            with self._session() as pooled:
                for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                    for obj in list(
                        pooled.session.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label})
                    ):
                        obj.destroy()
                pooled.keys.pop(label, None)
        except PKCS11Error as exc:
            raise KeyUnavailable(
                f"the PKCS#11 token did not remove the key ({type(exc).__name__})"
            ) from exc

    def private_key_attributes(self, label: str) -> dict[str, bool]:
        """CKA_SENSITIVE, CKA_EXTRACTABLE and CKA_NEVER_EXTRACTABLE of a private key."""
        with self._session() as pooled:
            key = self._private(pooled, label)
            return {
                "sensitive": bool(key[Attribute.SENSITIVE]),
                "extractable": bool(key[Attribute.EXTRACTABLE]),
                "never_extractable": bool(key[Attribute.NEVER_EXTRACTABLE]),
            }

    def export_private(self, label: str) -> bytes:
        """Tries to read the private key's value: a conforming token refuses."""
        with self._session() as pooled:
            return bytes(self._private(pooled, label)[Attribute.VALUE])

    # ------------------------------------------------------------ signing
    def _private(self, pooled: _Session, label: str) -> SignMixin:
        key = pooled.keys.get(label)
        if key is None:
            try:
                found = pooled.session.get_key(
                    object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC_EDWARDS, label=label
                )
            except NoSuchKey as exc:
                raise KeyError_("the broker's private key is not in the PKCS#11 token") from exc
            except MultipleObjectsReturned as exc:
                raise KeyError_("two private keys in the PKCS#11 token share a label") from exc
            if not isinstance(found, SignMixin):
                raise KeyError_("the broker's key in the PKCS#11 token cannot sign")
            pooled.keys[label] = key = found
        return key

    def sign(self, label: str, message: bytes) -> bytes:
        try:
            with self._session() as pooled:
                return bytes(self._private(pooled, label).sign(message, mechanism=Mechanism.EDDSA))
        except PKCS11Error as exc:
            raise KeyUnavailable(f"the PKCS#11 token did not sign ({type(exc).__name__})") from exc

    async def sign_async(self, label: str, message: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self.sign, label, message)
        except RuntimeError as exc:  # the executor is shut down: the token is closed
            raise KeyUnavailable("the PKCS#11 token is closed") from exc
        return await future


class Pkcs11Signer:
    """A ``Signer`` whose private key stays in the token."""

    def __init__(self, token: Pkcs11Token, key: HsmKey) -> None:
        if not key.has_private:
            raise KeyError_("the broker's private key is not in the PKCS#11 token")
        self._token = token
        self._key = key

    @property
    def kid(self) -> str:
        return self._key.kid

    @property
    def alg(self) -> str:
        return SIGNATURE_ALG

    @property
    def label(self) -> str:
        return self._key.label

    def public_jwk(self) -> dict[str, Any]:
        return dict(self._key.public_jwk)

    def sign(self, message: bytes) -> bytes:
        return self._token.sign(self._key.label, message)

    async def sign_async(self, message: bytes) -> bytes:
        return await self._token.sign_async(self._key.label, message)
