"""Wire models of information duties, embargoes and safety investigations."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from broker.consent.schemas import EVIDENCE_REF, RECORD_ID

OIN = r"^[0-9]{20}$"
# A case reference of the agency running the investigation (e.g. VT-LB-2026-0042):
# no spaces, so no room for free text about the person; usable in a URL path.
CASE_REF = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
DutyStatus = Literal["open", "embargoed", "fulfilled"]
StatusFilter = Literal["open", "embargoed", "fulfilled", "overdue", "all"]
InformMethod = Literal["letter", "conversation", "email", "portal", "other"]


class EmbargoIn(BaseModel):
    """Postpones informing while a safety investigation runs. The reason is
    mandatory; it is kept for the agencies and the privacy officer and never
    written to the audit log."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "reason": "Informing the parents now would endanger the child during "
                    "the safety assessment.",
                    "investigation_reference": "VT-LB-2026-0042",
                }
            ]
        },
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why informing must wait")
    investigation_reference: str = Field(
        pattern=CASE_REF, description="Case reference of the running safety investigation"
    )
    investigation_agency_oin: str | None = Field(
        default=None,
        pattern=OIN,
        description="The agency running it; default: yours (it is opened if new)",
    )


class ExchangeEmbargoIn(EmbargoIn):
    """Postpones every open duty of one exchange (each subject's) at once."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "exchange_id": "0f6c1f0e-8d4c-4b8f-9a51-3f4d2c9e7b10",
                    "reason": "Informing the family now would endanger the child during "
                    "the safety assessment.",
                    "investigation_reference": "VT-LB-2026-0042",
                }
            ]
        },
    )
    exchange_id: str = Field(
        pattern=RECORD_ID, description="The exchange whose duties are postponed"
    )


class FulfilIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    informed_at: AwareDatetime = Field(description="When the addressees were informed")
    method: InformMethod
    evidence_reference: str = Field(
        pattern=EVIDENCE_REF, description="Where the notice or its record is kept"
    )


class InvestigationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: str = Field(pattern=CASE_REF, description="Your case reference")


class InvestigationOut(BaseModel):
    id: str
    agency_oin: str
    agency_party: str
    reference: str
    opened_at: datetime
    ended_at: datetime | None
    running: bool
    embargoes_lifted: int = Field(default=0, description="Embargoes this call lifted")
    audit_index: int | None = None


class EmbargoOut(BaseModel):
    id: str
    investigation_id: str
    investigation_reference: str
    investigation_agency_oin: str
    reason: str
    set_by_oin: str
    set_by_party: str
    set_at: datetime
    lapses_at: datetime
    lifted_at: datetime | None
    lift_cause: Literal["investigation_ended", "max_duration"] | None


class DutyOut(BaseModel):
    id: str
    exchange_id: str
    agreement_id: str
    agreement_version: str
    purpose_id: str
    subject_key: str = Field(description="Pseudonym key of the data subject")
    subject_kind: str
    addressee_rule: Literal["authority_holders", "subject", "household_members"] = Field(
        description="Whom to inform: the holders of authority (a child under 16), "
        "the subject, or the members of a household"
    )
    addressees: list[str] = Field(description="Pseudonym keys of the persons to inform")
    elements: list[str]
    legal_basis_ids: list[str] = Field(description="The bases the data were released on")
    duty_basis_ids: list[str] = Field(description="What the duty rests on (AVG art. 14)")
    holder_oin: str = Field(description="The agency that must inform")
    holder_party: str
    recipient_oin: str
    recipient_party: str
    provider_oin: str
    provider_party: str
    released_at: datetime
    due_at: datetime
    status: DutyStatus
    overdue: bool = Field(description="Open (not embargoed, not fulfilled) after due_at")
    embargo: EmbargoOut | None = Field(description="The current embargo, if any")
    fulfilled_at: datetime | None
    informed_at: datetime | None
    fulfilled_by_oin: str | None
    fulfil_method: str | None
    evidence_reference: str | None
    audit_index: int | None = None
