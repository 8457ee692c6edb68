"""What an agreement purpose says about AVG art. 14 information duties.

A purpose declares the duty in an ``information_duty`` block (validated by
``broker policy check``)::

    information_duty:
      required: true
      legal_basis_ids: [avg_14_informatieplicht]   # what the duty rests on
      informed_by: recipient        # recipient | provider: the agency that informs
      within: P1M                   # AVG 14(3)(a): at the latest within one month
      outcomes: [allow_break_glass] # the outcomes that give rise to it (default: every allow_*)
      embargo:
        legal_basis_ids: [avg_23_uavg_41_beperking]
        investigated_by: [veilig_thuis]   # whose running safety investigation justifies one
        lapses_after: P3M                 # the embargo lapses after this at the latest

or that there is none, and why::

    information_duty: {required: false, exemption_ids: [avg_14_5_uitzonderingen]}

A purpose without the block carries no duty. Pure functions only: the policy
validator imports this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.core.clock import DUTCH

INFORMED_BY = ("recipient", "provider")
ALLOW_OUTCOMES = ("allow_statutory_basis", "allow_consent", "allow_break_glass")
REQUIRED_FIELDS = ("required",)
REQUIRED_DUTY_FIELDS = ("legal_basis_ids", "informed_by", "within")
REQUIRED_EMBARGO_FIELDS = ("legal_basis_ids", "investigated_by", "lapses_after")
DUTY_FIELDS = (
    "required",
    "legal_basis_ids",
    "informed_by",
    "within",
    "outcomes",
    "embargo",
    "note",
)
EXEMPT_FIELDS = ("required", "exemption_ids", "note")

_PERIOD = re.compile(r"^P(?:([0-9]{1,3})Y)?(?:([0-9]{1,3})M)?(?:([0-9]{1,3})W)?(?:([0-9]{1,4})D)?$")


@dataclass(frozen=True, slots=True)
class Period:
    """An ISO 8601 period of calendar months and days (``P1M``, ``P30D``, ``P3M``)."""

    months: int = 0
    days: int = 0

    @property
    def text(self) -> str:
        out = "P"
        if self.months:
            out += f"{self.months}M"
        if self.days:
            out += f"{self.days}D"
        return out


def parse_period(text: str) -> Period:
    """A positive period of years, months, weeks and days; ValueError otherwise."""
    match = _PERIOD.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        raise ValueError(f"not an ISO 8601 period of years, months, weeks or days: {text!r}")
    years, months, weeks, days = (int(g or 0) for g in match.groups())
    period = Period(months=years * 12 + months, days=weeks * 7 + days)
    if period == Period():
        raise ValueError("the period must be longer than zero")
    return period


def add_period(at: datetime, period: Period) -> datetime:
    """``at`` plus ``period`` on the Dutch calendar: one month after 31 January is
    the last day of February, at the same local time."""
    local = at.astimezone(DUTCH)
    month_index = local.month - 1 + period.months
    year, month = local.year + month_index // 12, month_index % 12 + 1
    next_month = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    last_day = (next_month - timedelta(days=1)).day
    shifted = local.replace(year=year, month=month, day=min(local.day, last_day))
    naive = shifted.replace(tzinfo=None) + timedelta(days=period.days)
    return naive.replace(tzinfo=DUTCH).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class EmbargoRule:
    legal_basis_ids: tuple[str, ...]
    investigated_by: frozenset[str]
    lapses_after: Period


@dataclass(frozen=True, slots=True)
class DutyRule:
    """A purpose's information duty, as the broker applies it."""

    legal_basis_ids: tuple[str, ...]
    informed_by: str
    within: Period
    on: frozenset[str]
    embargo: EmbargoRule | None


class RuleInvalid(ValueError):
    """The block is malformed (``broker policy check`` reports where)."""


def _ids(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RuleInvalid(f"{where}: expected a non-empty list of ids")
    return tuple(value)


def duty_rule(purpose: dict[str, Any]) -> DutyRule | None:
    """The purpose's duty, or None when it has none (no block, or ``required: false``).
    Raises RuleInvalid for a malformed block: the caller fails closed."""
    block = purpose.get("information_duty")
    if block is None:
        return None
    if not isinstance(block, dict) or not isinstance(block.get("required"), bool):
        raise RuleInvalid("information_duty: expected a mapping with a boolean 'required'")
    if not block["required"]:
        return None
    for name in REQUIRED_DUTY_FIELDS:
        if name not in block:
            raise RuleInvalid(f"information_duty: missing required field '{name}'")
    informed_by = block["informed_by"]
    if informed_by not in INFORMED_BY:
        raise RuleInvalid("information_duty.informed_by: expected recipient or provider")
    try:
        within = parse_period(str(block["within"]))
    except ValueError as exc:
        raise RuleInvalid(f"information_duty.within: {exc}") from exc
    on = None
    if "outcomes" in block:
        on = frozenset(_ids(block["outcomes"], "information_duty.outcomes"))
        if not on <= set(ALLOW_OUTCOMES):
            raise RuleInvalid("information_duty.outcomes: expected allow_* outcomes")
    embargo = None
    if block.get("embargo") is not None:
        raw = block["embargo"]
        if not isinstance(raw, dict) or any(n not in raw for n in REQUIRED_EMBARGO_FIELDS):
            raise RuleInvalid("information_duty.embargo: incomplete")
        try:
            lapses_after = parse_period(str(raw["lapses_after"]))
        except ValueError as exc:
            raise RuleInvalid(f"information_duty.embargo.lapses_after: {exc}") from exc
        embargo = EmbargoRule(
            legal_basis_ids=_ids(raw["legal_basis_ids"], "information_duty.embargo"),
            investigated_by=frozenset(_ids(raw["investigated_by"], "information_duty.embargo")),
            lapses_after=lapses_after,
        )
    return DutyRule(
        legal_basis_ids=_ids(block["legal_basis_ids"], "information_duty.legal_basis_ids"),
        informed_by=informed_by,
        within=within,
        on=on if on is not None else frozenset(ALLOW_OUTCOMES),
        embargo=embargo,
    )
