"""Property tests of the crypto recipes with real keys: sealed payloads decrypt with
an independent JOSE library, any single-character change to a JWE is refused,
pseudonyms are keyed and never reveal the BSN, and JWKS parsing is strict."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwe
from joserfc.jwk import ECKey, OKPKey

from broker.crypto.jose import Sealer
from broker.crypto.keys import (
    PartnerKey,
    Pseudonymizer,
    generate_jwk,
    parse_jwks,
    public_only,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _recipient(sig_kind: str, enc_kind: str) -> tuple[dict[str, Any], PartnerKey]:
    sig = generate_jwk(sig_kind, use="sig")
    enc = generate_jwk(enc_kind, use="enc")
    keys = parse_jwks({"keys": [public_only(sig), public_only(enc)]})
    return enc, next(k for k in keys if k.use == "enc")


# Generated once per module: key generation is not what is under test.
RECIPIENTS = {
    "X25519": _recipient("Ed25519", "X25519"),
    "P-256": _recipient("P-256", "P-256"),
}
PRIVATE = {
    name: (OKPKey if priv["kty"] == "OKP" else ECKey).import_key(priv)
    for name, (priv, _) in RECIPIENTS.items()
}
SEALER = Sealer()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
curves = st.sampled_from(sorted(RECIPIENTS))


def _decrypt(token: str, curve: str) -> Any:
    result = jwe.decrypt_compact(token, PRIVATE[curve])
    # RFC 8785 numbers are IEEE doubles: a float like 4.7e16 is written without an
    # exponent, so read every number back as a float before comparing.
    return result, json.loads(result.plaintext, parse_int=float)


@SETTINGS
@given(curves, json_values)
def test_sealed_payloads_decrypt_with_joserfc(curve: str, payload: Any) -> None:
    _, key = RECIPIENTS[curve]
    token = SEALER.seal("owner", key, payload)
    result, opened = _decrypt(token, curve)
    assert opened == payload
    assert result.protected["kid"] == key.kid == RECIPIENTS[curve][0]["kid"]
    assert result.protected["alg"] == "ECDH-ES+A256KW"
    assert result.protected["enc"] == "A256GCM"


@SETTINGS
@given(curves, json_values, st.data())
def test_any_single_character_change_is_refused(curve: str, payload: Any, data: Any) -> None:
    _, key = RECIPIENTS[curve]
    token = SEALER.seal("owner", key, payload)
    pos = data.draw(st.integers(0, len(token) - 1), label="position")
    replacement = data.draw(
        st.sampled_from(B64URL + ".").filter(lambda c: c != token[pos]), label="replacement"
    )
    tampered = token[:pos] + replacement + token[pos + 1 :]
    try:
        _decrypt(tampered, curve)
    except Exception:  # any refusal is the expected outcome
        pass
    else:
        raise AssertionError(
            f"a JWE changed at {pos} ({token[pos]!r} -> {replacement!r}) decrypted"
        )


@SETTINGS
@given(curves, json_values)
def test_every_seal_is_fresh(curve: str, payload: Any) -> None:
    _, key = RECIPIENTS[curve]
    first = SEALER.seal("owner", key, payload)
    second = SEALER.seal("owner", key, payload)
    assert first != second
    assert first.split(".")[0] != second.split(".")[0]  # a new ephemeral key each time


bsns = st.text(alphabet="0123456789", min_size=9, max_size=9)
keys32 = st.binary(min_size=16, max_size=64)


@settings(max_examples=200, deadline=None)
@given(keys32, keys32, bsns, bsns)
def test_pseudonyms(key_a: bytes, key_b: bytes, bsn: str, other_bsn: str) -> None:
    a, a_again, b = Pseudonymizer(key_a), Pseudonymizer(key_a), Pseudonymizer(key_b)
    psn = a.person(bsn)
    assert psn == a_again.person(bsn)
    assert psn.startswith("psn:")
    assert len(psn) == 44
    assert bsn not in psn
    assert (a.person(other_bsn) == psn) == (other_bsn == bsn)
    if key_a != key_b:
        assert b.person(bsn) != psn
    assert a.household(bsn)[3:] != psn[4:]
    assert bsn not in a.household(bsn)


sig_kinds = st.sampled_from(["Ed25519", "P-256"])
enc_kinds = st.sampled_from(["X25519", "P-256"])


@settings(max_examples=30, deadline=None)
@given(
    st.lists(sig_kinds, min_size=0, max_size=3),
    st.lists(enc_kinds, min_size=0, max_size=3),
    st.randoms(use_true_random=False),
)
def test_parse_jwks_accepts_exactly_the_well_formed_sets(
    sigs: list[str], encs: list[str], rnd: Any
) -> None:
    keys = [public_only(generate_jwk(k, use="sig")) for k in sigs]
    keys += [public_only(generate_jwk(k, use="enc")) for k in encs]
    rnd.shuffle(keys)
    doc = {"keys": keys}
    if sigs and encs:
        parsed = parse_jwks(doc)
        assert [k.kid for k in parsed] == [k["kid"] for k in keys]
        # A private member anywhere, or a repeated kid, makes the whole set invalid.
        with_private = [dict(k) for k in keys]
        with_private[rnd.randrange(len(keys))]["d"] = "AAAA"
        _refused({"keys": with_private}, "private key")
        _refused({"keys": [*keys, keys[rnd.randrange(len(keys))]]}, "unique")
    else:
        _refused(doc, "one signing and one encryption")


def _refused(doc: dict[str, Any], text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):
        parse_jwks(doc)
