"""The generic "mapped REST source" engine: one adapter class for any JSON REST source system,
configured by a declarative mapping file (:mod:`adapters.sdk.mapping`).

Per fetch it groups the allowed items by subject and asks the source ONLY for the resources
those elements need, passing the source's field-selection parameter with ONLY the fields those
elements read (source-side filtering: what the decision did not allow is never requested). It
follows relative ``next`` links for paged resources, selects records per element (``where``,
``order_by``, ``select``), builds the catalogue-shaped value and answers one item per requested
(element, bsn) with a per-item status:

- ``released``: a value was mapped (``boolean_only``: always a boolean);
- ``not_found``: the source does not know the subject (``not_found_status``) or holds no
  matching record (``boolean_only``: ``released`` + ``false``);
- ``unavailable``: element not in the mapping, subject kind not mapped, the resource failed
  (5xx/429/connection error after retries, other 4xx, malformed body) or mapping the record
  failed; nothing else of the call is affected;
- ``timeout``: the call's total deadline passed before the item was answered.

HTTP discipline (pooled session, deadline, retries with jitter, breaker) is the shared
:class:`adapters.sdk.calls.ResilientHttp`. Never raises for a provider fault; logs no BSNs,
URLs or values.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Unpack
from urllib.parse import quote, urlsplit

import structlog

from adapters._http import FatalError
from adapters.sdk.calls import (
    Call,
    CallEnd,
    CallFailed,
    GuardedAdapter,
    HttpOptions,
)
from adapters.sdk.mapping import (
    DEFAULT_CATALOGUE_PATH,
    Derivation,
    ElementRule,
    FieldRule,
    Resource,
    SourceMapping,
    Transform,
    load_source_mapping,
)
from broker.core.clock import dutch_date
from broker.core.protocols import FetchedItem, FetchItem, FetchRequest
from broker.core.types import ItemStatus, ResponseForm

__all__ = ["BUILTIN_TRANSFORMS", "MappedRestAdapter", "read_path"]

_log = structlog.get_logger(__name__)
_Key = tuple[str, str]  # (element, bsn)
_Record = dict[str, Any]
_BSN = re.compile(r"^[0-9]{9}$")


def _to_date(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return date.fromisoformat(str(value)[:10]).isoformat()


def _to_datetime(value: Any) -> str:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError("a datetime without a time zone")
    return parsed.isoformat()


def _strict(kind: type) -> Transform:
    def check(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"expected {kind.__name__}")
        return value

    return check


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    return value


BUILTIN_TRANSFORMS: Mapping[str, Transform] = {
    "date": _to_date,
    "datetime": _to_datetime,
    "string": _strict(str),
    "integer": _strict(int),
    "boolean": _strict(bool),
    "number": _number,
    "string_list": lambda v: [str(x) for x in _strict(list)(v)],
}


def read_path(record: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a JSON object (``None`` when absent)."""
    value = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class _MappingFailed(Exception):
    """Mapping one element's records failed; that item becomes unavailable."""


