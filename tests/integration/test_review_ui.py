"""The privacy officers' review web page over loopback HTTP, on SQLite and
PostgreSQL: sign-in with password and TOTP (refusals, lockout), CSRF, the
officer's scope, filters, exports, the break-glass review and the log's
integrity page; and what reaches the audit log."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema
import pytest
from sqlalchemy import select

from audit.models import AuditEntry
from audit.search import DecisionFilter, csv_header, export_lines, iter_decisions
from broker.core.clock import DUTCH
from broker.review import totp
from broker.review.accounts import NewSecret
from tests.conftest import AGENCIES
from tests.integration.conftest import Timed
from tests.integration.test_breakglass import DECLARED_AT, declaration

PASSWORD = "correct horse battery staple"
BSN_RUBEN = "999990007"
SUSPECT_HISTORY = {
    "agreement_id": "agr-vt-politie-hg",
    "purpose_id": "informatie_voor_veiligheidsbeoordeling",
    "provider": {"party": "politie"},
    "case_reference": "VT-LB-2026-0042",
    "subjects": [BSN_RUBEN],
    "elements": ["police.suspect_history_dv", "police.tijdelijk_huisverbod", "health.diagnosis"],
    "context": {"vt_case_status": "veiligheidsbeoordeling"},
}
KINDCHECK = {
    "agreement_id": "agr-ggz-vt-kindcheck",
    "purpose_id": "kindcheck_bekendheid",
    "provider": {"party": "veilig_thuis"},
    "subjects": ["999990111", "999990147"],
    "elements": ["vt.report_exists", "vt.case_status"],
    "context": {
        "kindcheck_decision": "meldcode_stappen_volgen",
        "minor_children_count": 1,
        "requester_role": "behandelaar",
    },
}
JSON_EXPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["generated_at", "filter", "count", "truncated", "entries"],
    "properties": {
        "count": {"type": "integer"},
        "entries": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "seq",
                    "time",
                    "exchange_id",
                    "subject",
                    "element",
                    "outcome",
                    "reason",
                    "legal_basis",
                    "requester",
                    "provider",
                    "purpose",
                    "agreement",
                ],
                "properties": {
                    "seq": {"type": "integer"},
                    "outcome": {"enum": ["allow", "deny"]},
                    "subject": {"type": "string", "pattern": "^(psn|hh):[0-9a-f]{40}$"},
                    "legal_basis": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@dataclass
class Review:
    timed: Timed

    @property
    def base(self) -> str:
        return self.timed.harness.broker.base_url

    async def account(
        self, username: str, *agencies: str, broker_officer: bool = False
    ) -> NewSecret:
        accounts = self.timed.harness.broker.services.review.accounts
        return await accounts.add(
            username=username,
            password=PASSWORD,
            agencies=[AGENCIES[a] for a in agencies],
            broker_officer=broker_officer,
        )

    def code(self, secret: str, steps: int = 0) -> str:
        return totp.totp(secret, self.timed.clock().timestamp() + steps * totp.PERIOD)

    def browser(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=30)

    async def login(
        self,
        http: httpx.AsyncClient,
        username: str,
        *,
        password: str = PASSWORD,
        code: str,
    ) -> httpx.Response:
        form = await http.get("/review/login")
        assert form.status_code == 200
        return await http.post(
            "/review/login",
            data={
                "username": username,
                "password": password,
                "code": code,
                "csrf": csrf_of(form.text),
            },
        )

    async def signed_in(self, new: NewSecret) -> httpx.AsyncClient:
        # Each sign-in uses a fresh TOTP step: a code is never accepted twice.
        self.timed.clock.advance(seconds=totp.PERIOD)
        http = self.browser()
        response = await self.login(http, new.account.username, code=self.code(new.totp_secret))
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/review/trail"
        return http

    @asynccontextmanager
    async def session(self, new: NewSecret) -> AsyncIterator[httpx.AsyncClient]:
        http = await self.signed_in(new)
        try:
            yield http
        finally:
            await http.aclose()

    async def entries(self, kind: str) -> list[dict[str, Any]]:
        async with self.timed.harness.broker.services.db.session() as session:
            rows = (
                await session.scalars(
                    select(AuditEntry).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)
                )
            ).all()
        return [json.loads(r.entry) for r in rows]

    async def all_entries(self) -> list[str]:
        async with self.timed.harness.broker.services.db.session() as session:
            return list((await session.scalars(select(AuditEntry.entry))).all())


@pytest.fixture
def review(timed: Timed) -> Review:
    timed.clock.now = DECLARED_AT
    return Review(timed)


async def _exchanges(review: Review) -> None:
    await review.timed.exchange("veilig_thuis", SUSPECT_HISTORY)
    await review.timed.exchange("ggz", KINDCHECK)


async def test_sign_in_refusals_lockout_and_audit(review: Review) -> None:
    anna = await review.account("anna", "veilig_thuis")
    async with review.browser() as http:
        page = await http.get("/review/trail")
        assert (page.status_code, page.headers["location"]) == (303, "/review/login")

        form = await http.get("/review/login")
        assert "default-src 'none'" in form.headers["content-security-policy"]
        login_cookie = form.headers["set-cookie"].lower()
        assert "httponly" in login_cookie and "samesite=strict" in login_cookie

        wrong_pw = await review.login(
            http, "anna", password="wrong password!", code=review.code(anna.totp_secret)
        )
        assert wrong_pw.status_code == 401 and "Sign-in failed" in wrong_pw.text
        valid = {review.code(anna.totp_secret, steps) for steps in (-1, 0, 1)}
        wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)
        wrong_code = await review.login(http, "anna", code=wrong)
        assert wrong_code.status_code == 401
        unknown = await review.login(http, "nobody", code="123456")
        assert unknown.status_code == 401
        assert "broker_review_session" not in http.cookies

        ok = await review.login(http, "anna", code=review.code(anna.totp_secret))
        assert ok.status_code == 303
        session_cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in session_cookie and "samesite=strict" in session_cookie
        assert "path=/review" in session_cookie
        trail = await http.get("/review/trail")
        assert trail.status_code == 200 and "anna" in trail.text

        # The same code again (a replay) is refused, even with the right password.
        async with review.browser() as other:
            replay = await review.login(other, "anna", code=review.code(anna.totp_secret))
            assert replay.status_code == 401

        # Sign-out ends the session on the server: the old cookie no longer works.
        cookie = http.cookies["broker_review_session"]
        out = await http.post("/review/logout", data={"csrf": csrf_of(trail.text)})
        assert (out.status_code, out.headers["location"]) == (303, "/review/login")
    async with review.browser() as stale:
        stale.cookies.set("broker_review_session", cookie, path="/review")
        assert (await stale.get("/review/trail")).status_code == 303

    # Five failures lock the account: then even the right password and code are refused.
    review.timed.clock.advance(seconds=totp.PERIOD)
    async with review.browser() as http:
        for attempt in range(5):
            r = await review.login(
                http, "anna", password="not the password", code=review.code(anna.totp_secret)
            )
            # The replayed code above counted as the first failure.
            assert r.status_code == (401 if attempt < 3 else 429), attempt
        locked = await review.login(http, "anna", code=review.code(anna.totp_secret))
        assert locked.status_code == 429 and "Too many failed attempts" in locked.text
    review.timed.clock.advance(minutes=16)
    await (await review.signed_in(anna)).aclose()

    logins = await review.entries("officer_login")
    reasons = [(e["account_id"], e["result"], e["reason"]) for e in logins]
    account = anna.account.id
    assert reasons[:5] == [
        (account, "failure", "bad_password"),
        (account, "failure", "bad_totp"),
        (None, "failure", "unknown_account"),
        (account, "success", None),
        (account, "failure", "totp_reused"),
    ]
    assert (account, "failure", "locked") in reasons
    assert [e for e in logins if e["locked"]]
    assert reasons[-1] == (account, "success", None)
    assert await review.entries("officer_logout")
    for text in await review.all_entries():
        assert "anna" not in text and PASSWORD not in text and "nobody" not in text


async def test_csrf_is_required(review: Review) -> None:
    anna = await review.account("anna", "veilig_thuis")
    async with review.browser() as http:
        await http.get("/review/login")
        no_token = await http.post(
            "/review/login",
            data={"username": "anna", "password": PASSWORD, "code": review.code(anna.totp_secret)},
        )
        assert no_token.status_code == 403
        assert no_token.headers["content-type"].startswith("application/problem+json")
        assert no_token.json()["code"] == "csrf_invalid"
    async with review.session(anna) as http:
        trail = await http.get("/review/trail")
        token = csrf_of(trail.text)
        forged = await http.post("/review/trail", data={"csrf": "forged", "outcome": "deny"})
        assert (forged.status_code, forged.json()["code"]) == (403, "csrf_invalid")
        cross = await http.post(
            "/review/trail",
            data={"csrf": token, "outcome": "deny"},
            headers={"Origin": "https://evil.example"},
        )
        assert (cross.status_code, cross.json()["code"]) == (403, "csrf_invalid")
        fine = await http.post("/review/trail", data={"csrf": token, "outcome": "deny"})
        assert fine.status_code == 303
        no_logout = await http.post("/review/logout", data={"csrf": "forged"})
        assert no_logout.status_code == 403
        assert (await http.get("/review/trail")).status_code == 200


async def _total(http: httpx.AsyncClient, query: str = "") -> int:
    page = await http.get("/review/trail" + (f"?{query}" if query else ""))
    assert page.status_code == 200, page.text
    match = re.search(r'<span id="total">(\d+)</span>', page.text)
    assert match, page.text
    return int(match.group(1))


async def test_scope_filters_and_exports(review: Review) -> None:
    await _exchanges(review)
    vt = await review.account("vt-officer", "veilig_thuis")
    police = await review.account("police-officer", "politie")
    ggz = await review.account("ggz-officer", "ggz")
    chief = await review.account("chief", broker_officer=True)

    async with (
        review.session(vt) as vt_http,
        review.session(police) as police_http,
        review.session(ggz) as ggz_http,
        review.session(chief) as chief_http,
    ):
        # VT is requester of the first exchange (3 items) and provider of the second (4).
        assert await _total(vt_http) == 7
        assert await _total(police_http) == 3
        assert await _total(ggz_http) == 4
        assert await _total(chief_http) == 7
        police_page = await police_http.get("/review/trail")
        assert "kindcheck_bekendheid" not in police_page.text.split('<table class="trail"')[1]
        ggz_page = await ggz_http.get("/review/trail")
        assert (
            "informatie_voor_veiligheidsbeoordeling"
            not in ggz_page.text.split('<table class="trail"')[1]
        )
        # Filtering on another agency does not widen the scope.
        assert await _total(ggz_http, f"agency={AGENCIES['politie']}") == 0

        # Filters.
        assert await _total(vt_http, "outcome=deny") == 3
        assert await _total(vt_http, "outcome=allow") == 4
        assert await _total(vt_http, "reason=deny_element_not_allowed") == 3
        assert await _total(vt_http, "purpose=kindcheck_bekendheid") == 4
        assert await _total(vt_http, "agreement=agr-vt-politie-hg") == 3
        assert await _total(vt_http, f"agency={AGENCIES['ggz']}") == 4
        today = datetime.now(DUTCH).date()  # audit entries carry the time of their commit
        assert await _total(vt_http, f"since={today}&until={today}") == 7
        assert await _total(vt_http, f"since={today + timedelta(days=1)}") == 0
        bad = await vt_http.get("/review/trail?outcome=maybe")
        assert bad.status_code == 422

        # A subject is searched by BSN in a POST; the URL carries only the pseudonym.
        token = csrf_of((await vt_http.get("/review/trail")).text)
        found = await vt_http.post("/review/trail", data={"csrf": token, "bsn": BSN_RUBEN})
        assert found.status_code == 303
        location = found.headers["location"]
        assert BSN_RUBEN not in location
        subject = parse_qs(urlsplit(location).query)["subject"][0]
        assert subject.startswith("psn:")
        assert await _total(vt_http, f"subject={subject}") == 3
        assert await _total(ggz_http, f"subject={subject}") == 0
        invalid = await vt_http.post("/review/trail", data={"csrf": token, "bsn": "123456789"})
        assert invalid.status_code == 422 and "Not a valid BSN" in invalid.text

        # Exports of the current filter.
        exported = await vt_http.get(f"/review/export.csv?outcome=deny&subject={subject}")
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == 1
        assert rows[0]["element"] == "health.diagnosis" and rows[0]["outcome"] == "deny"
        assert rows[0]["subject"] == subject and rows[0]["requester"] == AGENCIES["veilig_thuis"]

        as_json = await vt_http.get("/review/export.json")
        document = as_json.json()
        jsonschema.validate(document, JSON_EXPORT_SCHEMA)
        assert document["count"] == 7 and len(document["entries"]) == 7

        # The exports write the entries exactly as `broker audit export` does.
        assert exported.text.splitlines()[0] == csv_header().strip()
        ldv_response = await vt_http.get("/review/export-ldv.jsonl?purpose=kindcheck_bekendheid")
        assert ldv_response.headers["content-type"].startswith("application/x-ndjson")
        ldv = [json.loads(line) for line in ldv_response.text.splitlines()]
        assert len(ldv) == 4
        record = ldv[0]
        assert record["trace_id"] is None or re.fullmatch(r"[0-9a-f]{32}", record["trace_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", record["operation_id"])
        assert record["processing_activity_id"].startswith(
            "urn:broker:agreement:agr-ggz-vt-kindcheck:"
        )
        assert record["processing_activity_id"].endswith(":purpose:kindcheck_bekendheid")
        assert record["data_subject_id"].startswith(("psn:", "hh:"))
        assert record["foreign_operation"]["entity"] == f"urn:oin:{AGENCIES['ggz']}"
        entries = [
            e
            async for e in iter_decisions(
                review.timed.harness.broker.services.db,
                DecisionFilter(purpose="kindcheck_bekendheid"),
            )
        ]
        origin = review.timed.harness.broker.settings.log_origin
        assert ldv_response.text == "".join(export_lines(entries, "ldv", log_origin=origin))

        assert (await ggz_http.get("/review/export.json?purpose=agr")).json()["count"] == 0

        trends = await vt_http.get("/review/trends")
        assert trends.status_code == 200
        assert trends.text.count("<svg") == 3 and "<script" not in trends.text
        assert "deny_element_not_allowed" in trends.text

    reads = await review.entries("review_trail_read")
    assert {e["action"] for e in reads} == {"search", "export"}
    assert {e["format"] for e in reads if e["action"] == "export"} == {"csv", "json", "ldv"}
    assert any(e["filter"]["subject"] == subject for e in reads)
    for text in await review.all_entries():
        assert BSN_RUBEN not in text


async def test_break_glass_review_is_scoped_and_audited(review: Review) -> None:
    created = await review.timed.call(
        "veilig_thuis", "POST", "/v1/acute-declarations", declaration()
    )
    assert created.status_code == 201, created.text
    vt = await review.account("vt-officer", "veilig_thuis")
    police = await review.account("police-officer", "politie")
    async with review.session(police) as police_http:
        queue = await police_http.get("/review/breakglass")
        assert "ACU-T1" not in queue.text
        refused = await police_http.post(
            "/review/breakglass/ACU-T1", data={"csrf": csrf_of(queue.text), "decision": "approve"}
        )
        assert refused.status_code == 404
    async with review.session(vt) as http:
        queue = await http.get("/review/breakglass")
        assert "ACU-T1" in queue.text and "Knife threat" in queue.text
        token = csrf_of(queue.text)
        question = await http.post(
            "/review/breakglass/ACU-T1", data={"csrf": token, "decision": "question"}
        )
        assert question.status_code == 422 and "Say what is questioned" in question.text
        approved = await http.post(
            "/review/breakglass/ACU-T1",
            data={"csrf": token, "decision": "approve", "comment": "Proportionate"},
        )
        assert approved.status_code == 303
        done = await http.get(approved.headers["location"])
        assert "Review of ACU-T1 recorded" in done.text
        assert "ACU-T1" in (await http.get("/review/breakglass?status=approved")).text
        again = await http.post(
            "/review/breakglass/ACU-T1", data={"csrf": token, "decision": "approve"}
        )
        assert again.status_code == 409

    reviewed = await review.entries("acute_declaration_reviewed")
    assert len(reviewed) == 1
    assert reviewed[0]["reviewed_by"] == f"officer:{vt.account.id}"
    assert reviewed[0]["review"] == "approved"
    for text in await review.all_entries():
        assert "Proportionate" not in text


async def test_integrity_page_and_verification_run(review: Review) -> None:
    await _exchanges(review)
    chief = await review.account("chief", broker_officer=True)
    vt = await review.account("vt-officer", "veilig_thuis")
    async with review.session(chief) as http:
        page = await http.get("/review/integrity")
        assert page.status_code == 200
        assert "never run from this page" in page.text
        assert "no witness has cosigned" in page.text
        ran = await http.post("/review/integrity/verify", data={"csrf": csrf_of(page.text)})
        assert ran.status_code == 303
        page = await http.get("/review/integrity")
        assert "verified" in page.text.split('id="last-run"')[1]
    async with review.session(vt) as http:
        page = await http.get("/review/integrity")
        assert 'id="verify"' not in page.text
        refused = await http.post("/review/integrity/verify", data={"csrf": csrf_of(page.text)})
        assert (refused.status_code, refused.json()["code"]) == (403, "not_a_privacy_officer")
    runs = await review.entries("audit_verification_run")
    assert len(runs) == 1 and runs[0]["ok"] is True and runs[0]["account_id"] == chief.account.id


async def test_session_expires(review: Review) -> None:
    anna = await review.account("anna", "veilig_thuis")
    async with review.session(anna) as http:
        assert (await http.get("/review/trail")).status_code == 200
        review.timed.clock.advance(minutes=31)  # idle for longer than 30 minutes
        assert (await http.get("/review/trail")).status_code == 303
    review.timed.clock.advance(seconds=60)
    async with review.session(anna) as http:
        for _ in range(20):  # active, but past the 8-hour lifetime
            review.timed.clock.advance(minutes=25)
            await http.get("/review/breakglass")
        assert review.timed.clock.now - DECLARED_AT > timedelta(hours=8)
        assert (await http.get("/review/trail")).status_code == 303


async def test_the_trail_lists_publication_deliveries(review: Review) -> None:
    """Decisions on a published event (recipient = requester, publisher = provider)
    are in the trail of both sides' officers, as exchanges are."""
    from tests.integration.test_publications import event

    published = await review.timed.call("politie", "POST", "/v1/publications", event())
    assert published.status_code == 202, published.text
    vt = await review.account("vt-officer", "veilig_thuis")
    police = await review.account("police-officer", "politie")
    ggz = await review.account("ggz-officer", "ggz")
    async with (
        review.session(vt) as vt_http,
        review.session(police) as police_http,
        review.session(ggz) as ggz_http,
    ):
        # Four items decided for the one Veilig Thuis recipient (one of them denied).
        assert await _total(vt_http) == 4
        assert await _total(police_http) == 4
        assert await _total(ggz_http) == 0
        assert await _total(vt_http, "purpose=zorgmelding_na_incident&outcome=deny") == 1
