"""A readable summary of one agreement for the people who sign it.

``render_agreement`` builds the summary once as a small document model
(headings, paragraphs, lists, tables) and writes it as Markdown or as a
self-contained HTML page. Every text from the YAML is escaped for the target
format, so an agreement cannot inject markup into the page.

``render_command`` is ``broker policy render --agreement ID``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import click
import yaml

from broker.policy.explain import (
    AGE_BANDS,
    CONSENT_MODES,
    consent_rule_of,
    format_duration,
    givers_text,
    load_policies,
    policy_dir_option,
    select_version,
    version_option,
)
from broker.policy.loader import Agreement, PolicySet
from broker.policy.matrix import ACCESS_LABELS, Access, build_matrix, html_page, write_output


# ------------------------------------------------------------ document model
@dataclass(frozen=True, slots=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Para:
    text: str
    label: str = ""  # rendered bold before the text


@dataclass(frozen=True, slots=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    code_columns: frozenset[int] = field(default_factory=frozenset)  # ids, shown as code


Block = Heading | Para | Items | Table


def _text(value: Any) -> str:
    """A YAML value as one line of plain text."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return " ".join(str(value).split())


def _strs(values: Any) -> list[str]:
    return [str(v) for v in (values or [])]


_PERIOD = re.compile(r"P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<d>\d+)D)?")


def period_text(text: str) -> str:
    """'P20Y' -> '20 years (P20Y)'; time durations as the explanation writes them."""
    m = _PERIOD.fullmatch(text)
    if not m or text == "P":
        return format_duration(text)
    parts = [
        f"{int(v)} {unit}{'s' if int(v) != 1 else ''}"
        for v, unit in ((m.group("y"), "year"), (m.group("mo"), "month"), (m.group("d"), "day"))
        if v
    ]
    return f"{', '.join(parts)} ({text})"


def _verified(value: Any) -> str:
    if value is True:
        return "yes"
    return "no" if value is False else "?"


def _legal_texts(policy_set: PolicySet) -> dict[str, dict[str, Any]]:
    """The legal_bases.yaml entries (for 'permits' and 'verified'); empty if unreadable."""
    path = policy_set.root / "legal_bases" / "legal_bases.yaml"
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError):
        return {}
    entries = data.get("legal_bases", []) if isinstance(data, dict) else []
    return {str(e["id"]): e for e in entries if isinstance(e, dict) and "id" in e}


