"""Signal and match ("who else is involved") over loopback HTTP, on SQLite and
PostgreSQL: agencies register THAT they are involved with a child; two agencies
on the same child (or household, where the agreement allows it) each get an
inbox message naming the other agency and its contact route, nothing else;
signals expire and are removed; every step is audited; no BSN is stored."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from joserfc import jwe
from joserfc.jwk import OKPKey
from sqlalchemy import select

from audit.models import AuditEntry
from audit.verify import verify_chain
from broker.cli import main as cli_main
from broker.db.models import Base
from broker.db.session import Database
from broker.settings import PROJECT_ROOT
from broker.signals.models import Signal
from tests.conftest import AGENCIES, Harness, broker_settings, register_partners, serve_broker
from tests.integration.conftest import Clock, Timed

AGREEMENT = "agr-zvh-mdaplusplus"
VT, WIJKTEAM, GI, GGZ = "veilig_thuis", "gemeente_wijkteam", "gecertificeerde_instelling", "ggz"
# The Hoekstra household: father, mother, Noor (13), Daan (8), Mila (3).
P01, P02, P03, P04, P05 = "999990007", "999990019", "999990020", "999990032", "999990044"
P14 = "999990159"  # Jesse Zandbergen, another household
BSNS = (P01, P02, P03, P04, P05, P14)
CONTACT = {
    VT: {"team": "Veilig Thuis - team Oost", "phone": "+31 88 000 1100"},
    WIJKTEAM: {"team": "Sociaal Team Lindeburg-Noord", "email": "noord@sociaalteam.example"},
    GI: {"team": "Jeugdbescherming - team Zuid", "phone": "088 000 2200"},
    GGZ: {"team": "GGZ jeugd", "phone": "088 000 3300"},
}


def signal(party: str, subject: str = P03, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agreement_id": AGREEMENT,
        "subject": subject,
        "subject_kind": "child",
        "contact": CONTACT[party],
    }
    body.update(changes)
    return body


def decrypt(harness: Harness, party: str, payload: str) -> dict[str, Any]:
    """With a stock JOSE library and the partner's own private key."""
    enc = next(k for k in harness.partners[party]["keys"] if k["use"] == "enc")
    plaintext = jwe.decrypt_compact(payload, OKPKey.import_key(enc)).plaintext
    data: dict[str, Any] = json.loads(plaintext or b"{}")
    return data


async def inbox(timed: Timed, party: str) -> list[dict[str, Any]]:
    response = await timed.call(party, "GET", "/v1/inbox")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def entries(db: Database, *kinds: str) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.kind.in_(kinds)).order_by(AuditEntry.seq)
            )
        ).all()
    return [json.loads(r.entry) for r in rows]


async def assert_no_bsn_stored(db: Database) -> None:
    """Every column of every row of every table: no BSN anywhere."""
    async with db.session() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                text = repr(tuple(row))
                for bsn in BSNS:
                    assert bsn not in text, f"a BSN in table {table.name}"


