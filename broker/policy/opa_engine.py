"""Policy engine backed by an OPA server, through ``opa-python-client``.

OPA loads the broker's signed policy bundle (``broker policy bundle``, built by
``broker.policy.bundle``): the same Rego library and agreement data as the
embedded engines, with the policy set's bundle hash as the bundle ``revision``.
Decisions are the ``data.broker.decision.result`` document queried over the
Data API with ``?provenance=true``: OPA answers with the revisions of the
bundles it evaluated against, read in the same store transaction as the
decision. Every decision is refused (PolicyUnavailable, 503, nothing released)
unless the broker's active bundle hash is among them, so an OPA that still
serves an older (or another) policy set never decides. Bundle roots cannot
overlap, so the bundle with that revision is the one that owns
``broker/decision``. Any other OPA fault raises PolicyUnavailable too.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

import structlog
from opa_client.opa_async import AsyncOpaClient

from broker.core.errors import PolicyUnavailable
from broker.core.types import Decision, PolicyInput
from broker.policy.decisions import parse_decision
from broker.policy.loader import PolicySet

log = structlog.get_logger("policy.opa")


def served_revisions(answer: dict[str, Any]) -> set[str]:
    """The bundle revisions in an OPA answer's ``provenance``: one per bundle
    (``bundles.<name>.revision``), or the single legacy ``revision``."""
    provenance = answer.get("provenance")
    if not isinstance(provenance, dict):
        return set()
    revisions: set[str] = set()
    bundles = provenance.get("bundles")
    if isinstance(bundles, dict):
        for bundle in bundles.values():
            if isinstance(bundle, dict) and isinstance(bundle.get("revision"), str):
                revisions.add(bundle["revision"])
    legacy = provenance.get("revision")
    if isinstance(legacy, str) and legacy:
        revisions.add(legacy)
    return revisions


class OpaEngine:
    name = "opa"

    def __init__(self, url: str, policy_set: PolicySet, *, timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("BROKER_OPA_URL must be an http(s) URL")
        self._client = AsyncOpaClient(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 80),
            ssl=parts.scheme == "https",
            timeout=timeout,
            retries=0,
        )
        self._policy_set = policy_set
        self._session_lock = asyncio.Lock()
        self._session_ready = False
        self._last_mismatch: tuple[str, tuple[str, ...]] | None = None

    @property
    def bundle_hash(self) -> str:
        return self._policy_set.bundle_hash

    @property
    def policy_set(self) -> PolicySet:
        return self._policy_set

    async def reload(self, policy_set: PolicySet) -> None:
        """Expects the bundle of ``policy_set`` from now on. OPA gets it from its
        bundle source; until it serves that revision, decisions are refused."""
        self._policy_set = policy_set
        log.info("policy.opa_expects_revision", revision=policy_set.bundle_hash)

    async def _ensure_session(self) -> None:
        # The client's HTTP session is opened on the event loop, once.
        if not self._session_ready:
            async with self._session_lock:
                if not self._session_ready:
                    await self._client.__aenter__()
                    self._session_ready = True

    async def decide(self, policy_input: PolicyInput) -> Decision:
        policy_set = self._policy_set
        try:
            await self._ensure_session()
            answer: dict[str, Any] = await self._client.query_rule(
                policy_input.to_document(),
                "broker/decision",
                "result",
                query_params={"provenance": "true"},
            )
        except Exception as exc:
            raise PolicyUnavailable("The OPA server did not answer") from exc
        served = served_revisions(answer)
        if policy_set.bundle_hash not in served:
            mismatch = (policy_set.bundle_hash, tuple(sorted(served)))
            if mismatch != self._last_mismatch:  # once per state, not per request
                self._last_mismatch = mismatch
                log.warning(
                    "policy.opa_revision_mismatch", expected=mismatch[0], served=list(mismatch[1])
                )
            raise PolicyUnavailable(
                "The OPA server does not serve the active policy bundle revision"
            )
        if "result" not in answer:
            raise PolicyUnavailable("The OPA server has no decision policy loaded")
        return parse_decision(
            answer["result"], policy_input, engine=self.name, bundle_hash=policy_set.bundle_hash
        )

    async def aclose(self) -> None:
        # Closing a session that was never opened raises; that is harmless.
        with contextlib.suppress(Exception):
            await self._client.close_connection()
