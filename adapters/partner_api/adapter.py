"""HTTP adapter for the broker's partner API (wire format: adapters/partner_api/README.md).

One :class:`PartnerApiAdapter` instance reaches any number of partner endpoints through ONE
shared, pooled ``aiohttp.ClientSession`` (created lazily on first use). Every call has a total
deadline, bounded retries with exponential backoff and jitter, and a circuit breaker per
endpoint (the one shared implementation: :class:`adapters.sdk.calls.ResilientHttp`). The
adapter never raises for a provider fault: faults become per-item ``unavailable``/``timeout``
statuses. Nothing personal (BSNs, values) is ever logged.
"""

from __future__ import annotations

from typing import Any, Literal, Unpack

import aiohttp
import orjson
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from adapters._http import BreakerState, FatalError
from adapters.sdk.calls import (
    Call,
    CallEnd,
    CallFailed,
    GuardedAdapter,
    HttpOptions,
    all_items,
)
from broker.core.protocols import FetchedItem, FetchItem, FetchRequest
from broker.core.types import ItemStatus, ResponseForm

__all__ = ["BreakerState", "PartnerApiAdapter"]

FETCH_PATH = "/broker/v1/fetch"
_log = structlog.get_logger(__name__)

_Key = tuple[str, str]  # (element, bsn)


class _WireItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    element: str
    bsn: str
    status: Literal["ok", "not_found"]
    value: Any = None
    source: str | None = None


class _WireResponse(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    items: list[_WireItem]


class PartnerApiAdapter(GuardedAdapter):
    """Implements :class:`broker.core.protocols.PartnerAdapter` over the partner HTTP API.

    ``timeout`` is the total budget of one :meth:`fetch` call in seconds, retries included.
    ``retries`` is the number of extra attempts after a connection error, a 5xx or a 429.
    The breaker of an endpoint opens after ``breaker_threshold`` consecutive failed calls
    and lets one probe call through after ``breaker_cooldown`` seconds (half-open).
    """

    kind = "partner_api"

    def __init__(self, **options: Unpack[HttpOptions]) -> None:
        super().__init__(kind=self.kind, log_prefix="partner", **options)

    @property
    def _session(self) -> aiohttp.ClientSession | None:
        return self._http.open_session

    # ------------------------------------------------------------------ fetch

    async def _fetch(
        self, endpoint: str, request: FetchRequest, wanted: list[FetchItem]
    ) -> list[FetchedItem]:
        body = orjson.dumps(_request_body(request, wanted))

        async def work(call: Call) -> _WireResponse | None:
            try:
                return await self._http.request(
                    call,
                    "POST",
                    endpoint + FETCH_PATH,
                    parse=lambda raw: _parse(raw, request.response_form),
                    label="fetch",
                    body=body,
                    headers=_HEADERS,
                )
            except CallFailed:
                return None

        done = await self._http.guarded(endpoint, request.request_id, work)
        if done.end is CallEnd.TIMEOUT:
            return all_items(wanted, ItemStatus.TIMEOUT)
        if done.value is None:
            return all_items(wanted, ItemStatus.UNAVAILABLE)
        items, dropped = _map_response(done.value, wanted)
        if dropped:
            self._http.state(endpoint).dropped_unrequested += len(dropped)
            _log.warning(
                "partner_unrequested_items_dropped",
                endpoint=endpoint,
                request_id=request.request_id,
                count=len(dropped),
                elements=sorted(set(dropped)),
            )
        return items


_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


def _parse(raw: bytes, form: ResponseForm) -> _WireResponse:
    try:
        wire = _WireResponse.model_validate_json(raw)
    except ValidationError as exc:
        raise FatalError("malformed_body") from exc
    _check_shape(wire, form)
    return wire


# ---------------------------------------------------------------------- helpers


def _request_body(request: FetchRequest, items: list[FetchItem]) -> dict[str, Any]:
    return {
        "exchange_id": request.exchange_id,
        "request_id": request.request_id,
        "agreement_id": request.agreement_id,
        "purpose_id": request.purpose_id,
        "recipient_party": request.recipient_party,
        "response_form": request.response_form.value,
        "request_date": request.request_date.isoformat() if request.request_date else None,
        "items": [
            {"element": i.element, "subject": {"bsn": i.bsn, "kind": i.subject_kind.value}}
            for i in items
        ],
    }


def _check_shape(wire: _WireResponse, form: ResponseForm) -> None:
    """Reject duplicate answers and, for boolean_only, any non-boolean value."""
    seen: set[_Key] = set()
    for item in wire.items:
        key = (item.element, item.bsn)
        if key in seen:
            raise FatalError("duplicate_item")
        seen.add(key)
        if (
            form is ResponseForm.BOOLEAN_ONLY
            and item.status == "ok"
            and not isinstance(item.value, bool)
        ):
            raise FatalError("non_boolean_value")


def _map_response(
    wire: _WireResponse, wanted: list[FetchItem]
) -> tuple[list[FetchedItem], list[str]]:
    """One FetchedItem per requested item; returns also the elements of unrequested answers."""
    requested = {(i.element, i.bsn) for i in wanted}
    answers: dict[_Key, _WireItem] = {}
    dropped: list[str] = []
    for item in wire.items:
        key = (item.element, item.bsn)
        if key in requested:
            answers[key] = item
        else:
            dropped.append(item.element)
    out: list[FetchedItem] = []
    for want in wanted:
        answer = answers.get((want.element, want.bsn))
        if answer is None:
            out.append(FetchedItem(want.element, want.bsn, ItemStatus.UNAVAILABLE))
        elif answer.status == "ok":
            out.append(
                FetchedItem(
                    want.element, want.bsn, ItemStatus.RELEASED, answer.value, answer.source
                )
            )
        else:
            out.append(
                FetchedItem(want.element, want.bsn, ItemStatus.NOT_FOUND, None, answer.source)
            )
    return out, dropped
