"""Officer TOTP secrets encrypted at rest.

A TOTP secret is stored as ``tk1:<key id>:<base64url(nonce || ciphertext || tag)>``:
AES-256-GCM under a data key, with associated data that binds the ciphertext to
its account id and key id (a ciphertext copied to another account does not
open). The data key lives in ``officer_secret_keys``, wrapped (AES-256-GCM) by
the broker's key-encryption key: the same KEK as the retention keys
(``BROKER_RETENTION_KEK``, else ``retention-kek.key`` in ``BROKER_KEYS_DIR``).
So a copy of the database alone holds no usable second factor.

The functions here are synchronous and pure so that migration ``0013`` (which
seals the secrets written before) uses exactly what the broker uses;
``SecretBox`` adds the key row's loading and creation for the running broker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from broker.core.errors import KeyError_, StorageUnavailable
from broker.crypto import _primitives as p
from broker.db.session import Database
from broker.retention.vault import kek_id, load_or_create_kek, parse_kek
from broker.review.models import OfficerSecretKey

if TYPE_CHECKING:
    from broker.settings import Settings

PREFIX = "tk1:"
TOTP_KEY_ID = "officer-totp-1"


def load_kek(settings: Settings) -> bytes:
    """The broker's key-encryption key (as ``open_vault`` reads it)."""
    if settings.retention_kek is not None:
        return parse_kek(settings.retention_kek.get_secret_value())
    return load_or_create_kek(settings.keys_dir)


def _wrap_aad(kid: str) -> bytes:
    return b"broker-officer-secret-key/v1\x00" + kid.encode()


def _totp_aad(account_id: int, kid: str) -> bytes:
    return b"broker-officer-totp/v1\x00" + f"{account_id}\x00{kid}".encode()


def new_wrapped_key(kek: bytes, kid: str = TOTP_KEY_ID) -> tuple[bytes, str]:
    """A fresh data key and its wrapped form (base64url) for ``officer_secret_keys``."""
    key = p.random_bytes(32)
    return key, p.b64u(p.aes256gcm_seal(kek, key, _wrap_aad(kid)))


def unwrap_key(kek: bytes, kid: str, stored_kek_id: str, wrapped: str) -> bytes:
    if stored_kek_id != kek_id(kek):
        raise KeyError_("the officer secret key is wrapped by another key-encryption key")
    try:
        return p.aes256gcm_open(kek, p.b64u_decode(wrapped), _wrap_aad(kid))
    except ValueError as exc:
        raise KeyError_("the officer secret key does not unwrap") from exc


def is_sealed(stored: str | None) -> bool:
    return stored is not None and stored.startswith(PREFIX)


def seal_totp(key: bytes, account_id: int, secret: str, kid: str = TOTP_KEY_ID) -> str:
    sealed = p.aes256gcm_seal(key, secret.encode("ascii"), _totp_aad(account_id, kid))
    return f"{PREFIX}{kid}:{p.b64u(sealed)}"


def totp_key_id(stored: str) -> str:
    if not is_sealed(stored):
        raise KeyError_("an officer's TOTP secret is not sealed")
    return stored[len(PREFIX) :].split(":", 1)[0]


def open_totp(key: bytes, account_id: int, stored: str) -> str:
    """The TOTP secret of ``seal_totp`` output; KeyError_ when it is not sealed, was
    sealed for another account or key, or was altered."""
    kid = totp_key_id(stored)
    body = stored[len(PREFIX) + len(kid) + 1 :]
    try:
        return p.aes256gcm_open(key, p.b64u_decode(body), _totp_aad(account_id, kid)).decode(
            "ascii"
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyError_("an officer's TOTP secret does not open") from exc


class SecretBox:
    """Seals and opens officer TOTP secrets; the data key is made on first use
    (one per broker, shared by every instance through the database)."""

    def __init__(self, db: Database, kek: bytes) -> None:
        if len(kek) != 32:
            raise KeyError_("the key-encryption key must be 32 bytes")
        self._db = db
        self._kek = kek
        self._key: bytes | None = None

    async def _data_key(self) -> bytes:
        if self._key is not None:
            return self._key
        async with self._db.session() as session:
            row = await session.get(OfficerSecretKey, TOTP_KEY_ID)
        if row is None:
            _, wrapped = new_wrapped_key(self._kek)
            row = OfficerSecretKey(
                id=TOTP_KEY_ID,
                kek_id=kek_id(self._kek),
                wrapped=wrapped,
                created_at=datetime.now(UTC),
            )
            try:
                async with self._db.session() as session:
                    session.add(row)
                    await session.commit()
            except IntegrityError:  # another instance made it first: use that one
                async with self._db.session() as session:
                    row = await session.get(OfficerSecretKey, TOTP_KEY_ID)
                if row is None:
                    raise
            except SQLAlchemyError as exc:
                raise StorageUnavailable() from exc
        self._key = unwrap_key(self._kek, row.id, row.kek_id, row.wrapped)
        return self._key

    async def prepare(self) -> None:
        """Loads (or makes) the data key."""
        await self._data_key()

    async def seal(self, account_id: int, secret: str) -> str:
        return seal_totp(await self._data_key(), account_id, secret)

    async def open(self, account_id: int, stored: str) -> str:
        totp_key_id(stored)  # refuses a secret in clear before any key is made
        return open_totp(await self._data_key(), account_id, stored)
