"""In-process decision latency: a 10-element x 3-subject request (30 items)
against the full shipped policy set, per engine; prints p50/p99 in ms.

    PYTHONPATH=. python bench/decision.py [--n 3000]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date

from broker.core.types import PolicyInput, RequestedItem, SubjectFacts, SubjectKind
from broker.policy.loader import load_policy_set
from broker.policy.regopy_engine import RegopyEngine
from broker.policy.regorus_engine import RegorusEngine
from broker.settings import PROJECT_ROOT

ELEMENTS = [
    "health.ggz_treatment_involvement",
    "health.treating_professional_contact",
    "addiction.treatment_involvement",
    "school.attendance_absence",
    "school.verzuim_melding",
    "finance.payment_arrears_signal",
    "finance.debt_assistance_status",
    "finance.total_debt_amount",
    "housing.eviction_risk",
    "health.diagnosis",
]


def request() -> PolicyInput:
    """A consent-based MDA++ request: the most expensive path of the procedure."""
    child, mother, father = "psn:" + "c" * 40, "psn:" + "m" * 40, "psn:" + "f" * 40
    subjects = (
        SubjectFacts(
            key=child, kind=SubjectKind.PERSON, age=13, authority_holders=(mother, father)
        ),
        SubjectFacts(key=mother, kind=SubjectKind.PERSON, age=35),
        SubjectFacts(key=father, kind=SubjectKind.PERSON, age=38),
    )
    return PolicyInput(
        agreement="agr-zvh-mdaplusplus",
        purpose="zorginformatie_casusoverleg",
        provider="ggz",
        recipient="gemeente_wijkteam",
        request_time_ns=1_780_000_000_000_000_000,
        request_date=date(2026, 5, 28),
        context={"mda_case_id": "MDA-LB-2026-015", "mda_case_status": "actief"},
        subjects=subjects,
        items=tuple(RequestedItem(e, s.key) for e in ELEMENTS for s in subjects),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    policy_set = load_policy_set(PROJECT_ROOT / "policies")
    policy_input = request()
    for engine in (RegopyEngine(policy_set), RegorusEngine(policy_set, threads=0)):
        for _ in range(200):
            engine.decide_sync(policy_input)
        samples = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            engine.decide_sync(policy_input)
            samples.append(time.perf_counter() - t0)
        samples.sort()
        print(
            json.dumps(
                {
                    "engine": engine.name,
                    "items": len(policy_input.items),
                    "p50_ms": round(samples[len(samples) // 2] * 1000, 3),
                    "p99_ms": round(samples[int(len(samples) * 0.99)] * 1000, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
