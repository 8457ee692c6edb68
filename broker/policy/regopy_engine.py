"""Embedded policy engine: Microsoft rego-cpp through ``regopy``.

The policy set is compiled once into a bundle; queries run on a small thread
pool (rego-cpp releases the GIL) with one ``Interpreter`` per thread and the
compiled bundle shared. Strict built-in errors are on, so a failing built-in is
an error, never a silent *undefined* (= deny). ``reload`` compiles a new bundle
and swaps it in atomically; a failing compile keeps the last good bundle.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import regopy

from broker.core.errors import PolicyInvalid, PolicyUnavailable
from broker.core.types import Decision, PolicyInput
from broker.policy.decisions import parse_decision
from broker.policy.loader import DECISION_QUERY, PolicySet


@dataclass(frozen=True, slots=True)
class _Compiled:
    policy_set: PolicySet
    bundle: Any  # regopy.Bundle


def compile_policy_set(policy_set: PolicySet) -> Any:
    """Compiles modules and data into a regopy bundle; raises PolicyInvalid."""
    rego = regopy.Interpreter()
    rego.strict_built_in_errors = True
    try:
        rego.add_data(policy_set.data_document())
        for name, source in policy_set.modules().items():
            rego.add_module(name, source)
        bundle = rego.build(DECISION_QUERY)
    except regopy.RegoError as exc:
        raise PolicyInvalid(f"Rego does not compile: {exc}") from exc
    if not bundle.ok():
        raise PolicyInvalid("Rego does not compile")
    return bundle


class RegopyEngine:
    name = "regopy"

    def __init__(self, policy_set: PolicySet, *, threads: int = 2) -> None:
        self._compiled = _Compiled(policy_set, compile_policy_set(policy_set))
        self._local = threading.local()
        # threads=0 evaluates on the event-loop thread (as the regorus engine does).
        self._pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rego")
            if threads > 0
            else None
        )
        self._closed = False

    @property
    def bundle_hash(self) -> str:
        return self._compiled.policy_set.bundle_hash

    @property
    def policy_set(self) -> PolicySet:
        return self._compiled.policy_set

    async def reload(self, policy_set: PolicySet) -> None:
        """Compiles ``policy_set`` off the event loop; swaps it in only when it compiled."""
        bundle = await asyncio.to_thread(compile_policy_set, policy_set)
        self._compiled = _Compiled(policy_set, bundle)

    def _interpreter(self) -> Any:
        rego = getattr(self._local, "rego", None)
        if rego is None:
            rego = regopy.Interpreter()
            rego.strict_built_in_errors = True
            self._local.rego = rego
        return rego

    def evaluate(self, document: dict[str, Any], compiled: _Compiled | None = None) -> Any:
        """Runs the decision query for one input document (blocking)."""
        compiled = compiled or self._compiled
        rego = self._interpreter()
        try:
            rego.set_input(regopy.Input(document))
            output = rego.query_bundle(compiled.bundle)
        except regopy.RegoError as exc:
            raise PolicyUnavailable("The policy engine failed to evaluate") from exc
        if not output.ok() or len(output) == 0:
            raise PolicyUnavailable("The policy engine returned no decision")
        try:
            return output[0]["x"]
        except (KeyError, IndexError) as exc:
            raise PolicyUnavailable("The policy engine returned no decision") from exc

    def decide_sync(self, policy_input: PolicyInput) -> Decision:
        compiled = self._compiled
        document = self.evaluate(policy_input.to_document(), compiled)
        return parse_decision(
            document, policy_input, engine=self.name, bundle_hash=compiled.policy_set.bundle_hash
        )

    async def decide(self, policy_input: PolicyInput) -> Decision:
        if self._closed:
            raise PolicyUnavailable("The policy engine is shut down")
        if self._pool is None:
            return self.decide_sync(policy_input)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.decide_sync, policy_input)

    async def aclose(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
