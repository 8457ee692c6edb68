"""Wire models of the consent registry (parsed at the boundary).

Persons are named by BSN on the wire only: the broker stores pseudonym keys and
answers with the BSNs the caller sent (or ``null`` for a person it cannot name)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from broker.exchange.schemas import Bsn

RECORD_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
SCOPE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
ELEMENT_ID = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"
PARTY_ID = r"^[a-z][a-z0-9_]{0,63}$"
# A reference to where the signed form or recorded statement is kept: no spaces,
# so no room for free text about the person.
EVIDENCE_REF = r"^[A-Za-z0-9][A-Za-z0-9_.:/#\-]{0,127}$"


class Capacity(StrEnum):
    """In which capacity a person consents (consent_rules.md section 2)."""

    CHILD = "child"  # the minor data subject
    AUTHORITY_HOLDER = "authority_holder"  # parent with authority or guardian
    SUBJECT = "subject"  # the adult data subject


class WilsonbekwaamIn(BaseModel):
    """The minor subject cannot reasonably assess his interests in this matter
    (wilsonbekwaam, consent_rules.md section 2 rule 5): the holders of authority
    consent for him at any age under 18. An explicit statement, never a default."""

    model_config = ConfigDict(extra="forbid")
    established_by: str = Field(
        pattern=EVIDENCE_REF,
        description="Who established it: a reference to the professional or function "
        "(e.g. ggz:behandelaar:4711); no free text",
    )
    established_at: AwareDatetime = Field(description="When it was established (not in the future)")
    evidence_ref: str = Field(
        pattern=EVIDENCE_REF,
        description="Reference to the documented assessment (no free text)",
    )


class WilsonbekwaamOut(BaseModel):
    established_by: str
    established_at: datetime
    evidence_ref: str


class GiverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bsn: Bsn
    capacity: Capacity


class GiverOut(BaseModel):
    bsn: str | None = Field(description="The BSN as you sent it; null when not known to you")
    capacity: Capacity


class ConsentIn(BaseModel):
    """A consent obtained and documented by the recording agency."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "CNS-803",
                    "subject": "999990020",
                    "givers": [
                        {"bsn": "999990020", "capacity": "child"},
                        {"bsn": "999990007", "capacity": "authority_holder"},
                        {"bsn": "999990019", "capacity": "authority_holder"},
                    ],
                    "agreement_id": "agr-zvh-mdaplusplus",
                    "purpose_id": "zorginformatie_casusoverleg",
                    "given_at": "2026-06-03T10:00:00+02:00",
                    "evidence_ref": "ggz-dms:TOE-2026-0412",
                }
            ]
        },
    )
    id: str | None = Field(
        default=None,
        pattern=RECORD_ID,
        description="Your id for the record (e.g. the form number); generated (CNS-...) if absent",
    )
    subject: Bsn = Field(description="The person the data are about")
    givers: list[GiverIn] = Field(min_length=1, max_length=10)
    agreement_id: str = Field(pattern=SCOPE_ID)
    purpose_id: str = Field(pattern=SCOPE_ID)
    elements: list[Annotated[str, Field(pattern=ELEMENT_ID)]] | None = Field(
        default=None, min_length=1, max_length=100, description="Narrowing; absent: all elements"
    )
    recipients: list[Annotated[str, Field(pattern=PARTY_ID)]] | None = Field(
        default=None, min_length=1, max_length=20, description="Narrowing; absent: all recipients"
    )
    given_at: AwareDatetime = Field(description="When consent was given (not in the future)")
    valid_until: AwareDatetime | None = Field(
        default=None, description="End of the consent's validity; it then counts as withdrawn"
    )
    evidence_ref: str = Field(
        pattern=EVIDENCE_REF,
        description="Reference to the signed form or recorded statement (no free text)",
    )
    wilsonbekwaam: WilsonbekwaamIn | None = Field(
        default=None,
        description="Set when the minor subject was established to be unable to assess "
        "his interests: the holders of authority then give consent for him (as for a "
        "child under 12), and the subject is not among the givers",
    )


class ConsentSearch(BaseModel):
    """BSNs travel in the body, never in a URL."""

    model_config = ConfigDict(extra="forbid")
    subject: Bsn
    agreement_id: str | None = Field(default=None, pattern=SCOPE_ID)
    purpose_id: str | None = Field(default=None, pattern=SCOPE_ID)
    known_persons: list[Bsn] = Field(
        default_factory=list,
        max_length=20,
        description="BSNs of persons you know (e.g. the parents): givers among them are "
        "answered with their BSN, other givers with null",
    )


class WithdrawalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Bsn = Field(description="The record's data subject (must match the record)")
    withdrawn_by: Bsn = Field(description="The data subject or one of the givers")
    withdrawn_at: AwareDatetime | None = Field(
        default=None, description="When consent was withdrawn; default now (not in the future)"
    )


class ConsentOut(BaseModel):
    id: str
    subject: str = Field(description="The BSN as you sent it")
    givers: list[GiverOut]
    agreement_id: str
    purpose_id: str
    elements: list[str] | None
    recipients: list[str] | None
    given_at: datetime
    valid_until: datetime | None
    withdrawn_at: datetime | None
    withdrawn_by: str | None = Field(description="BSN if known to you; else null")
    evidence_ref: str
    wilsonbekwaam: WilsonbekwaamOut | None = Field(
        default=None, description="The record states that the minor subject is wilsonbekwaam"
    )
    recorded_by_oin: str
    recorded_at: datetime
    status: Literal["active", "withdrawn", "expired"] = Field(
        description="At the time of the answer; an expired record counts as withdrawn"
    )
    audit_index: int | None = Field(
        default=None, description="Audit log position of this recording or withdrawal"
    )
