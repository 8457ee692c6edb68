"""A subject-access report as one self-contained, printable HTML page (Dutch and
English headings). Every value is escaped; the page loads nothing."""

from __future__ import annotations

from datetime import datetime
from html import escape

from broker.core.clock import DUTCH
from broker.subject_access.service import AgencyRef, SubjectAccessEntry, SubjectAccessReport

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#111}
h1{font-size:1.4em}h1 small{display:block;font-weight:normal;color:#555}
table{border-collapse:collapse;width:100%;font-size:.85em}
th,td{border:1px solid #999;padding:.3em .4em;text-align:left;vertical-align:top}
th{background:#eee}th small{display:block;font-weight:normal;color:#555}
tr.household td{background:#f7f3e8}.deny{color:#900}.allow{color:#060}
@media print{body{margin:0}tr{page-break-inside:avoid}}
"""

_COLUMNS = (
    ("Tijdstip", "Time"),
    ("Betreft", "Concerns"),
    ("Vragende organisatie", "Requesting agency"),
    ("Verstrekkende organisatie", "Providing agency"),
    ("Doel en convenant", "Purpose and agreement"),
    ("Gegeven", "Data element"),
    ("Besluit en reden", "Decision and reason"),
    ("Grondslag", "Legal basis"),
    ("Toestemming / verklaring", "Consent / declaration"),
    ("Verstrekt", "Released"),
)


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _time(value: datetime | None) -> str:
    if value is None:
        return ""
    return _e(value.astimezone(DUTCH).strftime("%Y-%m-%d %H:%M:%S %Z"))


def _agency(ref: AgencyRef | None) -> str:
    if ref is None or ref.oin is None:
        return ""
    name = _e(ref.name) if ref.name else "<em>(onbekend / unknown)</em>"
    return f"{name}<br><small>OIN {_e(ref.oin)}</small>"


def _row(entry: SubjectAccessEntry) -> str:
    concerns = "Huishouden / household" if entry.concerns == "household" else "Persoon / person"
    agreement = ""
    if entry.agreement is not None and entry.agreement.id:
        version = f" v{_e(entry.agreement.version)}" if entry.agreement.version else ""
        agreement = f"<br><small>{_e(entry.agreement.id)}{version}</small>"
    element = _e(entry.element_name or "")
    if entry.element:
        element += f"<br><small>{_e(entry.element)}</small>"
    outcome_class = "allow" if entry.outcome == "allow" else "deny"
    decision = (
        f'<span class="{outcome_class}">{_e(entry.outcome)}</span>: ' if entry.outcome else ""
    )
    decision += f"{_e(entry.reason_text_nl)}<br><small>{_e(entry.reason_text)}</small>"
    bases = "<br>".join(_e(b.citation) for b in entry.legal_basis)
    ids = "<br>".join(
        _e(v)
        for v in (
            f"toestemming {entry.consent_id}" if entry.consent_id else None,
            f"verklaring {entry.acute_declaration_id}" if entry.acute_declaration_id else None,
        )
        if v
    )
    if entry.released:
        released = "ja / yes"
    elif entry.release_status:
        released = f"nee / no ({_e(entry.release_status)})"
    else:
        released = "nee / no"
    cells = (
        _time(entry.time),
        concerns,
        _agency(entry.requester),
        _agency(entry.provider),
        f"{_e(entry.purpose)}{agreement}",
        element,
        decision,
        bases,
        ids,
        released,
    )
    css = ' class="household"' if entry.concerns == "household" else ""
    return f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_html(report: SubjectAccessReport) -> str:
    head = "".join(f"<th>{_e(nl)}<small>{_e(en)}</small></th>" for nl, en in _COLUMNS)
    rows = "\n".join(_row(e) for e in report.entries)
    if not report.entries:
        rows = f'<tr><td colspan="{len(_COLUMNS)}">Geen vermeldingen / No entries</td></tr>'
    period = ""
    if report.since or report.until:
        period = (
            f"<p>Periode / Period: {_time(report.since) or '&hellip;'} &ndash; "
            f"{_time(report.until) or '&hellip;'}</p>"
        )
    household = (
        "Regels over het huishouden van de betrokkene zijn gemarkeerd. / "
        "Entries about the person's household are marked."
        if report.household_included
        else "Geen huishouden bekend in de BRP. / No household known in the register."
    )
    return (
        '<!DOCTYPE html>\n<html lang="nl"><head><meta charset="utf-8">'
        "<title>Inzageoverzicht (AVG art. 15) / Subject-access report</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Overzicht van verwerkingen (inzage, AVG art. 15)"
        "<small>Overview of processing (subject access, GDPR art. 15)</small></h1>"
        f"<p>Opgesteld / Generated: {_time(report.generated_at)}</p>{period}"
        f"<p>Aantal vermeldingen / Number of entries: {report.entry_count}</p>"
        f"<p>{household}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>"
        "</body></html>\n"
    )
