"""Differential test: the optional regorus engine decides exactly as the default
regopy engine, on every scenario request and on a generated corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from broker.core.types import PolicyInput
from broker.policy.loader import load_policy_set
from broker.policy.regopy_engine import RegopyEngine
from broker.policy.regorus_engine import RegorusEngine
from broker.settings import PROJECT_ROOT
from tests.property.test_policy_properties import policy_inputs
from tests.scenarios.scenario_data import load_scenarios

POLICIES = PROJECT_ROOT / "policies"


@pytest.fixture(scope="module")
def engines() -> tuple[RegopyEngine, RegorusEngine]:
    policy_set = load_policy_set(Path(POLICIES))
    return RegopyEngine(policy_set), RegorusEngine(policy_set)


def _same(engines: tuple[RegopyEngine, RegorusEngine], policy_input: PolicyInput) -> None:
    regopy, regorus = engines
    document = policy_input.to_document()
    assert regorus.evaluate(document) == regopy.evaluate(document)


def test_every_scenario_request_is_decided_identically(
    engines: tuple[RegopyEngine, RegorusEngine],
) -> None:
    scenarios = load_scenarios()
    assert scenarios.requests
    for request in scenarios.requests:
        _same(engines, request.policy_input(scenarios.registry))


@given(policy_input=policy_inputs())
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_are_decided_identically(
    engines: tuple[RegopyEngine, RegorusEngine], policy_input: PolicyInput
) -> None:
    _same(engines, policy_input)


@given(policy_input=policy_inputs(consent_based=True))
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_consent_requests_are_decided_identically(
    engines: tuple[RegopyEngine, RegorusEngine], policy_input: PolicyInput
) -> None:
    _same(engines, policy_input)