class MappedRestAdapter(GuardedAdapter):
    """Implements :class:`broker.core.protocols.PartnerAdapter` for a JSON REST source
    described by a mapping file; ``transforms``/``derivations`` are the adapter's
    source-specific functions (names used by the mapping file)."""

    def __init__(
        self,
        *,
        kind: str,
        mapping_path: Path,
        transforms: Mapping[str, Transform] | None = None,
        derivations: Mapping[str, Derivation] | None = None,
        catalogue_path: Path = DEFAULT_CATALOGUE_PATH,
        **options: Unpack[HttpOptions],
    ) -> None:
        super().__init__(kind=kind, **options)
        self._transforms = {**BUILTIN_TRANSFORMS, **(transforms or {})}
        self._derivations = dict(derivations or {})
        self.mapping: SourceMapping = load_source_mapping(
            mapping_path,
            transforms=self._transforms,
            derivations=self._derivations,
            catalogue_path=catalogue_path,
        )

    @property
    def elements(self) -> frozenset[str]:
        """The catalogue elements this adapter can provide (its capabilities)."""
        return frozenset(self.mapping.elements)

    # ------------------------------------------------------------------ fetch

    async def _fetch(
        self, endpoint: str, request: FetchRequest, wanted: list[FetchItem]
    ) -> list[FetchedItem]:
        results: dict[_Key, FetchedItem] = {}
        # (bsn, resource) -> the items it answers; only what the allowed elements need.
        groups: dict[tuple[str, str], list[FetchItem]] = {}
        for item in wanted:
            rule = self.mapping.elements.get(item.element)
            if rule is None or item.subject_kind not in rule.subjects or not _BSN.match(item.bsn):
                results[(item.element, item.bsn)] = _item(item, ItemStatus.UNAVAILABLE)
                continue
            groups.setdefault((item.bsn, rule.resource), []).append(item)
        unmapped = sorted({i.element for i in wanted if i.element not in self.mapping.elements})
        if unmapped:
            _log.warning(
                f"{self.kind}_element_not_mapped",
                endpoint=endpoint,
                request_id=request.request_id,
                elements=unmapped,
            )
        if groups:
            boolean_only = request.response_form is ResponseForm.BOOLEAN_ONLY
            as_of = request.request_date or dutch_date(datetime.now(UTC))

            async def work(call: Call) -> None:
                await asyncio.gather(
                    *(
                        self._group(
                            call,
                            bsn=bsn,
                            resource_name=resource,
                            items=items,
                            results=results,
                            boolean_only=boolean_only,
                            as_of=as_of,
                        )
                        for (bsn, resource), items in groups.items()
                    )
                )

            done = await self._http.guarded(endpoint, request.request_id, work)
            late = ItemStatus.TIMEOUT if done.end is CallEnd.TIMEOUT else ItemStatus.UNAVAILABLE
            for item in wanted:
                results.setdefault((item.element, item.bsn), _item(item, late))
        return [results[(i.element, i.bsn)] for i in wanted]

    async def _group(
        self,
        call: Call,
        *,
        bsn: str,
        resource_name: str,
        items: list[FetchItem],
        results: dict[_Key, FetchedItem],
        boolean_only: bool,
        as_of: date,
    ) -> None:
        resource = self.mapping.resources[resource_name]
        rules = [self.mapping.elements[i.element] for i in items]
        fields = set().union(*(r.source_fields() for r in rules))
        try:
            records = await self._records(call, bsn, resource, fields)
        except CallFailed:
            for item in items:
                results[(item.element, item.bsn)] = _item(item, ItemStatus.UNAVAILABLE)
            return
        for item, rule in zip(items, rules, strict=True):
            results[(item.element, item.bsn)] = self._answer(
                call, item, rule, records, boolean_only=boolean_only, as_of=as_of
            )

    async def _records(
        self, call: Call, bsn: str, resource: Resource, fields: set[str]
    ) -> list[_Record] | None:
        """Every record of ``resource`` for ``bsn`` (all pages), or ``None`` when the source
        does not know the subject. Raises CallFailed."""
        params = {k: v.replace("{bsn}", bsn) for k, v in resource.params.items()}
        if resource.fields_param and fields:
            params[resource.fields_param] = ",".join(sorted(fields))
        url: str = call.endpoint + resource.path.replace("{bsn}", quote(bsn, safe=""))
        query: dict[str, str] | None = params
        out: list[_Record] = []
        for page in range(resource.max_pages):
            got = await self._http.request(
                call,
                "GET",
                url,
                parse=lambda raw: _page(raw, resource),
                label=resource.name,
                params=query,
                headers={"Accept": self.mapping.accept},
                missing=self.mapping.not_found_status,
            )
            if got is None:
                if page == 0:
                    return None
                call.failed = True
                raise CallFailed("page_missing")
            records, link = got
            out.extend(records)
            if link is None:
                return out
            try:
                url, query = _follow(call.endpoint, link), None  # the link has its own query
            except FatalError as exc:
                call.failed = True
                raise CallFailed(exc.reason) from exc
        call.failed = True
        _log.warning(
            f"{self.kind}_too_many_pages",
            endpoint=call.endpoint,
            request_id=call.request_id,
            resource=resource.name,
        )
        raise CallFailed("too_many_pages")

    # ------------------------------------------------------------------ mapping

    def _answer(
        self,
        call: Call,
        item: FetchItem,
        rule: ElementRule,
        records: list[_Record] | None,
        *,
        boolean_only: bool,
        as_of: date,
    ) -> FetchedItem:
        if records is None:  # the source does not know the subject
            value: Any = None
        else:
            try:
                value = self._value(rule, records, item.bsn, as_of)
            except Exception as exc:  # noqa: BLE001 - odd but valid data: this item only
                _log.error(
                    f"{self.kind}_mapping_error",
                    endpoint=call.endpoint,
                    request_id=call.request_id,
                    element=item.element,
                    error_type=type(exc).__name__,
                )
                return _item(item, ItemStatus.UNAVAILABLE)
        if boolean_only:
            if isinstance(value, bool):
                answer = value
            elif rule.boolean and isinstance(value, dict):
                answer = value.get(rule.boolean) is True
            else:
                answer = value is not None and value != []
            return _item(item, ItemStatus.RELEASED, answer, rule.source)
        if value is None:
            return _item(item, ItemStatus.NOT_FOUND)
        return _item(item, ItemStatus.RELEASED, value, rule.source)

    def _value(self, rule: ElementRule, records: list[_Record], bsn: str, as_of: date) -> Any:
        matching = [r for r in records if _matches(r, rule.where)]
        if rule.select == "exists":
            return bool(matching)
        if rule.select == "count":
            return len(matching)
        if rule.order_by is not None:
            order = rule.order_by
            present = [r for r in matching if read_path(r, order) is not None]
            present.sort(key=lambda r: str(read_path(r, order)), reverse=rule.select != "earliest")
            matching = present + [r for r in matching if read_path(r, order) is None]
        chosen = matching if rule.select == "all" else matching[:1]
        if rule.derive is not None:  # a derivation sees every matching record, in order
            value = self._derivations[rule.derive](matching, rule.params, bsn, as_of)
        elif not chosen:
            value = None
        elif rule.select == "all":
            value = [self._build(rule.value, r) for r in chosen]
        else:
            value = self._build(rule.value, chosen[0])
        if (value is None or value == []) and rule.has_empty:
            return copy.deepcopy(rule.empty)
        return None if value == [] else value

    def _build(self, spec: FieldRule | Mapping[str, FieldRule] | None, record: _Record) -> Any:
        if spec is None:
            raise _MappingFailed("no value rule")
        if isinstance(spec, FieldRule):
            return self._read(spec, record)
        return {name: self._read(rule, record) for name, rule in spec.items()}

    def _read(self, rule: FieldRule, record: Any) -> Any:
        value = read_path(record, rule.path) if rule.path else None
        if rule.each is not None and value is not None:
            if not isinstance(value, list):
                raise _MappingFailed("not a list")
            value = [
                {name: self._read(sub, entry) for name, sub in rule.each.items()}
                for entry in value
                if isinstance(entry, dict)
            ]
        if rule.mapping is not None and value is not None:
            if value in rule.mapping:
                value = rule.mapping[value]
            elif "*" in rule.mapping:
                value = rule.mapping["*"]
            else:
                raise _MappingFailed("code not in the code table")
        if rule.transform is not None and value is not None:
            value = self._transforms[rule.transform](value)
        if value is None:
            return copy.deepcopy(rule.default)
        return value


