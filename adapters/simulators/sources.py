"""Simulated source systems with their own JSON REST APIs (records: ``source_data/``).

- politie: ``/api/v1/persons/{bsn}`` and its ``/incidents``, ``/zorgmeldingen``,
  ``/house-bans``;
- raad_kinderbescherming: ``/rvdk/api/v1/personen/{bsn}``,
  ``/rvdk/api/v1/kinderen/{bsn}/{onderzoeken,maatregelen,gezag}``;
- veilig_thuis: ``/vt/api/v1/personen/{bsn}`` and the searches
  ``/vt/api/v1/{dossiers,meldingen,veiligheidsbeoordelingen,onderzoeksconclusies,
  veiligheidsafspraken,keteninformatie}?bsn=``;
- gemeente_wijkteam and schuldhulpverlening (one municipal API):
  ``/sociaal-domein/api/v1/inwoners/{bsn}`` and its ``/mda-casussen``, ``/signalen``,
  ``/vroegsignalen``, ``/schuldhulptraject``, ``/woonsituatie``.

Conventions shared by all of them:

- an unknown BSN gives ``404`` (problem+json) on a ``/…/{bsn}`` path; the Veilig Thuis search
  endpoints (``?bsn=``) answer an empty list instead;
- collections are paged: ``page`` (from 1) and ``page_size`` (default 2 for the police, 20
  elsewhere, at most 100); the body holds the records, ``page`` and ``links.next`` (a relative
  link, absent on the last page);
- ``fields=a,b.c`` returns only those (dotted) fields of every record: the source-side filter;
- the shared fault injection and ``/_sim`` admin endpoints (``faults.py``) apply; in addition
  ``extra_item`` ignores ``fields`` (the source returns more than was asked for), and
  ``GET|DELETE /_sim/source-requests`` lists the resources and fields requested (no BSNs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from adapters.simulators.faults import (
    FAULTS_KEY,
    FaultConfig,
    FaultInjector,
    _loopback_only,
    add_admin_routes,
)
from adapters.simulators.registry import Person
from adapters.simulators.source_data import RESOURCES
from adapters.simulators.values import World

__all__ = ["SOURCE_PARTIES", "SourceRoute", "create_source_app", "source_routes"]

# The parties with a source system of their own, in the runner's port order.
SOURCE_PARTIES: tuple[str, ...] = (
    "politie",
    "raad_kinderbescherming",
    "veilig_thuis",
    "gemeente_wijkteam",
    "schuldhulpverlening",
)
MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class SourceRoute:
    path: str  # aiohttp route; ``{bsn}`` in the path, or the ``bsn`` query parameter
    resource: str  # key in source_data.RESOURCES
    records: str | None  # body key of the record list; None: one record is the body
    page_size: int = 20


def _police() -> list[SourceRoute]:
    base = "/api/v1/persons/{bsn}"
    return [
        SourceRoute(base, "police_person", None),
        SourceRoute(f"{base}/incidents", "police_incidents", "items", page_size=2),
        SourceRoute(f"{base}/zorgmeldingen", "police_zorgmeldingen", "items", page_size=2),
        SourceRoute(f"{base}/house-bans", "police_house_bans", "items", page_size=2),
    ]


def _raad() -> list[SourceRoute]:
    child = "/rvdk/api/v1/kinderen/{bsn}"
    return [
        SourceRoute("/rvdk/api/v1/personen/{bsn}", "raad_person", None),
        SourceRoute(f"{child}/onderzoeken", "raad_investigations", "onderzoeken"),
        SourceRoute(f"{child}/maatregelen", "raad_measures", "maatregelen"),
        SourceRoute(f"{child}/gezag", "raad_authority", None),
    ]


def _veilig_thuis() -> list[SourceRoute]:
    base = "/vt/api/v1"
    return [
        SourceRoute(f"{base}/personen/{{bsn}}", "vt_person", None),
        SourceRoute(f"{base}/dossiers", "vt_dossiers", "dossiers"),
        SourceRoute(f"{base}/meldingen", "vt_reports", "meldingen"),
        SourceRoute(f"{base}/veiligheidsbeoordelingen", "vt_assessments", "beoordelingen"),
        SourceRoute(f"{base}/onderzoeksconclusies", "vt_conclusions", "conclusies"),
        SourceRoute(f"{base}/veiligheidsafspraken", "vt_safety_agreements", "afspraken"),
        SourceRoute(f"{base}/keteninformatie", "vt_chain_information", "informatie"),
    ]


def _municipality() -> list[SourceRoute]:
    base = "/sociaal-domein/api/v1/inwoners/{bsn}"
    return [
        SourceRoute(base, "gm_resident", None),
        SourceRoute(f"{base}/mda-casussen", "gm_mda_cases", "casussen"),
        SourceRoute(f"{base}/signalen", "gm_signals", "signalen"),
        SourceRoute(f"{base}/vroegsignalen", "gm_arrears", "vroegsignalen"),
        SourceRoute(f"{base}/schuldhulptraject", "gm_debt_trajectory", None),
        SourceRoute(f"{base}/woonsituatie", "gm_housing", None),
    ]


_ROUTES: dict[str, Callable[[], list[SourceRoute]]] = {
    "politie": _police,
    "raad_kinderbescherming": _raad,
    "veilig_thuis": _veilig_thuis,
    "gemeente_wijkteam": _municipality,
    "schuldhulpverlening": _municipality,
}


def source_routes(party: str) -> list[SourceRoute]:
    return _ROUTES[party]()


# ---------------------------------------------------------------------- projection


def project(record: Any, paths: list[list[str]]) -> Any:
    """Only the given (split) dotted paths of a record; lists of objects are projected
    element by element."""
    if isinstance(record, list):
        return [project(r, paths) for r in record]
    if not isinstance(record, dict):
        return record
    out: dict[str, Any] = {}
    heads: dict[str, list[list[str]]] = {}
    for path in paths:
        heads.setdefault(path[0], []).append(path[1:])
    for head, rests in heads.items():
        if head not in record:
            continue
        if any(not rest for rest in rests):
            out[head] = record[head]
        else:
            out[head] = project(record[head], rests)
    return out


def _problem(status: int, title: str) -> web.Response:
    return web.json_response(
        {"title": title, "status": status}, status=status, content_type="application/problem+json"
    )


# ---------------------------------------------------------------------- app


def create_source_app(
    party: str,
    world: World,
    *,
    faults: FaultConfig | None = None,
    admin: bool = True,
    seed: int = 0,
) -> web.Application:
    """An aiohttp app serving ``party``'s source API over ``world``."""
    if party not in _ROUTES:
        raise ValueError(f"no source system for party {party!r}")
    injector = FaultInjector.create(faults, seed=seed)
    log: list[dict[str, Any]] = []

    def handler(route: SourceRoute) -> Callable[[web.Request], Any]:
        lookup = RESOURCES[route.resource]
        in_path = "{bsn}" in route.path

        async def handle(request: web.Request) -> web.StreamResponse:
            failure = await injector.before(request)
            if failure is not None:
                return failure
            bsn = request.match_info.get("bsn") if in_path else request.query.get("bsn")
            if not bsn or len(bsn) != 9 or not bsn.isdigit():
                return _problem(400, "bsn: nine digits required")
            fields = [f for f in request.query.get("fields", "").split(",") if f]
            log.append({"resource": route.resource, "fields": sorted(fields)})
            person: Person | None = world.registry.by_bsn(bsn)
            answer = lookup(world, person) if person is not None else None
            if answer is None:
                if in_path:
                    return _problem(404, "not found")
                answer = []
            paths = [f.split(".") for f in fields]
            if fields and not injector.config.extra_item:
                answer = project(answer, paths)
            headers = {"X-Request-ID": request.headers.get("X-Request-ID", "")}
            if route.records is None:
                if isinstance(answer, list):
                    return _problem(404, "not found")
                return web.json_response(answer, headers=headers)
            assert isinstance(answer, list)
            return web.json_response(_paged(request, route, answer), headers=headers)

        return handle

    app = web.Application(client_max_size=1024 * 1024)
    app[FAULTS_KEY] = injector
    for route in source_routes(party):
        app.router.add_get(route.path, handler(route))

    async def get_log(request: web.Request) -> web.Response:
        _loopback_only(request)
        return web.json_response(log)

    async def clear_log(request: web.Request) -> web.Response:
        _loopback_only(request)
        log.clear()
        return web.json_response([])

    if admin:
        add_admin_routes(app, injector)
        app.router.add_get("/_sim/source-requests", get_log)
        app.router.add_delete("/_sim/source-requests", clear_log)
    return app


def _paged(request: web.Request, route: SourceRoute, records: list[Any]) -> dict[str, Any]:
    try:
        page = max(1, int(request.query.get("page", "1")))
        size = min(MAX_PAGE_SIZE, max(1, int(request.query.get("page_size", route.page_size))))
    except ValueError:
        page, size = 1, route.page_size
    start = (page - 1) * size
    body: dict[str, Any] = {
        route.records or "items": records[start : start + size],
        "page": {"number": page, "size": size, "total_elements": len(records)},
        "links": {},
    }
    if start + size < len(records):
        query = {k: v for k, v in request.query.items() if k not in ("page", "page_size")}
        query.update(page=str(page + 1), page_size=str(size))
        body["links"]["next"] = f"{request.path}?{urlencode(query)}"
    return body
