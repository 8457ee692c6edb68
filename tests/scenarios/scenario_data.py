"""The scenarios for tests: the product's scenario loader (broker.policy.scenarios)
bound to the project's own copy of ``scenarios.md``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from broker.policy import scenarios as _scenarios
from broker.policy.scenarios import (
    AMSTERDAM,
    Registry,
    ScenarioItem,
    ScenarioRequest,
    ScenarioSet,
    acute_declaration_fact,
    age_on,
    consent_fact,
    local_date,
    to_date,
    to_datetime,
    to_ns,
    yaml_blocks,
)
from broker.settings import PROJECT_ROOT

POLICY_ROOT = PROJECT_ROOT / "policies"
SCENARIOS_PATH = POLICY_ROOT / _scenarios.SCENARIOS_FILE


@cache
def load_scenarios(path: Path = SCENARIOS_PATH) -> ScenarioSet:
    return _scenarios.load_scenarios(path)


__all__ = [
    "AMSTERDAM",
    "POLICY_ROOT",
    "SCENARIOS_PATH",
    "Registry",
    "ScenarioItem",
    "ScenarioRequest",
    "ScenarioSet",
    "acute_declaration_fact",
    "age_on",
    "consent_fact",
    "load_scenarios",
    "local_date",
    "to_date",
    "to_datetime",
    "to_ns",
    "yaml_blocks",
]
