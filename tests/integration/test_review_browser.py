"""The review web page end to end in a real headless Chromium (Debian's package,
driven by Playwright): sign in with password and a computed TOTP code, search
the audit trail by BSN, open the break-glass queue, approve a declaration.
Screenshots are kept under the test's tmp folder (``review-screens/``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from audit.models import AuditEntry
from tests.integration.conftest import Timed
from tests.integration.test_breakglass import DECLARED_AT, declaration
from tests.integration.test_review_ui import BSN_RUBEN, PASSWORD, SUSPECT_HISTORY, Review

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is not installed (apt-get install chromium)",
    ),
    # One backend is enough here: the HTTP tests cover both.
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def review(timed: Timed) -> Review:
    timed.clock.now = DECLARED_AT
    return Review(timed)


@pytest.fixture
def screens(tmp_path: Path) -> Path:
    """Where the screenshots go: $REVIEW_SCREENSHOTS (e.g. a CI artefact folder) or tmp."""
    folder = Path(os.environ.get("REVIEW_SCREENSHOTS", tmp_path / "review-screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_officer_signs_in_searches_and_approves(review: Review, screens: Path) -> None:
    from playwright.async_api import async_playwright, expect

    await review.timed.exchange("veilig_thuis", SUSPECT_HISTORY)
    created = await review.timed.call(
        "veilig_thuis", "POST", "/v1/acute-declarations", declaration()
    )
    assert created.status_code == 201, created.text
    officer = await review.account("vt-officer", "veilig_thuis")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context(base_url=review.base)
            page = await context.new_page()
            console_errors: list[str] = []
            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )

            await page.goto("/review/trail")
            await expect(page).to_have_url(review.base + "/review/login")
            await page.fill("#username", "vt-officer")
            await page.fill("#password", PASSWORD)
            await page.fill("#code", review.code(officer.totp_secret))
            await page.screenshot(path=screens / "01-login.png")
            await page.click("#sign-in")
            await expect(page).to_have_url(review.base + "/review/trail")
            await expect(page.locator("header .who")).to_contain_text("vt-officer")
            await expect(page.locator("#total")).to_have_text("3")

            await page.fill("#bsn", BSN_RUBEN)
            await page.select_option("#outcome", "deny")
            await page.click("#search")
            await expect(page.locator("#total")).to_have_text("1")
            assert BSN_RUBEN not in page.url and "subject=psn%3A" in page.url
            await expect(page.locator("#trail tbody")).to_contain_text("health.diagnosis")
            await page.screenshot(path=screens / "02-trail.png", full_page=True)

            await page.click("nav >> text=Break-glass review")
            card = page.locator("#decl-ACU-T1")
            await expect(card).to_contain_text("pending")
            await card.locator("textarea[name=comment]").fill("Proportionate and timely")
            await page.screenshot(path=screens / "03-breakglass.png", full_page=True)
            await card.locator("button.approve").click()
            await expect(page.locator("#done")).to_contain_text("ACU-T1")
            await expect(page.locator("#empty")).to_be_visible()
            await page.screenshot(path=screens / "04-approved.png", full_page=True)

            await page.click("nav >> text=Trends")
            await expect(page.locator("#chart-exchanges svg")).to_be_visible()
            await page.screenshot(path=screens / "05-trends.png", full_page=True)

            await page.click("nav >> text=Log integrity")
            await expect(page.locator("#checkpoint")).to_contain_text("broker.example/audit")
            await page.screenshot(path=screens / "06-integrity.png", full_page=True)

            await page.click("#logout")
            await expect(page).to_have_url(review.base + "/review/login")
            assert console_errors == []  # no CSP violation, nothing failed to load
        finally:
            await browser.close()

    for name in (
        "01-login",
        "02-trail",
        "03-breakglass",
        "04-approved",
        "05-trends",
        "06-integrity",
    ):
        assert (screens / f"{name}.png").stat().st_size > 1000
    async with review.timed.harness.broker.services.db.session() as session:
        reviewed = (
            await session.scalars(
                select(AuditEntry.entry).where(AuditEntry.kind == "acute_declaration_reviewed")
            )
        ).all()
    assert len(reviewed) == 1
    entry = json.loads(reviewed[0])
    assert (entry["review"], entry["reviewed_by"]) == ("approved", f"officer:{officer.account.id}")
