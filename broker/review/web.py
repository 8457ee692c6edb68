"""The review web page (``/review``): server-rendered HTML for privacy officers.

Sign-in with username, password and TOTP code, or through an OpenID Connect
provider (``broker.review.oidc``); a server-side session in a
signed, HttpOnly, SameSite=Strict cookie (Secure over https) limited to
``/review``; a CSRF token on every form that changes something (the session's
token, or a signed double-submit cookie on the sign-in form), and a foreign
``Origin`` is refused. Pages send a strict Content-Security-Policy: only this
broker's own CSS, no script, charts are inline SVG.

A BSN typed into the subject filter is turned into its pseudonym on the POST
and the browser is redirected to the pseudonym's URL: a BSN never appears in a
URL, a log or the audit log.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from broker.core.clock import DUTCH
from broker.core.errors import (
    AuthenticationFailed,
    BrokerError,
    ErrorCode,
    Forbidden,
    InvalidRequest,
    NotFound,
    TooManyAttempts,
)
from broker.deps import ServicesDep
from broker.review import charts
from broker.review.accounts import SessionView
from broker.review.oidc import FLOW_COOKIE, FLOW_LIFETIME, ProviderUnavailable
from broker.review.service import ReviewService, TrailFilter, export_text, to_json

HERE = Path(__file__).parent
SESSION_COOKIE = "broker_review_session"
LOGIN_COOKIE = "broker_review_login"
STATIC = {"review.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

router = APIRouter(prefix="/review", include_in_schema=False)
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _secure(request: Request, services: ServicesDep) -> bool:
    return request.url.scheme == "https" or services.settings.public_url.startswith("https")


def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return str(rid) if rid else None


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


async def _session(request: Request, services: ServicesDep) -> SessionView | None:
    return await services.review.accounts.resolve(request.cookies.get(SESSION_COOKIE))


def _same_origin(request: Request) -> bool:
    """No ``Origin`` (older browsers, non-browser clients: the CSRF token decides), or
    the host this request was sent to (the scheme may differ behind a TLS proxy)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == request.headers.get("host")


def _check_csrf(request: Request, view: SessionView, token: str | None) -> None:
    if not (_same_origin(request) and token and hmac.compare_digest(token, view.csrf_token)):
        raise Forbidden("The form's CSRF token is missing or wrong", code=ErrorCode.CSRF_INVALID)


def _context(view: SessionView, names: dict[str, str], active: str) -> dict[str, Any]:
    officer = view.officer
    scope = (
        "all agencies (broker officer)"
        if officer.agencies is None
        else ", ".join(names.get(o, o) for o in sorted(officer.agencies))
    )
    return {
        "officer": officer,
        "scope": scope,
        "csrf": view.csrf_token,
        "names": names,
        "active": active,
    }


