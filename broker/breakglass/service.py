"""Acute-danger (break-the-glass) declarations and their review.

A declaration is made by an agency whose party the purpose's
``acute_danger.declarable_by`` lists, for named subjects, with the evidence the
agreement's rule reads and a justification. It is valid from ``declared_at``
for the clause's ``max_duration``; the decision procedure reads the STORED
declaration (evidence, declarer, subjects), never the request. A privacy officer
reviews each declaration within ``BROKER_BREAK_GLASS_REVIEW_SLA_HOURS``; the
review does not change what the declaration allowed (the use is audited as it
happens, with the declaration id on every decision entry).

The justification is stored for that review only: it never goes to the audit
log or the logs.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import orjson
import structlog
from sqlalchemy import Table, select

from audit.log import AuditRecord, AuditWriter, RowUpdate
from broker.breakglass.models import AcuteDeclaration
from broker.breakglass.schemas import DeclarationIn, DeclarationOut, ReviewIn
from broker.consent.service import purpose_of
from broker.core.clock import Clock, system_clock, to_ns
from broker.core.errors import Conflict, ErrorCode, Forbidden, InvalidRequest, NotFound
from broker.core.types import AcuteDeclarationFact
from broker.crypto.keys import Pseudonymizer
from broker.db.session import Database
from broker.policy.loader import PolicySet, duration_seconds

log = structlog.get_logger("breakglass")

_TABLE = cast(Table, AcuteDeclaration.__table__)
_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
EVIDENCE_MAX_BYTES = 4096
EVIDENCE_MAX_DEPTH = 4
ReviewStatus = Literal["pending", "approved", "questioned"]


def _check_evidence(value: dict[str, Any]) -> None:
    """A small JSON object of snake_case keys; raises ValueError with a safe text."""
    if len(orjson.dumps(value)) > EVIDENCE_MAX_BYTES:
        raise ValueError("too large")
    _check_value(value, 1)


def _check_value(value: Any, depth: int) -> None:
    if isinstance(value, dict):
        if depth > EVIDENCE_MAX_DEPTH:
            raise ValueError("nested too deeply")
        for key, item in value.items():
            if not _KEY.fullmatch(key):
                raise ValueError("keys are snake_case names")
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)


def declaration_fact(row: AcuteDeclaration) -> AcuteDeclarationFact:
    """A stored declaration as the policy sees it: the declarer is its party."""
    return AcuteDeclarationFact(
        id=row.id,
        agreement=row.agreement_id,
        purpose=row.purpose_id,
        declared_by=row.declared_by_party,
        declared_at_ns=to_ns(row.declared_at),
        subjects=tuple(row.subjects),
        evidence=dict(row.evidence),
    )


class BreakGlassService:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditWriter,
        pseudonymizer: Pseudonymizer,
        review_sla: timedelta,
        privacy_officers: frozenset[str],
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._audit = audit
        self._pseudo = pseudonymizer
        self._review_sla = review_sla
        self._privacy_officers = privacy_officers
        self._clock = clock

    # ------------------------------------------------------------ the exchange
    async def fact(self, declaration_id: str) -> AcuteDeclarationFact | None:
        """The stored declaration (one primary-key read), or None."""
        async with self._db.session() as session:
            row = await session.get(AcuteDeclaration, declaration_id)
        return declaration_fact(row) if row is not None else None

    # ------------------------------------------------------------ declaring
    async def declare(
        self,
        body: DeclarationIn,
        *,
        actor_oin: str,
        actor_party: str,
        policy_set: PolicySet,
        request_id: str | None = None,
    ) -> DeclarationOut:
        purpose = purpose_of(policy_set, body.agreement_id, body.purpose_id)
        acute = purpose.get("acute_danger")
        if not isinstance(acute, dict) or purpose.get("consent") != "required_unless_acute_danger":
            raise InvalidRequest(
                "This purpose has no acute-danger clause",
                field="purpose_id",
                code=ErrorCode.ACUTE_DANGER_NOT_APPLICABLE,
            )
        if actor_party not in (acute.get("declarable_by") or ()):
            raise Forbidden(
                "Your party may not declare acute danger for this purpose",
                code=ErrorCode.NOT_DECLARABLE,
            )
        if not body.justification.strip():
            raise InvalidRequest("A justification is required", field="justification")
        try:
            _check_evidence(body.evidence)
        except ValueError as exc:
            raise InvalidRequest(
                f"Evidence: {exc}", field="evidence", code=ErrorCode.INVALID_EVIDENCE
            ) from exc
        try:
            duration = timedelta(seconds=duration_seconds(str(acute.get("max_duration", ""))))
        except ValueError as exc:
            raise InvalidRequest(
                "The acute-danger clause has no valid max_duration",
                field="purpose_id",
                code=ErrorCode.ACUTE_DANGER_NOT_APPLICABLE,
            ) from exc

        declaration_id = body.id or f"ACU-{uuid.uuid4().hex[:12].upper()}"
        async with self._db.session() as session:
            if await session.get(AcuteDeclaration, declaration_id) is not None:
                raise Conflict("A declaration with this id exists", field="id")
        now = self._clock()
        subjects = list(dict.fromkeys(self._pseudo.person(b) for b in body.subjects))
        row: dict[str, Any] = {
            "id": declaration_id,
            "agreement_id": body.agreement_id,
            "purpose_id": body.purpose_id,
            "declared_by_oin": actor_oin,
            "declared_by_party": actor_party,
            "declared_at": now,
            "expires_at": now + duration,
            "subjects": subjects,
            "justification": body.justification,
            "evidence": body.evidence,
            "review_status": "pending",
            "reviewed_by": None,
            "review_comment": None,
            "reviewed_at": None,
            "review_due_at": now + self._review_sla,
        }
        entry = AuditRecord(
            kind="acute_declared",
            body={
                "request_id": request_id,
                "acute_declaration_id": declaration_id,
                "agreement": body.agreement_id,
                "purpose": body.purpose_id,
                "declared_by": actor_oin,
                "declared_by_party": actor_party,
                "declared_at": now.isoformat(),
                "expires_at": row["expires_at"].isoformat(),
                "review_due_at": row["review_due_at"].isoformat(),
                "subjects": subjects,
                # Which facts were declared, not their content (no free text here).
                "evidence_keys": sorted(body.evidence),
            },
        )
        indices = await self._audit.append([entry], rows=[(_TABLE, row)])
        log.info(
            "breakglass.declared",
            acute_declaration_id=declaration_id,
            agreement=body.agreement_id,
            purpose=body.purpose_id,
            declared_by_party=actor_party,
        )
        out = self._out(AcuteDeclaration(**row), now, indices[0])
        return out.model_copy(update={"subjects": list(dict.fromkeys(body.subjects))})

    async def get(self, declaration_id: str, *, actor_oin: str) -> DeclarationOut:
        """For the declaring agency (and privacy officers)."""
        async with self._db.session() as session:
            row = await session.get(AcuteDeclaration, declaration_id)
        if row is None or (
            row.declared_by_oin != actor_oin and actor_oin not in self._privacy_officers
        ):
            raise NotFound("No such acute declaration")
        return self._out(row, self._clock())

    # ------------------------------------------------------------ review
    def _require_officer(self, actor_oin: str) -> None:
        if actor_oin not in self._privacy_officers:
            raise Forbidden(
                "Only privacy officers (BROKER_PRIVACY_OFFICERS) review acute declarations",
                code=ErrorCode.NOT_A_PRIVACY_OFFICER,
            )

    async def queue(
        self, *, actor_oin: str, status: ReviewStatus | Literal["all"] = "pending"
    ) -> list[DeclarationOut]:
        """Declarations by review due date (pending first when listing all)."""
        self._require_officer(actor_oin)
        return await self.queue_for(status=status)

    async def queue_for(
        self,
        *,
        status: ReviewStatus | Literal["all"] = "pending",
        declared_by: frozenset[str] | None = None,
    ) -> list[DeclarationOut]:
        """The queue for a caller whose authority is checked already (the review web
        page's officer accounts); ``declared_by`` limits it to those agencies."""
        stmt = select(AcuteDeclaration)
        if declared_by is not None:
            stmt = stmt.where(AcuteDeclaration.declared_by_oin.in_(sorted(declared_by)))
        if status != "all":
            stmt = stmt.where(AcuteDeclaration.review_status == status)
        stmt = stmt.order_by(AcuteDeclaration.review_due_at, AcuteDeclaration.id).limit(500)
        async with self._db.session() as session:
            rows = (await session.scalars(stmt)).all()
        now = self._clock()
        return [self._out(r, now) for r in rows]

    async def review(
        self,
        declaration_id: str,
        body: ReviewIn,
        *,
        actor_oin: str,
        request_id: str | None = None,
    ) -> DeclarationOut:
        self._require_officer(actor_oin)
        return await self.record_review(
            declaration_id, body, reviewer=actor_oin, request_id=request_id
        )

    async def record_review(
        self,
        declaration_id: str,
        body: ReviewIn,
        *,
        reviewer: str,
        declared_by: frozenset[str] | None = None,
        request_id: str | None = None,
    ) -> DeclarationOut:
        """Records a review by ``reviewer`` (an officer OIN, or ``officer:<account id>``
        from the review web page) whose authority the caller has checked;
        ``declared_by`` limits it to declarations of those agencies."""
        if body.decision == "question" and not (body.comment or "").strip():
            raise InvalidRequest("Say what is questioned", field="comment")
        async with self._db.session() as session:
            row = await session.get(AcuteDeclaration, declaration_id)
        if row is None or (declared_by is not None and row.declared_by_oin not in declared_by):
            raise NotFound("No such acute declaration")
        if row.review_status != "pending":
            raise Conflict("This declaration is reviewed already", code=ErrorCode.ALREADY_REVIEWED)
        now = self._clock()
        status: ReviewStatus = "approved" if body.decision == "approve" else "questioned"
        values = {
            "review_status": status,
            "reviewed_by": reviewer,
            "review_comment": body.comment,
            "reviewed_at": now,
        }
        entry = AuditRecord(
            kind="acute_declaration_reviewed",
            body={
                "request_id": request_id,
                "acute_declaration_id": row.id,
                "agreement": row.agreement_id,
                "purpose": row.purpose_id,
                "review": status,
                "reviewed_by": reviewer,
                "review_due_at": row.review_due_at.isoformat(),
                "overdue": now > row.review_due_at,
            },
        )
        change = RowUpdate(_TABLE, where={"id": row.id, "review_status": "pending"}, values=values)
        indices = await self._audit.append([entry], updates=[change])
        log.info("breakglass.reviewed", acute_declaration_id=row.id, review=status)
        for name, value in values.items():
            setattr(row, name, value)
        return self._out(row, now, indices[0])

    @staticmethod
    def _out(
        row: AcuteDeclaration, now: datetime, audit_index: int | None = None
    ) -> DeclarationOut:
        status = cast(ReviewStatus, row.review_status)
        return DeclarationOut(
            id=row.id,
            agreement_id=row.agreement_id,
            purpose_id=row.purpose_id,
            declared_by_oin=row.declared_by_oin,
            declared_by_party=row.declared_by_party,
            declared_at=row.declared_at,
            expires_at=row.expires_at,
            active=row.declared_at <= now < row.expires_at,
            subject_count=len(row.subjects),
            justification=row.justification,
            evidence=row.evidence,
            review_status=status,
            review_due_at=row.review_due_at,
            overdue=status == "pending" and now > row.review_due_at,
            reviewed_by=row.reviewed_by,
            reviewed_at=row.reviewed_at,
            review_comment=row.review_comment,
            audit_index=audit_index,
        )
