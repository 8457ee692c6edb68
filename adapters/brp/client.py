"""Client for the population register (BRP) in the Haal Centraal "BRP Personen Bevragen" shape.

``lookup`` sends ONE ``RaadpleegMetBurgerservicenummer`` call per batch of at most 20 BSNs
(batches run concurrently) through one shared, pooled ``aiohttp.ClientSession``. Any failure -
time-out, connection error, non-200 status, malformed or invalid body - raises
:class:`broker.core.errors.RegisterUnavailable`; a partial answer is never returned.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import aiohttp
import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters._http import EndpointState, client_span, new_session, trace_headers
from broker.core.bsn import is_valid_bsn
from broker.core.errors import RegisterUnavailable
from broker.core.protocols import PersonRecord

__all__ = ["BRP_PATH", "MAX_BATCH", "BrpRegister"]

BRP_PATH = "/haalcentraal/api/brp/personen"
MAX_BATCH = 20
QUERY_TYPE = "RaadpleegMetBurgerservicenummer"
FIELDS = ("burgerservicenummer", "geboorte.datum", "verblijfplaats", "gezag")

_log = structlog.get_logger(__name__)


# ---------------------------------------------------------------------- response model


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class _BsnRef(_Model):
    burgerservicenummer: str | None = None


class _Datum(_Model):
    type: str
    datum: date | None = None


class _Geboorte(_Model):
    datum: _Datum | None = None


class _Verblijfplaats(_Model):
    adresseerbaar_object_identificatie: str | None = Field(
        default=None, alias="adresseerbaarObjectIdentificatie"
    )


class _Gezag(_Model):
    type: str
    minderjarige: _BsnRef | None = None
    ouders: list[_BsnRef] = Field(default_factory=list)
    ouder: _BsnRef | None = None  # EenhoofdigOuderlijkGezag / GezamenlijkGezag (Haal Centraal)
    derde: _BsnRef | None = None  # GezamenlijkGezag: the non-parent co-holder
    derden: list[_BsnRef] = Field(default_factory=list)  # Voogdij


class _Persoon(_Model):
    burgerservicenummer: str
    geboorte: _Geboorte | None = None
    verblijfplaats: _Verblijfplaats | None = None
    gezag: list[_Gezag] = Field(default_factory=list)


class _PersonenResponse(_Model):
    type: str
    personen: list[_Persoon]


# ---------------------------------------------------------------------- client


class BrpRegister:
    """Implements :class:`broker.core.protocols.SubjectRegister` against a Haal Centraal BRP API.

    ``timeout`` is the total budget of one batch call in seconds, retries included;
    ``retries`` extra attempts are made after a connection error or a 5xx.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 2.0,
        retries: int = 1,
        backoff_base: float = 0.05,
        max_connections: int = 20,
        headers: dict[str, str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._url = base_url.rstrip("/") + BRP_PATH
        self._timeout = timeout
        self._retries = max(0, retries)
        self._backoff_base = backoff_base
        self._max_connections = max_connections
        self._headers = dict(headers or {})
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._stats = EndpointState.metered("brp", self._url, circuit=False)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The shared factory: the broker's client TLS context (mTLS) applies here too.
            self._session = new_session(
                max_connections=self._max_connections,
                max_connections_per_host=self._max_connections,
                headers=self._headers,
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def __aenter__(self) -> BrpRegister:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    def health(self) -> dict[str, dict[str, Any]]:
        """Call counters and latency percentiles of the register endpoint (no personal data).

        The client has no circuit breaker: ``state`` is always ``"none"``."""
        snap = self._stats.snapshot()
        snap["state"] = "none"
        return {self._url: snap}

    async def lookup(self, bsns: Sequence[str]) -> dict[str, PersonRecord]:
        """Persons by BSN; BSNs the register does not know are absent from the result.

        Invalid BSNs (failing the elfproef) are never sent and are absent from the result."""
        wanted = list(dict.fromkeys(b for b in bsns if _is_bsn(b)))
        if not wanted:
            return {}
        batches = [wanted[i : i + MAX_BATCH] for i in range(0, len(wanted), MAX_BATCH)]
        with client_span("register.lookup", "brp", self._url) as span:
            span.set_attribute("broker.batches", len(batches))
            results = await asyncio.gather(*(self._lookup_batch(b) for b in batches))
        merged: dict[str, PersonRecord] = {}
        for part in results:
            merged.update(part)
        return merged

    async def _lookup_batch(self, batch: list[str]) -> dict[str, PersonRecord]:
        st = self._stats
        st.calls += 1
        started = self._clock()
        try:
            result = await self._try_batch(batch)
        except RegisterUnavailable as exc:
            st.observe(self._clock() - started)
            st.consecutive_failures += 1
            if isinstance(exc.__cause__, TimeoutError):
                st.timeouts += 1
            else:
                st.failures += 1
            raise
        st.observe(self._clock() - started)
        st.successes += 1
        st.consecutive_failures = 0
        return result

    async def _try_batch(self, batch: list[str]) -> dict[str, PersonRecord]:
        body = {"type": QUERY_TYPE, "burgerservicenummer": batch, "fields": list(FIELDS)}
        deadline = self._clock() + self._timeout
        attempt = 0
        while True:
            attempt += 1
            self._stats.attempts += 1
            remaining = deadline - self._clock()
            reason: str
            try:
                async with asyncio.timeout(max(remaining, 0.0)):
                    raw, status = await self._post(body)
            except TimeoutError as exc:
                _log.warning("brp_lookup_timeout", attempt=attempt, batch_size=len(batch))
                raise RegisterUnavailable("The population register did not answer in time") from exc
            except aiohttp.ClientConnectionError:
                reason, status = "connection_error", 0
            except aiohttp.ClientError as exc:
                _log.warning("brp_lookup_failed", reason="client_error", attempt=attempt)
                raise RegisterUnavailable() from exc
            else:
                if status == 200:
                    return _parse(raw, batch)
                reason = "http_status"
            retryable = status == 0 or status >= 500 or status == 429
            delay = self._backoff_base * (2.0 ** (attempt - 1)) * (0.5 + self._rng.random() / 2)
            give_up = not retryable or attempt > self._retries or self._clock() + delay >= deadline
            _log.warning(
                "brp_lookup_failed",
                reason=reason,
                http_status=status or None,
                attempt=attempt,
                retryable=not give_up,
            )
            if give_up:
                raise RegisterUnavailable()
            self._stats.retries += 1
            await asyncio.sleep(delay)

    async def _post(self, body: dict[str, Any]) -> tuple[bytes, int]:
        session = self._get_session()
        async with session.post(
            self._url,
            data=orjson.dumps(body),
            headers=trace_headers(
                {"Accept": "application/json", "Content-Type": "application/json"}
            ),
            allow_redirects=False,
        ) as resp:
            if resp.status != 200:
                return b"", resp.status
            return await resp.read(), resp.status


def _is_bsn(value: object) -> bool:
    return isinstance(value, str) and len(value) == 9 and value.isascii() and is_valid_bsn(value)


def _parse(raw: bytes, batch: list[str]) -> dict[str, PersonRecord]:
    try:
        parsed = _PersonenResponse.model_validate_json(raw)
    except ValidationError as exc:
        _log.warning("brp_lookup_failed", reason="malformed_body")
        raise RegisterUnavailable() from exc
    if parsed.type != QUERY_TYPE:
        _log.warning("brp_lookup_failed", reason="unexpected_response_type")
        raise RegisterUnavailable()
    requested = set(batch)
    out: dict[str, PersonRecord] = {}
    for persoon in parsed.personen:
        bsn = persoon.burgerservicenummer
        if bsn not in requested:
            continue  # never pass on a person that was not asked for
        out[bsn] = _record(persoon)
    return out


def _record(persoon: _Persoon) -> PersonRecord:
    bsn = persoon.burgerservicenummer
    birth: date | None = None
    if persoon.geboorte and persoon.geboorte.datum and persoon.geboorte.datum.type == "Datum":
        birth = persoon.geboorte.datum.datum
    household = (
        persoon.verblijfplaats.adresseerbaar_object_identificatie
        if persoon.verblijfplaats
        else None
    )
    holders: list[str] = []
    for gezag in persoon.gezag:
        # A parent's record lists the authority it holds over its children; only the
        # relations where this person is the minor say who holds authority over them.
        minor = gezag.minderjarige.burgerservicenummer if gezag.minderjarige else None
        if minor != bsn:
            continue
        for ref in (*gezag.ouders, gezag.ouder, gezag.derde, *gezag.derden):
            holder = ref.burgerservicenummer if ref is not None else None
            if holder and holder not in holders:
                holders.append(holder)
    return PersonRecord(
        bsn=bsn,
        birth_date=birth,
        household_id=household or None,
        authority_holder_bsns=tuple(holders),
    )