# ------------------------------------------------------------ static and sign-in
@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise NotFound("No such file")
    return FileResponse(
        HERE / "static" / name,
        media_type=STATIC[name],
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("")
async def home() -> RedirectResponse:
    return _see_other("/review/trail")


def _login_page(
    request: Request, services: ServicesDep, *, status: int = 200, error: str | None = None
) -> HTMLResponse:
    token, cookie = services.review.accounts.login_csrf()
    oidc = services.review.oidc
    response = _page(
        "login.html",
        status,
        csrf=token,
        error=error,
        oidc_name=oidc.display_name if oidc is not None else None,
        local=services.review.local_accounts,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=3600,
        path="/review/login",
        httponly=True,
        samesite="strict",
        secure=_secure(request, services),
    )
    return response


@router.get("/login")
async def login_form(request: Request, services: ServicesDep) -> Response:
    if await _session(request, services) is not None:
        return _see_other("/review/trail")
    return _login_page(request, services)


@router.post("/login")
async def login(
    request: Request,
    services: ServicesDep,
    *,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    code: Annotated[str, Form(max_length=16)] = "",
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    accounts = services.review.accounts
    if not services.review.local_accounts:
        raise NotFound("Local sign-in is switched off: sign in through OpenID Connect")
    if not _same_origin(request) or not accounts.check_login_csrf(
        request.cookies.get(LOGIN_COOKIE), csrf
    ):
        raise Forbidden("The form's CSRF token is missing or wrong", code=ErrorCode.CSRF_INVALID)
    try:
        signed = await accounts.login(
            username=username,
            password=password,
            code=code,
            address=request.client.host if request.client else "unknown",
            request_id=_request_id(request),
        )
    except TooManyAttempts:
        return _login_page(
            request,
            services,
            status=429,
            error="Too many failed attempts. Try again later or ask for your account to be reset.",
        )
    except AuthenticationFailed:
        return _login_page(
            request, services, status=401, error="Sign-in failed: username, password or code."
        )
    response = _see_other("/review/trail")
    _set_session(request, services, response, signed.cookie)
    response.delete_cookie(LOGIN_COOKIE, path="/review/login")
    return response


def _set_session(request: Request, services: ServicesDep, response: Response, cookie: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        cookie,  # a browser-session cookie; the server ends the session
        path="/review",
        httponly=True,
        samesite="strict",
        secure=_secure(request, services),
    )


# ------------------------------------------------------------ OpenID Connect
OIDC_FAILED = "Sign-in through your organisation failed. Try again, or ask your administrator."
OIDC_UNAVAILABLE = (
    "The identity provider cannot be reached, so you are not signed in. Try again later."
)


@router.get("/oidc/start")
async def oidc_start(request: Request, services: ServicesDep) -> Response:
    """To the provider's authorization endpoint, with a fresh state, nonce and PKCE."""
    oidc = services.review.oidc
    if oidc is None:
        raise NotFound("OpenID Connect sign-in is not configured")
    try:
        url, flow = await oidc.start()
    except ProviderUnavailable:
        return _login_page(request, services, status=503, error=OIDC_UNAVAILABLE)
    response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        FLOW_COOKIE,
        flow,
        max_age=FLOW_LIFETIME,
        path="/review/oidc",
        httponly=True,
        samesite="lax",  # the provider's redirect back is a cross-site top-level GET
        secure=_secure(request, services),
    )
    return response


@router.get("/oidc/callback")
async def oidc_callback(request: Request, services: ServicesDep) -> Response:
    oidc = services.review.oidc
    if oidc is None:
        raise NotFound("OpenID Connect sign-in is not configured")
    params = {
        k: v[:2048]
        for k, v in request.query_params.items()
        if k in ("code", "state", "error", "error_description")
    }
    try:
        signed = await oidc.finish(
            flow_cookie=request.cookies.get(FLOW_COOKIE),
            params=params,
            address=request.client.host if request.client else "unknown",
            request_id=_request_id(request),
        )
    except ProviderUnavailable:
        response: Response = _login_page(request, services, status=503, error=OIDC_UNAVAILABLE)
    except TooManyAttempts:
        response = _login_page(
            request, services, status=429, error="Too many failed attempts. Try again later."
        )
    except AuthenticationFailed:
        response = _login_page(request, services, status=401, error=OIDC_FAILED)
    else:
        # A page, not a redirect: the session cookie is SameSite=Strict, and a browser
        # does not send it on a redirect chain that a cross-site provider started.
        response = _page("signed_in.html", who=signed.officer.username)
        _set_session(request, services, response, signed.cookie)
    response.delete_cookie(FLOW_COOKIE, path="/review/oidc")
    return response


@router.post("/logout")
async def logout(
    request: Request, services: ServicesDep, csrf: Annotated[str, Form(max_length=128)] = ""
) -> Response:
    view = await _session(request, services)
    if view is not None:
        _check_csrf(request, view, csrf)
        await services.review.accounts.logout(view, request_id=_request_id(request))
    response = _see_other("/review/login")
    response.delete_cookie(SESSION_COOKIE, path="/review")
    return response


# ------------------------------------------------------------ the audit trail
def _day_start(value: date | None, *, next_day: bool = False) -> datetime | None:
    """A date of the form as the start of that day (or the next) in the Netherlands."""
    if value is None:
        return None
    day = value + timedelta(days=1) if next_day else value
    return datetime.combine(day, time(0, 0), tzinfo=DUTCH)


class _FilterQuery:
    """The trail filter as it travels in URLs (the subject as its pseudonym)."""

    def __init__(
        self,
        *,
        subject: Annotated[str | None, Query(pattern=r"^psn:[0-9a-f]{40}$")] = None,
        agency: Annotated[str | None, Query(max_length=20)] = None,
        purpose: Annotated[str | None, Query(max_length=128)] = None,
        agreement: Annotated[str | None, Query(max_length=128)] = None,
        outcome: Annotated[str | None, Query(max_length=8)] = None,
        reason: Annotated[str | None, Query(max_length=64)] = None,
        since: Annotated[date | None, Query()] = None,
        until: Annotated[date | None, Query()] = None,
    ) -> None:
        self.subject = subject or None
        self.values: dict[str, str | None] = {
            "agency": agency or None,
            "purpose": purpose or None,
            "agreement": agreement or None,
            "outcome": outcome or None,
            "reason": reason or None,
        }
        self.since = since
        self.until = until

    def build(self, review: ReviewService) -> TrailFilter:
        flt = review.make_filter(
            **self.values,
            since=_day_start(self.since),
            until=_day_start(self.until, next_day=True),
        )
        return replace(flt, subject=self.subject)

    def query(self, **extra: Any) -> str:
        values: dict[str, Any] = {"subject": self.subject, **self.values}
        values["since"] = self.since.isoformat() if self.since else None
        values["until"] = self.until.isoformat() if self.until else None
        values.update(extra)
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


FilterDep = Annotated[_FilterQuery, Depends()]


@router.get("/trail")
async def trail(
    request: Request,
    services: ServicesDep,
    q: FilterDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    view = await _session(request, services)
    if view is None:
        return _see_other("/review/login")
    return await _trail_page(request, services, view, q, page=page)


async def _trail_page(
    request: Request,
    services: ServicesDep,
    view: SessionView,
    q: _FilterQuery,
    *,
    page: int = 1,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    review = services.review
    options = await review.options(view.officer)
    names = await review.agency_names()
    result = None
    if error is None:
        try:
            flt = q.build(review)
            result = await review.search(
                view.officer, flt, page=page, request_id=_request_id(request)
            )
        except InvalidRequest as exc:
            error, status = exc.message, 422
    return _page(
        "trail.html",
        status,
        **_context(view, names, "trail"),
        options=options,
        q=q,
        result=result,
        error=error,
        query=q.query(),
        page_query=lambda n: q.query(page=n),
    )


@router.post("/trail")
async def trail_search(
    request: Request,
    services: ServicesDep,
    *,
    csrf: Annotated[str, Form(max_length=128)] = "",
    bsn: Annotated[str, Form(max_length=32)] = "",
    agency: Annotated[str, Form(max_length=20)] = "",
    purpose: Annotated[str, Form(max_length=128)] = "",
    agreement: Annotated[str, Form(max_length=128)] = "",
    outcome: Annotated[str, Form(max_length=8)] = "",
    reason: Annotated[str, Form(max_length=64)] = "",
    since: Annotated[str, Form(max_length=10)] = "",
    until: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """The filter form: the BSN becomes its pseudonym here; then to the GET page."""
    view = await _session(request, services)
    if view is None:
        return _see_other("/review/login")
    _check_csrf(request, view, csrf)
    try:
        since_d = date.fromisoformat(since) if since else None
        until_d = date.fromisoformat(until) if until else None
    except ValueError:
        since_d = until_d = None
        bad_date = True
    else:
        bad_date = False
    q = _FilterQuery(
        agency=agency,
        purpose=purpose,
        agreement=agreement,
        outcome=outcome,
        reason=reason,
        since=since_d,
        until=until_d,
    )
    if bad_date:
        return await _trail_page(
            request, services, view, q, error="Dates are YYYY-MM-DD", status=422
        )
    try:
        flt = services.review.make_filter(
            bsn=bsn,
            agency=agency,
            purpose=purpose,
            agreement=agreement,
            outcome=outcome,
            reason=reason,
        )
    except InvalidRequest as exc:
        return await _trail_page(request, services, view, q, error=exc.message, status=422)
    q.subject = flt.subject
    return _see_other("/review/trail?" + q.query())


async def _export(
    request: Request,
    services: ServicesDep,
    q: _FilterQuery,
    output: Literal["csv", "json", "ldv"],
) -> Response:
    view = await _session(request, services)
    if view is None:
        return _see_other("/review/login")
    review = services.review
    flt = q.build(review)
    rows = await review.export_rows(
        view.officer, flt, output_format=output, request_id=_request_id(request)
    )
    now = review.now()
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    origin = services.settings.log_origin
    if output == "csv":
        headers["Content-Disposition"] = f'attachment; filename="audit-trail-{stamp}.csv"'
        return Response(
            export_text(rows, "csv", log_origin=origin),
            media_type="text/csv; charset=utf-8",
            headers=headers,
        )
    if output == "json":
        headers["Content-Disposition"] = f'attachment; filename="audit-trail-{stamp}.json"'
        return Response(
            to_json(rows, flt, now),
            media_type="application/json",
            headers=headers,
        )
    # LDV records, one JSON object per line, as `broker audit export --format ldv`.
    headers["Content-Disposition"] = f'attachment; filename="ldv-{stamp}.jsonl"'
    return Response(
        export_text(rows, "ldv", log_origin=origin),
        media_type="application/x-ndjson",
        headers=headers,
    )


@router.get("/export.csv")
async def export_csv(request: Request, services: ServicesDep, q: FilterDep) -> Response:
    return await _export(request, services, q, "csv")


@router.get("/export.json")
async def export_json(request: Request, services: ServicesDep, q: FilterDep) -> Response:
    return await _export(request, services, q, "json")


@router.get("/export-ldv.jsonl")
async def export_ldv(request: Request, services: ServicesDep, q: FilterDep) -> Response:
    return await _export(request, services, q, "ldv")


# ------------------------------------------------------------ break-glass review
@router.get("/breakglass")
async def breakglass(
    request: Request,
    services: ServicesDep,
    status: Annotated[Literal["pending", "approved", "questioned", "all"], Query()] = "pending",
    done: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    view = await _session(request, services)
    if view is None:
        return _see_other("/review/login")
    review = services.review
    rows = await review.declarations(view.officer, status)
    names = await review.agency_names()
    return _page(
        "breakglass.html",
        **_context(view, names, "breakglass"),
        rows=rows,
        shown=status,
        done=done,
    )


@router.post("/breakglass/{declaration_id}")
async def breakglass_review(
    request: Request,
    services: ServicesDep,
    declaration_id: str,
    *,
    csrf: Annotated[str, Form(max_length=128)] = "",
    decision: Annotated[str, Form(max_length=16)] = "",
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    view = await _session(request, services)
    if view is None:
        return _see_other("/review/login")
    _check_csrf(request, view, csrf)
    try:
        await services.review.review(
            view.officer,
            declaration_id,
            decision=decision,
            comment=comment.strip() or None,
            request_id=_request_id(request),
        )
    except BrokerError as exc:
        if exc.status >= 500:
            raise
        names = await services.review.agency_names()
        rows = await services.review.declarations(view.officer, "pending")
        return _page(
            "breakglass.html",
            exc.status,
            **_context(view, names, "breakglass"),
            rows=rows,
            shown="pending",
            done=None,
            error=exc.message,
        )
    return _see_other("/review/breakglass?" + urlencode({"done": declaration_id}))


# ------------------------------------------------------------ trends and integrity
# ------------------------------------------------------------ information duties (AVG art. 14)
@router.get("/information-duties")
async def information_duties(
    request: Request,
    services: ServicesDep,
    status: Annotated[
        Literal["overdue", "open", "embargoed", "fulfilled", "all"], Query()
    ] = "overdue",
) -> Response:
    """Duties held by the officer's agencies; overdue ones first of all."""
    view = await _session(request, services)
    if view is None:
        return _see_other("/review/login")
    rows = await services.information_duties.list_for(status=status, scope=view.officer.agencies)
    names = await services.review.agency_names()
    return _page(
        "information_duties.html",
        **_context(view, names, "information_duties"),
        rows=rows,
        shown=status,
    )


@router.get("/trends")
async def trends(request: Request, services: ServicesDep) -> Response:
    view = await _session(request, services)
    if view is None:
        return _see_other("/review/login")
    review = services.review
    data = await review.trends(view.officer)
    names = await review.agency_names()
    first, last = data.since.date(), data.until.date()
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    per_agency: dict[str, dict[str, int]] = {}
    for d in data.exchanges_per_day:
        per_agency.setdefault(d.key, {})[d.day] = d.count
    denied = {"deny": {d.day: d.count for d in data.denied_per_day}}
    return _page(
        "trends.html",
        **_context(view, names, "trends"),
        data=data,
        exchanges_chart=charts.stacked_days(
            "Exchanges per day per requesting agency", days, per_agency, names
        ),
        denied_chart=charts.stacked_days(
            "Denied items per day",
            days,
            denied,
            {"deny": "denied items"},
            colors={"deny": charts.DENY},
        ),
        purpose_chart=charts.outcome_bars(
            "Allowed and denied items per purpose", data.outcomes_per_purpose
        ),
    )


@router.get("/integrity")
async def integrity(request: Request, services: ServicesDep) -> Response:
    view = await _session(request, services)
    if view is None:
        return _see_other("/review/login")
    review = services.review
    names = await review.agency_names()
    return _page(
        "integrity.html", **_context(view, names, "integrity"), data=await review.integrity()
    )


@router.post("/integrity/verify")
async def integrity_verify(
    request: Request, services: ServicesDep, csrf: Annotated[str, Form(max_length=128)] = ""
) -> Response:
    view = await _session(request, services)
    if view is None:
        return _see_other("/review/login")
    _check_csrf(request, view, csrf)
    await services.review.verify(view.officer, request_id=_request_id(request))
    return _see_other("/review/integrity")
