"""Property tests of retention sealing with real AES-256-GCM: sealed fields open
to what was sealed, only for the record (table, id) and key they were sealed to;
decision inputs and results keep their non-personal members in clear; retention
periods end after the month they cover."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from broker.crypto import _primitives as p
from broker.retention.vault import (
    SEALED_INPUT_FIELDS,
    add_duration,
    month_of,
    open_field,
    parse_duration,
    seal_field,
    seal_input,
    seal_result,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
record_ids = st.text(min_size=1, max_size=36)
keys = st.binary(min_size=32, max_size=32)
KID = "P20Y:2026-11"
NOT_OPEN = "does not open|not an AES-256-GCM"


@SETTINGS
@given(key=keys, record=record_ids, value=json_values)
def test_sealed_fields_round_trip(key: bytes, record: str, value: Any) -> None:
    sealed = seal_field(key, KID, "decisions", record, value)
    assert open_field(key, KID, "decisions", record, sealed) == value


@SETTINGS
@given(key=keys, a=record_ids, b=record_ids, va=json_values, vb=json_values)
def test_ciphertexts_are_bound_to_their_record(
    key: bytes, a: str, b: str, va: Any, vb: Any
) -> None:
    assume(a != b)
    sealed_a = seal_field(key, KID, "exchanges", a, va)
    sealed_b = seal_field(key, KID, "exchanges", b, vb)
    # Swapped between records, moved to another table or key id: refused.
    with pytest.raises(ValueError, match=NOT_OPEN):
        open_field(key, KID, "exchanges", b, sealed_a)
    with pytest.raises(ValueError, match=NOT_OPEN):
        open_field(key, KID, "exchanges", a, sealed_b)
    with pytest.raises(ValueError, match=NOT_OPEN):
        open_field(key, KID, "decisions", a, sealed_a)
    with pytest.raises(ValueError, match=NOT_OPEN):
        open_field(key, "P1Y:2026-11", "exchanges", a, sealed_a)


@SETTINGS
@given(key=keys, other=keys, record=record_ids, value=json_values)
def test_another_key_opens_nothing(key: bytes, other: bytes, record: str, value: Any) -> None:
    assume(key != other)
    sealed = seal_field(key, KID, "decisions", record, value)
    with pytest.raises(ValueError, match=NOT_OPEN):
        open_field(other, KID, "decisions", record, sealed)


@SETTINGS
@given(key=keys, record=record_ids, value=json_values, position=st.integers(min_value=0))
def test_any_changed_byte_is_refused(key: bytes, record: str, value: Any, position: int) -> None:
    raw = bytearray(p.b64u_decode(seal_field(key, KID, "decisions", record, value)))
    raw[position % len(raw)] ^= 0x01
    with pytest.raises(ValueError, match=NOT_OPEN):
        open_field(key, KID, "decisions", record, p.b64u(bytes(raw)))


subjects = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.text(min_size=1, max_size=12),
            "kind": st.sampled_from(["person", "household"]),
            "birth_date": st.none() | st.dates().map(lambda d: d.isoformat()),
            "age": st.none() | st.integers(min_value=0, max_value=120),
            "authority_holders": st.lists(st.text(max_size=12), max_size=3),
        }
    ),
    max_size=4,
)


answers = st.lists(
    st.fixed_dictionaries(
        {
            "subject": st.text(min_size=1, max_size=12),
            "element": st.sampled_from(["vt.report_exists", "x.y"]),
            "answer": st.booleans(),
        }
    ),
    max_size=4,
)


@SETTINGS
@given(key=keys, record=record_ids, people=subjects, context=json_values, prior=answers)
def test_decision_inputs_seal_only_their_personal_members(
    key: bytes, record: str, people: list[dict[str, Any]], context: Any, prior: list[Any]
) -> None:
    document = {
        "agreement": "agr-x",
        "purpose": "p",
        "request_date": "2026-11-25",
        "items": [{"element": "e", "subject": s["key"]} for s in people],
        "subjects": people,
        "context": context,
        "consents": [],
        "acute_declaration": None,
        "prior_answers": prior,
    }
    stored = seal_input(key, KID, record, document)
    assert stored["agreement"] == "agr-x" and stored["items"] == document["items"]
    assert stored["subjects"] == [{"key": s["key"], "kind": s["kind"]} for s in people]
    assert not {"context", "consents", "acute_declaration", "prior_answers"} & set(stored)
    secret = open_field(key, stored["sealed"]["kid"], "decisions", record, stored["sealed"]["ct"])
    restored = {k: v for k, v in stored.items() if k != "sealed"} | secret
    assert restored == document
    assert set(secret) == set(SEALED_INPUT_FIELDS)
    # An input without a member (e.g. a publication's, without prior answers)
    # opens without it.
    del document["prior_answers"]
    stored = seal_input(key, KID, record, document)
    secret = open_field(key, stored["sealed"]["kid"], "decisions", record, stored["sealed"]["ct"])
    assert {k: v for k, v in stored.items() if k != "sealed"} | secret == document


@SETTINGS
@given(key=keys, record=record_ids, released=answers)
def test_decision_results_seal_their_boolean_answers(
    key: bytes, record: str, released: list[dict[str, Any]]
) -> None:
    document = {
        "items": [{"element": "vt.report_exists", "subject": "k", "reason": "allow_x"}],
        "obligations": {"response_form": "boolean_only", "retention": None},
        "answers": released,
    }
    stored = seal_result(key, KID, record, document)
    if not released:  # nothing personal: left as it is, no AEAD
        assert stored == document
        return
    assert "answers" not in stored
    assert stored["items"] == document["items"]
    assert stored["obligations"] == document["obligations"]
    sealed = stored["sealed"]
    secret = open_field(key, sealed["kid"], "decisions.result", record, sealed["ct"])
    assert {k: v for k, v in stored.items() if k != "sealed"} | secret == document
    # Bound to the result column: it does not open as the row's input.
    with pytest.raises(ValueError, match=NOT_OPEN):
        open_field(key, sealed["kid"], "decisions", record, sealed["ct"])


@SETTINGS
@given(
    at=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    years=st.integers(min_value=0, max_value=100),
    months=st.integers(min_value=0, max_value=30),
    days=st.integers(min_value=0, max_value=400),
)
def test_periods_end_after_their_month(at: datetime, years: int, months: int, days: int) -> None:
    assume(years or months or days)
    period = month_of(at)
    assert period.start <= at < period.end
    duration = parse_duration(f"P{years}Y{months}M{days}D")
    assert parse_duration(duration.text) == duration
    assert add_duration(period.end, duration) > period.end


def test_durations_are_strict() -> None:
    for bad in ("", "P", "P0D", "PT1H", "1Y", "P-1Y", "P1.5Y"):
        with pytest.raises(ValueError, match="retention period"):
            parse_duration(bad)
    assert parse_duration("p2w").text == "P14D"
    assert parse_duration("P18M").text == "P1Y6M"
