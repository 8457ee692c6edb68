"""Wire models of publications and the inbox (parsed at the boundary)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from broker.core.types import Outcome, ReasonCode
from broker.exchange.schemas import _ID, AgreementRef, Bsn, _check_context

ELEMENT_ID = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"
MESSAGE_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class EventElement(BaseModel):
    """One element of the event about one of its subjects, with its value."""

    model_config = ConfigDict(extra="forbid")
    element: str = Field(pattern=ELEMENT_ID, examples=["police.zorgmelding"])
    subject: Bsn = Field(description="One of the event's subjects (household elements: a member)")
    value: Any = Field(description="The element's value, shaped as the catalogue describes")


class PublicationRequest(BaseModel):
    """An event for the recipients its agreement's subscription names.

    The broker decides per recipient agency and element x subject with the
    agreement's purpose, audits, and stores for each recipient only what is
    allowed, encrypted to it. ``event_id`` is the publisher's own id: publishing
    it again is answered with the first answer and delivers nothing twice."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "PL-LB-2026-0314-0042-ZM",
                    "event_type": "police.zorgmelding",
                    "agreement_id": "agr-vt-politie-hg",
                    "occurred_at": "2026-03-14T01:55:00+01:00",
                    "subjects": ["999990007", "999990019", "999990020"],
                    "context": {"police_incident_id": "PL-LB-2026-0314-0042"},
                    "elements": [
                        {
                            "element": "police.zorgmelding",
                            "subject": "999990020",
                            "value": {
                                "category": "zorgmelding_huiselijk_geweld",
                                "children_present": True,
                                "summary": "Neighbours reported shouting; three children at home.",
                            },
                        }
                    ],
                }
            ]
        },
    )
    event_id: str = Field(pattern=_ID, description="The publisher's id of the event (dedupe key)")
    event_type: str = Field(pattern=ELEMENT_ID, examples=["police.zorgmelding"])
    agreement_id: str = Field(pattern=_ID)
    occurred_at: AwareDatetime
    subjects: list[Bsn] = Field(min_length=1, max_length=100)
    elements: list[EventElement] = Field(min_length=1, max_length=200)
    context: Annotated[dict[str, Any], AfterValidator(_check_context)] = Field(
        default_factory=dict,
        max_length=64,
        description="Facts the agreement's preconditions read (e.g. police_incident_id)",
    )


class ItemDecisionOut(BaseModel):
    """The decision on one element x subject for one recipient. Subjects are named by
    their position in the event's ``subjects`` list, never by BSN."""

    element: str
    subject_index: int
    subject_kind: Literal["person", "household"]
    outcome: Outcome
    reason: ReasonCode
    legal_basis: list[str]


class PartyRef(BaseModel):
    oin: str
    party: str


class RecipientOut(BaseModel):
    recipient: PartyRef
    decision_id: str
    message_id: str | None = Field(
        description="The inbox message holding the allowed items; null when nothing was allowed"
    )
    items: list[ItemDecisionOut]


class PublicationResponse(BaseModel):
    publication_id: str
    event_id: str
    event_type: str
    agreement: AgreementRef
    purpose_id: str
    policy_bundle: str
    created_at: datetime
    audit_indices: list[int] = Field(description="Audit log positions of this publication")
    recipients: list[RecipientOut] = Field(
        description="Every registered, active agency of the subscription's recipient parties"
    )


class InboxMessageOut(BaseModel):
    id: str = Field(description="Message id: recipients de-duplicate deliveries by it")
    event_id: str
    event_type: str
    publisher: PartyRef
    agreement: AgreementRef
    purpose_id: str
    decision_id: str
    items: list[ItemDecisionOut]
    payload: str = Field(
        description=(
            "JWE compact (ECDH-ES+A256KW, A256GCM) to the recipient's encryption key, "
            "holding {message_id, event_id, event_type, occurred_at, publisher, "
            "items:[{element, subject, value}]} with only the allowed items"
        )
    )
    created_at: datetime


class InboxPage(BaseModel):
    messages: list[InboxMessageOut]
    next_after: str | None = Field(
        description="Pass as ?after= for the next page; null on the last page"
    )


class AckResponse(BaseModel):
    id: str
    acked_at: datetime
    acked_by: Literal["inbox", "webhook"]


class WebhookDelivery(BaseModel):
    """The body the broker POSTs to an agency's webhook (signed: Broker-Signature)."""

    recipient_oin: str
    attempt: int
    sent_at: datetime
    message: InboxMessageOut


def message_out(row: Any) -> InboxMessageOut:
    """The wire form of an ``InboxMessage`` row (or a row with its columns)."""
    return InboxMessageOut(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        publisher=PartyRef(oin=row.publisher_oin, party=row.publisher_party),
        agreement=AgreementRef(
            id=row.agreement_id, version=row.agreement_version, content_hash=row.agreement_hash
        ),
        purpose_id=row.purpose_id,
        decision_id=row.decision_id,
        items=[ItemDecisionOut.model_validate(i) for i in row.items],
        payload=row.payload,
        created_at=row.created_at,
    )
