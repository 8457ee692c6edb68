"""Units of the review page's OpenID Connect sign-in and TOTP sealing: PKCE
against RFC 7636's example, the role claim's scope, and sealed TOTP secrets
(round trip; any changed byte, another account or another KEK refused)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core.errors import KeyError_
from broker.retention.vault import kek_id
from broker.review import sealing, totp
from broker.review.oidc import code_challenge, roles_scope

OIN_A = "00000001800006185000"
OIN_B = "00000003812345720000"


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_role_claim_scope() -> None:
    claims = {
        "realm_access": {"roles": [f"privacy_officer:{OIN_B}", f"privacy_officer:{OIN_A}"]},
        "groups": f"staff privacy_officer:broker privacy_officer:{OIN_A}",
        "bad": [f"privacy_officer:{OIN_A[:-1]}", "privacy_officer:", 7, f"officer:{OIN_A}"],
    }
    nested = roles_scope(claims, "realm_access.roles", "privacy_officer:")
    assert (nested.agencies, nested.broker_officer) == ((OIN_A, OIN_B), False)
    spaced = roles_scope(claims, "groups", "privacy_officer:")
    assert (spaced.agencies, spaced.broker_officer) == ((OIN_A,), True)
    for path in ("bad", "missing", "realm_access.missing", "groups.deeper"):
        empty = roles_scope(claims, path, "privacy_officer:")
        assert (empty.agencies, empty.broker_officer) == ((), False)


@given(
    roles=st.lists(
        st.one_of(
            st.text(max_size=40),
            st.from_regex(r"privacy_officer:[0-9]{20}", fullmatch=True),
            st.just("privacy_officer:broker"),
        ),
        max_size=8,
    )
)
def test_role_claim_grants_exactly_the_named_agencies(roles: list[str]) -> None:
    scope = roles_scope({"roles": roles}, "roles", "privacy_officer:")
    expected = {
        r.removeprefix("privacy_officer:")
        for r in roles
        if r.startswith("privacy_officer:")
        and len(r) == 36
        and r[16:].isascii()
        and r[16:].isdigit()
    }
    assert set(scope.agencies) == expected
    assert scope.broker_officer == ("privacy_officer:broker" in roles)


KEK = os.urandom(32)
KEY, WRAPPED = sealing.new_wrapped_key(KEK)


def test_data_key_unwraps_only_with_its_kek() -> None:
    assert sealing.unwrap_key(KEK, sealing.TOTP_KEY_ID, kek_id(KEK), WRAPPED) == KEY
    other = os.urandom(32)
    with pytest.raises(KeyError_):
        sealing.unwrap_key(other, sealing.TOTP_KEY_ID, kek_id(other), WRAPPED)
    with pytest.raises(KeyError_):
        sealing.unwrap_key(other, sealing.TOTP_KEY_ID, kek_id(KEK), WRAPPED)


@given(account=st.integers(min_value=1, max_value=2**31), position=st.integers(min_value=0))
def test_sealed_totp_round_trip_and_tampering(account: int, position: int) -> None:
    secret = totp.new_secret()
    stored = sealing.seal_totp(KEY, account, secret)
    assert len(stored) <= 255 and secret not in stored
    assert sealing.open_totp(KEY, account, stored) == secret
    with pytest.raises(KeyError_):
        sealing.open_totp(KEY, account + 1, stored)
    body_start = len("tk1:") + len(sealing.TOTP_KEY_ID) + 1
    i = body_start + position % (len(stored) - body_start)
    flipped = "A" if stored[i] != "A" else "B"
    with pytest.raises(KeyError_):
        sealing.open_totp(KEY, account, stored[:i] + flipped + stored[i + 1 :])


def test_a_secret_in_clear_is_refused() -> None:
    with pytest.raises(KeyError_):
        sealing.open_totp(KEY, 1, totp.new_secret())
