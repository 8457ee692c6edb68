"""Policy engine backed by an OPA server, through ``opa-python-client``.

The same Rego library and agreement data are used as in the embedded engine:
``publish`` uploads them through OPA's Policy and Data APIs (a deployment that
loads signed bundles into OPA skips that step). Decisions are the
``data.broker.decision.result`` document queried over the Data API. Any OPA
fault raises PolicyUnavailable: nothing is released.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

from opa_client.opa_async import AsyncOpaClient

from broker.core.errors import PolicyUnavailable
from broker.core.types import Decision, PolicyInput
from broker.policy.decisions import parse_decision
from broker.policy.loader import PolicySet


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
        self._lock = asyncio.Lock()

    @property
    def bundle_hash(self) -> str:
        return self._policy_set.bundle_hash

    @property
    def policy_set(self) -> PolicySet:
        return self._policy_set

    async def publish(self, policy_set: PolicySet | None = None) -> None:
        """Uploads the Rego modules and agreement data to the OPA server."""
        policy_set = policy_set or self._policy_set
        try:
            async with self._lock:
                for name, source in policy_set.modules().items():
                    policy_id = "broker/" + name.removesuffix(".rego")
                    await self._client.update_policy_from_string(source, policy_id)
                await self._client.update_or_create_data(
                    policy_set.data_document()["broker"], "broker"
                )
        except Exception as exc:
            raise PolicyUnavailable("The OPA server refused the policy set") from exc
        self._policy_set = policy_set

    async def reload(self, policy_set: PolicySet) -> None:
        await self.publish(policy_set)

    async def decide(self, policy_input: PolicyInput) -> Decision:
        policy_set = self._policy_set
        try:
            answer: dict[str, Any] = await self._client.query_rule(
                policy_input.to_document(), "broker/decision", "result"
            )
        except Exception as exc:
            raise PolicyUnavailable("The OPA server did not answer") from exc
        if "result" not in answer:
            raise PolicyUnavailable("The OPA server has no decision policy loaded")
        return parse_decision(
            answer["result"], policy_input, engine=self.name, bundle_hash=policy_set.bundle_hash
        )

    async def aclose(self) -> None:
        # Closing a session that was never opened raises; that is harmless.
        with contextlib.suppress(Exception):
            await self._client.close_connection()
