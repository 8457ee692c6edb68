"""OpenID Connect sign-in to the review page, against a real provider over
loopback HTTP (``tests/support/oidc_provider.py``): the full authorization-code
flow with PKCE through httpx following redirects, on SQLite and PostgreSQL;
every defect of state or ID token refused with one generic message and
audited; unknown subjects refused; officers admitted by a role claim; both
client authentications; and a provider that is down."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select

from audit.models import AuditEntry
from broker.crypto.keys import generate_jwk, public_only
from broker.review.accounts import AccountService, AccountView
from broker.review.models import OfficerAccount
from broker.review.oidc import FLOW_COOKIE
from tests.conftest import AGENCIES, RunningBroker, broker_settings, free_port, serve_broker
from tests.integration.conftest import Clock
from tests.integration.test_review_ui import csrf_of
from tests.support.oidc_provider import OidcProvider

VT = AGENCIES["veilig_thuis"]
POLICE = AGENCIES["politie"]
GENERIC = "Sign-in through your organisation failed"
UNAVAILABLE = "The identity provider cannot be reached"
NO_SIMULATORS: dict[str, Any] = {"brp": "http://127.0.0.1:9", "parties": {}}


@dataclass
class Setup:
    broker: RunningBroker
    provider: OidcProvider
    clock: Clock

    @property
    def base(self) -> str:
        return self.broker.base_url

    @property
    def accounts(self) -> AccountService:
        return self.broker.services.review.accounts

    def browser(self, *, follow: bool = True) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=30, follow_redirects=follow)

    async def entries(self, kind: str) -> list[dict[str, Any]]:
        async with self.broker.services.db.session() as session:
            rows = (
                await session.scalars(
                    select(AuditEntry.entry).where(AuditEntry.kind == kind).order_by(AuditEntry.seq)
                )
            ).all()
        return [json.loads(r) for r in rows]

    async def add_anna(self) -> AccountView:
        """Officer Anna's OpenID Connect account (subject officer-anna at this
        provider), officer for Veilig Thuis only."""
        return await self.accounts.add_oidc(
            username="anna",
            issuer=self.provider.issuer,
            subject="officer-anna",
            agencies=[VT],
            broker_officer=False,
        )

    async def sign_in(self, http: httpx.AsyncClient) -> httpx.Response:
        """The whole flow: start, the provider, the callback (redirects followed)."""
        return await http.get("/review/oidc/start")


@dataclass
class Launcher:
    database_url: str
    tmp: Path
    clock: Clock

    def __call__(self, **overrides: Any) -> _Running:
        return _Running(self, overrides)


class _Running:
    def __init__(self, launcher: Launcher, overrides: dict[str, Any]) -> None:
        self.launcher = launcher
        self.overrides = overrides

    async def __aenter__(self) -> Setup:
        launcher = self.launcher
        provider_args = self.overrides.pop("provider", {})
        port = free_port()
        redirect = f"http://127.0.0.1:{port}/review/oidc/callback"
        self.provider = OidcProvider(
            redirect_uris=[redirect], clock=lambda: launcher.clock().timestamp(), **provider_args
        )
        self._provider_cm = self.provider.serve()
        await self._provider_cm.__aenter__()
        values: dict[str, Any] = {
            "public_url": f"http://127.0.0.1:{port}",
            "review_oidc_issuer": self.provider.issuer,
            "review_oidc_client_id": self.provider.client_id,
            "review_oidc_client_secret": self.provider.client_secret,
            "review_oidc_display_name": "Test IdP",
        }
        values.update(self.overrides)
        settings = broker_settings(launcher.database_url, NO_SIMULATORS, launcher.tmp, **values)
        self._broker_cm = serve_broker(settings, launcher.clock)
        broker = await self._broker_cm.__aenter__()
        return Setup(broker, self.provider, launcher.clock)

    async def __aexit__(self, *exc: object) -> None:
        await self._broker_cm.__aexit__(None, None, None)
        await self._provider_cm.__aexit__(None, None, None)


@pytest.fixture
def launch(database_url: str, tmp_path: Path) -> Launcher:
    from tests.integration.test_breakglass import DECLARED_AT

    return Launcher(database_url, tmp_path, Clock(DECLARED_AT))


@pytest.fixture
async def setup(launch: Launcher) -> AsyncIterator[Setup]:
    async with launch() as running:
        yield running


async def test_full_sign_in_and_sign_out(setup: Setup) -> None:
    account = await setup.add_anna()
    async with setup.browser() as http:
        login = await http.get("/review/login")
        assert 'id="oidc-sign-in"' in login.text and "Test IdP" in login.text

        done = await setup.sign_in(http)
        assert done.status_code == 200, done.text
        assert str(done.url).startswith(setup.base + "/review/oidc/callback")
        assert "Signed in" in done.text and 'http-equiv="refresh"' in done.text
        # The browser went through the provider, with PKCE S256, state and nonce.
        asked = setup.provider.authorize_requests[-1]
        assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
        assert asked["state"] and asked["nonce"] and asked["scope"] == "openid"
        redeemed = setup.provider.token_requests[-1]
        assert len(redeemed["code_verifier"]) >= 43 and "client_secret" not in redeemed
        cookie = done.headers["set-cookie"].lower()
        assert "broker_review_session=" in cookie and "samesite=strict" in cookie

        trail = await http.get("/review/trail")
        assert trail.status_code == 200 and "anna" in trail.text
        assert "Veilig" in trail.text or VT in trail.text  # the account's scope

        # The flow cookie is spent: replaying the callback does not sign in again.
        replay = await http.get(str(done.url))
        assert replay.status_code == 401

        out = await http.post("/review/logout", data={"csrf": csrf_of(trail.text)})
        assert out.status_code == 200 and str(out.url).endswith("/review/login")
        assert (await http.get("/review/trail", follow_redirects=False)).status_code == 303

    logins = await setup.entries("officer_login")
    success = [e for e in logins if e["result"] == "success"]
    assert [(e["account_id"], e["method"]) for e in success] == [(account.id, "oidc")]
    assert [e["reason"] for e in logins if e["result"] == "failure"] == ["bad_state"]
    assert (await setup.entries("officer_logout"))[0]["account_id"] == account.id


async def _callback_of(setup: Setup, http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """Start and the provider's answer, not followed: the callback URL and its query."""
    start = await http.get("/review/oidc/start")
    assert start.status_code == 303 and FLOW_COOKIE in start.headers["set-cookie"]
    async with httpx.AsyncClient(timeout=30) as idp:
        answer = await idp.get(start.headers["location"])
    assert answer.status_code == 302
    location = answer.headers["location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return location.split("?")[0], query


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_state_must_match_the_browser(setup: Setup) -> None:
    await setup.add_anna()
    async with setup.browser(follow=False) as http:
        url, query = await _callback_of(setup, http)
        tampered = await http.get(url + "?" + urlencode({**query, "state": query["state"] + "x"}))
        assert tampered.status_code == 401 and GENERIC in tampered.text
        assert "broker_review_session" not in http.cookies
        # Another browser (no flow cookie) with the right state and code: refused too.
        url, query = await _callback_of(setup, http)
        async with setup.browser(follow=False) as other:
            stolen = await other.get(url + "?" + urlencode(query))
            assert stolen.status_code == 401 and "broker_review_session" not in other.cookies
        # The provider's own refusal.
        url, query = await _callback_of(setup, http)
        denied = await http.get(
            url + "?" + urlencode({"error": "access_denied", "state": query["state"]})
        )
        assert denied.status_code == 401 and GENERIC in denied.text
    reasons = [e["reason"] for e in await setup.entries("officer_login")]
    assert reasons == ["bad_state", "bad_state", "provider_refused"]


ID_TOKEN_DEFECTS: list[tuple[str, dict[str, Any], str]] = [
    ("wrong nonce", {"id_token_overrides": {"nonce": "not-the-nonce"}}, "nonce"),
    ("wrong audience", {"id_token_overrides": {"aud": "someone-else"}}, "audience"),
    ("wrong issuer", {"id_token_overrides": {"iss": "https://evil.example"}}, "issuer"),
    ("expired", {"id_token_overrides": {"exp": 1_000_000_000}}, "expired"),
    ("issued long ago", {"id_token_overrides": {"iat": 1_000_000_000}}, "issued_at"),
    ("no nonce", {"id_token_overrides": {"nonce": None}}, "nonce"),
    ("wrong signature", {"sign_with": "rogue"}, "signature"),
    ("alg none", {"sign_with": "none"}, "algorithm"),
    ("wrong azp", {"id_token_overrides": {"azp": "other-client"}}, "authorized_party"),
    ("wrong at_hash", {"id_token_overrides": {"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}}, "at_hash"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_defective_id_tokens_are_refused(setup: Setup) -> None:
    await setup.add_anna()
    for name, change, _ in ID_TOKEN_DEFECTS:
        setup.provider.id_token_overrides = change.get("id_token_overrides", {})
        setup.provider.sign_with = change.get("sign_with", "good")
        async with setup.browser() as http:
            refused = await setup.sign_in(http)
            assert refused.status_code == 401, name
            assert GENERIC in refused.text, name
            assert "broker_review_session" not in http.cookies, name
    failures = [e for e in await setup.entries("officer_login") if e["result"] == "failure"]
    assert [(e["reason"], e.get("check")) for e in failures] == [
        ("id_token_invalid", check) for _, _, check in ID_TOKEN_DEFECTS
    ]
    assert all(e["result"] == "failure" for e in await setup.entries("officer_login"))
    # And a good token afterwards signs in: nothing above was a provider fault.
    setup.provider.id_token_overrides, setup.provider.sign_with = {}, "good"
    async with setup.browser() as http:
        assert (await setup.sign_in(http)).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_other_signature_algorithms(launch: Launcher, alg: str) -> None:
    async with launch(provider={"alg": alg}) as setup:
        await setup.add_anna()
        async with setup.browser() as http:
            assert (await setup.sign_in(http)).status_code == 200
            assert (await http.get("/review/trail")).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_algorithm_allow_list_is_configurable(launch: Launcher) -> None:
    async with launch(provider={"alg": "RS256"}, review_oidc_algorithms="ES256") as setup:
        await setup.add_anna()
        async with setup.browser() as http:
            assert (await setup.sign_in(http)).status_code == 401
        assert (await setup.entries("officer_login"))[-1]["check"] == "algorithm"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_unknown_subject_is_refused_and_audited(setup: Setup) -> None:
    setup.provider.user = {"sub": "stranger-1"}
    async with setup.browser() as http:
        refused = await setup.sign_in(http)
        assert refused.status_code == 401 and GENERIC in refused.text
        assert "broker_review_session" not in http.cookies
    # A disabled account is refused as well.
    await setup.add_anna()
    await setup.accounts.disable("anna")
    setup.provider.user = {"sub": "officer-anna"}
    async with setup.browser() as http:
        assert (await setup.sign_in(http)).status_code == 401
    failures = await setup.entries("officer_login")
    assert [(e["reason"], e["account_id"]) for e in failures] == [
        ("unknown_subject", None),
        ("disabled", failures[1]["account_id"]),
    ]
    assert failures[0]["subject_ref"] and "stranger-1" not in json.dumps(failures)
    async with setup.broker.services.db.session() as session:
        assert (await session.scalars(select(OfficerAccount.username))).all() == ["anna"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_role_claim_admits_and_scopes_officers(launch: Launcher) -> None:
    async with launch(review_oidc_role_claim="realm_access.roles") as setup:
        setup.provider.user = {
            "sub": "claims-officer",
            "realm_access": {"roles": [f"privacy_officer:{VT}", "unrelated", "privacy_officer:x"]},
        }
        async with setup.browser() as http:
            assert (await setup.sign_in(http)).status_code == 200
            page = await http.get("/review/trail")
            assert page.status_code == 200
        (account,) = await setup.accounts.list()
        assert account.agencies == [VT] and not account.broker_officer
        added = await setup.entries("officer_account_added")
        assert added[-1]["via"] == "oidc_claim" and added[-1]["agencies"] == [VT]

        # The claim changes at the provider: the scope follows at the next sign-in.
        setup.provider.user["realm_access"] = {"roles": [f"privacy_officer:{POLICE}"]}
        async with setup.browser() as http:
            assert (await setup.sign_in(http)).status_code == 200
        (account,) = await setup.accounts.list()
        assert account.agencies == [POLICE]
        assert (await setup.entries("officer_scope_changed"))[-1]["agencies"] == [POLICE]

        # Role withdrawn: refused.
        setup.provider.user["realm_access"] = {"roles": []}
        async with setup.browser() as http:
            assert (await setup.sign_in(http)).status_code == 401
        assert (await setup.entries("officer_login"))[-1]["reason"] == "no_officer_role"

        # Without any officer role a stranger does not get an account.
        setup.provider.user = {"sub": "nobody", "realm_access": {"roles": ["staff"]}}
        async with setup.browser() as http:
            assert (await setup.sign_in(http)).status_code == 401
        assert len(await setup.accounts.list()) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_private_key_jwt_client_authentication(launch: Launcher, tmp_path: Path) -> None:
    client_key = generate_jwk("P-256", use="sig")
    key_file = tmp_path / "oidc-client.jwk"
    key_file.write_text(json.dumps(client_key))
    async with launch(
        provider={"client_secret": None, "client_jwk": public_only(client_key)},
        review_oidc_client_auth="private_key_jwt",
        review_oidc_client_secret=None,
        review_oidc_client_key_file=key_file,
    ) as setup:
        await setup.add_anna()
        async with setup.browser() as http:
            assert (await setup.sign_in(http)).status_code == 200
        sent = setup.provider.token_requests[-1]
        assert sent["client_assertion_type"].endswith("jwt-bearer")
        assert sent["client_id"] == setup.provider.client_id


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_wrong_client_secret_is_refused(launch: Launcher) -> None:
    async with launch(review_oidc_client_secret="not the secret") as setup:
        await setup.add_anna()
        async with setup.browser() as http:
            refused = await setup.sign_in(http)
            assert refused.status_code == 401 and GENERIC in refused.text
        last = (await setup.entries("officer_login"))[-1]
        assert (last["reason"], last["check"]) == ("token_refused", "invalid_client")


async def test_provider_down(launch: Launcher) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with launch(review_oidc_issuer=dead) as setup, setup.browser() as http:
        page = await http.get("/review/oidc/start")
        assert page.status_code == 503 and UNAVAILABLE in page.text
        assert "broker_review_session" not in http.cookies
        # The local sign-in form is still there.
        assert 'id="username"' in page.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_provider_goes_down_during_the_flow(launch: Launcher) -> None:
    running = launch()
    setup = await running.__aenter__()
    try:
        await setup.add_anna()
        async with setup.browser(follow=False) as http:
            url, query = await _callback_of(setup, http)
            await running._provider_cm.__aexit__(None, None, None)  # the provider stops
            running._provider_cm = _noop()
            page = await http.get(url + "?" + urlencode(query))
            assert page.status_code == 503 and UNAVAILABLE in page.text
            assert "broker_review_session" not in http.cookies
    finally:
        await running.__aexit__(None, None, None)


class _noop:  # noqa: N801 - a stand-in context manager
    async def __aexit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_local_sign_in_can_be_switched_off(launch: Launcher) -> None:
    async with launch(review_local_accounts=False) as setup, setup.browser() as http:
        page = await http.get("/review/login")
        assert 'id="oidc-sign-in"' in page.text and 'id="username"' not in page.text
        refused = await http.post(
            "/review/login",
            data={"username": "x", "password": "y", "code": "1", "csrf": "z"},
        )
        assert refused.status_code == 404


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sign_in_in_headless_chromium(launch: Launcher, tmp_path: Path) -> None:
    """A real browser, with the provider on another site (localhost vs 127.0.0.1):
    the SameSite=Lax flow cookie comes back on the provider's redirect, and the
    SameSite=Strict session cookie is in use on the next page."""
    from playwright.async_api import async_playwright, expect

    from tests.integration.test_review_browser import CHROMIUM_ARGS

    screens = tmp_path / "review-screens"
    screens.mkdir()
    async with launch(provider={"host": "localhost"}) as setup:
        await setup.add_anna()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = await (await browser.new_context(base_url=setup.base)).new_page()
                await page.goto("/review/trail")
                await expect(page).to_have_url(setup.base + "/review/login")
                await page.screenshot(path=screens / "oidc-01-login.png")
                await page.click("#oidc-sign-in")
                await expect(page).to_have_url(setup.base + "/review/trail")
                await expect(page.locator("header .who")).to_contain_text("anna")
                await page.screenshot(path=screens / "oidc-02-trail.png", full_page=True)
                await page.click("#logout")
                await expect(page).to_have_url(setup.base + "/review/login")
            finally:
                await browser.close()
    assert setup.provider.authorize_requests and setup.provider.token_requests
    assert (screens / "oidc-02-trail.png").stat().st_size > 1000
