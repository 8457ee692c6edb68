"""Acceptance scenarios S01..S10 (policies/scenarios/scenarios.md) against the Rego engine.

One test case per (request id, element, subject). Each request is decided once,
with all of its items, because preconditions are evaluated over the request as
a whole; the per-item cases then read their decision from that answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from broker.core.types import Decision, ItemDecision, ReasonCode, ResponseForm
from broker.policy.loader import load_policy_set
from broker.policy.regopy_engine import RegopyEngine
from tests.scenarios.scenario_data import (
    POLICY_ROOT,
    SCENARIOS_PATH,
    ScenarioItem,
    ScenarioRequest,
    load_scenarios,
)

SCENARIOS = load_scenarios()
CASES = SCENARIOS.items()
CASE_IDS = [item.case_id for _, item in CASES]


@pytest.fixture(scope="session")
def engine() -> Iterator[RegopyEngine]:
    eng = RegopyEngine(load_policy_set(POLICY_ROOT))
    yield eng
    asyncio.run(eng.aclose())


@pytest.fixture(scope="session")
def decisions(engine: RegopyEngine) -> dict[str, Decision]:
    """Request id -> decision, each request evaluated once."""
    return {
        r.id: engine.decide_sync(r.policy_input(SCENARIOS.registry)) for r in SCENARIOS.requests
    }


def _decision_for(decision: Decision, request: ScenarioRequest, item: ScenarioItem) -> ItemDecision:
    index = request.items().index(item)
    decided = decision.items[index]
    assert (decided.element, decided.subject) == (item.element, item.subject)
    return decided


def test_scenario_file_is_complete() -> None:
    assert SCENARIOS_PATH.is_file()
    assert {r.scenario_id for r in SCENARIOS.requests} == {f"S{n:02d}" for n in range(1, 11)}
    assert len(CASE_IDS) == len(set(CASE_IDS)), "case ids must be unique"
    known = {code.value for code in ReasonCode}
    assert {item.expect for _, item in CASES} <= known


@pytest.mark.parametrize(("request_", "item"), CASES, ids=CASE_IDS)
def test_scenario_item(
    decisions: dict[str, Decision], request_: ScenarioRequest, item: ScenarioItem
) -> None:
    decision = decisions[request_.id]
    decided = _decision_for(decision, request_, item)

    assert decided.reason == ReasonCode(item.expect), decided
    if item.consent_considered is not None:
        assert decided.consent_id == item.consent_considered, decided
    if decided.reason is ReasonCode.ALLOW_BREAK_GLASS:
        assert request_.acute_declaration_id is not None
        assert decided.acute_declaration_id == request_.acute_declaration_id
    else:
        assert decided.acute_declaration_id is None
    if decided.allowed:
        assert decided.legal_basis_ids
    else:
        assert decided.legal_basis_ids == ()
    if item.response is not None:
        assert decision.obligations.response_form is ResponseForm.BOOLEAN_ONLY


@pytest.mark.parametrize("request_", SCENARIOS.requests, ids=[r.id for r in SCENARIOS.requests])
def test_request_is_decided_item_by_item(
    decisions: dict[str, Decision], request_: ScenarioRequest
) -> None:
    decision = decisions[request_.id]
    assert [(i.element, i.subject) for i in decision.items] == [
        (i.element, i.subject) for i in request_.items()
    ]
    assert decision.agreement_id == request_.raw["agreement"]
