"""Subject-access overviews (AVG art. 15) list the signal-and-match and AVG art. 14
information-duty entries concerning the person, in plain words, on SQLite and
PostgreSQL: agency names only (never contact routes), never an embargo's reason
or case reference; another person's overview shows none of them."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.subject_access.service import DUTY_KINDS, SIGNAL_KINDS
from tests.conftest import AGENCIES, Harness, broker_settings, register_partners, serve_broker
from tests.integration.conftest import PRIVACY_OFFICER, Clock, Timed
from tests.integration.test_information_duties import (
    CARE_REPORT,
    CASE,
    DUE_AT,
    DUTIES,
    REASON,
    RELEASED_AT,
)

P01 = "999990007"  # Ruben, adult
P03 = "999990020"  # Noor, 13
P14 = "999990159"  # Jesse Zandbergen, another household
VT, WIJKTEAM = "veilig_thuis", "gemeente_wijkteam"
AGREEMENT = "agr-zvh-mdaplusplus"
CONTACT = {
    VT: {"team": "Veilig Thuis - team Oost", "phone": "+31 88 000 1100"},
    WIJKTEAM: {"team": "Sociaal Team Lindeburg-Noord", "email": "noord@sociaalteam.example"},
}
SECRETS = (
    REASON,
    CASE,
    "team Oost",
    "+31 88 000 1100",
    "Sociaal Team",
    "noord@sociaalteam.example",
    "VT-DOC-2026-1187",
    P03,
)


@pytest.fixture
async def timed(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Timed]:
    clock = Clock(RELEASED_AT)
    settings = broker_settings(
        database_url,
        simulators,
        tmp_path,
        privacy_officers=AGENCIES[PRIVACY_OFFICER],
        adapter_timeout_seconds=15.0,
        register_timeout_seconds=15.0,
    )
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings, clock) as broker:
        yield Timed(Harness(broker, partners), clock)


async def _report(timed: Timed, bsn: str, output: str = "json") -> Any:
    response = await timed.call(
        PRIVACY_OFFICER, "POST", "/v1/subject-access", {"bsn": bsn, "format": output}
    )
    assert response.status_code == 200, response.text
    return response


async def test_signals_and_information_duties_in_the_childs_report(timed: Timed) -> None:
    # An exchange that creates information duties (one for Noor, one for Ruben).
    exchange = await timed.exchange(VT, CARE_REPORT)
    listed = await timed.call(VT, "GET", f"{DUTIES}?exchange_id={exchange['exchange_id']}")
    assert listed.status_code == 200, listed.text
    duty = {d["addressee_rule"]: d for d in listed.json()}["authority_holders"]
    # Postponed for a safety investigation, resumed, then fulfilled.
    timed.clock.now = RELEASED_AT + timedelta(days=3)
    embargo = {"reason": REASON, "investigation_reference": CASE}
    set_ = await timed.call(VT, "POST", f"{DUTIES}/{duty['id']}/embargo", embargo)
    assert set_.status_code == 200, set_.text
    ended = await timed.call(VT, "POST", f"/v1/safety-investigations/{CASE}/end")
    assert ended.status_code == 200, ended.text
    informed_at = RELEASED_AT + timedelta(days=4)
    timed.clock.now = RELEASED_AT + timedelta(days=5)
    fulfilment = {
        "informed_at": informed_at.isoformat(),
        "method": "letter",
        "evidence_reference": "VT-DOC-2026-1187",
    }
    done = await timed.call(VT, "POST", f"{DUTIES}/{duty['id']}/fulfilment", fulfilment)
    assert done.status_code == 200, done.text

    # Two agencies register involvement with Noor and are told of each other.
    signals = {}
    for party, end_date in ((VT, "2027-01-31"), (WIJKTEAM, "2027-02-28")):
        body = {
            "agreement_id": AGREEMENT,
            "subject": P03,
            "subject_kind": "child",
            "contact": CONTACT[party],
            "end_date": end_date,
        }
        response = await timed.call(party, "POST", "/v1/signals", body)
        assert response.status_code == 201, response.text
        signals[party] = response.json()
    assert signals[WIJKTEAM]["matches"] == 1
    gone = await timed.call(WIJKTEAM, "DELETE", f"/v1/signals/{signals[WIJKTEAM]['id']}")
    assert gone.status_code == 200, gone.text

    report = (await _report(timed, P03)).json()
    listed_kinds = [e["kind"] for e in report["entries"]]
    ours = [e for e in report["entries"] if e["kind"] in SIGNAL_KINDS + DUTY_KINDS]
    assert [e["kind"] for e in ours] == [
        "information_duty_recorded",
        "information_duty_embargoed",
        "information_duty_embargo_lifted",
        "information_duty_fulfilled",
        "signal_registered",
        "signal_registered",
        "signal_match",
        "signal_withdrawn",
    ]
    assert "decision" in listed_kinds
    assert all(e["concerns"] == "person" for e in ours)
    recorded, embargoed, lifted, fulfilled, vt_reg, wt_reg, match, withdrawn = ours
    vt = {"oin": AGENCIES[VT], "name": f"Test {VT}"}
    wt = {"oin": AGENCIES[WIJKTEAM], "name": f"Test {WIJKTEAM}"}

    assert recorded["agencies"] == [vt] and recorded["purpose"] == CARE_REPORT["purpose_id"]
    assert recorded["reason_text"] == (
        "A duty to inform those with parental authority over you arose: "
        f"Test {VT} must do so by {DUE_AT.date().isoformat()}"
    )
    assert recorded["elements"] == ["person.name", "police.dv_incident"]
    assert embargoed["reason_text"] == (
        "Informing you was postponed while a safety investigation ran"
    )
    assert embargoed["agencies"] == [] and embargoed["due_at"] is None
    assert lifted["reason_text"].startswith("The postponement ended: informing you is due by ")
    assert fulfilled["reason_text"] == (
        f"You were informed on {informed_at.date().isoformat()} by Test {VT}"
    )
    assert fulfilled["agencies"] == [vt]
    assert vt_reg["reason_text"] == (
        f"Test {VT} registered that it is involved with you "
        f"(agreement {AGREEMENT}, until 2027-01-31)"
    )
    assert (vt_reg["agencies"], vt_reg["end_date"]) == ([vt], "2027-01-31")
    assert wt_reg["agencies"] == [wt] and wt_reg["end_date"] == "2027-02-28"
    assert match["reason_text"] == (
        f"Test {VT} and Test {WIJKTEAM} were told of each other's involvement "
        f"(agreement {AGREEMENT})"
    )
    assert match["agencies"] == [vt, wt] and match["agreement"]["id"] == AGREEMENT
    assert withdrawn["reason_text"] == (f"Test {WIJKTEAM} withdrew its registration of involvement")
    assert all(e["reason_text_nl"] and e["reason_text_nl"] != e["reason_text"] for e in ours)
    text = json.dumps(report)
    assert not any(s in text for s in SECRETS)
    assert embargoed["seq"] is not None and "investigation" not in json.dumps(embargoed).replace(
        "safety investigation", ""
    )

    # The HTML and PDF renderings hold the same lines and nothing secret.
    html = (await _report(timed, P03, "html")).text
    for line in (recorded, embargoed, fulfilled, vt_reg, match):
        assert line["reason_text_nl"].replace("'", "&#x27;") in html
        assert line["reason_text"].replace("'", "&#x27;") in html
    assert not any(s in html for s in SECRETS)
    from pypdf import PdfReader

    pdf = (await _report(timed, P03, "pdf")).content
    flat = " ".join(
        " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split()
    )
    for word in ("veiligheidsonderzoek", "geïnformeerd", "betrokken", "elkaars"):
        assert word in flat, word
    assert not any(s in flat for s in SECRETS)

    # Another person's report holds none of them.
    for other in (P14,):
        entries = (await _report(timed, other)).json()["entries"]
        assert not [e for e in entries if e["kind"] in SIGNAL_KINDS + DUTY_KINDS]
    # Ruben's report holds his own duty, not Noor's embargo or signals.
    ruben = (await _report(timed, P01)).json()["entries"]
    assert [e["kind"] for e in ruben if e["kind"] in SIGNAL_KINDS + DUTY_KINDS] == [
        "information_duty_recorded"
    ]


async def test_entries_under_an_embargo_are_withheld_until_it_ends(timed: Timed) -> None:
    """While informing Noor's parents is postponed for a safety investigation, her
    report leaves out that exchange's entries about her (they would tell what the
    postponement keeps back) and tells the officer so; Ruben's report, whose own
    duty is not postponed, keeps them. Ending the investigation brings them back."""
    before = {e["seq"] for e in (await _report(timed, P03)).json()["entries"]}
    # A household element too: its (denied) entry carries the household's key, not Noor's.
    request = dict(CARE_REPORT, elements=[*CARE_REPORT["elements"], "household.composition"])
    exchange = await timed.exchange(VT, request)
    listed = await timed.call(VT, "GET", f"{DUTIES}?exchange_id={exchange['exchange_id']}")
    duty = {d["addressee_rule"]: d for d in listed.json()}["authority_holders"]
    full = (await _report(timed, P03)).json()
    ours = [e for e in full["entries"] if e["seq"] not in before]
    assert ours and full["withheld_entries"] == 0 and full["withheld_until"] is None
    assert "household" in {e["concerns"] for e in ours}
    assert {e["exchange_id"] for e in ours if e["kind"] == "decision"} == {exchange["exchange_id"]}

    timed.clock.now = RELEASED_AT + timedelta(days=1)
    embargo = {"reason": REASON, "investigation_reference": CASE}
    set_ = await timed.call(VT, "POST", f"{DUTIES}/{duty['id']}/embargo", embargo)
    assert set_.status_code == 200, set_.text
    lapses_at = set_.json()["embargo"]["lapses_at"]

    during = (await _report(timed, P03)).json()
    seqs = {e["seq"] for e in during["entries"]}
    assert not seqs - before, "no entry of the postponed exchange is listed"
    # The embargo's own entry is withheld too: it is one of the exchange's entries.
    assert during["withheld_entries"] == len(ours) + 1
    assert during["entry_count"] == len(during["entries"]) == len(before)
    assert during["withheld_until"] is not None
    assert during["withheld_until"].replace("Z", "+00:00") == lapses_at.replace("Z", "+00:00")
    for output in ("html", "pdf"):
        text = (await _report(timed, P03, output)).content
        assert b"withheld" not in text.lower() and b"achtergehouden" not in text.lower()
    # Ruben's duty in the same exchange is not postponed: his entries stay listed.
    ruben = (await _report(timed, P01)).json()
    assert ruben["withheld_entries"] == 0
    assert exchange["exchange_id"] in {e["exchange_id"] for e in ruben["entries"]}

    ended = await timed.call(VT, "POST", f"/v1/safety-investigations/{CASE}/end")
    assert ended.status_code == 200, ended.text
    after = (await _report(timed, P03)).json()
    assert after["withheld_entries"] == 0 and after["withheld_until"] is None
    kinds = [e["kind"] for e in after["entries"] if e["seq"] not in before]
    assert kinds[: len(ours)] == [e["kind"] for e in ours]
    assert "information_duty_embargoed" in kinds and "information_duty_embargo_lifted" in kinds
    assert not any(s in json.dumps(after) for s in SECRETS)
