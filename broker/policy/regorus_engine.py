"""Optional faster embedded engine: regorus (Rust) through ``gordon-to-regorus``.

Selected with BROKER_POLICY_ENGINE=regorus. It evaluates the same Rego library
and agreement data as the default regopy engine; a differential test
(tests/integration/test_engine_equivalence.py) holds both to identical
decisions on every scenario and on a generated corpus.

A regorus engine must only be used by the thread that created it (using it from
another thread panics, which ``except Exception`` does not catch), so every
worker thread builds and keeps its own engine for the current policy set.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import regorus

from broker.core.errors import PolicyInvalid, PolicyUnavailable
from broker.core.types import Decision, PolicyInput
from broker.policy.decisions import parse_decision
from broker.policy.loader import PolicySet

RULE = "data.broker.decision.result"


def build_regorus(policy_set: PolicySet) -> Any:
    engine = regorus.Engine()
    try:
        engine.add_data_json(json.dumps(policy_set.data_document()))
        for name, source in policy_set.modules().items():
            engine.add_policy(name, source)
    except RuntimeError as exc:
        raise PolicyInvalid(f"Rego does not compile: {exc}") from exc
    return engine


class RegorusEngine:
    name = "regorus"

    def __init__(self, policy_set: PolicySet, *, threads: int = 2) -> None:
        build_regorus(policy_set)  # validate in the caller; each worker builds its own
        self._policy_set = policy_set
        self._generation = 0
        self._local = threading.local()
        # threads=0 evaluates on the event-loop thread: a decision takes ~0.3 ms,
        # less than the cost of handing it to a worker thread and back.
        self._pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="regorus")
            if threads > 0
            else None
        )
        self._closed = False

    @property
    def bundle_hash(self) -> str:
        return self._policy_set.bundle_hash

    @property
    def policy_set(self) -> PolicySet:
        return self._policy_set

    async def reload(self, policy_set: PolicySet) -> None:
        await asyncio.to_thread(build_regorus, policy_set)
        self._policy_set = policy_set
        self._generation += 1

    def _engine(self, generation: int, policy_set: PolicySet) -> Any:
        local = self._local
        if getattr(local, "generation", None) != generation:
            local.engine = build_regorus(policy_set)
            local.generation = generation
        return local.engine

    def evaluate(self, document: dict[str, Any]) -> Any:
        return self._evaluate(document, self._generation, self._policy_set)

    def _evaluate(self, document: dict[str, Any], generation: int, policy_set: PolicySet) -> Any:
        engine = self._engine(generation, policy_set)
        try:
            engine.set_input_json(orjson.dumps(document).decode("utf-8"))
            return engine.eval_rule(RULE)
        except RuntimeError as exc:
            raise PolicyUnavailable("The policy engine failed to evaluate") from exc

    def decide_sync(self, policy_input: PolicyInput) -> Decision:
        generation, policy_set = self._generation, self._policy_set
        document = self._evaluate(policy_input.to_document(), generation, policy_set)
        if document is None:
            raise PolicyUnavailable("The policy engine returned no decision")
        return parse_decision(
            document, policy_input, engine=self.name, bundle_hash=policy_set.bundle_hash
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