async def test_two_agencies_on_one_child_each_learn_of_the_other(timed: Timed) -> None:
    harness, db = timed.harness, timed.harness.broker.services.db
    first = await timed.call(VT, "POST", "/v1/signals", signal(VT))
    assert first.status_code == 201, first.text
    vt_signal = first.json()
    assert vt_signal["matches"] == 0
    assert vt_signal["end_date"] == "2028-06-20"  # default: the agreement's P2Y
    assert all(bsn not in first.text for bsn in BSNS)
    assert await inbox(timed, VT) == []

    second = await timed.call(
        WIJKTEAM, "POST", "/v1/signals", signal(WIJKTEAM, end_date="2027-01-31")
    )
    assert second.status_code == 201, second.text
    wt_signal = second.json()
    assert wt_signal["matches"] == 1
    assert wt_signal["end_date"] == "2027-01-31"

    for party, own, other, other_party in (
        (VT, vt_signal, wt_signal, WIJKTEAM),
        (WIJKTEAM, wt_signal, vt_signal, VT),
    ):
        [message] = await inbox(timed, party)
        assert message["event_type"] == "signal.match"
        assert message["publisher"] == {"oin": AGENCIES[other_party], "party": other_party}
        assert message["agreement"]["id"] == AGREEMENT
        assert message["items"] == []
        payload = decrypt(harness, party, message["payload"])
        assert payload["message_id"] == message["id"]
        assert payload["basis"] == "child"
        assert payload["your_signal_id"] == own["id"]
        assert payload["other_signal_id"] == other["id"]
        assert payload["other_agency"] == {
            "oin": AGENCIES[other_party],
            "name": f"Test {other_party}",
            "party": other_party,
        }
        assert payload["contact"] == {"phone": None, "email": None, **CONTACT[other_party]}
        assert set(payload) == {
            "message_id",
            "event_type",
            "match_id",
            "matched_at",
            "agreement",
            "basis",
            "your_signal_id",
            "other_signal_id",
            "other_agency",
            "contact",
            "other_end_date",
        }
        assert all(bsn not in json.dumps(payload) for bsn in BSNS)
    # Nobody else hears of it.
    assert await inbox(timed, GI) == []

    # Each agency lists its own signal only.
    listed = await timed.call(VT, "GET", "/v1/signals")
    assert [s["id"] for s in listed.json()["signals"]] == [vt_signal["id"]]

    # Registered twice: refused, nothing stored.
    again = await timed.call(VT, "POST", "/v1/signals", signal(VT))
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "signal_exists"

    registered = await entries(db, "signal_registered")
    assert [e["signal_id"] for e in registered] == [vt_signal["id"], wt_signal["id"]]
    assert registered[0]["reason"] == "allow_signal"
    assert registered[0]["subject"].startswith("psn:")
    assert registered[0]["legal_basis"] == ["wgs_samenwerkingsverbanden", "avg_publieke_taak"]
    [match] = await entries(db, "signal_match")
    assert match["reason"] == "allow_match"
    assert match["basis"] == "child"
    assert match["subject"] == registered[0]["subject"]
    assert sorted(match["signals"]) == sorted([vt_signal["id"], wt_signal["id"]])
    assert len(match["messages"]) == 2
    assert match["agreement"]["id"] == AGREEMENT and match["agreement"]["hash"]
    await assert_no_bsn_stored(db)
    await verify_chain(db)


async def test_simultaneous_registrations_store_one_match(timed: Timed) -> None:
    first, second = await asyncio.gather(
        timed.call(VT, "POST", "/v1/signals", signal(VT)),
        timed.call(GI, "POST", "/v1/signals", signal(GI)),
    )
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.json()["matches"] + second.json()["matches"] == 1
    assert len(await inbox(timed, VT)) == len(await inbox(timed, GI)) == 1
    assert len(await entries(timed.harness.broker.services.db, "signal_match")) == 1


