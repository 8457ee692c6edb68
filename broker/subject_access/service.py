"""Subject-access overviews (AVG art. 15): every request, decision and release
concerning one person, read from the audit log.

The BSN is used once, to compute the person's keyed pseudonym (and, through the
population register, the pseudonym of the person's household); it is never
stored, logged or written to the audit log. Entries are found through the
indexed ``subject_key`` column and the release entries through the indexed
``exchange_id`` column: a report never scans the log.

Household records (elements whose subject is a household) concern every member
of the household; they are listed too and marked ``concerns = "household"``.

While informing the person is postponed for a running safety investigation
(an embargo on the AVG art. 14 duty, AVG art. 23 jo. UAVG art. 41), the entries of
that exchange about the person are left out of the report, which would otherwise
tell the person what the postponement keeps back. The report states, for the
privacy officer, how many entries were withheld and until when the embargo can
run at most; the HTML and PDF given to the person do not.

Every report generated is itself audited (kind ``subject_access_report``) with
the pseudonym, the requesting privacy officer and the number of entries listed
and withheld.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any, Literal

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from audit.log import AuditRecord, AuditWriter
from audit.models import AuditEntry
from audit.tree import tree_head
from broker.agencies.models import Agency
from broker.core.bsn import is_valid_bsn
from broker.core.clock import DUTCH, Clock, system_clock
from broker.core.errors import ErrorCode, Forbidden, InvalidRequest
from broker.core.protocols import SubjectRegister
from broker.crypto.keys import Pseudonymizer
from broker.db.session import Database
from broker.information_duties.models import DutyEmbargo, InformationDuty
from broker.reference import ReferenceData

log = structlog.get_logger("subject_access")

REPORT_KIND = "subject_access_report"
# The entry kinds that name a subject in ``subject_key`` and belong in an overview.
SIGNAL_KINDS = (
    "signal_registered",
    "signal_match",
    "signal_match_refused",
    "signal_withdrawn",
    "signal_expired",
)
DUTY_KINDS = (
    "information_duty_recorded",
    "information_duty_embargoed",
    "information_duty_embargo_lifted",
    "information_duty_fulfilled",
)
LISTED_KINDS = ("decision", "consent_recorded", "consent_withdrawn", *SIGNAL_KINDS, *DUTY_KINDS)
Concerns = Literal["person", "household"]

# Plain words for the reason codes of the decision procedure (English, Dutch).
REASONS: dict[str, tuple[str, str]] = {
    "allow_statutory_basis": (
        "Shared: a statutory provision allows this exchange",
        "Verstrekt: een wettelijke grondslag staat deze uitwisseling toe",
    ),
    "allow_consent": (
        "Shared: valid consent was recorded",
        "Verstrekt: er is geldige toestemming vastgelegd",
    ),
    "allow_break_glass": (
        "Shared: acute danger was declared (break-the-glass)",
        "Verstrekt: er is acuut gevaar verklaard (doorbraak)",
    ),
    "deny_agreement_not_in_force": (
        "Refused: the sharing agreement was not in force",
        "Geweigerd: het convenant was niet van kracht",
    ),
    "deny_unknown_purpose": (
        "Refused: the stated purpose is not in the agreement",
        "Geweigerd: het opgegeven doel staat niet in het convenant",
    ),
    "deny_purpose_mismatch": (
        "Refused: these agencies may not exchange data for this purpose",
        "Geweigerd: deze organisaties mogen voor dit doel geen gegevens uitwisselen",
    ),
    "deny_element_not_allowed": (
        "Refused: this data element may not be shared for this purpose",
        "Geweigerd: dit gegeven mag voor dit doel niet worden gedeeld",
    ),
    "deny_precondition_failed": (
        "Refused: a condition of the agreement was not met",
        "Geweigerd: aan een voorwaarde van het convenant was niet voldaan",
    ),
    "deny_consent_missing": (
        "Refused: consent is required and none was recorded",
        "Geweigerd: toestemming is vereist en niet vastgelegd",
    ),
    "deny_consent_incomplete": (
        "Refused: not everyone who had to consent did",
        "Geweigerd: niet iedereen die toestemming moest geven heeft dat gedaan",
    ),
    "deny_consent_withdrawn": (
        "Refused: consent was withdrawn",
        "Geweigerd: de toestemming is ingetrokken",
    ),
    "deny_break_glass_expired": (
        "Refused: the acute-danger declaration had expired",
        "Geweigerd: de verklaring van acuut gevaar was verlopen",
    ),
}
KIND_TEXT: dict[str, tuple[str, str]] = {
    "consent_recorded": ("Consent recorded", "Toestemming vastgelegd"),
    "consent_withdrawn": ("Consent withdrawn", "Toestemming ingetrokken"),
}


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class AgencyRef(_Out):
    oin: str | None
    name: str | None = Field(description="The registered name; null if not registered")


class LegalBasisRef(_Out):
    id: str
    citation: str = Field(description="Law and article, e.g. 'Wet politiegegevens art. 20'")


class AgreementRef(_Out):
    id: str | None
    version: str | None = None


class SubjectAccessEntry(_Out):
    seq: int = Field(description="Index of the audit entry (leaf of the verifiable log)")
    time: datetime
    kind: str = Field(
        description="decision, consent_recorded, consent_withdrawn, a signal_* entry "
        "(signal and match) or an information_duty_* entry (AVG art. 14)"
    )
    concerns: Concerns = Field(description="The person, or the person's household")
    exchange_id: str | None = None
    requester: AgencyRef | None = Field(default=None, description="The requesting agency")
    provider: AgencyRef | None = Field(default=None, description="The providing agency")
    purpose: str | None = None
    agreement: AgreementRef | None = None
    element: str | None = None
    element_name: str | None = Field(default=None, description="Dutch name from the catalogue")
    outcome: str | None = None
    reason: str | None = Field(default=None, description="The reason code")
    reason_text: str = Field(description="The reason in plain words (English)")
    reason_text_nl: str = Field(description="The reason in plain words (Dutch)")
    legal_basis: list[LegalBasisRef] = Field(default_factory=list)
    consent_id: str | None = None
    acute_declaration_id: str | None = None
    released: bool = Field(description="Whether data were released (from the release entry)")
    release_status: str | None = Field(
        default=None, description="released, not_found, unavailable or timeout; null if denied"
    )
    agencies: list[AgencyRef] = Field(
        default_factory=list,
        description="Signals and information duties: the agencies named (by registered name "
        "only; never a contact route)",
    )
    end_date: date | None = Field(
        default=None, description="Signals: the last day the registered involvement runs"
    )
    due_at: datetime | None = Field(
        default=None, description="Information duties: when the person must be informed by"
    )
    informed_at: datetime | None = Field(
        default=None, description="Information duties: when the person was informed"
    )
    elements: list[str] = Field(
        default_factory=list, description="Information duties: the data elements released"
    )


class LogPosition(_Out):
    """The audit log state a report was read against: the report holds exactly the
    person's entries among the first ``size`` leaves (a C2SP checkpoint body)."""

    origin: str | None = Field(default=None, description="The log's origin (checkpoint name)")
    size: int = Field(description="Tree size: the report covers leaves 0..size-1")
    root_hash: str = Field(description="RFC 9162 root of those leaves (hex)")


