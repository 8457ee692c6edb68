"""Signed release receipts: what the broker decided and released, per exchange.

A receipt is a JWS (RFC 7515) in compact serialisation, signed with the broker's
active Ed25519 key (``alg`` EdDSA, RFC 8037), with the protected header
``{"alg": "EdDSA", "kid": <key id in /oauth/jwks>, "typ": "release-receipt+jws"}``.
Its payload is the canonical JSON (RFC 8785) of the document ``receipt_payload``
builds: the exchange, the agreement and policy bundle that decided it, one entry
per element x subject (pseudonymised subject keys only, never a BSN), and the
audit leaf indices of the exchange's entries with the tree size right after
them, so an inclusion proof can be fetched and checked against a checkpoint.

Receipts are issued after the audit commit and cost one Ed25519 signature: no
database round trip. ``audit/verifier.py`` (``verify_receipt``) checks them
offline; any JOSE library that supports EdDSA does too. See docs/receipts.md.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict, Unpack

from broker.core.canonical import canonical_json_plain
from broker.core.types import Decision, ItemDecision, ItemStatus
from broker.crypto.keys import BrokerKeyring

RECEIPT_VERSION = 1
RECEIPT_TYPE = "release-receipt+jws"
RECEIPT_ALG = "EdDSA"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def receipt_payload(
    *,
    exchange_id: str,
    request_id: str,
    issued_at: datetime,
    requester_oin: str,
    requester_party: str,
    provider_oin: str,
    provider_party: str,
    purpose_id: str,
    decision: Decision,
    statuses: Sequence[ItemStatus],
    leaf_indices: Sequence[int],
    log_origin: str,
    sources: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """The receipt document of one exchange. ``decision.items`` carry the
    pseudonymised subject keys the policy engine saw; ``statuses`` and
    ``sources`` (each released item's original source) are in the same order.
    ``leaf_indices`` are the exchange's audit entries (contiguous, one commit):
    the tree of ``max + 1`` entries is the one right after them."""
    if not leaf_indices:
        raise ValueError("a receipt cites at least one audit entry")
    per_item = sources if sources is not None else [None] * len(statuses)
    return {
        "v": RECEIPT_VERSION,
        "exchange_id": exchange_id,
        "decision_id": decision.decision_id,
        "request_id": request_id,
        "issued_at": issued_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "requester": {"oin": requester_oin, "party": requester_party},
        "provider": {"oin": provider_oin, "party": provider_party},
        "purpose_id": purpose_id,
        "agreement": {
            "id": decision.agreement_id,
            "version": decision.agreement_version,
            "content_hash": decision.agreement_hash,
        },
        "policy_bundle": decision.bundle_hash,
        "response_form": decision.obligations.response_form.value,
        "items": [
            _item(d, status, source)
            for d, status, source in zip(decision.items, statuses, per_item, strict=True)
        ],
        "audit": {
            "log_origin": log_origin,
            "leaf_indices": list(leaf_indices),
            "tree_size": max(leaf_indices) + 1,
        },
    }


def _item(d: ItemDecision, status: ItemStatus, source: str | None) -> dict[str, Any]:
    """One item of a receipt (see docs/receipts.md)."""
    return {
        "element": d.element,
        "subject_key": d.subject,
        "outcome": d.outcome.value,
        "reason": d.reason.value,
        "legal_basis_ids": list(d.legal_basis_ids),
        "consent_id": d.consent_id,
        "acute_declaration_id": d.acute_declaration_id,
        "status": status.value,
        "source": source,
    }


FAN_OUT_RECEIPT_VERSION = 2


@dataclass(frozen=True, slots=True)
class ReceiptLeg:
    """One provider's part of an exchange that asked several providers."""

    exchange_id: str
    provider_oin: str
    provider_party: str
    decision: Decision
    statuses: Sequence[ItemStatus]
    sources: Sequence[str | None] | None = None  # per item, as in receipt_payload


def fan_out_receipt_payload(
    *,
    exchange_id: str,
    request_id: str,
    issued_at: datetime,
    requester_oin: str,
    requester_party: str,
    purpose_id: str,
    legs: Sequence[ReceiptLeg],
    leaf_indices: Sequence[int],
    log_origin: str,
) -> dict[str, Any]:
    """The receipt document (version 2) of an exchange that asked several providers:
    ``providers`` lists each provider with its part's exchange record and decision;
    every item names its provider. Items are in response order (provider by provider).
    The agreement, bundle and response form are those of the first part (one agreement
    and purpose per request: the same for every part)."""
    if not leaf_indices:
        raise ValueError("a receipt cites at least one audit entry")
    if not legs:
        raise ValueError("a fan-out receipt names at least one provider")
    first = legs[0].decision
    return {
        "v": FAN_OUT_RECEIPT_VERSION,
        "exchange_id": exchange_id,
        "request_id": request_id,
        "issued_at": issued_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "requester": {"oin": requester_oin, "party": requester_party},
        "providers": [
            {
                "oin": leg.provider_oin,
                "party": leg.provider_party,
                "exchange_id": leg.exchange_id,
                "decision_id": leg.decision.decision_id,
            }
            for leg in legs
        ],
        "purpose_id": purpose_id,
        "agreement": {
            "id": first.agreement_id,
            "version": first.agreement_version,
            "content_hash": first.agreement_hash,
        },
        "policy_bundle": first.bundle_hash,
        "response_form": first.obligations.response_form.value,
        "items": [
            {
                "provider": {"oin": leg.provider_oin, "party": leg.provider_party},
                **_item(d, status, source),
            }
            for leg in legs
            for d, status, source in zip(
                leg.decision.items,
                leg.statuses,
                leg.sources if leg.sources is not None else [None] * len(leg.statuses),
                strict=True,
            )
        ],
        "audit": {
            "log_origin": log_origin,
            "leaf_indices": list(leaf_indices),
            "tree_size": max(leaf_indices) + 1,
        },
    }


def _signing_input(keyring: BrokerKeyring, payload: dict[str, Any]) -> str:
    # ``receipt_payload`` builds ASCII keys and no floats: the plain canonical form applies.
    header = {"alg": RECEIPT_ALG, "kid": keyring.active_kid, "typ": RECEIPT_TYPE}
    return _b64u(canonical_json_plain(header)) + "." + _b64u(canonical_json_plain(payload))


def sign_receipt(keyring: BrokerKeyring, payload: dict[str, Any]) -> str:
    """The compact JWS of ``payload`` (canonical JSON) by the keyring's active key."""
    signing_input = _signing_input(keyring, payload)
    signature = keyring.sign_raw(signing_input.encode("ascii"))
    return signing_input + "." + _b64u(signature)


async def sign_receipt_async(keyring: BrokerKeyring, payload: dict[str, Any]) -> str:
    """``sign_receipt`` off the event loop when the key is in an HSM."""
    signing_input = _signing_input(keyring, payload)
    signature = await keyring.sign_async(signing_input.encode("ascii"))
    return signing_input + "." + _b64u(signature.value)


class ReceiptFields(TypedDict):
    exchange_id: str
    request_id: str
    issued_at: datetime
    requester_oin: str
    requester_party: str
    provider_oin: str
    provider_party: str
    purpose_id: str
    decision: Decision
    statuses: Sequence[ItemStatus]
    leaf_indices: Sequence[int]
    sources: NotRequired[Sequence[str | None] | None]


class ReceiptSigner:
    """Issues receipts with the broker's keyring, naming the audit log's origin."""

    def __init__(self, keyring: BrokerKeyring, log_origin: str) -> None:
        self._keyring = keyring
        self.log_origin = log_origin

    def issue(self, **fields: Unpack[ReceiptFields]) -> str:
        return sign_receipt(self._keyring, receipt_payload(**fields, log_origin=self.log_origin))

    async def issue_async(self, **fields: Unpack[ReceiptFields]) -> str:
        """``issue`` for the request path: an HSM signs on its own threads."""
        payload = receipt_payload(**fields, log_origin=self.log_origin)
        return await sign_receipt_async(self._keyring, payload)

    async def issue_fan_out_async(
        self,
        *,
        exchange_id: str,
        request_id: str,
        issued_at: datetime,
        requester_oin: str,
        requester_party: str,
        purpose_id: str,
        legs: Sequence[ReceiptLeg],
        leaf_indices: Sequence[int],
    ) -> str:
        """The version 2 receipt of an exchange that asked several providers."""
        payload = fan_out_receipt_payload(
            exchange_id=exchange_id,
            request_id=request_id,
            issued_at=issued_at,
            requester_oin=requester_oin,
            requester_party=requester_party,
            purpose_id=purpose_id,
            legs=legs,
            leaf_indices=leaf_indices,
            log_origin=self.log_origin,
        )
        return await sign_receipt_async(self._keyring, payload)
