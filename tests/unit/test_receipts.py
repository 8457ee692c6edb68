"""Release receipts without a running broker: the signer's JWS and the
stand-alone verifier's refusals (algorithm, type, key id, encoding)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from audit import verifier
from broker.core.types import (
    Decision,
    ItemDecision,
    ItemStatus,
    Obligations,
    ReasonCode,
)
from broker.crypto.keys import BrokerKeyring, generate_jwk
from broker.transparency.receipts import ReceiptSigner


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


DECISION = Decision(
    decision_id="d-1",
    engine="test",
    bundle_hash="sha256:00",
    agreement_id="agr",
    agreement_version="1.0",
    agreement_hash="sha256:11",
    acute_mode=False,
    obligations=Obligations(),
    items=(
        ItemDecision("a.b", "psn:aa", ReasonCode.ALLOW_STATUTORY_BASIS, ("wpg_20",)),
        ItemDecision("a.c", "psn:aa", ReasonCode.DENY_ELEMENT_NOT_ALLOWED),
    ),
)


def issue(keyring: BrokerKeyring, indices: list[int] | None = None) -> str:
    return ReceiptSigner(keyring, "broker.test/audit").issue(
        exchange_id="x-1",
        request_id="r-1",
        issued_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        requester_oin="1" * 20,
        requester_party="veilig_thuis",
        provider_oin="2" * 20,
        provider_party="politie",
        purpose_id="p",
        decision=DECISION,
        statuses=[ItemStatus.RELEASED, ItemStatus.DENIED],
        leaf_indices=[7, 8, 9] if indices is None else indices,
    )


@pytest.fixture
def keyring() -> BrokerKeyring:
    return BrokerKeyring([generate_jwk("Ed25519", use="sig")])


def test_receipt_round_trip(keyring: BrokerKeyring) -> None:
    token = issue(keyring)
    jwks = keyring.public_jwks()
    payload = verifier.verify_receipt(token, jwks)
    assert payload["audit"] == {
        "log_origin": "broker.test/audit",
        "leaf_indices": [7, 8, 9],
        "tree_size": 10,
    }
    assert payload["issued_at"] == "2026-01-02T03:04:05.000000+00:00"
    assert [i["status"] for i in payload["items"]] == ["released", "denied"]
    assert [i["outcome"] for i in payload["items"]] == ["allow", "deny"]
    key = jwt.PyJWK(jwks["keys"][0]).key
    assert json.loads(jwt.api_jws.decode(token, key, algorithms=["EdDSA"])) == payload


def test_a_receipt_cites_entries(keyring: BrokerKeyring) -> None:
    with pytest.raises(ValueError, match="audit entry"):
        issue(keyring, [])


def _resign(keyring: BrokerKeyring, header: dict[str, Any], payload: bytes) -> str:
    signing_input = b64u(json.dumps(header).encode()) + "." + b64u(payload)
    return signing_input + "." + b64u(keyring.sign_raw(signing_input.encode()))


def test_verifier_refusals(keyring: BrokerKeyring) -> None:
    token = issue(keyring)
    jwks = keyring.public_jwks()
    head, body, sig = token.split(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    good = {"alg": "EdDSA", "kid": keyring.active_kid, "typ": verifier.RECEIPT_TYPE}
    cases = {
        "alg none": f"{b64u(json.dumps(dict(good, alg='none')).encode())}.{body}.",
        "wrong alg": _resign(keyring, dict(good, alg="ES256"), payload),
        "access token typ": _resign(keyring, dict(good, typ="at+jwt"), payload),
        "unknown kid": _resign(keyring, dict(good, kid="nope"), payload),
        "crit": _resign(keyring, dict(good, crit=["exp"]), payload),
        "unknown version": _resign(keyring, good, payload.replace(b'"v":1', b'"v":9')),
        "padded base64url": f"{head}.{body}==.{sig}",
        "two parts": f"{head}.{body}",
        "not a token": "x",
    }
    for name, bad in cases.items():
        with pytest.raises(verifier.VerificationError) as caught:
            verifier.verify_receipt(bad, jwks)
        assert str(caught.value), name
    # A different key (the JWK alone, or a JWKS without the kid) does not verify it.
    other = BrokerKeyring([generate_jwk("Ed25519", use="sig")]).public_jwks()
    with pytest.raises(verifier.VerificationError):
        verifier.verify_receipt(token, other)
    with pytest.raises(verifier.VerificationError):
        verifier.verify_receipt(token, other["keys"][0])
    assert verifier.verify_receipt(token, jwks["keys"][0])["exchange_id"] == "x-1"
