"""A simulated partner system for one party, serving the broker's partner API.

``POST /broker/v1/fetch`` (wire format: adapters/partner_api/README.md). Values come from
:mod:`adapters.simulators.values`; only requested items are answered. An unknown BSN gives
``not_found``. A ``boolean_only`` request is answered for every item with ``status: "ok"`` and a
boolean value (true when the partner holds a record / a true value, else false), so that a
"no" has exactly the same shape as a "yes".
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.simulators.faults import FAULTS_KEY, FaultConfig, FaultInjector, add_admin_routes
from adapters.simulators.values import World, element_value

__all__ = ["PARTY_KEY", "PARTY_ORDER", "create_partner_app"]

PARTY_KEY = web.AppKey("party", str)

# The fixed order in which the runner assigns ports: party i gets base_port + 1 + i.
PARTY_ORDER: tuple[str, ...] = (
    "politie",
    "veilig_thuis",
    "raad_kinderbescherming",
    "ggz",
    "huisarts",
    "school",
    "schuldhulpverlening",
    "gemeente_wijkteam",
    "gecertificeerde_instelling",
    "openbaar_ministerie",
    "zorg_en_veiligheidshuis",
)

MAX_ITEMS = 1000
_EXTRA_ELEMENTS = ("health.diagnosis", "vt.reporter_identity")


class _Subject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bsn: str = Field(pattern=r"^[0-9]{9}$")
    kind: Literal["person", "household"]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    element: str = Field(min_length=1, max_length=200)
    subject: _Subject


class _FetchBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    exchange_id: str
    request_id: str
    agreement_id: str
    purpose_id: str
    recipient_party: str
    response_form: Literal["full", "boolean_only"]
    items: list[_Item] = Field(max_length=MAX_ITEMS)


def _problem(status: int, title: str) -> web.Response:
    return web.json_response(
        {"title": title, "status": status}, status=status, content_type="application/problem+json"
    )


def _answer(world: World, party: str, item: _Item, boolean_only: bool) -> dict[str, Any]:
    person = world.registry.by_bsn(item.subject.bsn)
    found = element_value(world, party, item.element, person) if person else None
    out: dict[str, Any] = {"element": item.element, "bsn": item.subject.bsn}
    if boolean_only:
        value = found is not None and (found.value if isinstance(found.value, bool) else True)
        out.update(status="ok", value=value)
    elif found is None:
        out.update(status="not_found", value=None)
    else:
        out.update(status="ok", value=found.value, source=found.source)
    return out


def _unrequested(world: World, requested: set[tuple[str, str]]) -> dict[str, Any] | None:
    """A record the broker did not ask for (a provider bug the adapter must filter out)."""
    for element in _EXTRA_ELEMENTS:
        for person in world.registry.iter_persons():
            if (element, person.bsn) not in requested:
                return {
                    "element": element,
                    "bsn": person.bsn,
                    "status": "ok",
                    "value": {
                        "code_system": "DSM-5",
                        "code": "(fictional)",
                        "display": "(fictional) not requested",
                        "status": "actief",
                    },
                }
    return None


def create_partner_app(
    party: str,
    world: World,
    *,
    faults: FaultConfig | None = None,
    admin: bool = True,
    seed: int = 0,
) -> web.Application:
    """An aiohttp app simulating ``party``'s system; ``admin`` enables the /_sim endpoints."""
    if party not in PARTY_ORDER:
        raise ValueError(f"unknown party {party!r}")
    injector = FaultInjector.create(faults, seed=seed)

    async def fetch(request: web.Request) -> web.StreamResponse:
        failure = await injector.before(request)
        if failure is not None:
            return failure
        try:
            body = _FetchBody.model_validate_json(await request.read())
        except ValidationError:
            return _problem(400, "invalid fetch request")
        boolean_only = body.response_form == "boolean_only"
        cfg = injector.config
        answers = [_answer(world, party, item, boolean_only) for item in body.items]
        if cfg.omit_item and answers:
            answers.pop()
        if cfg.non_boolean and boolean_only:
            for a in answers:
                a["value"] = "ja" if a["value"] else "nee"
        if cfg.extra_item:
            extra = _unrequested(world, {(i.element, i.subject.bsn) for i in body.items})
            if extra is not None:
                if boolean_only:
                    extra["value"] = True
                answers.append(extra)
        headers = {"X-Request-ID": request.headers.get("X-Request-ID", body.request_id)}
        return web.json_response({"items": answers}, headers=headers)

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[PARTY_KEY] = party
    app[FAULTS_KEY] = injector
    app.router.add_post("/broker/v1/fetch", fetch)
    if admin:
        add_admin_routes(app, injector)
    return app
