"""A subject-access report as a printable PDF (A4 landscape, Dutch and English
headings), drawn with fpdf2 (pure Python, nothing external).

The header names the person only by the pseudonymised reference, the time the
report was generated and the audit log checkpoint (origin, tree size, root) it
was read against; the BSN never reaches the document. The built-in PDF fonts
cover Latin-1, which holds Dutch; other characters are replaced."""

from __future__ import annotations

import base64
from datetime import datetime

from fpdf import FPDF
from fpdf.fonts import FontFace

from broker.core.clock import DUTCH
from broker.subject_access.service import SubjectAccessEntry, SubjectAccessReport

FONT = "Helvetica"
# (Dutch, English) heading and relative width of each column.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("Tijdstip", "Time", 17),
    ("Vragende organisatie", "Requesting agency", 26),
    ("Verstrekkende organisatie", "Providing agency", 26),
    ("Doel", "Purpose", 24),
    ("Convenant (versie)", "Agreement (version)", 22),
    ("Gegeven", "Data element", 26),
    ("Besluit", "Outcome", 12),
    ("Reden", "Reason", 34),
    ("Grondslag (artikel)", "Legal basis (article)", 26),
)


def _text(value: object) -> str:
    """Latin-1 text for the built-in fonts (other characters become '?')."""
    text = "" if value is None else str(value)
    text = text.replace("\u2014", "-").replace("\u2013", "-").replace("\u2026", "...")
    return text.encode("latin-1", "replace").decode("latin-1")


def _time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(DUTCH).strftime("%Y-%m-%d %H:%M:%S %Z")


def _agency(entry: SubjectAccessEntry, which: str) -> str:
    ref = entry.requester if which == "requester" else entry.provider
    if ref is None or ref.oin is None:
        return ""
    return f"{ref.name or '(onbekend / unknown)'}\nOIN {ref.oin}"


def _cells(entry: SubjectAccessEntry) -> list[str]:
    agreement = ""
    if entry.agreement is not None and entry.agreement.id:
        version = f" (v{entry.agreement.version})" if entry.agreement.version else ""
        agreement = f"{entry.agreement.id}{version}"
    element = "\n".join(v for v in (entry.element_name, entry.element) if v)
    if entry.concerns == "household":
        element += "\n(huishouden / household)"
    if entry.kind != "decision":
        outcome = entry.kind
    elif entry.released:
        outcome = f"{entry.outcome}\nverstrekt / released"
    elif entry.release_status:
        outcome = f"{entry.outcome}\n{entry.release_status}"
    else:
        outcome = entry.outcome or ""
    reason = entry.reason_text_nl
    if entry.reason_text != entry.reason_text_nl:
        reason += f"\n{entry.reason_text}"
    for label, value in (
        ("toestemming", entry.consent_id),
        ("verklaring", entry.acute_declaration_id),
    ):
        if value:
            reason += f"\n{label} {value}"
    return [
        _time(entry.time),
        _agency(entry, "requester"),
        _agency(entry, "provider"),
        entry.purpose or "",
        agreement,
        element,
        outcome,
        reason,
        "\n".join(b.citation for b in entry.legal_basis),
    ]


class _Document(FPDF):
    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="landscape", unit="mm", format="A4")
        self._footer_text = footer_text

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(FONT, size=7)
        self.cell(0, 5, _text(f"{self._footer_text} - pagina / page {self.page_no()}/{{nb}}"))


def render_pdf(report: SubjectAccessReport) -> bytes:
    """The report as PDF bytes."""
    reference = report.subject or "-"
    pdf = _Document(f"Inzageoverzicht / Subject-access report {reference}")
    pdf.set_title("Inzageoverzicht (AVG art. 15) / Subject-access report")
    pdf.set_subject(f"Betrokkene / Data subject {reference}")
    pdf.set_creator("chain broker")
    pdf.set_creation_date(report.generated_at)
    pdf.set_margins(10, 10, 10)
    pdf.set_auto_page_break(auto=True, margin=14)
    pdf.add_page()

    pdf.set_font(FONT, style="B", size=14)
    pdf.cell(
        0, 7, "Overzicht van verwerkingen (inzage, AVG art. 15)", new_x="LMARGIN", new_y="NEXT"
    )
    pdf.set_font(FONT, size=10)
    pdf.cell(
        0, 5, "Overview of processing (subject access, GDPR art. 15)", new_x="LMARGIN", new_y="NEXT"
    )
    pdf.ln(2)
    lines = [
        f"Betrokkene (gepseudonimiseerd) / Data subject (pseudonymised): {reference}",
        f"Opgesteld / Generated: {_time(report.generated_at)}",
    ]
    if report.since or report.until:
        lines.append(
            f"Periode / Period: {_time(report.since) or '...'} - {_time(report.until) or '...'}"
        )
    if report.log is not None:
        root_b64 = base64.b64encode(bytes.fromhex(report.log.root_hash)).decode("ascii")
        lines.append(
            f"Logboek-checkpoint / Log checkpoint: {report.log.origin or '-'}, "
            f"omvang / size {report.log.size}, root {root_b64}"
        )
    lines.append(f"Aantal vermeldingen / Number of entries: {report.entry_count}")
    lines.append(
        "Regels over het huishouden van de betrokkene zijn gemarkeerd. / "
        "Entries about the person's household are marked."
        if report.household_included
        else "Geen huishouden bekend in de BRP. / No household known in the register."
    )
    pdf.set_font(FONT, size=8)
    for line in lines:
        pdf.multi_cell(0, 4, _text(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)

    pdf.set_font(FONT, size=7)
    headings = FontFace(emphasis="BOLD", fill_color=(230, 230, 230))
    with pdf.table(
        col_widths=tuple(w for _, _, w in COLUMNS),
        headings_style=headings,
        line_height=3.4,
        text_align="LEFT",
        v_align="TOP",
        repeat_headings=1,
        padding=1,
    ) as table:
        header = table.row()
        for nl, en, _ in COLUMNS:
            header.cell(f"{nl}\n{en}")
        if not report.entries:
            table.row().cell("Geen vermeldingen / No entries", colspan=len(COLUMNS))
        for entry in report.entries:
            row = table.row()
            for value in _cells(entry):
                row.cell(_text(value))
    return bytes(pdf.output())
