"""Impact replay: re-decide recorded decision inputs against a draft agreement.

Every decision row keeps the full (pseudonymised) policy input it was made on
and the per-item result. Replaying runs those inputs through a policy set in
which the draft folder replaces (or adds) its agreement, and counts the items
whose outcome would flip (allow -> deny, deny -> allow) or whose reason would
change, per requesting agency, purpose and element. Nothing is written.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from broker.core.errors import KeyError_, PolicyInvalid, RecordShredded
from broker.db.session import Database
from broker.exchange.models import DecisionRecord, Exchange
from broker.policy.loader import PolicySet, load_agreement, with_agreement
from broker.policy.regorus_engine import RegorusEngine
from broker.retention.vault import RetentionVault

CHUNK = 2000

Evaluate = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class FlipKey:
    agency: str
    purpose: str
    element: str
    before: str  # reason code recorded
    after: str  # reason code under the draft

    @property
    def direction(self) -> str:
        was, now = self.before.startswith("allow_"), self.after.startswith("allow_")
        if was and not now:
            return "allow->deny"
        if now and not was:
            return "deny->allow"
        return "reason"


@dataclass
class ReplayReport:
    agreement_id: str
    draft_version: str
    decisions: int = 0
    items: int = 0
    seconds: float = 0.0
    shredded: int = 0  # decisions whose input was destroyed when retention ended
    flips: Counter[FlipKey] = field(default_factory=Counter)

    def count(self, direction: str) -> int:
        return sum(n for k, n in self.flips.items() if k.direction == direction)

    def lines(self) -> Iterator[str]:
        yield (
            f"replayed {self.decisions} decisions ({self.items} items) under "
            f"{self.agreement_id} draft v{self.draft_version} in {self.seconds:.1f} s"
        )
        yield (
            f"allow->deny {self.count('allow->deny')}, deny->allow {self.count('deny->allow')}, "
            f"other reason changes {self.count('reason')}"
        )
        if self.shredded:
            yield (
                f"skipped {self.shredded} decisions whose retention ended "
                "(their policy input is shredded)"
            )
        for key, n in sorted(
            self.flips.items(),
            key=lambda kv: (kv[0].direction, kv[0].agency, kv[0].purpose, kv[0].element),
        ):
            yield (
                f"  {key.direction:<12} {n:>7}  agency {key.agency}  purpose {key.purpose}  "
                f"element {key.element}  ({key.before} -> {key.after})"
            )


def draft_policy_set(current: PolicySet, draft_folder: Path) -> PolicySet:
    return with_agreement(current, load_agreement(draft_folder))


async def replay(
    db: Database,
    current: PolicySet,
    draft_folder: Path,
    *,
    limit: int | None = None,
    evaluate: Evaluate | None = None,
    retention: RetentionVault | None = None,
) -> ReplayReport:
    """Re-decides every recorded decision under the draft's agreement id. Inputs
    sealed for retention are opened with ``retention``; those whose retention key
    is destroyed are skipped and counted as shredded."""
    draft = load_agreement(draft_folder)
    policy_set = with_agreement(current, draft)
    if evaluate is None:
        engine = RegorusEngine(policy_set, threads=0)
        evaluate = engine.evaluate
    report = ReplayReport(agreement_id=draft.id, draft_version=draft.version)
    started = time.perf_counter()
    last_id = ""
    reader = retention.reader() if retention is not None else None
    async with db.session() as session:
        while limit is None or report.decisions < limit:
            take = CHUNK if limit is None else min(CHUNK, limit - report.decisions)
            rows = (
                await session.execute(
                    select(
                        DecisionRecord.id,
                        DecisionRecord.input,
                        DecisionRecord.result,
                        Exchange.requester_oin,
                    )
                    .join(Exchange, Exchange.id == DecisionRecord.exchange_id)
                    .where(DecisionRecord.agreement_id == draft.id, DecisionRecord.id > last_id)
                    .order_by(DecisionRecord.id)
                    .limit(take)
                )
            ).all()
            if not rows:
                break
            for decision_id, stored, result, agency in rows:
                last_id = decision_id
                document = stored
                if "sealed" in stored:
                    if reader is None:
                        raise KeyError_("sealed decision inputs need the retention keys")
                    try:
                        document = await reader.decision_input(decision_id, stored)
                    except RecordShredded:
                        report.shredded += 1
                        continue
                _compare(report, evaluate(document), result, document, agency)
    report.seconds = time.perf_counter() - started
    return report


def _compare(
    report: ReplayReport,
    answer: Any,
    recorded: dict[str, Any],
    document: dict[str, Any],
    agency: str,
) -> None:
    if not isinstance(answer, dict) or "items" not in answer:
        raise PolicyInvalid("The draft policy set returned no decision for a recorded input")
    before = recorded.get("items", [])
    after = answer["items"]
    report.decisions += 1
    report.items += len(before)
    purpose = str(document.get("purpose", ""))
    for old, new in zip(before, after, strict=False):
        if old.get("reason") != new.get("reason"):
            report.flips[
                FlipKey(
                    agency=agency,
                    purpose=purpose,
                    element=str(old.get("element")),
                    before=str(old.get("reason")),
                    after=str(new.get("reason")),
                )
            ] += 1
