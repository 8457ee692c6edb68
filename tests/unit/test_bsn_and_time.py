"""BSN elfproef, age and date arithmetic, nanosecond timestamps and ISO durations."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.bsn import is_valid_bsn
from broker.core.clock import age_on, dutch_date, to_ns
from broker.policy.loader import duration_seconds

SCENARIO_BSNS = [
    "999990007",
    "999990019",
    "999990020",
    "999990032",
    "999990044",
    "999990056",
    "999990068",
    "999990081",
    "999990093",
    "999990111",
    "999990123",
    "999990135",
    "999990147",
    "999990159",
]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------- BSN


@pytest.mark.parametrize("bsn", SCENARIO_BSNS)
def test_scenario_bsns_pass_the_elfproef(bsn: str) -> None:
    assert is_valid_bsn(bsn)


@pytest.mark.parametrize(
    "value",
    [
        "123456789",  # fails the 11-check
        "000000000",  # passes the arithmetic, refused explicitly
        "99999000",  # 8 digits
        "9999900070",  # 10 digits
        "99999000a",
        "99999 007",
        "-99990007",
        "",
        " 999990007",
        "999990007 ",
        "\u0669\u0669\u0669\u0669\u0669\u0660\u0660\u0660\u0667",  # Arabic-Indic digits
    ],
)
def test_invalid_bsns_are_refused(value: str) -> None:
    assert not is_valid_bsn(value)


def test_bsn_with_trailing_newline_is_refused_not_crashing() -> None:
    # ``$`` also matches before a trailing newline; the check must be a full match.
    assert is_valid_bsn("999990007\n") is False


def _weighted(digits: str) -> int:
    return sum(int(d) * w for d, w in zip(digits, (9, 8, 7, 6, 5, 4, 3, 2, -1), strict=True))


@given(st.text(alphabet="0123456789", min_size=8, max_size=8))
def test_at_most_one_check_digit_completes_eight_digits(prefix: str) -> None:
    completions = [d for d in "0123456789" if is_valid_bsn(prefix + d)]
    assert len(completions) <= 1
    # Exactly one when the weighted sum leaves a remainder a single digit can cancel.
    partial = _weighted(prefix + "0") % 11
    expected = 0 if partial == 10 or prefix + str(partial) == "000000000" else 1
    assert len(completions) == expected
    if completions:
        assert completions == [str(partial)]


@st.composite
def valid_bsns(draw: st.DrawFn) -> str:
    prefix = draw(st.text(alphabet="0123456789", min_size=8, max_size=8))
    check = _weighted(prefix + "0") % 11
    if check == 10 or prefix + str(check) == "000000000":
        prefix = "99999000"
        check = 7
    return prefix + str(check)


@given(valid_bsns(), st.integers(0, 8), st.integers(1, 9))
def test_changing_one_digit_of_a_valid_bsn_invalidates_it(bsn: str, pos: int, delta: int) -> None:
    assert is_valid_bsn(bsn)
    digit = (int(bsn[pos]) + delta) % 10
    changed = bsn[:pos] + str(digit) + bsn[pos + 1 :]
    assert not is_valid_bsn(changed)


@given(st.text(max_size=12))
def test_is_valid_bsn_never_raises_and_only_accepts_nine_ascii_digits(value: str) -> None:
    result = is_valid_bsn(value)
    if result:
        assert len(value) == 9
        assert all(c in "0123456789" for c in value)


# ----------------------------------------------------------------- ages


def plus_years(birth: date, years: int) -> date:
    """The anniversary of ``birth``; 29 February falls on 1 March in common years."""
    year = birth.year + years
    if (birth.month, birth.day) == (2, 29) and not calendar.isleap(year):
        return date(year, 3, 1)
    return birth.replace(year=year)


@pytest.mark.parametrize(
    ("birth", "day", "age"),
    [
        (date(2008, 5, 17), date(2026, 5, 17), 18),  # the birthday itself counts
        (date(2008, 5, 17), date(2026, 5, 16), 17),
        (date(2008, 5, 17), date(2026, 12, 31), 18),
        (date(2008, 2, 29), date(2026, 2, 28), 17),  # not yet: 1 March in a common year
        (date(2008, 2, 29), date(2026, 3, 1), 18),
        (date(2008, 2, 29), date(2028, 2, 29), 20),  # leap year: on the day itself
        (date(2008, 2, 29), date(2028, 2, 28), 19),
        (date(2010, 1, 1), date(2010, 1, 1), 0),
        (date(2009, 12, 31), date(2010, 1, 1), 0),
    ],
)
def test_age_on_known_values(birth: date, day: date, age: int) -> None:
    assert age_on(birth, day) == age


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)), st.data())
def test_age_is_completed_years(birth: date, data: st.DataObject) -> None:
    day = data.draw(st.dates(min_value=birth, max_value=date(2120, 12, 31)))
    age = age_on(birth, day)
    assert age >= 0
    assert plus_years(birth, age) <= day
    assert plus_years(birth, age + 1) > day


# ----------------------------------------------------------------- Dutch dates


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # Summer (CEST, UTC+2): the Dutch day starts at 22:00 UTC.
        (datetime(2025, 7, 1, 21, 59, 59, 999999, tzinfo=UTC), date(2025, 7, 1)),
        (datetime(2025, 7, 1, 22, 0, tzinfo=UTC), date(2025, 7, 2)),
        # Winter (CET, UTC+1): the Dutch day starts at 23:00 UTC.
        (datetime(2025, 1, 15, 22, 59, 59, 999999, tzinfo=UTC), date(2025, 1, 15)),
        (datetime(2025, 1, 15, 23, 0, tzinfo=UTC), date(2025, 1, 16)),
        (datetime(2025, 12, 31, 23, 30, tzinfo=UTC), date(2026, 1, 1)),
        # Transition days: clocks go forward 30 March 2025, back 26 October 2025.
        (datetime(2025, 3, 29, 23, 0, tzinfo=UTC), date(2025, 3, 30)),
        (datetime(2025, 3, 30, 21, 59, tzinfo=UTC), date(2025, 3, 30)),
        (datetime(2025, 3, 30, 22, 0, tzinfo=UTC), date(2025, 3, 31)),
        (datetime(2025, 10, 25, 21, 59, tzinfo=UTC), date(2025, 10, 25)),
        (datetime(2025, 10, 25, 22, 0, tzinfo=UTC), date(2025, 10, 26)),
        (datetime(2025, 10, 26, 22, 59, tzinfo=UTC), date(2025, 10, 26)),
        (datetime(2025, 10, 26, 23, 0, tzinfo=UTC), date(2025, 10, 27)),
        # Other offsets are converted, not read off literally.
        (datetime(2025, 7, 1, 18, 0, tzinfo=timezone(timedelta(hours=-5))), date(2025, 7, 2)),
    ],
)
def test_dutch_date_around_midnight(moment: datetime, expected: date) -> None:
    assert dutch_date(moment) == expected


# ----------------------------------------------------------------- nanoseconds

aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))]
    ),
)


def test_to_ns_known_values() -> None:
    assert to_ns(EPOCH) == 0
    assert to_ns(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1_000_000_000
    assert to_ns(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1_000
    assert to_ns(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)) == -1_000_000_000
    assert to_ns(datetime(1970, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))) == 0


def test_to_ns_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_ns(datetime(2025, 1, 1))


@given(aware_datetimes)
def test_to_ns_round_trips(moment: datetime) -> None:
    ns = to_ns(moment)
    assert ns % 1_000 == 0
    assert EPOCH + timedelta(microseconds=ns // 1_000) == moment
    assert ns == int((moment - EPOCH) / timedelta(microseconds=1)) * 1_000


@given(aware_datetimes, aware_datetimes)
def test_to_ns_preserves_order(a: datetime, b: datetime) -> None:
    assert (to_ns(a) < to_ns(b)) == (a < b)


# ----------------------------------------------------------------- ISO durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT72H", 259_200),
        ("P3D", 259_200),
        ("PT0S", 0),
        ("PT90M", 5_400),
        ("P1DT2H3M4S", 93_784),
        ("PT1H30M", 5_400),
    ],
)
def test_duration_seconds(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "P", "PT", "72H", "PT72", "P1Y", "P1M", "P1W", "PT-1H", "PT1.5H", "pt72h", " PT72H"],
)
def test_bad_durations_raise(text: str) -> None:
    with pytest.raises(ValueError, match="unsupported ISO 8601 duration"):
        duration_seconds(text)


@given(st.integers(0, 400), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100))
@settings(max_examples=50)
def test_duration_seconds_adds_up(d: int, h: int, m: int, s: int) -> None:
    assert duration_seconds(f"P{d}DT{h}H{m}M{s}S") == d * 86_400 + h * 3_600 + m * 60 + s


@pytest.mark.parametrize("text", ["P\n", "PT\n", "PT72H\n", "P1DT", "P\u0663D"])
def test_duration_parser_is_strict(text: str) -> None:
    # Regression: a pattern ending in ``$`` with ``\d`` accepted "P\n", "PT\n",
    # Unicode digits and "P1DT" (a T without a time part).
    with pytest.raises(ValueError, match="unsupported ISO 8601 duration"):
        duration_seconds(text)
