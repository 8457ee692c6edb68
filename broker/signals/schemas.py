"""Wire models of the signal register (parsed at the boundary).

The child is named by BSN on the way in only; answers name signals by id and
never repeat the BSN. The contact route is the agency team's, never the child's."""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broker.core.bsn import is_valid_bsn
from broker.exchange.schemas import Bsn

SCOPE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
SIGNAL_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
PHONE = r"^\+?[0-9][0-9 \-]{5,22}[0-9]$"
EMAIL = r"^[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,190}\.[A-Za-z]{2,24}$"
_DIGIT_RUN = re.compile(r"[0-9]{9}")


class SubjectKind(StrEnum):
    """What the agency is involved with."""

    CHILD = "child"  # the child named by ``subject``
    HOUSEHOLD = "household"  # the household of ``subject`` (as the register links it)


class ContactRoute(BaseModel):
    """How the other agency reaches the team: no personal data of the child."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    team: str = Field(
        min_length=2,
        max_length=120,
        description="The team or desk (e.g. 'Team Jeugd Noord'); not a client's name",
    )
    phone: str | None = Field(default=None, pattern=PHONE, description="The team's phone number")
    email: str | None = Field(
        default=None, max_length=254, pattern=EMAIL, description="The team's email address"
    )

    @field_validator("team")
    @classmethod
    def _no_bsn(cls, value: str) -> str:
        # A nine-digit run that passes the elfproef is a BSN: it has no place here.
        if any(is_valid_bsn(m.group(0)) for m in _DIGIT_RUN.finditer(value)):
            raise ValueError("must not hold a BSN")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> ContactRoute:
        if self.phone is None and self.email is None:
            raise ValueError("give a phone number or an email address")
        return self


class SignalIn(BaseModel):
    """An agency registers THAT it is involved (no content)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "agreement_id": "agr-zvh-mdaplusplus",
                    "subject": "999990020",
                    "subject_kind": "child",
                    "contact": {
                        "team": "Veilig Thuis - team Oost",
                        "phone": "+31 88 000 0000",
                        "email": "team-oost@vt.example",
                    },
                    "end_date": "2027-01-31",
                }
            ]
        },
    )
    agreement_id: str = Field(pattern=SCOPE_ID)
    subject: Bsn = Field(description="The child (or, for a household, a member of it)")
    subject_kind: SubjectKind = SubjectKind.CHILD
    contact: ContactRoute
    end_date: date | None = Field(
        default=None,
        description="Last day of the involvement signal; default and maximum: the "
        "agreement's max_duration (at most two years) from today",
    )


class SignalOut(BaseModel):
    id: str
    agreement_id: str
    subject_kind: SubjectKind
    contact: ContactRoute
    created_at: datetime
    end_date: date
    expires_at: datetime = Field(description="When the broker removes the signal")
    matches: int = Field(
        default=0, description="Match notifications this registration produced (POST only)"
    )
    audit_index: int | None = Field(
        default=None, description="Audit log position of the registration or withdrawal"
    )


class SignalPage(BaseModel):
    signals: list[SignalOut]


class WithdrawalOut(BaseModel):
    id: str
    removed_at: datetime
    audit_index: int
