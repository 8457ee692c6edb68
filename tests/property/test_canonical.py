"""The fast canonical-JSON path is byte-identical to the RFC 8785 reference."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.canonical import canonical_json

scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text()
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(documents)
@settings(max_examples=500)
def test_fast_path_matches_rfc8785(document: Any) -> None:
    assert canonical_json(document) == rfc8785.dumps(document)


@given(st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False)))
def test_floats_take_the_reference_path(document: dict[str, float]) -> None:
    assert canonical_json(document) == rfc8785.dumps(document)


def test_known_vector() -> None:
    assert canonical_json({"b": [1, "é", None], "a": {"z": True, "\n": "\u0001"}}) == (
        b'{"a":{"\\n":"\\u0001","z":true},"b":[1,"\xc3\xa9",null]}'
    )


def test_audit_entries_are_rfc8785() -> None:
    from datetime import UTC, datetime

    from audit.log import AuditRecord, build_entry

    body = {
        "exchange_id": "x",
        "subject": "psn:ab",
        "element": "person.name",
        "legal_basis": ["wpg_20"],
        "agreement": {"id": "a", "version": "1.0", "hash": None},
        "consent_id": None,
        "note": "é\n",
    }
    data = build_entry(
        AuditRecord(kind="decision", body=body),
        seq=3,
        prev="0" * 64,
        ts=datetime(2026, 1, 1, tzinfo=UTC),
    )
    import json

    assert data == rfc8785.dumps(json.loads(data))
