"""Subject-access overviews (AVG art. 15) over loopback HTTP, on SQLite and
PostgreSQL: exactly the person's (and household's) entries, with agency names and
article citations; nobody else's; privacy officers only; escaped HTML; audited."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from audit.models import AuditEntry
from audit.tree import tree_head
from broker.agencies.models import Agency
from broker.settings import PROJECT_ROOT
from tests.conftest import AGENCIES
from tests.integration.conftest import PRIVACY_OFFICER, Timed

P01 = "999990007"  # Ruben Hoekstra
P02 = "999990019"  # Sanne Veldkamp, same household
P10 = "999990111"  # another household
P13 = "999990147"

SUSPECT_HISTORY = {
    "agreement_id": "agr-vt-politie-hg",
    "purpose_id": "informatie_voor_veiligheidsbeoordeling",
    "provider": {"party": "politie"},
    "subjects": [P01],
    "elements": [
        "police.suspect_history_dv",
        "police.tijdelijk_huisverbod",
        "health.diagnosis",
        "household.composition",
    ],
    "context": {"vt_case_status": "veiligheidsbeoordeling"},
}
KINDCHECK = {
    "agreement_id": "agr-ggz-vt-kindcheck",
    "purpose_id": "kindcheck_bekendheid",
    "provider": {"party": "veilig_thuis"},
    "subjects": [P10, P13],
    "elements": ["vt.report_exists", "health.diagnosis"],
    "context": {
        "kindcheck_decision": "meldcode_stappen_volgen",
        "minor_children_count": 1,
        "requester_role": "behandelaar",
    },
}
EVIL = "Politie <script>alert('x')</script> & Co"


async def _entries(timed: Timed, **where: Any) -> list[AuditEntry]:
    async with timed.harness.broker.services.db.session() as session:
        stmt = select(AuditEntry).order_by(AuditEntry.seq)
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditEntry, name) == value)
        return list((await session.scalars(stmt)).all())


async def _report(timed: Timed, bsn: str, **extra: Any) -> dict[str, Any]:
    response = await timed.call(
        PRIVACY_OFFICER, "POST", "/v1/subject-access", {"bsn": bsn, **extra}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_subject_access_report(timed: Timed) -> None:
    mine = await timed.exchange("veilig_thuis", SUSPECT_HISTORY)
    other = await timed.exchange("ggz", KINDCHECK)
    services = timed.harness.broker.services
    expected = await _entries(timed, exchange_id=mine["exchange_id"], kind="decision")
    assert len(expected) == 4

    report = await _report(timed, P01)
    # The four decisions and the AVG art. 14 duty the release created.
    assert report["entry_count"] == 5 and report["household_included"]
    decisions = [e for e in report["entries"] if e["kind"] == "decision"]
    assert [e["seq"] for e in decisions] == [e.seq for e in expected]
    assert {e["exchange_id"] for e in decisions} == {mine["exchange_id"]}
    (duty,) = [e for e in report["entries"] if e["kind"] == "information_duty_recorded"]
    assert duty["agencies"] == [{"oin": AGENCIES["veilig_thuis"], "name": "Test veilig_thuis"}]
    assert duty["reason_text"].startswith("A duty to inform you arose: Test veilig_thuis")
    by_element = {e["element"]: e for e in decisions}
    items = {i["element"]: i for i in mine["items"]}
    bases = services.policy_set.reference.legal_bases
    for element, entry in by_element.items():
        assert entry["reason"] == items[element]["reason"]
        assert entry["requester"] == {"oin": AGENCIES["veilig_thuis"], "name": "Test veilig_thuis"}
        assert entry["provider"] == {"oin": AGENCIES["politie"], "name": "Test politie"}
        assert entry["purpose"] == SUSPECT_HISTORY["purpose_id"]
        assert entry["agreement"] == {
            "id": "agr-vt-politie-hg",
            "version": mine["agreement"]["version"],
        }
        assert entry["element_name"] == services.policy_set.reference.elements[element].name_nl
        assert entry["released"] == (items[element]["status"] == "released")
        assert entry["reason_text"] and entry["reason_text_nl"]
        assert entry["legal_basis"] == [
            {"id": b["id"], "citation": bases[b["id"]].citation}
            for b in items[element]["legal_basis"]
        ]
    suspect = by_element["police.suspect_history_dv"]
    assert suspect["released"] and suspect["concerns"] == "person"
    assert any(b["citation"].endswith("art. 20") for b in suspect["legal_basis"])
    denied = by_element["health.diagnosis"]
    assert (denied["outcome"], denied["reason"], denied["released"]) == (
        "deny",
        "deny_element_not_allowed",
        False,
    )
    assert by_element["household.composition"]["concerns"] == "household"

    # A member of the same household sees the household entry only; others see nothing of it.
    partner = await _report(timed, P02)
    assert [(e["element"], e["concerns"]) for e in partner["entries"]] == [
        ("household.composition", "household")
    ]
    for bsn in (P10, P13):
        theirs = await _report(timed, bsn)
        assert theirs["entries"]
        assert {e["exchange_id"] for e in theirs["entries"] if e["kind"] == "decision"} == {
            other["exchange_id"]
        }

    # A time window excludes everything before it.
    later = await _report(timed, P01, since="2099-01-01T00:00:00+00:00")
    assert later["entries"] == []

    # Every report is itself audited: pseudonymised, with the officer and the count.
    audited = await _entries(timed, kind="subject_access_report")
    assert len(audited) == 5
    first = json.loads(audited[0].entry)
    assert first["requested_by"] == AGENCIES[PRIVACY_OFFICER]
    assert first["entries"] == 5 and first["channel"] == "api"
    person_key = next(e.subject_key for e in expected if e.element == "police.suspect_history_dv")
    assert audited[0].subject_key == person_key
    for e in await _entries(timed):
        for bsn in (P01, P02, P10, P13):
            assert bsn not in e.entry


async def test_html_is_escaped_and_complete(timed: Timed) -> None:
    mine = await timed.exchange("veilig_thuis", SUSPECT_HISTORY)
    async with timed.harness.broker.services.db.session() as session:
        await session.execute(
            update(Agency).where(Agency.oin == AGENCIES["politie"]).values(name=EVIL)
        )
        await session.commit()
    response = await timed.call(
        PRIVACY_OFFICER, "POST", "/v1/subject-access", {"bsn": P01, "format": "html"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script>" not in page
    assert "Politie &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; Co" in page
    assert "Tijdstip" in page and "Time" in page and "Grondslag" in page
    assert page.count("<tr") == 1 + len(mine["items"]) + 1  # and the art. 14 duty
    assert "Er ontstond een plicht om u te informeren" in page
    for item in mine["items"]:
        assert item["element"] in page
    assert "Wet politiegegevens" in page or "art. 20" in page


async def test_only_privacy_officers_and_valid_bsns(timed: Timed) -> None:
    refused = await timed.call("politie", "POST", "/v1/subject-access", {"bsn": P01})
    assert refused.status_code == 403
    assert refused.json()["code"] == "not_a_privacy_officer"
    invalid = await timed.call(PRIVACY_OFFICER, "POST", "/v1/subject-access", {"bsn": "123456789"})
    assert invalid.status_code == 422
    assert (invalid.json()["code"], invalid.json()["field"]) == ("invalid_bsn", "bsn")
    assert "123456789" not in invalid.text
    assert await _entries(timed, kind="subject_access_report") == []


async def test_cli_writes_an_audited_report(timed: Timed, tmp_path: Path) -> None:
    mine = await timed.exchange("veilig_thuis", SUSPECT_HISTORY)
    settings = timed.harness.broker.settings
    env = dict(
        os.environ,
        BROKER_DATABASE_URL=settings.database_url,
        BROKER_KEYS_DIR=str(settings.keys_dir),
        BROKER_REGISTER_URL=settings.register_url,
        BROKER_PRIVACY_OFFICERS=settings.privacy_officers,
    )
    out = tmp_path / "report.html"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        "audit",
        "subject",
        "--bsn",
        P01,
        "--format",
        "html",
        "--oin",
        AGENCIES[PRIVACY_OFFICER],
        "--out",
        str(out),
        env=env,
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert P01 not in stdout.decode() + stderr.decode()
    page = out.read_text(encoding="utf-8")
    assert all(item["element"] in page for item in mine["items"])
    audited = await _entries(timed, kind="subject_access_report")
    assert len(audited) == 1
    body = json.loads(audited[0].entry)
    assert (body["channel"], body["entries"], body["format"]) == ("cli", 5, "html")
    assert P01 not in audited[0].entry


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    assert reader.pages[0].mediabox.width == pytest.approx(842, abs=1)  # A4 landscape
    return "\n".join(page.extract_text() for page in reader.pages)


async def test_pdf_report_is_printable_and_holds_no_bsn(timed: Timed) -> None:
    mine = await timed.exchange("veilig_thuis", SUSPECT_HISTORY)
    services = timed.harness.broker.services
    response = await timed.call(
        PRIVACY_OFFICER, "POST", "/v1/subject-access", {"bsn": P01, "format": "pdf"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["cache-control"] == "no-store"
    data = response.content
    assert data.startswith(b"%PDF-")
    assert P01.encode() not in data and P02.encode() not in data
    text = _pdf_text(data)
    assert P01 not in text
    flat = " ".join(text.split())
    # The header: the pseudonymised reference, the generation time and the checkpoint.
    expected = await _entries(timed, exchange_id=mine["exchange_id"], kind="decision")
    person_key = next(e.subject_key for e in expected if e.element == "police.suspect_history_dv")
    assert person_key in flat.replace(" ", "") or person_key in text.replace("\n", "")
    head = await tree_head(services.db)
    assert f"size {head.size - 1}" in flat  # read before its own audit entry was appended
    assert services.settings.log_origin in flat
    assert "Opgesteld / Generated" in flat
    # One row per decision, with agencies, purpose, agreement + version, outcome, reason, basis.
    assert "Test veilig_thuis" in flat and "Test politie" in flat
    assert f"agr-vt-politie-hg (v{mine['agreement']['version']})" in flat
    reference = services.policy_set.reference
    for item in mine["items"]:
        assert item["element"] in text.replace("\n", "")
        assert reference.elements[item["element"]].name_nl.split()[0] in flat
    assert "Wet politiegegevens" in flat and "art. 20" in flat
    assert "deny" in flat and "allow" in flat
    assert "huishouden / household" in flat
    audited = await _entries(timed, kind="subject_access_report")
    assert json.loads(audited[-1].entry)["format"] == "pdf"


async def test_cli_writes_a_pdf(timed: Timed, tmp_path: Path) -> None:
    mine = await timed.exchange("veilig_thuis", SUSPECT_HISTORY)
    settings = timed.harness.broker.settings
    env = dict(
        os.environ,
        BROKER_DATABASE_URL=settings.database_url,
        BROKER_KEYS_DIR=str(settings.keys_dir),
        BROKER_REGISTER_URL=settings.register_url,
    )
    out = tmp_path / "report.pdf"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        "audit",
        "subject",
        "--bsn",
        P01,
        "--format",
        "pdf",
        "--out",
        str(out),
        env=env,
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert P01 not in stdout.decode() + stderr.decode()
    data = out.read_bytes()
    assert P01.encode() not in data
    text = _pdf_text(data)
    assert P01 not in text
    assert all(item["element"] in text.replace("\n", "") for item in mine["items"])