class _Builder:
    def __init__(self, agreement: Agreement, policy_set: PolicySet) -> None:
        self.a = agreement
        self.source = agreement.source
        self.ref = policy_set.reference
        self.legal = _legal_texts(policy_set)
        self.blocks: list[Block] = []

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def party(self, pid: str) -> str:
        p = self.ref.parties.get(pid)
        return f"{pid} ({p.name_en})" if p else pid

    def parties(self, ids: Sequence[str]) -> str:
        return ", ".join(self.party(p) for p in ids) or "none"

    # ---------------------------------------------------------------- sections
    def header(self) -> None:
        s = self.source
        self.add(Heading(1, _text(s.get("title") or self.a.id)))
        if s.get("title_en"):
            self.add(Para(_text(s["title_en"])))
        rows = [
            ("Agreement id", self.a.id),
            ("Version", self.a.version),
            ("Status", _text(s.get("status"))),
            ("Valid from", _text(s.get("valid_from"))),
            ("Valid until", _text(s.get("valid_until"))),
        ]
        if s.get("supersedes"):
            rows.append(("Supersedes", _text(s["supersedes"])))
        if s.get("modelled_on"):
            rows.append(("Modelled on", _text(s["modelled_on"])))
        rows.append(("Content hash", self.a.content_hash))
        self.add(Table(("", ""), tuple(rows)))
        self.add(
            Para(
                "The agreement is in force only while its status is active and the request "
                "date lies within the validity period (both dates included).",
                label="Validity.",
            )
        )

    def parties_section(self) -> None:
        s = self.source
        self.add(Heading(2, "Parties"))
        roles: dict[str, list[str]] = {}
        for role, members in (s.get("roles") or {}).items():
            for m in members if isinstance(members, list) else [members]:
                roles.setdefault(str(m), []).append(str(role))
        rows = []
        for pid in _strs(s.get("parties")):
            p = self.ref.parties.get(pid)
            rows.append(
                (
                    pid,
                    p.name_nl if p else "(not in parties.yaml)",
                    p.name_en if p else "",
                    ", ".join(roles.get(pid, [])),
                )
            )
        self.add(Table(("party", "name (nl)", "name (en)", "role"), tuple(rows), frozenset({0})))
        authorities = s.get("concurring_authorities") or []
        if authorities:
            self.add(
                Para("", label="Concurring authorities:"),
                Items(tuple(_text(x) for x in authorities)),
            )
        if s.get("data_subjects"):
            self.add(Para(", ".join(_strs(s["data_subjects"])), label="Data subjects:"))
        for key, title in (
            ("inclusion_criteria", "Inclusion criteria"),
            ("general_rules", "General rules"),
        ):
            if s.get(key):
                self.add(Heading(2, title), Items(tuple(_text(r) for r in s[key])))

    def consent_section(self) -> None:
        self.add(Heading(2, "Consent rules"))
        rule, own = consent_rule_of(self.a)
        self.add(
            Para(
                "This agreement states its own consent rule for minors (it may be stricter "
                "than the law, never looser)."
                if own
                else "This agreement has no consent rule of its own; the statutory table of "
                "who consents for a minor applies.",
            ),
            Table(
                ("age on the request date", "who must consent"),
                tuple((AGE_BANDS.get(b, b), givers_text(k)) for b, k in rule.items()),
            ),
        )
        rows = tuple(
            (pid, _text(p.get("consent")), CONSENT_MODES.get(str(p.get("consent")), "unknown"))
            for pid, p in self.a.purposes.items()
        )
        self.add(Table(("purpose", "consent", "meaning"), rows, frozenset({0, 1})))
        self.add(
            Para(
                "Consent is checked on every request: the most recent record that covers the "
                "subject, agreement, purpose (and element and recipient when narrowed) counts; "
                "a withdrawal by any one giver ends it from that moment.",
            )
        )

    def purpose_section(self, pid: str, p: dict[str, Any]) -> None:
        self.add(Heading(2, f"Purpose {pid}"))
        if p.get("description"):
            self.add(Para(_text(p["description"])))
        rows = [
            ("Providers", self.parties(_strs(p.get("providers")))),
            ("Recipients", self.parties(_strs(p.get("recipients")))),
            ("Initiation", _text(p.get("initiation")) or "-"),
            (
                "Consent",
                f"{_text(p.get('consent'))}: {CONSENT_MODES.get(str(p.get('consent')), 'unknown')}",
            ),
            ("Response form", _text(p.get("response_form", "full"))),
        ]
        if p.get("request_payload_elements"):
            rows.append(("Disclosed in the question", _text(p["request_payload_elements"])))
        if p.get("consent_scope"):
            rows.append(("Consent scope", _text(p["consent_scope"])))
        self.add(Table(("", ""), tuple(rows)))
        self.who_gets_what(pid)
        self.bases(_strs(p.get("legal_basis_ids")))
        pre = [x for x in p.get("preconditions") or [] if isinstance(x, dict)]
        self.add(Heading(3, "Preconditions"))
        if pre:
            self.add(
                Table(
                    ("id", "condition", "check"),
                    tuple(
                        (_text(x.get("id")), _text(x.get("description")), _text(x.get("check")))
                        for x in pre
                    ),
                    frozenset({0, 2}),
                )
            )
        else:
            self.add(Para("None."))
        if isinstance(p.get("acute_danger"), dict):
            self.acute(p["acute_danger"])
        self.retention(p.get("retention"))
        notes = p.get("proportionality_notes") or []
        if notes:
            self.add(Heading(3, "Proportionality"), Items(tuple(_text(n) for n in notes)))

    def who_gets_what(self, pid: str) -> None:
        matrix = build_matrix(self.a)
        self.add(Heading(3, "Who gets what"))
        rows = []
        for r in matrix.recipients:
            for e in matrix.elements:
                c = matrix.cell(pid, r, e)
                if not c.allowed:
                    continue
                el = self.ref.elements.get(e)
                footing = ACCESS_LABELS[c.access]
                if c.acute_fallback:
                    footing += " (or acute danger)"
                rows.append(
                    (
                        r,
                        e,
                        el.name_nl if el else "(not in the catalogue)",
                        f"{el.gdpr_category}, sensitivity {el.sensitivity}" if el else "",
                        footing,
                    )
                )
        if rows:
            self.add(
                Table(
                    ("recipient", "element", "name", "category", "on what footing"),
                    tuple(rows),
                    frozenset({0, 1}),
                )
            )
        else:
            self.add(Para("Nothing."))
        if any(matrix.cell(pid, r, e).access is Access.ACUTE_ONLY for r, e in matrix.rows()):
            self.add(
                Para(
                    "Recipients marked 'acute danger only' receive only during a valid "
                    "acute-danger declaration."
                )
            )

    def bases(self, ids: list[str]) -> None:
        self.add(Heading(3, "Legal bases"))
        items = []
        for b in ids:
            basis = self.ref.legal_bases.get(b)
            if basis is None:
                items.append(f"{b}: not in legal_bases.yaml")
                continue
            text = f"{basis.citation} ({b}; {basis.kind.replace('_', ' ')}"
            if basis.consent_required:
                text += "; works only with consent"
            if self.legal.get(b, {}).get("verified") is False:
                text += "; NOT VERIFIED - legal check needed"
            items.append(text + ")")
        self.add(Items(tuple(items)) if items else Para("None listed."))

    def acute(self, acute: dict[str, Any]) -> None:
        self.add(Heading(3, "Acute-danger clause (break the glass)"))
        rows = [
            ("Declarable by", self.parties(_strs(acute.get("declarable_by")))),
            ("Evidence required", _text(acute.get("evidence_required"))),
            (
                "Additional recipients",
                self.parties(_strs(acute.get("additional_recipients"))),
            ),
            ("Valid for at most", format_duration(_text(acute.get("max_duration")))),
        ]
        for r, elements in (acute.get("allowed_elements") or {}).items():
            rows.append((f"Released to {r}", ", ".join(_strs(elements))))
        handled = {
            "declarable_by",
            "evidence_required",
            "additional_recipients",
            "max_duration",
            "allowed_elements",
        }
        for key, value in acute.items():
            if key not in handled:
                shown = period_text(str(value)) if str(value).startswith("P") else _text(value)
                rows.append((key.replace("_", " ").capitalize(), shown.replace("_", " ")))
        self.add(Table(("", ""), tuple(rows)))

    def retention(self, retention: Any) -> None:
        if not isinstance(retention, dict):
            return
        text = (
            f"{_text(retention.get('holder'))} keeps the data for "
            f"{period_text(_text(retention.get('period')))} from "
            f"{_text(retention.get('anchor')).replace('_', ' ')}."
        )
        if retention.get("note"):
            text += f" {_text(retention['note'])}"
        self.add(Heading(3, "Retention"), Para(text))

    def legal_appendix(self) -> None:
        ids = list(
            dict.fromkeys(
                b for p in self.a.purposes.values() for b in _strs(p.get("legal_basis_ids"))
            )
        )
        self.add(Heading(2, "Legal bases used"))
        rows = []
        for b in ids:
            basis = self.ref.legal_bases.get(b)
            raw = self.legal.get(b, {})
            rows.append(
                (
                    b,
                    basis.law_nl if basis else "(unknown)",
                    basis.article if basis else "",
                    basis.kind if basis else "",
                    "yes" if basis and basis.consent_required else "no",
                    _verified(raw.get("verified")),
                    _text(raw.get("permits")),
                )
            )
        self.add(
            Table(
                ("id", "law", "article", "kind", "needs consent", "verified", "what it permits"),
                tuple(rows),
                frozenset({0}),
            )
        )

    def subscriptions(self) -> None:
        """Events the broker delivers to every agency of the recipient parties."""
        subscriptions = self.a.subscriptions
        if not subscriptions:
            return
        self.add(Heading(2, "Subscriptions (events delivered to the recipients)"))
        self.add(
            Para(
                "A publisher's event reaches every registered agency of the recipient parties; "
                "the purpose decides per recipient and element exactly as for a request."
            )
        )
        for event_type, sub in subscriptions.items():
            self.add(Heading(3, f"Event {event_type}"))
            if sub.get("description"):
                self.add(Para(_text(sub["description"])))
            rows = (
                ("Purpose", _text(sub.get("purpose"))),
                ("Publishers", self.parties(_strs(sub.get("publishers")))),
                ("Recipients", self.parties(_strs(sub.get("recipients")))),
                ("Elements the event may carry", ", ".join(_strs(sub.get("elements")))),
            )
            self.add(Table(("", ""), rows))

    def signals(self) -> None:
        """Signal and match: who may register involvement and be told of each other."""
        section = self.a.signals
        if section is None:
            return
        self.add(Heading(2, "Signal and match (who else is involved)"))
        self.add(
            Para(
                "An agency of these parties registers that it is involved with a child (no "
                "content); when two are involved with the same child (or household), each is "
                "told the other agency and its contact route, nothing else."
            )
        )
        if section.get("description"):
            self.add(Para(_text(section["description"])))
        rows = (
            ("Parties", self.parties(_strs(section.get("parties")))),
            ("Matched on", ", ".join(_strs(section.get("subject_kinds")))),
            ("Legal bases", ", ".join(_strs(section.get("legal_basis_ids")))),
            ("Longest life of a signal", _text(section.get("max_duration") or "P2Y")),
        )
        self.add(Table(("", ""), rows))

    def signatories(self) -> None:
        self.add(Heading(2, "Signatories"))
        rows = tuple(
            (
                _text(s.get("party")),
                _text(s.get("organisation")),
                _text(s.get("signed_by")),
                _text(s.get("function")),
                _text(s.get("signed_on")),
                _text(s.get("role")) or "party",
            )
            for s in self.source.get("signatories") or []
            if isinstance(s, dict)
        )
        self.add(
            Table(
                ("party", "organisation", "signed by", "function", "signed on", "role"),
                rows,
                frozenset({0}),
            )
        )

    def build(self) -> list[Block]:
        self.header()
        self.parties_section()
        self.consent_section()
        for pid, p in self.a.purposes.items():
            self.purpose_section(pid, p)
        self.subscriptions()
        self.signals()
        self.legal_appendix()
        self.signatories()
        return self.blocks


