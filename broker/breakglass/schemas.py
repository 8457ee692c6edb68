"""Wire models of acute-danger (break-the-glass) declarations and their review."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from broker.consent.schemas import RECORD_ID, SCOPE_ID
from broker.exchange.schemas import Bsn


class DeclarationIn(BaseModel):
    """Acute danger declared by an agency whose party the purpose's
    ``acute_danger.declarable_by`` lists. It takes effect at once and ends after
    the clause's ``max_duration``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "agreement_id": "agr-zvh-mdaplusplus",
                    "purpose_id": "zorginformatie_casusoverleg",
                    "subjects": ["999990007"],
                    "justification": "Acute unsafety established in the safety assessment.",
                    "evidence": {
                        "vt_safety_assessment": {
                            "acute_onveilig": True,
                            "date": "2026-09-02T23:00:00+02:00",
                        }
                    },
                }
            ]
        },
    )
    id: str | None = Field(
        default=None, pattern=RECORD_ID, description="Your id; generated (ACU-...) if absent"
    )
    agreement_id: str = Field(pattern=SCOPE_ID)
    purpose_id: str = Field(pattern=SCOPE_ID)
    subjects: list[Bsn] = Field(min_length=1, max_length=20, description="Persons it covers")
    justification: str = Field(
        min_length=1,
        max_length=2000,
        description="Why; kept for the privacy officer's review, never written to the audit log",
    )
    evidence: dict[str, Any] = Field(
        min_length=1,
        max_length=16,
        description="What the agreement's evidence rule reads, e.g. "
        '{"vt_safety_assessment": {"acute_onveilig": true}}',
    )


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "question"]
    comment: str | None = Field(
        default=None, max_length=2000, description="Required when questioning"
    )


class DeclarationOut(BaseModel):
    id: str
    agreement_id: str
    purpose_id: str
    declared_by_oin: str
    declared_by_party: str
    declared_at: datetime
    expires_at: datetime
    active: bool = Field(description="Usable now (declared and not yet expired)")
    subjects: list[str] | None = Field(
        default=None, description="The BSNs as sent (only in the answer to the declaration)"
    )
    subject_count: int
    justification: str
    evidence: dict[str, Any]
    review_status: Literal["pending", "approved", "questioned"]
    review_due_at: datetime
    overdue: bool = Field(description="Review still pending after review_due_at")
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_comment: str | None
    audit_index: int | None = Field(
        default=None, description="Audit log position of this declaration or review"
    )
