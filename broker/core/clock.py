"""Injectable time. The broker decides on its own clock; tests pass another."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

Clock = Callable[[], datetime]
DUTCH = ZoneInfo("Europe/Amsterdam")


def system_clock() -> datetime:
    return datetime.now(UTC)


def to_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def dutch_date(moment: datetime) -> date:
    """The calendar date in the Netherlands: agreements and ages count in local days."""
    return moment.astimezone(DUTCH).date()


def age_on(birth: date, day: date) -> int:
    """Completed years on ``day``; the birthday itself counts as reached.

    A 29 February birthday is reached on 1 March in non-leap years."""
    years = day.year - birth.year
    if (day.month, day.day) < (birth.month, birth.day):
        years -= 1
    return years
