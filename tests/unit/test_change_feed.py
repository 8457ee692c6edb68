"""Change announcements between instances: version rows bumped in the writer's
transaction, seen by every ChangeFeed by polling and (PostgreSQL) LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from broker.agencies.service import AgencyDirectory, AgencyService
from broker.cluster.changes import AGENCIES, AGREEMENTS, ChangeFeed, announce
from broker.crypto.keys import generate_jwk, public_only
from broker.db.session import Database
from broker.reference import ReferenceData
from broker.settings import PROJECT_ROOT

OIN = "00000001800006185000"


async def wait_for(condition: Callable[[], bool], seconds: float = 3.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "not seen in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_announce_bumps_the_topic_in_the_callers_transaction(database: Database) -> None:
    async with database.session() as session:
        first = await announce(session, AGREEMENTS)
        second = await announce(session, AGREEMENTS)
        await session.rollback()
    assert second == first + 1
    feed = ChangeFeed(database)
    before = (await feed.versions()).get(AGREEMENTS, 0)
    async with database.session() as session:
        now = await announce(session, AGREEMENTS)
        await session.commit()
    assert now == before + 1
    assert (await feed.versions())[AGREEMENTS] == now


async def test_subscribers_run_once_per_new_version(database: Database) -> None:
    feed = ChangeFeed(database, poll_seconds=0.05)
    # Polling only now and then: on PostgreSQL the NOTIFY alone must tell this one.
    listener = ChangeFeed(database, poll_seconds=30.0)
    seen: list[str] = []
    heard: list[str] = []
    for topic in (AGREEMENTS, AGENCIES):
        feed.subscribe(topic, lambda topic=topic: seen.append(topic))  # type: ignore[misc]
        listener.subscribe(topic, lambda topic=topic: heard.append(topic))  # type: ignore[misc]
    await feed.start()
    await listener.start()
    try:
        if not database.is_sqlite:
            await wait_for(lambda: feed.listening and listener.listening)
        async with database.session() as session:
            await announce(session, AGREEMENTS)
            await session.commit()
        await wait_for(lambda: seen == [AGREEMENTS], seconds=1.0)
        async with database.session() as session:
            await announce(session, AGENCIES)
            await session.commit()
        await wait_for(lambda: seen == [AGREEMENTS, AGENCIES], seconds=1.0)
        await asyncio.sleep(0.3)
        assert seen == [AGREEMENTS, AGENCIES]  # once per version, not once per path
        if not database.is_sqlite:
            assert heard == [AGREEMENTS, AGENCIES]
    finally:
        await feed.stop()
        await listener.stop()


async def test_a_disabled_agency_is_seen_at_once_by_another_instance(
    database: Database,
) -> None:
    registry = AgencyService(database, ReferenceData.load(PROJECT_ROOT / "policies"))
    sig, enc = generate_jwk("Ed25519", use="sig"), generate_jwk("X25519", use="enc")
    await registry.add(
        oin=OIN,
        name="Veilig Thuis",
        party_type="veilig_thuis",
        jwks={"keys": [public_only(sig), public_only(enc)]},
    )
    # The other instance: its own engine, directory (cache lifetime 60 s) and feed.
    other = Database(database.url)
    directory = AgencyDirectory(other, ttl_seconds=60.0)
    feed = ChangeFeed(other, poll_seconds=0.1)
    feed.subscribe(AGENCIES, directory.invalidate)
    await feed.start()
    try:
        cached = await directory.get(OIN)
        assert cached is not None and cached.active
        await registry.set_active(OIN, False)
        started = time.monotonic()
        while (view := await directory.get(OIN)) is not None and view.active:
            assert time.monotonic() - started < 2.0, "the cached agency is still active"
            await asyncio.sleep(0.02)
        assert view is not None
    finally:
        await feed.stop()
        await other.dispose()
