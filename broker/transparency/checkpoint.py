"""Signed checkpoints of the audit log (C2SP signed-note / tlog-checkpoint).

A checkpoint is the note text ``<origin>\\n<tree size>\\n<base64 root hash>\\n``
followed by a blank line and one signature line per signer,
``— <key name> <base64(4-byte key id || Ed25519 signature)>``. The key id is
the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || public key) as the
C2SP signed-note specification defines; the key name is the log's origin.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass

from audit.tree import tree_head
from broker.crypto.keys import BrokerKeyring
from broker.db.session import Database

ED25519_SIGNATURE_TYPE = 0x01
CACHE_SECONDS = 1.0


def note_key_id(key_name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(
        key_name.encode("utf-8") + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + public_key
    ).digest()[:4]


def verifier_key(key_name: str, public_key: bytes) -> str:
    """The note verifier key ``<name>+<hex key id>+<base64(0x01 || key)>``."""
    blob = base64.b64encode(bytes([ED25519_SIGNATURE_TYPE]) + public_key).decode("ascii")
    return f"{key_name}+{note_key_id(key_name, public_key).hex()}+{blob}"


def checkpoint_body(origin: str, size: int, root_hash: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root_hash).decode('ascii')}\n"


def sign_checkpoint(keyring: BrokerKeyring, origin: str, size: int, root_hash: bytes) -> str:
    """The signed note of a checkpoint, signed by the keyring's active key as ``origin``."""
    body = checkpoint_body(origin, size, root_hash)
    signature = keyring.sign_raw(body.encode("utf-8"))
    blob = note_key_id(origin, keyring.public_key_raw()) + signature
    return f"{body}\n\u2014 {origin} {base64.b64encode(blob).decode('ascii')}\n"


async def sign_checkpoint_async(
    keyring: BrokerKeyring, origin: str, size: int, root_hash: bytes
) -> str:
    """``sign_checkpoint`` off the event loop when the key is in an HSM."""
    body = checkpoint_body(origin, size, root_hash)
    signature = (await keyring.sign_async(body.encode("utf-8"))).value
    blob = note_key_id(origin, keyring.public_key_raw()) + signature
    return f"{body}\n\u2014 {origin} {base64.b64encode(blob).decode('ascii')}\n"


@dataclass(slots=True)
class _Cached:
    at: float
    text: str
    size: int


class CheckpointSigner:
    """Signs the current head on demand; a signed checkpoint is reused for at
    most ``CACHE_SECONDS``, so the served one is never more than that behind."""

    def __init__(self, db: Database, keyring: BrokerKeyring, origin: str) -> None:
        self._db = db
        self._keyring = keyring
        self.origin = origin
        self._cached: _Cached | None = None

    @property
    def signed_size(self) -> int | None:
        """Tree size of the last checkpoint this instance signed (None before the first)."""
        cached = self._cached
        return None if cached is None else cached.size

    @property
    def verifier_key(self) -> str:
        return verifier_key(self.origin, self._keyring.public_key_raw())

    async def latest(self) -> str:
        now = time.monotonic()
        cached = self._cached
        if cached is not None and now - cached.at < CACHE_SECONDS:
            return cached.text
        head = await tree_head(self._db)
        text = await sign_checkpoint_async(self._keyring, self.origin, head.size, head.root_hash)
        self._cached = _Cached(at=now, text=text, size=head.size)
        return text
