"""The OPA engine against a real OPA server: runs whenever OPA_URL is set.

The OPA binary cannot be installed on the build machines, so this test is
skipped there; point OPA_URL at any OPA (e.g. `opa run --server`) to run it.
It publishes the policy set through OPA's Policy and Data APIs and requires the
same decision document as the embedded engine for every scenario request."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.policy.loader import load_policy_set
from broker.policy.opa_engine import OpaEngine
from broker.policy.regopy_engine import RegopyEngine
from broker.settings import PROJECT_ROOT
from tests.scenarios.scenario_data import load_scenarios

OPA_URL = os.environ.get("OPA_URL")

pytestmark = pytest.mark.skipif(not OPA_URL, reason="OPA_URL is not set (no OPA server here)")


async def test_opa_decides_every_scenario_like_the_embedded_engine() -> None:
    assert OPA_URL is not None
    policy_set = load_policy_set(Path(PROJECT_ROOT / "policies"))
    embedded = RegopyEngine(policy_set)
    opa = OpaEngine(OPA_URL, policy_set)
    try:
        await opa.publish()
        scenarios = load_scenarios()
        for request in scenarios.requests:
            policy_input = request.policy_input(scenarios.registry)
            ours = embedded.decide_sync(policy_input)
            theirs = await opa.decide(policy_input)
            assert [(i.element, i.subject, i.reason) for i in theirs.items] == [
                (i.element, i.subject, i.reason) for i in ours.items
            ], request.id
            assert theirs.bundle_hash == ours.bundle_hash
    finally:
        await opa.aclose()
        await embedded.aclose()