async def test_parties_and_agreements_without_signals_are_refused(timed: Timed) -> None:
    # GGZ is party to the agreement, but not to its signals section.
    refused = await timed.call(GGZ, "POST", "/v1/signals", signal(GGZ))
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "not_a_signal_party"
    # An agreement without a signals section.
    other = await timed.call(
        VT, "POST", "/v1/signals", signal(VT, agreement_id="agr-vt-politie-hg")
    )
    assert other.status_code == 422, other.text
    assert other.json()["code"] == "signals_not_offered"
    assert other.json()["field"] == "agreement_id"
    unknown = await timed.call(VT, "POST", "/v1/signals", signal(VT, agreement_id="agr-none"))
    assert unknown.json()["code"] == "unknown_agreement"
    # An adult is not a child; an invalid BSN is refused at the boundary.
    adult = await timed.call(VT, "POST", "/v1/signals", signal(VT, subject=P01))
    assert adult.status_code == 422, adult.text
    assert (adult.json()["code"], adult.json()["field"]) == ("not_a_child", "subject")
    bad = await timed.call(VT, "POST", "/v1/signals", signal(VT, subject="123456789"))
    assert bad.status_code == 422
    assert P03 not in bad.text
    # End dates: not in the past, not beyond two years.
    for end in ("2026-06-19", "2028-06-21"):
        late = await timed.call(VT, "POST", "/v1/signals", signal(VT, end_date=end))
        assert (late.status_code, late.json()["code"]) == (422, "invalid_time"), late.text
        assert late.json()["field"] == "end_date"
    # The contact route is the team's: reachable, and no BSN in it.
    unreachable = await timed.call(
        VT, "POST", "/v1/signals", signal(VT, contact={"team": "Team Oost"})
    )
    assert unreachable.status_code == 422
    with_bsn = await timed.call(
        VT,
        "POST",
        "/v1/signals",
        signal(VT, contact={"team": f"Team Oost re {P04}", "phone": "0880001100"}),
    )
    assert with_bsn.status_code == 422
    assert with_bsn.json()["field"] == "contact.team"
    assert P04 not in with_bsn.text
    # Withdrawing another agency's signal: not found.
    mine = await timed.call(VT, "POST", "/v1/signals", signal(VT))
    assert mine.status_code == 201
    theirs = await timed.call(WIJKTEAM, "DELETE", f"/v1/signals/{mine.json()['id']}")
    assert theirs.status_code == 404
    assert theirs.json()["code"] == "not_found"
    db = timed.harness.broker.services.db
    assert len(await entries(db, "signal_registered")) == 1
    await assert_no_bsn_stored(db)


async def test_household_matching_where_the_agreement_allows_it(timed: Timed) -> None:
    harness, db = timed.harness, timed.harness.broker.services.db
    vt = await timed.call(VT, "POST", "/v1/signals", signal(VT, subject=P03))
    # The municipal team works with the household (named through the father).
    wt = await timed.call(
        WIJKTEAM, "POST", "/v1/signals", signal(WIJKTEAM, subject=P01, subject_kind="household")
    )
    # The GI is involved with a sibling; and with a child of another household.
    gi = await timed.call(GI, "POST", "/v1/signals", signal(GI, subject=P05))
    elsewhere = await timed.call(GI, "POST", "/v1/signals", signal(GI, subject=P14))
    for response in (vt, wt, gi, elsewhere):
        assert response.status_code == 201, response.text
    assert [r.json()["matches"] for r in (vt, wt, gi, elsewhere)] == [0, 1, 2, 0]

    def about(messages: list[dict[str, Any]], party: str) -> list[dict[str, Any]]:
        return [decrypt(harness, party, m["payload"]) for m in messages]

    vt_heard = about(await inbox(timed, VT), VT)
    assert sorted(p["other_agency"]["party"] for p in vt_heard) == [GI, WIJKTEAM]
    assert {p["basis"] for p in vt_heard} == {"household"}
    gi_heard = about(await inbox(timed, GI), GI)
    assert sorted(p["other_agency"]["party"] for p in gi_heard) == sorted([VT, WIJKTEAM])
    assert {p["your_signal_id"] for p in gi_heard} == {gi.json()["id"]}
    matches = await entries(db, "signal_match")
    assert len(matches) == 3
    assert {m["subject"][:3] for m in matches} == {"hh:"}
    await assert_no_bsn_stored(db)


@asynccontextmanager
async def child_only_broker(
    database_url: str, simulators: dict[str, Any], tmp: Path
) -> AsyncIterator[Timed]:
    """A broker whose MDA++ agreement matches on the child only."""
    policies = tmp / "policies"
    shutil.copytree(PROJECT_ROOT / "policies", policies)
    path = policies / "agreements" / AGREEMENT / "agreement.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count("subject_kinds: [child, household]") == 1
    path.write_text(text.replace("[child, household]", "[child]"), encoding="utf-8")
    settings = broker_settings(database_url, simulators, tmp, policy_dir=policies)
    partners = await register_partners(settings, simulators)
    async with serve_broker(settings, Clock()) as broker:
        yield Timed(Harness(broker, partners), Clock())