def agreement_blocks(agreement: Agreement, policy_set: PolicySet) -> list[Block]:
    """The summary of ``agreement`` as a document model (format-free)."""
    return _Builder(agreement, policy_set).build()


# ----------------------------------------------------------------- Markdown
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_text(text: str) -> str:
    """Plain text safe in Markdown: <, > and & become entities (no raw HTML can
    appear in the file) and punctuation that means something is backslash-escaped."""
    text = re.sub(r"[&<>]", lambda m: _MD_ENTITIES[m.group(0)], text)
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(text: str) -> str:
    """An id as a code span; text that a code span cannot hold safely as escaped text."""
    if not text or any(ch in text for ch in "`|<>&"):
        return md_text(text)
    return f"`{text}`"


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        match block:
            case Heading(level, text):
                out.append(f"{'#' * level} {md_text(text)}\n")
            case Para(text, label):
                bold = f"**{md_text(label)}** " if label else ""
                out.append(f"{bold}{md_text(text)}".rstrip() + "\n")
            case Items(items):
                out.append("\n".join(f"- {md_text(i)}" for i in items) + "\n")
            case Table(header, rows, code):

                def cell(i: int, value: str, code: frozenset[int] = code) -> str:
                    return md_code(value) if i in code else md_text(value)

                lines = ["| " + " | ".join(md_text(h) for h in header) + " |"]
                lines.append("|" + "|".join(" --- " for _ in header) + "|")
                lines.extend(
                    "| " + " | ".join(cell(i, v) for i, v in enumerate(row)) + " |" for row in rows
                )
                out.append("\n".join(lines) + "\n")
    return "\n".join(out)


