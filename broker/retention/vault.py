"""Sealing personal detail under per-period retention keys (crypto-shredding).

Every stored field that holds personal detail beyond the pseudonymised subject
key is written as AES-256-GCM ciphertext under the key of its record's
retention period: the agreement's retention (an ISO 8601 duration, the
"retention class") and the calendar month (UTC) the record was made in. The
associated data binds each ciphertext to its table, its record id and its key
id, so a ciphertext moved to another record does not open.

* ``decisions.input``: the subjects' facts (birth dates, ages, authority
  holders' pseudonyms), the request context, the consent facts, the acute
  declaration and the earlier boolean answers a follow-up relied on
  (``prior_answers``) go under ``input["sealed"]``; what stays in clear is what
  every report needs (agreement, purpose, parties, times, items with their
  subject keys, subject keys and kinds).
* ``decisions.result``: the boolean answers released (``answers``: which
  person key got which true/false) go under ``result["sealed"]``, bound to the
  result column; the per-item reasons and the obligations stay in clear.
* ``exchanges.case_reference``: stored as ``rk1:<key id>:<ciphertext>``.

Keys live in ``retention_keys`` wrapped by the key-encryption key (KEK), which
is kept outside the database. When a key is destroyed (``broker retention
run``) every field sealed under it reads as shredded; the audit log never held
these fields, so its leaves, chain and Merkle proofs are unchanged.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from broker.core.errors import ErrorCode, KeyError_, RecordShredded, StorageUnavailable
from broker.crypto import _primitives as p
from broker.db.session import Database
from broker.exchange.models import DecisionRecord, Exchange
from broker.retention.models import RetentionKey

if TYPE_CHECKING:
    from broker.settings import Settings

KEK_FILE = "retention-kek.key"
CASE_PREFIX = "rk1:"
# The decision input's members that hold personal detail (sealed as one object).
SEALED_INPUT_FIELDS = ("subjects", "context", "consents", "acute_declaration", "prior_answers")
# The decision result's members that hold personal detail (sealed when not empty).
SEALED_RESULT_FIELDS = ("answers",)

_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")
_EXCHANGES = Exchange.__tablename__
_DECISIONS = DecisionRecord.__tablename__
# The "table" a sealed decision result is bound to: another column of the same row
# than the input, so neither ciphertext opens in the other's place.
_RESULTS = f"{_DECISIONS}.result"


# ------------------------------------------------------------------ periods
@dataclass(frozen=True, slots=True)
class Duration:
    years: int = 0
    months: int = 0
    days: int = 0

    @property
    def text(self) -> str:
        parts = [f"{n}{u}" for n, u in ((self.years, "Y"), (self.months, "M"), (self.days, "D"))]
        return "P" + "".join(part for part in parts if not part.startswith("0"))


def parse_duration(text: str) -> Duration:
    """A positive ISO 8601 duration of years, months, weeks and days (``P20Y``,
    ``P1Y6M``, ``P30D``). Raises ValueError for anything else."""
    match = _DURATION.match(text.strip().upper())
    if match is None or not any(match.groups()):
        raise ValueError(f"not a retention period: {text!r}")
    years, months, weeks, days = (int(g or 0) for g in match.groups())
    months_total = years * 12 + months
    duration = Duration(months_total // 12, months_total % 12, weeks * 7 + days)
    if duration == Duration():
        raise ValueError(f"a retention period must be longer than zero: {text!r}")
    return duration


def add_duration(at: datetime, duration: Duration) -> datetime:
    """``at`` (the first instant of a month) plus ``duration``."""
    month = at.month - 1 + duration.months
    year = at.year + duration.years + month // 12
    shifted = at.replace(year=year, month=month % 12 + 1)
    return shifted + timedelta(days=duration.days)


@dataclass(frozen=True, slots=True)
class Period:
    label: str  # YYYY-MM
    start: datetime
    end: datetime


def month_of(at: datetime) -> Period:
    """The calendar month (UTC) ``at`` lies in."""
    at = at.astimezone(UTC)
    start = datetime(at.year, at.month, 1, tzinfo=UTC)
    end = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
    return Period(f"{at.year:04d}-{at.month:02d}", start, end)


def retention_class(retention: dict[str, Any] | None, default: str) -> str:
    """The normalised retention period of a decision's ``retention`` obligation;
    ``default`` when it names none (refusals, purposes without retention)."""
    period = retention.get("period") if isinstance(retention, dict) else None
    return _class_of(period if isinstance(period, str) else default, default)


@functools.lru_cache(maxsize=256)
def _class_of(period: str, default: str) -> str:
    try:
        return parse_duration(period).text
    except ValueError:
        return parse_duration(default).text


def key_id(retention: str, period: Period) -> str:
    return f"{retention}:{period.label}"


# ------------------------------------------------------------------ the KEK
def load_or_create_kek(keys_dir: Path) -> bytes:
    """The key-encryption key in ``keys_dir`` (32 bytes, hex), created on first use."""
    path = keys_dir / KEK_FILE
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: another process starting at the
        # same moment either sees no file or the whole key, and one key wins.
        tmp = keys_dir / f".{KEK_FILE}.{os.getpid()}.{p.random_bytes(4).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(p.random_bytes(32).hex())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # made by another process just now: use that one
        finally:
            tmp.unlink()
    return parse_kek(path.read_text(encoding="ascii"))


def parse_kek(text: str) -> bytes:
    try:
        kek = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise KeyError_("the retention key-encryption key is not hex") from exc
    if len(kek) != 32:
        raise KeyError_("the retention key-encryption key must be 32 bytes (64 hex digits)")
    return kek


def kek_id(kek: bytes) -> str:
    return p.hmac_sha256(kek, b"broker-retention-kek-id").hex()[:16]


def _wrap_aad(kid: str) -> bytes:
    return b"broker-retention-key/v1\x00" + kid.encode()


def _field_aad(table: str, record_id: str, kid: str) -> bytes:
    return b"broker-retention/v1\x00" + f"{table}\x00{record_id}\x00{kid}".encode()


# ------------------------------------------------------------------ sealing
def seal_field(key: bytes, kid: str, table: str, record_id: str, value: Any) -> str:
    """``value`` (JSON) sealed to ``table``/``record_id`` under key ``kid``."""
    return p.b64u(p.aes256gcm_seal(key, orjson.dumps(value), _field_aad(table, record_id, kid)))


def open_field(key: bytes, kid: str, table: str, record_id: str, sealed: str) -> Any:
    """Opens ``seal_field`` output; ValueError when it was sealed to another
    record, table or key, or was altered."""
    return orjson.loads(
        p.aes256gcm_open(key, p.b64u_decode(sealed), _field_aad(table, record_id, kid))
    )


def sealed_key_id(table: str, value: Any) -> str | None:
    """The key id a stored field is sealed under (None: not sealed)."""
    if table == _DECISIONS and isinstance(value, dict):
        sealed = value.get("sealed")
        return str(sealed["kid"]) if isinstance(sealed, dict) else None
    if table == _EXCHANGES and isinstance(value, str) and value.startswith(CASE_PREFIX):
        return value[len(CASE_PREFIX) :].rsplit(":", 1)[0]
    return None


@dataclass(frozen=True, slots=True)
class _WriteKey:
    kid: str
    key: bytes
    destroy_after: datetime


class RetentionVault:
    """Hands out the current period's keys to writers (cached in memory: one
    AEAD per sealed field on the hot path) and opens sealed fields for readers."""

    def __init__(self, db: Database, kek: bytes, *, default_period: str = "P1Y") -> None:
        if len(kek) != 32:
            raise KeyError_("the retention key-encryption key must be 32 bytes")
        self._db = db
        self._kek = kek
        self.kek_id = kek_id(kek)
        self.default_period = parse_duration(default_period).text
        self._write_keys: dict[str, _WriteKey] = {}

    # ---------------------------------------------------------- writing
    async def write_key(self, retention: str, at: datetime) -> _WriteKey:
        period = month_of(at)
        kid = key_id(retention, period)
        cached = self._write_keys.get(kid)
        if cached is not None and cached.destroy_after > at:
            return cached
        row = await self._load_or_create(kid, retention, period, at)
        if row.wrapped is None or row.destroy_after <= at:
            raise KeyError_("the retention key of this period is destroyed already")
        if len(self._write_keys) > 256:
            self._write_keys.clear()
        self._write_keys[kid] = found = _WriteKey(kid, self._unwrap(row), row.destroy_after)
        return found

    async def _load_or_create(
        self, kid: str, retention: str, period: Period, at: datetime
    ) -> RetentionKey:
        async with self._db.session() as session:
            row = await session.get(RetentionKey, kid)
        if row is not None:
            return row
        key = p.random_bytes(32)
        row = RetentionKey(
            id=kid,
            retention=retention,
            period=period.label,
            period_start=period.start,
            period_end=period.end,
            destroy_after=add_duration(period.end, parse_duration(retention)),
            kek_id=self.kek_id,
            wrapped=p.b64u(p.aes256gcm_seal(self._kek, key, _wrap_aad(kid))),
            created_at=at,
        )
        try:
            async with self._db.write_sessions() as session:
                session.add(row)
                await session.commit()
        except IntegrityError:  # another instance made it first: use that one
            async with self._db.session() as session:
                existing = await session.get(RetentionKey, kid)
            if existing is None:
                raise
            return existing
        except SQLAlchemyError as exc:
            raise StorageUnavailable() from exc
        return row

    def _unwrap(self, row: RetentionKey) -> bytes:
        if row.wrapped is None:
            raise RecordShredded()
        if row.kek_id != self.kek_id:
            raise KeyError_(
                "a retention key is wrapped by another key-encryption key",
                code=ErrorCode.KEY_ERROR,
            )
        try:
            return p.aes256gcm_open(self._kek, p.b64u_decode(row.wrapped), _wrap_aad(row.id))
        except ValueError as exc:
            raise KeyError_("a retention key does not unwrap") from exc

    async def seal_rows(
        self,
        rows: Sequence[tuple[Table, dict[str, Any]]],
        retention: dict[str, Any] | None,
        at: datetime,
    ) -> None:
        """Seals, in place, the personal fields of the exchange and decision rows
        among ``rows`` (other tables are left alone) under the key of ``at``'s
        month and the retention class of ``retention``."""
        write = await self.write_key(retention_class(retention, self.default_period), at)
        for table, row in rows:
            if table.name == _DECISIONS:
                row["input"] = seal_input(write.key, write.kid, str(row["id"]), row["input"])
                if isinstance(row.get("result"), dict):
                    row["result"] = seal_result(write.key, write.kid, str(row["id"]), row["result"])
            elif table.name == _EXCHANGES and row.get("case_reference") is not None:
                sealed = seal_field(
                    write.key, write.kid, _EXCHANGES, str(row["id"]), row["case_reference"]
                )
                row["case_reference"] = f"{CASE_PREFIX}{write.kid}:{sealed}"

    def forget(self, kid: str) -> None:
        self._write_keys.pop(kid, None)

    # ---------------------------------------------------------- reading
    def reader(self) -> RetentionReader:
        return RetentionReader(self)

    async def _rows(self, kids: Iterable[str]) -> dict[str, RetentionKey]:
        wanted = sorted(set(kids))
        if not wanted:
            return {}
        async with self._db.session() as session:
            found = (
                await session.scalars(select(RetentionKey).where(RetentionKey.id.in_(wanted)))
            ).all()
        return {r.id: r for r in found}


def seal_input(key: bytes, kid: str, decision_id: str, document: dict[str, Any]) -> dict[str, Any]:
    """The decision input with its personal members sealed under ``sealed``."""
    clear = {k: v for k, v in document.items() if k not in SEALED_INPUT_FIELDS}
    clear["subjects"] = [
        {"key": s.get("key"), "kind": s.get("kind")} for s in document.get("subjects", ())
    ]
    secret = {k: document[k] for k in SEALED_INPUT_FIELDS if k in document}
    clear["sealed"] = {"kid": kid, "ct": seal_field(key, kid, _DECISIONS, decision_id, secret)}
    return clear


def seal_result(key: bytes, kid: str, decision_id: str, document: dict[str, Any]) -> dict[str, Any]:
    """The decision result with its personal members sealed under ``sealed``; a
    result without any (no boolean answer released) is returned as it is: one AEAD
    only where there is something to seal."""
    if not any(document.get(k) for k in SEALED_RESULT_FIELDS):
        return document
    clear = {k: v for k, v in document.items() if k not in SEALED_RESULT_FIELDS}
    secret = {k: document[k] for k in SEALED_RESULT_FIELDS if k in document}
    clear["sealed"] = {"kid": kid, "ct": seal_field(key, kid, _RESULTS, decision_id, secret)}
    return clear


class RetentionReader:
    """Opens sealed fields for one read (replay, reports): keys are read from the
    database as they are needed, so a key destroyed by any instance is seen."""

    def __init__(self, vault: RetentionVault) -> None:
        self._vault = vault
        self._keys: dict[str, bytes | None] = {}  # None: destroyed

    async def load(self, kids: Iterable[str | None]) -> None:
        missing = {k for k in kids if k is not None and k not in self._keys}
        if not missing:
            return
        rows = await self._vault._rows(missing)
        for kid in missing:
            row = rows.get(kid)
            if row is None:
                raise KeyError_("a record is sealed under a retention key the broker does not hold")
            self._keys[kid] = None if row.wrapped is None else self._vault._unwrap(row)

    def _key(self, kid: str) -> bytes:
        if kid not in self._keys:
            raise KeyError_("retention key not loaded")
        key = self._keys[kid]
        if key is None:
            raise RecordShredded()
        return key

    def is_shredded(self, table: str, value: Any) -> bool:
        kid = sealed_key_id(table, value)
        return kid is not None and self._keys.get(kid, b"") is None

    async def decision_input(self, decision_id: str, document: dict[str, Any]) -> dict[str, Any]:
        """The full policy input of a decision row; RecordShredded once its key is
        destroyed. Rows written before sealing are returned as they are."""
        return await self._open_document(_DECISIONS, decision_id, document, "decision input")

    async def decision_result(self, decision_id: str, document: dict[str, Any]) -> dict[str, Any]:
        """The full result of a decision row (with the boolean ``answers`` it
        released); RecordShredded once its key is destroyed. Results with nothing
        sealed, and rows written before sealing, are returned as they are."""
        return await self._open_document(_RESULTS, decision_id, document, "decision result")

    async def _open_document(
        self, table: str, row_id: str, document: dict[str, Any], what: str
    ) -> dict[str, Any]:
        """``document`` with its ``sealed`` part opened and merged back in."""
        sealed = document.get("sealed")
        if not isinstance(sealed, dict):
            return document
        kid = str(sealed["kid"])
        await self.load([kid])
        try:
            secret = open_field(self._key(kid), kid, table, row_id, sealed["ct"])
        except ValueError as exc:
            raise KeyError_(f"a sealed {what} does not open") from exc
        full = {k: v for k, v in document.items() if k != "sealed"}
        full.update(secret)
        return full

    async def case_reference(self, exchange_id: str, value: str | None) -> str | None:
        """The case reference of an exchange row; RecordShredded once its key is
        destroyed."""
        kid = sealed_key_id(_EXCHANGES, value)
        if kid is None or value is None:
            return value
        await self.load([kid])
        sealed = value[len(CASE_PREFIX) + len(kid) + 1 :]
        try:
            opened = open_field(self._key(kid), kid, _EXCHANGES, exchange_id, sealed)
        except ValueError as exc:
            raise KeyError_("a sealed case reference does not open") from exc
        return str(opened)


def open_vault(settings: Settings, db: Database) -> RetentionVault:
    """The vault with the configured KEK (``BROKER_RETENTION_KEK``, else the keys folder)."""
    kek = (
        parse_kek(settings.retention_kek.get_secret_value())
        if settings.retention_kek is not None
        else load_or_create_kek(settings.keys_dir)
    )
    return RetentionVault(db, kek, default_period=settings.retention_default_period)