async def test_household_matching_is_refused_where_the_agreement_does_not_allow_it(
    database_url: str, simulators: dict[str, Any], tmp_path: Path
) -> None:
    async with child_only_broker(database_url, simulators, tmp_path) as timed:
        household = await timed.call(
            WIJKTEAM, "POST", "/v1/signals", signal(WIJKTEAM, subject=P01, subject_kind="household")
        )
        assert household.status_code == 422, household.text
        assert household.json()["code"] == "subject_kind_not_allowed"
        assert household.json()["field"] == "subject_kind"
        # Siblings do not match; the same child does.
        for party, subject in ((VT, P03), (GI, P05), (WIJKTEAM, P03)):
            response = await timed.call(party, "POST", "/v1/signals", signal(party, subject))
            assert response.status_code == 201, response.text
        assert await inbox(timed, GI) == []
        [vt_message] = await inbox(timed, VT)
        assert decrypt(timed.harness, VT, vt_message["payload"])["basis"] == "child"
        db = timed.harness.broker.services.db
        async with db.session() as session:
            rows = (await session.scalars(select(Signal))).all()
        assert {r.household_key for r in rows} == {None}  # not even kept
        await assert_no_bsn_stored(db)


async def test_withdrawal_and_expiry_remove_and_audit(timed: Timed, database_url: str) -> None:
    db = timed.harness.broker.services.db
    services = timed.harness.broker.services
    short = await timed.call(VT, "POST", "/v1/signals", signal(VT, end_date="2026-07-01"))
    kept = await timed.call(GI, "POST", "/v1/signals", signal(GI, end_date="2026-12-31"))
    gone = await timed.call(WIJKTEAM, "POST", "/v1/signals", signal(WIJKTEAM, subject=P04))
    for response in (short, kept, gone):
        assert response.status_code == 201, response.text

    withdrawn = await timed.call(WIJKTEAM, "DELETE", f"/v1/signals/{gone.json()['id']}")
    assert withdrawn.status_code == 200, withdrawn.text
    again = await timed.call(WIJKTEAM, "DELETE", f"/v1/signals/{gone.json()['id']}")
    assert again.status_code == 404
    assert (await timed.call(WIJKTEAM, "GET", "/v1/signals")).json() == {"signals": []}

    # The end date is the last day: removed from the next day (Dutch time) on.
    timed.clock.now = timed.clock.now.replace(month=7, day=1, hour=23, minute=30)
    assert await services.signals.expire() == []
    timed.clock.now = timed.clock.now.replace(day=2, hour=0, minute=30)
    assert await services.signals.expire() == [short.json()["id"]]
    assert await services.signals.expire() == []
    assert (await timed.call(VT, "GET", "/v1/signals")).json() == {"signals": []}

    async with db.session() as session:
        left = (await session.scalars(select(Signal))).all()
    assert [r.id for r in left] == [kept.json()["id"]]
    [withdrawal] = await entries(db, "signal_withdrawn")
    assert withdrawal["signal_id"] == gone.json()["id"]
    assert withdrawal["subject"].startswith("psn:")
    assert withdrawal["agency"] == AGENCIES[WIJKTEAM]
    [expiry] = await entries(db, "signal_expired")
    assert expiry["signal_id"] == short.json()["id"]
    assert expiry["end_date"] == "2026-07-01"
    assert expiry["reason"] == "expired"

    # A new signal about Noor no longer meets the expired one.
    late = await timed.call(WIJKTEAM, "POST", "/v1/signals", signal(WIJKTEAM))
    assert late.json()["matches"] == 1  # the GI's, not the expired VT signal
    await assert_no_bsn_stored(db)
    await verify_chain(db)

    # `broker signals expire` from the shell (on the real clock, long after
    # 31 December 2026 ... or not yet: either way it removes only what is due).
    cli = await asyncio.to_thread(
        CliRunner().invoke,
        cli_main,
        ["signals", "expire"],
        env={
            "BROKER_DATABASE_URL": database_url,
            "BROKER_KEYS_DIR": str(services.settings.keys_dir),
        },
    )
    assert cli.exit_code == 0, cli.output
    assert "removed" in cli.output