# --------------------------------------------------------------------- HTML
def to_html_body(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        match block:
            case Heading(level, text):
                out.append(f"<h{level}>{escape(text)}</h{level}>")
            case Para(text, label):
                bold = f"<strong>{escape(label)}</strong> " if label else ""
                out.append(f"<p>{bold}{escape(text)}</p>")
            case Items(items):
                out.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>")
            case Table(header, rows, code):
                head = (
                    "<thead><tr>"
                    + "".join(f"<th>{escape(h)}</th>" for h in header)
                    + "</tr></thead>"
                    if any(header)
                    else ""
                )
                body = "".join(
                    "<tr>"
                    + "".join(
                        f"<td><code>{escape(v)}</code></td>"
                        if i in code and v
                        else f"<td>{escape(v)}</td>"
                        for i, v in enumerate(row)
                    )
                    + "</tr>"
                    for row in rows
                )
                out.append(f"<table>{head}<tbody>{body}</tbody></table>")
    return "\n".join(out) + "\n"


def render_agreement(agreement: Agreement, policy_set: PolicySet, fmt: str = "html") -> str:
    """The signing summary as ``html`` (a complete page) or ``markdown``."""
    blocks = agreement_blocks(agreement, policy_set)
    if fmt == "markdown":
        return to_markdown(blocks)
    if fmt != "html":
        raise ValueError(f"unknown format {fmt!r}")
    title = f"{agreement.id} version {agreement.version}"
    return html_page(title, to_html_body(blocks))


@click.command("render")
@click.option("--agreement", "agreement_id", required=True, help="Agreement id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "markdown"]),
    default="html",
    show_default=True,
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to this file instead of standard output",
)
@version_option
@policy_dir_option
def render_command(
    *,
    agreement_id: str,
    version: str | None,
    fmt: str,
    out_path: Path | None,
    policy_dir: Path | None,
) -> None:
    """A readable summary of one agreement version for the people who sign it."""
    policy_set = load_policies(policy_dir)
    agreement = select_version(policy_set, agreement_id, version)
    write_output(render_agreement(agreement, policy_set, fmt), out_path)
