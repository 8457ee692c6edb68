"""What each agreement allows: recipient x element x purpose, and on which basis.

The matrix is computed from the agreement data the way the decision procedure
(policies/lib/decision.rego, steps 3, 4 and 6) reads it, without evaluating
preconditions or consent records:

* a regular recipient of a purpose gets the elements of ``allowed_elements``;
  with ``consent: not_required_with_basis`` on a statutory basis, otherwise on
  consent (under ``required_unless_acute_danger`` an element that is also on the
  acute-danger list for that recipient can alternatively be released under a
  valid acute-danger declaration);
* a recipient listed only in ``acute_danger.additional_recipients`` gets the
  elements of ``acute_danger.allowed_elements`` and only while a valid
  declaration is referenced (acute-danger only);
* everything else is not allowed.

``matrix_command`` (``broker policy matrix``) prints it as text, CSV or a
self-contained HTML page.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from html import escape
from pathlib import Path
from typing import Any

import click

from broker.core.clock import dutch_date
from broker.policy.explain import (
    load_policies,
    policy_dir_option,
    select_version,
    version_option,
)
from broker.policy.loader import Agreement, PolicySet
from broker.reference import ReferenceData


class Access(StrEnum):
    """How a recipient may get an element under a purpose."""

    STATUTORY = "statutory"  # no consent; the purpose's legal bases
    CONSENT = "consent"  # a valid consent record is needed
    ACUTE_ONLY = "acute_only"  # only during a valid acute-danger declaration
    NOT_ALLOWED = "not_allowed"


ACCESS_LABELS: dict[Access, str] = {
    Access.STATUTORY: "statutory basis",
    Access.CONSENT: "consent required",
    Access.ACUTE_ONLY: "acute danger only",
    Access.NOT_ALLOWED: "not allowed",
}


@dataclass(frozen=True, slots=True)
class Cell:
    agreement_id: str
    purpose_id: str
    recipient: str
    element: str
    access: Access
    legal_basis_ids: tuple[str, ...] = ()
    # Under required_unless_acute_danger: may also be released by a valid declaration.
    acute_fallback: bool = False

    @property
    def allowed(self) -> bool:
        return self.access is not Access.NOT_ALLOWED

    @property
    def label(self) -> str:
        """Short text for a table cell."""
        if self.access is Access.CONSENT and self.acute_fallback:
            return "consent | acute"
        return {
            Access.STATUTORY: "statutory",
            Access.CONSENT: "consent",
            Access.ACUTE_ONLY: "acute only",
            Access.NOT_ALLOWED: "-",
        }[self.access]

    @property
    def description(self) -> str:
        """Long text: the access and the legal basis ids."""
        if not self.allowed:
            return "not allowed"
        text = ACCESS_LABELS[self.access]
        if self.acute_fallback:
            text += " (or a valid acute-danger declaration)"
        return f"{text}: {', '.join(self.legal_basis_ids) or 'no basis listed'}"


@dataclass(frozen=True, slots=True)
class PurposeInfo:
    id: str
    description: str
    providers: tuple[str, ...]
    consent: str
    legal_basis_ids: tuple[str, ...]
    preconditions: tuple[str, ...]
    response_form: str


@dataclass(frozen=True, slots=True)
class AgreementMatrix:
    agreement_id: str
    version: str
    title: str
    purposes: tuple[PurposeInfo, ...]
    recipients: tuple[str, ...]
    elements: tuple[str, ...]
    cells: dict[tuple[str, str, str], Cell]  # (purpose, recipient, element)

    def cell(self, purpose_id: str, recipient: str, element: str) -> Cell:
        found = self.cells.get((purpose_id, recipient, element))
        if found is not None:
            return found
        return Cell(self.agreement_id, purpose_id, recipient, element, Access.NOT_ALLOWED)

    def count(self, purpose_id: str, recipient: str, access: Access | None = None) -> int:
        """Allowed elements (or those with ``access``) for one purpose and recipient."""
        return sum(
            1
            for (p, r, _), c in self.cells.items()
            if p == purpose_id and r == recipient and (c.access is access if access else c.allowed)
        )

    def rows(self, *, full: bool = False) -> list[tuple[str, str]]:
        """(recipient, element) rows; without ``full`` only rows allowed somewhere."""
        allowed = {(r, e) for (_, r, e), c in self.cells.items() if c.allowed}
        return [(r, e) for r in self.recipients for e in self.elements if full or (r, e) in allowed]

    def all_cells(self) -> list[Cell]:
        """Every combination of purpose, recipient and element, allowed or not."""
        return [
            self.cell(p.id, r, e)
            for p in self.purposes
            for r in self.recipients
            for e in self.elements
        ]


def _strs(values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (values or []))


def build_matrix(agreement: Agreement) -> AgreementMatrix:
    """The matrix of one agreement, from its YAML (see the module docstring)."""
    cells: dict[tuple[str, str, str], Cell] = {}
    purposes: list[PurposeInfo] = []
    recipients: dict[str, None] = {}
    elements: dict[str, None] = {}
    for pid, purpose in agreement.purposes.items():
        bases = _strs(purpose.get("legal_basis_ids"))
        consent = str(purpose.get("consent", ""))
        acute_raw = purpose.get("acute_danger")
        acute: dict[str, Any] = acute_raw if isinstance(acute_raw, dict) else {}
        acute_lists: dict[str, Any] = acute.get("allowed_elements") or {}
        regular = _strs(purpose.get("recipients"))
        extra = [r for r in _strs(acute.get("additional_recipients")) if r not in regular]
        whitelists: dict[str, Any] = purpose.get("allowed_elements") or {}
        purposes.append(
            PurposeInfo(
                id=pid,
                description=" ".join(str(purpose.get("description") or "").split()),
                providers=_strs(purpose.get("providers")),
                consent=consent,
                legal_basis_ids=bases,
                preconditions=tuple(
                    str(p["id"]) for p in purpose.get("preconditions") or [] if "id" in p
                ),
                response_form=str(purpose.get("response_form", "full")),
            )
        )
        for r in (*regular, *extra, *whitelists, *acute_lists):
            recipients.setdefault(str(r), None)
        for lists in (whitelists, acute_lists):
            for values in lists.values():
                for e in _strs(values):
                    elements.setdefault(e, None)
        for r in regular:
            acute_for_r = set(_strs(acute_lists.get(r)))
            for e in _strs(whitelists.get(r)):
                if consent == "not_required_with_basis":
                    cell = Cell(agreement.id, pid, r, e, Access.STATUTORY, bases)
                else:
                    fallback = consent == "required_unless_acute_danger" and e in acute_for_r
                    cell = Cell(agreement.id, pid, r, e, Access.CONSENT, bases, fallback)
                cells[(pid, r, e)] = cell
        for r in extra:
            for e in _strs(acute_lists.get(r)):
                cells[(pid, r, e)] = Cell(agreement.id, pid, r, e, Access.ACUTE_ONLY, bases)
    source = agreement.source
    return AgreementMatrix(
        agreement_id=agreement.id,
        version=agreement.version,
        title=str(source.get("title_en") or source.get("title") or agreement.id),
        purposes=tuple(purposes),
        recipients=tuple(recipients),
        elements=tuple(sorted(elements)),
        cells=cells,
    )


def build_matrices(
    policy_set: PolicySet, agreement_id: str | None = None, version: str | None = None
) -> list[AgreementMatrix]:
    """One matrix per agreement, of the version in force today (else the latest);
    or for ``agreement_id`` only (and its ``version``; KeyError if unknown)."""
    today = dutch_date(datetime.now(UTC))
    if agreement_id is not None:
        agreement = policy_set.select(agreement_id, version, today)
        if agreement is None:
            raise KeyError(agreement_id)
        return [build_matrix(agreement)]
    current = (policy_set.current(i, today) for i in policy_set.versions)
    return [build_matrix(a) for a in current if a is not None]


# ----------------------------------------------------------------- formats
LEGEND = (
    "statutory = no consent, on the purpose's legal bases; consent = a valid consent record "
    "is needed; consent | acute = consent, or a valid acute-danger declaration; acute only = "
    "only while a valid acute-danger declaration is referenced; - = not allowed. Preconditions "
    "apply on top."
)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(r) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    return out


def matrix_text(
    matrices: Sequence[AgreementMatrix],
    reference: ReferenceData | None = None,
    *,
    full: bool = False,
) -> str:
    lines: list[str] = []
    for m in matrices:
        if lines:
            lines.append("")
        lines.append(f"Agreement {m.agreement_id} version {m.version}: {m.title}")
        for n, p in enumerate(m.purposes, start=1):
            lines.append(
                f"  P{n} {p.id}: providers {', '.join(p.providers) or '-'}; consent {p.consent}; "
                f"bases {', '.join(p.legal_basis_ids) or '-'}; preconditions "
                f"{', '.join(p.preconditions) or 'none'}; response {p.response_form}"
            )
        header = ["recipient", "element", *(f"P{n}" for n in range(1, len(m.purposes) + 1))]
        rows = [
            [r, e, *(m.cell(p.id, r, e).label for p in m.purposes)] for r, e in m.rows(full=full)
        ]
        lines.append("")
        lines.extend(_table(header, rows) if rows else ["(nothing is allowed)"])
        lines.append("")
        lines.append("Allowed elements per purpose and recipient:")
        for p in m.purposes:
            counts = [f"{m.count(p.id, r)} to {r}" for r in m.recipients if m.count(p.id, r)]
            lines.append(f"  {p.id}: {', '.join(counts) or 'nothing'}")
    lines.append("")
    lines.append("Legend: " + LEGEND)
    if reference is not None:
        names = sorted({e for m in matrices for e in m.elements})
        unknown = [e for e in names if e not in reference.elements]
        if unknown:
            lines.append("Not in the catalogue: " + ", ".join(unknown))
    return "\n".join(lines) + "\n"


CSV_HEADER = (
    "agreement",
    "version",
    "purpose",
    "recipient",
    "element",
    "access",
    "acute_fallback",
    "legal_basis_ids",
    "providers",
    "consent_mode",
    "preconditions",
)


def matrix_csv(matrices: Sequence[AgreementMatrix]) -> str:
    """Long form, one row per agreement x purpose x recipient x element (allowed or not)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for m in matrices:
        infos = {p.id: p for p in m.purposes}
        for c in m.all_cells():
            p = infos[c.purpose_id]
            writer.writerow(
                [
                    m.agreement_id,
                    m.version,
                    c.purpose_id,
                    c.recipient,
                    c.element,
                    c.access.value,
                    "yes" if c.acute_fallback else "",
                    " ".join(c.legal_basis_ids),
                    " ".join(p.providers),
                    p.consent,
                    " ".join(p.preconditions),
                ]
            )
    return buffer.getvalue()


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}
th,td{border:1px solid #bbb;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eee}
td.statutory{background:#d8f0d8}td.consent{background:#fff2c6}
td.acute_only{background:#f8d7d0}td.not_allowed{color:#999;text-align:center}
.small{font-size:.9em;color:#555}
"""


def html_page(title: str, body: str) -> str:
    """A complete, self-contained HTML5 page (``title`` is escaped, ``body`` is not)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )


def matrix_html(
    matrices: Sequence[AgreementMatrix],
    reference: ReferenceData | None = None,
    *,
    full: bool = False,
) -> str:
    parts: list[str] = ["<h1>Sharing matrix</h1>\n", f'<p class="small">{escape(LEGEND)}</p>\n']
    for m in matrices:
        parts.append(
            f"<h2>{escape(m.agreement_id)} version {escape(m.version)}</h2>\n"
            f"<p>{escape(m.title)}</p>\n<ol>\n"
        )
        for p in m.purposes:
            parts.append(
                f"<li><strong>{escape(p.id)}</strong>: {escape(p.description)}<br>"
                f'<span class="small">providers {escape(", ".join(p.providers))}; consent '
                f"{escape(p.consent)}; bases {escape(', '.join(p.legal_basis_ids))}; "
                f"preconditions {escape(', '.join(p.preconditions) or 'none')}; response "
                f"{escape(p.response_form)}</span></li>\n"
            )
        parts.append("</ol>\n<table>\n<thead><tr><th>recipient</th><th>element</th>")
        parts.extend(f"<th>{escape(p.id)}</th>" for p in m.purposes)
        parts.append("</tr></thead>\n<tbody>\n")
        for r, e in m.rows(full=full):
            name = reference.elements[e].name_nl if reference and e in reference.elements else ""
            parts.append(
                f"<tr><td>{escape(r)}</td><td>{escape(e)}"
                + (f'<br><span class="small">{escape(name)}</span>' if name else "")
                + "</td>"
            )
            for p in m.purposes:
                c = m.cell(p.id, r, e)
                parts.append(
                    f'<td class="{c.access.value}" title="{escape(c.description)}">'
                    f"{escape(c.label)}</td>"
                )
            parts.append("</tr>\n")
        parts.append("</tbody>\n</table>\n")
    return html_page("Sharing matrix", "".join(parts))


@click.command("matrix")
@click.option("--agreement", "agreement_id", default=None, help="One agreement (default: all)")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "csv", "html"]),
    default="text",
    show_default=True,
    help="csv is long form: every purpose x recipient x element, allowed or not",
)
@click.option("--full", is_flag=True, help="Text/HTML: also rows where nothing is allowed")
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to this file instead of standard output",
)
@version_option
@policy_dir_option
def matrix_command(
    *,
    agreement_id: str | None,
    version: str | None,
    fmt: str,
    full: bool,
    out_path: Path | None,
    policy_dir: Path | None,
) -> None:
    """What each agreement allows: recipient x element x purpose and on which basis."""
    policy_set = load_policies(policy_dir)
    if agreement_id is not None:
        select_version(policy_set, agreement_id, version)  # a click error when unknown
    elif version is not None:
        raise click.BadParameter("--version needs --agreement", param_hint="--version")
    matrices = build_matrices(policy_set, agreement_id, version)
    if fmt == "csv":
        text = matrix_csv(matrices)
    elif fmt == "html":
        text = matrix_html(matrices, policy_set.reference, full=full)
    else:
        text = matrix_text(matrices, policy_set.reference, full=full)
    write_output(text, out_path)


def write_output(text: str, out_path: Path | None) -> None:
    """To ``out_path`` (UTF-8) or standard output."""
    if out_path is None:
        click.echo(text, nl=False)
        return
    try:
        out_path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {out_path}: {exc.strerror}") from exc
    click.echo(f"wrote {out_path}", err=True)