# ---------------------------------------------------------------------- helpers


def _page(raw: bytes, resource: Resource) -> tuple[list[_Record], str | None]:
    """The records of one page and the relative link of the next (FatalError when the body
    is not what the mapping describes)."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise FatalError("malformed_body") from exc
    found = read_path(body, resource.records) if resource.records else body
    if resource.records is None:
        if not isinstance(found, dict):
            raise FatalError("malformed_body")
        records = [found]
    else:
        if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
            raise FatalError("malformed_body")
        records = found
    link = read_path(body, resource.next) if resource.next else None
    if link is None:
        return records, None
    if not isinstance(link, str) or not link.startswith("/") or link.startswith("//"):
        raise FatalError("bad_next_link")  # only relative links on the same endpoint
    return records, link


def _follow(endpoint: str, link: str) -> str:
    """The URL of a relative ``next`` link: the endpoint's origin plus the link, which must
    stay under the endpoint's own path (FatalError otherwise: never another system)."""
    parts = urlsplit(endpoint)
    base = parts.path.rstrip("/")
    if base and not (link == base or link.startswith(base + "/")):
        raise FatalError("bad_next_link")
    return f"{parts.scheme}://{parts.netloc}{link}"


def _matches(record: _Record, where: Mapping[str, Any]) -> bool:
    for path, wanted in where.items():
        got = read_path(record, path)
        if isinstance(wanted, list):
            if got not in wanted:
                return False
        elif got != wanted:
            return False
    return True


def _item(
    item: FetchItem, status: ItemStatus, value: Any = None, source: str | None = None
) -> FetchedItem:
    return FetchedItem(
        element=item.element, bsn=item.bsn, status=status, value=value, source=source
    )