class SubjectAccessReport(_Out):
    generated_at: datetime
    subject: str | None = Field(
        default=None, description="The person's pseudonymised reference (never the BSN)"
    )
    log: LogPosition | None = Field(
        default=None, description="The audit log checkpoint the report was read against"
    )
    since: datetime | None = None
    until: datetime | None = None
    household_included: bool = Field(description="Whether the household's records were looked up")
    entry_count: int
    entries: list[SubjectAccessEntry]
    withheld_entries: int = Field(
        default=0,
        description="For the privacy officer, not the person: entries left out because "
        "informing the person about their exchange is postponed while a safety "
        "investigation runs (AVG art. 23 jo. UAVG art. 41). Produce the report again "
        "once the postponement ends.",
    )
    withheld_until: datetime | None = Field(
        default=None,
        description="For the privacy officer: the latest time a postponement behind the "
        "withheld entries lapses (it ends earlier when the investigation ends)",
    )


def check_bsn(bsn: str) -> str:
    if not is_valid_bsn(bsn):
        raise InvalidRequest(
            "Not a valid BSN (9 digits passing the 11-check)",
            field="bsn",
            code=ErrorCode.INVALID_BSN,
        )
    return bsn


class SubjectAccessService:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditWriter,
        pseudonymizer: Pseudonymizer,
        register: SubjectRegister,
        reference: Callable[[], ReferenceData],
        privacy_officers: frozenset[str],
        clock: Clock = system_clock,
        log_origin: str | None = None,
    ) -> None:
        self._log_origin = log_origin
        self._db = db
        self._audit = audit
        self._pseudo = pseudonymizer
        self._register = register
        self._reference = reference
        self._privacy_officers = privacy_officers
        self._clock = clock

    def require_officer(self, actor_oin: str) -> None:
        if actor_oin not in self._privacy_officers:
            raise Forbidden(
                "Only privacy officers (BROKER_PRIVACY_OFFICERS) produce subject-access reports",
                code=ErrorCode.NOT_A_PRIVACY_OFFICER,
            )

    async def generate(
        self,
        bsn: str,
        *,
        officer_oin: str | None,
        channel: Literal["api", "cli"],
        since: datetime | None = None,
        until: datetime | None = None,
        output_format: str = "json",
        request_id: str | None = None,
    ) -> SubjectAccessReport:
        """A report for a privacy officer (API: required), audited before it is returned."""
        if channel == "api" or officer_oin is not None:
            self.require_officer(officer_oin or "")
        check_bsn(bsn)
        report = await self.report(bsn, since=since, until=until)
        key = self._pseudo.person(bsn)
        await self._audit.append(
            [
                AuditRecord(
                    kind=REPORT_KIND,
                    body={
                        "request_id": request_id,
                        "subject": key,
                        "requested_by": officer_oin,
                        "channel": channel,
                        "format": output_format,
                        "entries": report.entry_count,
                        "withheld": report.withheld_entries,
                        "household_included": report.household_included,
                        "since": since.isoformat() if since else None,
                        "until": until.isoformat() if until else None,
                    },
                    subject_key=key,
                )
            ]
        )
        log.info("subject_access.report", entries=report.entry_count, channel=channel)
        return report

    async def report(
        self, bsn: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> SubjectAccessReport:
        """Every decision (and consent event) concerning the person and the person's household."""
        check_bsn(bsn)
        if since is not None and until is not None and since > until:
            raise InvalidRequest("since is after until", field="since", code=ErrorCode.INVALID_TIME)
        now = self._clock()
        # Read against one tree size: entries appended meanwhile are not half-listed.
        head = await tree_head(self._db)
        keys: dict[str, Concerns] = {self._pseudo.person(bsn): "person"}
        record = (await self._register.lookup([bsn])).get(bsn)
        if record is not None and record.household_id:
            keys[self._pseudo.household(record.household_id)] = "household"
        # The exchange's key when the register knew no household for the person.
        keys[self._pseudo.household(f"of:{bsn}")] = "household"

        stmt = select(
            AuditEntry.seq,
            AuditEntry.created_at,
            AuditEntry.kind,
            AuditEntry.exchange_id,
            AuditEntry.subject_key,
            AuditEntry.entry,
        ).where(
            AuditEntry.subject_key.in_(list(keys)),
            AuditEntry.kind.in_(LISTED_KINDS),
            AuditEntry.seq < head.size,
        )
        if since is not None:
            stmt = stmt.where(AuditEntry.created_at >= since)
        if until is not None:
            stmt = stmt.where(AuditEntry.created_at < until)
        async with self._db.session() as session:
            rows = (await session.execute(stmt.order_by(AuditEntry.seq))).all()
            bodies = [(r, orjson.loads(r.entry)) for r in rows]
            # An exchange about which informing this person is postponed is left out
            # whole: its entries under the household's key would show it too.
            embargoed = await self._embargoed(session, list(keys), now)
            listed, lapses = [], []
            for r, b in bodies:
                until = embargoed.get(_exchange_of(r, b))
                if until is None:
                    listed.append((r, b))
                else:
                    lapses.append(until)
            withheld = len(lapses)
            bodies = listed
            exchange_ids = sorted({r.exchange_id for r, _ in bodies if r.exchange_id})
            releases = await self._releases(session, exchange_ids)
            oins = {
                o
                for _, b in bodies
                for o in (
                    b.get("requester"),
                    b.get("provider"),
                    b.get("recorded_by"),
                    b.get("agency"),
                    b.get("holder"),
                    b.get("fulfilled_by"),
                    *(b.get("agencies") or ()),
                )
                if isinstance(o, str)
            }
            names = await self._names(session, oins)

        reference = self._reference()
        entries = [
            self._entry(
                row,
                body,
                concerns=keys[row.subject_key],
                releases=releases,
                names=names,
                reference=reference,
            )
            for row, body in bodies
        ]
        return SubjectAccessReport(
            generated_at=now.astimezone(UTC),
            subject=self._pseudo.person(bsn),
            log=LogPosition(
                origin=self._log_origin, size=head.size, root_hash=head.root_hash.hex()
            ),
            since=since,
            until=until,
            household_included=record is not None and bool(record.household_id),
            entry_count=len(entries),
            entries=entries,
            withheld_entries=withheld,
            withheld_until=max(lapses) if lapses else None,
        )

    @staticmethod
    async def _embargoed(session: Any, keys: list[str], now: datetime) -> dict[str, datetime]:
        """Exchange -> when its embargo lapses at the latest, for the person's
        duties under an embargo that is in force at ``now``."""
        stmt = (
            select(InformationDuty.exchange_id, DutyEmbargo.lapses_at)
            .join(DutyEmbargo, DutyEmbargo.id == InformationDuty.embargo_id)
            .where(
                InformationDuty.subject_key.in_(keys),
                InformationDuty.status == "embargoed",
                DutyEmbargo.lifted_at.is_(None),
                DutyEmbargo.lapses_at > now,
            )
        )
        out: dict[str, datetime] = {}
        for exchange_id, lapses_at in (await session.execute(stmt)).all():
            lapses = lapses_at if lapses_at.tzinfo else lapses_at.replace(tzinfo=UTC)
            out[str(exchange_id)] = max(lapses, out.get(str(exchange_id), lapses))
        return out

    @staticmethod
    async def _releases(session: Any, exchange_ids: list[str]) -> dict[tuple[str, str, str], str]:
        """(exchange, subject key, element) -> release status, from the release entries."""
        out: dict[tuple[str, str, str], str] = {}
        for start in range(0, len(exchange_ids), 500):
            chunk = exchange_ids[start : start + 500]
            stmt = select(AuditEntry.exchange_id, AuditEntry.entry).where(
                AuditEntry.exchange_id.in_(chunk), AuditEntry.kind == "release"
            )
            for exchange_id, text in (await session.execute(stmt)).all():
                for item in orjson.loads(text).get("items") or ():
                    out[(exchange_id, str(item.get("subject")), str(item.get("element")))] = str(
                        item.get("status")
                    )
        return out

    @staticmethod
    async def _names(session: Any, oins: Iterable[str]) -> dict[str, str]:
        wanted = sorted(oins)
        if not wanted:
            return {}
        stmt = select(Agency.oin, Agency.name).where(Agency.oin.in_(wanted))
        return {str(oin): str(name) for oin, name in (await session.execute(stmt)).all()}

    @staticmethod
    def _entry(
        row: Any,
        body: dict[str, Any],
        *,
        concerns: Concerns,
        releases: dict[tuple[str, str, str], str],
        names: dict[str, str],
        reference: ReferenceData,
    ) -> SubjectAccessEntry:
        def agency(oin: Any) -> AgencyRef | None:
            return AgencyRef(oin=oin, name=names.get(oin)) if isinstance(oin, str) else None

        created = row.created_at
        time = created if created.tzinfo else created.replace(tzinfo=UTC)
        if row.kind in SIGNAL_KINDS:
            return _signal_entry(row, body, time=time, concerns=concerns, names=names)
        if row.kind in DUTY_KINDS:
            return _duty_entry(row, body, time=time, concerns=concerns, names=names)
        if row.kind != "decision":
            en, nl = KIND_TEXT.get(row.kind, (row.kind, row.kind))
            agreement = body.get("agreement")
            return SubjectAccessEntry(
                seq=row.seq,
                time=time,
                kind=row.kind,
                concerns=concerns,
                requester=agency(body.get("recorded_by")),
                purpose=body.get("purpose"),
                agreement=AgreementRef(id=agreement) if isinstance(agreement, str) else None,
                reason_text=en,
                reason_text_nl=nl,
                consent_id=body.get("consent_id"),
                released=False,
            )
        agreement_body = body.get("agreement") or {}
        element = body.get("element")
        catalogue = reference.elements.get(element) if isinstance(element, str) else None
        reason = body.get("reason")
        en, nl = REASONS.get(str(reason), (str(reason), str(reason)))
        bases = reference.legal_bases
        status = releases.get((row.exchange_id or "", row.subject_key, str(element)))
        return SubjectAccessEntry(
            seq=row.seq,
            time=time,
            kind=row.kind,
            concerns=concerns,
            exchange_id=row.exchange_id,
            requester=agency(body.get("requester")),
            provider=agency(body.get("provider")),
            purpose=body.get("purpose"),
            agreement=AgreementRef(
                id=agreement_body.get("id"), version=agreement_body.get("version")
            ),
            element=element,
            element_name=catalogue.name_nl if catalogue else None,
            outcome=body.get("outcome"),
            reason=reason,
            reason_text=en,
            reason_text_nl=nl,
            legal_basis=[
                LegalBasisRef(id=b, citation=bases[b].citation if b in bases else b)
                for b in body.get("legal_basis") or ()
            ],
            consent_id=body.get("consent_id"),
            acute_declaration_id=body.get("acute_declaration_id"),
            released=status == "released",
            release_status=status,
        )


def _exchange_of(row: Any, body: dict[str, Any]) -> str:
    """The exchange an entry belongs to ("" when none): decisions carry it in the
    indexed column, duty entries in ``exchange``."""
    exchange = row.exchange_id or body.get("exchange")
    return exchange if isinstance(exchange, str) else ""


# ---------------------------------------------------------------- signals and duties
# Plain-language lines for the signal-and-match and information-duty entries. Only
# agency names (never contact routes) and never an embargo's reason or case reference.


def _name(oin: Any, names: dict[str, str]) -> str:
    if not isinstance(oin, str):
        return "an agency"
    return names.get(oin) or f"agency {oin}"


def _naam(oin: Any, names: dict[str, str]) -> str:
    if not isinstance(oin, str):
        return "een organisatie"
    return names.get(oin) or f"organisatie {oin}"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _day(value: datetime | date | None) -> str:
    if value is None:
        return "?"
    if isinstance(value, datetime):
        return value.astimezone(DUTCH).date().isoformat()
    return value.isoformat()


def _agreement(body: dict[str, Any]) -> AgreementRef | None:
    agreement = body.get("agreement")
    if isinstance(agreement, dict):
        return AgreementRef(id=agreement.get("id"), version=agreement.get("version"))
    if isinstance(agreement, str):
        return AgreementRef(id=agreement)
    return None


def _refs(oins: Iterable[Any], names: dict[str, str]) -> list[AgencyRef]:
    return [AgencyRef(oin=o, name=names.get(o)) for o in oins if isinstance(o, str)]


def _signal_entry(
    row: Any,
    body: dict[str, Any],
    *,
    time: datetime,
    concerns: Concerns,
    names: dict[str, str],
) -> SubjectAccessEntry:
    agreement = _agreement(body)
    agreement_id = agreement.id if agreement is not None and agreement.id else "?"
    end_date = _parse_date(body.get("end_date"))
    kind = row.kind
    if kind in ("signal_match", "signal_match_refused"):
        oins = [o for o in body.get("agencies") or () if isinstance(o, str)]
        first, second = [*oins, None, None][:2]
        if kind == "signal_match":
            en = (
                f"{_name(first, names)} and {_name(second, names)} were told of each other's "
                f"involvement (agreement {agreement_id})"
            )
            nl = (
                f"{_naam(first, names)} en {_naam(second, names)} zijn op de hoogte gebracht "
                f"van elkaars betrokkenheid (convenant {agreement_id})"
            )
        else:
            en = (
                f"{_name(first, names)} and {_name(second, names)} were not told of each other: "
                f"agreement {agreement_id} did not allow it"
            )
            nl = (
                f"{_naam(first, names)} en {_naam(second, names)} zijn niet van elkaar op de "
                f"hoogte gebracht: convenant {agreement_id} stond dat niet toe"
            )
        return SubjectAccessEntry(
            seq=row.seq,
            time=time,
            kind=kind,
            concerns=concerns,
            agreement=agreement,
            outcome=body.get("outcome"),
            reason_text=en,
            reason_text_nl=nl,
            released=False,
            agencies=_refs(oins, names),
        )
    agency = body.get("agency")
    if kind == "signal_registered":
        en = (
            f"{_name(agency, names)} registered that it is involved with you "
            f"(agreement {agreement_id}, until {_day(end_date)})"
        )
        nl = (
            f"{_naam(agency, names)} heeft gemeld dat zij bij u betrokken is "
            f"(convenant {agreement_id}, tot en met {_day(end_date)})"
        )
    elif kind == "signal_withdrawn":
        en = f"{_name(agency, names)} withdrew its registration of involvement"
        nl = f"{_naam(agency, names)} heeft de melding van betrokkenheid ingetrokken"
    else:
        en = f"The registration of involvement by {_name(agency, names)} ended (expired)"
        nl = f"De melding van betrokkenheid van {_naam(agency, names)} is verlopen"
    return SubjectAccessEntry(
        seq=row.seq,
        time=time,
        kind=kind,
        concerns=concerns,
        agreement=agreement,
        reason_text=en,
        reason_text_nl=nl,
        released=False,
        agencies=_refs([agency], names),
        end_date=end_date,
    )


_ADDRESSEES: dict[str, tuple[str, str]] = {
    "subject": ("you", "u"),
    "authority_holders": (
        "those with parental authority over you",
        "degenen met gezag over u",
    ),
    "household_members": ("the members of your household", "de leden van uw huishouden"),
}


def _duty_entry(
    row: Any,
    body: dict[str, Any],
    *,
    time: datetime,
    concerns: Concerns,
    names: dict[str, str],
) -> SubjectAccessEntry:
    kind = row.kind
    due_at = _parse_time(body.get("due_at"))
    informed_at: datetime | None = None
    agencies: list[AgencyRef] = []
    elements: list[str] = []
    agreement: AgreementRef | None = None
    if kind == "information_duty_recorded":
        holder = body.get("holder")
        who_en, who_nl = _ADDRESSEES.get(str(body.get("addressee_rule")), _ADDRESSEES["subject"])
        en = f"A duty to inform {who_en} arose: {_name(holder, names)} must do so by {_day(due_at)}"
        nl = (
            f"Er ontstond een plicht om {who_nl} te informeren: {_naam(holder, names)} "
            f"moet dat doen uiterlijk {_day(due_at)}"
        )
        agencies = _refs([holder], names)
        elements = [e for e in body.get("elements") or () if isinstance(e, str)]
        agreement = _agreement(body)
    elif kind == "information_duty_embargoed":
        # Deliberately nothing of the embargo itself: no reason, no case reference,
        # no investigation, no agency.
        due_at = None
        en = "Informing you was postponed while a safety investigation ran"
        nl = "Het informeren is uitgesteld zolang een veiligheidsonderzoek liep"
    elif kind == "information_duty_embargo_lifted":
        en = f"The postponement ended: informing you is due by {_day(due_at)}"
        nl = f"Het uitstel is beëindigd: het informeren moet uiterlijk {_day(due_at)} gebeuren"
    else:
        informed_at = _parse_time(body.get("informed_at"))
        by = body.get("fulfilled_by")
        en = f"You were informed on {_day(informed_at)} by {_name(by, names)}"
        nl = f"U bent op {_day(informed_at)} geïnformeerd door {_naam(by, names)}"
        agencies = _refs([by], names)
    return SubjectAccessEntry(
        seq=row.seq,
        time=time,
        kind=kind,
        concerns=concerns,
        purpose=body.get("purpose") if kind == "information_duty_recorded" else None,
        agreement=agreement,
        reason_text=en,
        reason_text_nl=nl,
        released=False,
        agencies=agencies,
        due_at=due_at,
        informed_at=informed_at,
        elements=elements,
    )
