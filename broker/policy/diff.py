"""What changes between two versions of an agreement folder.

``diff_agreements`` compares two loaded agreements and lists every change, each
marked as *material* (it changes what the broker allows: elements per purpose and
recipient, providers, recipients, legal bases, consent mode or rule,
preconditions and their Rego code, response form, validity, status, the
acute-danger clause) or not (titles, descriptions, notes, retention, parties
list, signatories and other editorial fields).

``diff_command`` (``broker policy diff OLD NEW``, two folders, or ``broker policy
diff --agreement ID OLD NEW``, two versions of one agreement in the policy set)
prints the changes and exits with 0 when nothing material changed, 1 when
something did, and 2 when a folder cannot be read or on a usage error.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from broker.core.errors import BrokerError
from broker.policy.explain import (
    AGE_BANDS,
    consent_rule_of,
    default_policy_dir,
    givers_text,
    load_policies,
    policy_dir_option,
)
from broker.policy.loader import Agreement, load_agreement
from broker.policy.matrix import ACCESS_LABELS, Access, AgreementMatrix, Cell, build_matrix
from broker.reference import ReferenceData

NEWLY_ALLOWED = "+"
NEWLY_FORBIDDEN = "-"
CHANGED = "~"
NOTE = "*"

# Fields the decision procedure reads; everything else is editorial.
_MATERIAL_TOP = {"id", "status", "valid_from", "valid_until", "consent_rule"}
_HANDLED_TOP = _MATERIAL_TOP | {
    "version",
    "title",
    "title_en",
    "parties",
    "signatories",
    "general_rules",
    "purposes",
}
_MATERIAL_PURPOSE = {
    "providers",
    "recipients",
    "allowed_elements",
    "legal_basis_ids",
    "consent",
    "preconditions",
    "response_form",
    "acute_danger",
}
_MATERIAL_ACUTE = {
    "declarable_by",
    "evidence_required",
    "additional_recipients",
    "allowed_elements",
    "max_duration",
}


@dataclass(frozen=True, slots=True)
class Change:
    scope: str  # "agreement" or "purpose <id>"
    marker: str  # + newly allowed, - newly forbidden, ~ changed, * editorial note
    text: str
    material: bool

    def line(self) -> str:
        return f"{self.marker} {self.text}"


@dataclass(frozen=True, slots=True)
class AgreementDiff:
    old_id: str
    new_id: str
    old_version: str
    new_version: str
    changes: tuple[Change, ...]

    @property
    def material(self) -> bool:
        """True when the new version allows or forbids something the old one did not."""
        return any(c.material for c in self.changes)

    @property
    def newly_allowed(self) -> list[Change]:
        return [c for c in self.changes if c.marker == NEWLY_ALLOWED]

    @property
    def newly_forbidden(self) -> list[Change]:
        return [c for c in self.changes if c.marker == NEWLY_FORBIDDEN]


def _show(value: Any) -> str:
    if value is None or value in ([], {}):
        return "(none)"
    if isinstance(value, list):
        return ", ".join(_show(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_show(v)}" for k, v in value.items())
    return " ".join(str(value).split())


def _strs(values: Any) -> list[str]:
    return [str(v) for v in (values or [])]


class _Collector:
    def __init__(self, reference: ReferenceData | None) -> None:
        self.changes: list[Change] = []
        self.reference = reference

    def add(self, scope: str, marker: str, text: str, *, material: bool) -> None:
        self.changes.append(Change(scope, marker, text, material))

    def basis(self, basis_id: str) -> str:
        found = self.reference.legal_bases.get(basis_id) if self.reference else None
        return f"{basis_id} ({found.citation})" if found else basis_id

    def value(self, scope: str, label: str, old: Any, new: Any, *, material: bool) -> None:
        if old != new:
            marker = CHANGED if material else NOTE
            self.add(scope, marker, f"{label}: {_show(old)} -> {_show(new)}", material=material)

    def members(
        self,
        scope: str,
        label: str,
        old: Iterable[str],
        new: Iterable[str],
        *,
        material: bool,
        name: Any = None,
    ) -> None:
        """Added and removed members of a list (e.g. providers, legal bases)."""
        old_list, new_list = list(old), list(new)
        show = name or (lambda x: x)
        marker = CHANGED if material else NOTE
        for item in new_list:
            if item not in old_list:
                self.add(scope, marker, f"{label} added: {show(item)}", material=material)
        for item in old_list:
            if item not in new_list:
                self.add(scope, marker, f"{label} removed: {show(item)}", material=material)


def _access(cell: Cell) -> str:
    text = ACCESS_LABELS[cell.access]
    return text + (" or acute danger" if cell.acute_fallback else "")


def _cells(c: _Collector, old: AgreementMatrix, new: AgreementMatrix, modes: set[str]) -> None:
    """Per purpose, recipient and element: newly allowed, newly forbidden, other basis."""
    keys = sorted(set(old.cells) | set(new.cells))
    for pid, recipient, element in keys:
        before, after = old.cell(pid, recipient, element), new.cell(pid, recipient, element)
        scope = f"purpose {pid}"
        name = element
        if not before.allowed and after.allowed:
            c.add(
                scope,
                NEWLY_ALLOWED,
                f"{recipient} may now receive {name} ({_access(after)})",
                material=True,
            )
        elif before.allowed and not after.allowed:
            c.add(
                scope,
                NEWLY_FORBIDDEN,
                f"{recipient} may no longer receive {name} (was {_access(before)})",
                material=True,
            )
        elif (before.access, before.acute_fallback) != (after.access, after.acute_fallback):
            if pid in modes and Access.ACUTE_ONLY not in (before.access, after.access):
                continue  # reported once as the purpose's consent-mode change
            c.add(
                scope,
                CHANGED,
                f"{recipient} receives {name} on a different footing: {_access(before)} -> "
                f"{_access(after)}",
                material=True,
            )


def _preconditions(c: _Collector, scope: str, old: Any, new: Any) -> None:
    before = {str(p.get("id")): p for p in old or [] if isinstance(p, dict)}
    after = {str(p.get("id")): p for p in new or [] if isinstance(p, dict)}
    for pid, p in after.items():
        if pid not in before:
            text = f"precondition added: {pid} ({_show(p.get('description', ''))})"
            c.add(scope, CHANGED, text, material=True)
        elif p != before[pid]:
            for key in sorted(set(p) | set(before[pid])):
                c.value(
                    scope,
                    f"precondition {pid} {key}",
                    before[pid].get(key),
                    p.get(key),
                    material=True,
                )
    for pid, p in before.items():
        if pid not in after:
            text = f"precondition removed: {pid} ({_show(p.get('description', ''))})"
            c.add(scope, CHANGED, text, material=True)


def _acute(c: _Collector, scope: str, old: Any, new: Any) -> None:
    before = old if isinstance(old, dict) else {}
    after = new if isinstance(new, dict) else {}
    if not before and after:
        c.add(scope, CHANGED, "acute-danger clause added", material=True)
    elif before and not after:
        c.add(scope, CHANGED, "acute-danger clause removed", material=True)
    for key in sorted(set(before) | set(after)):
        if key == "allowed_elements":
            continue  # reported per element through the matrix
        material = key in _MATERIAL_ACUTE
        if isinstance(before.get(key), list) or isinstance(after.get(key), list):
            c.members(
                scope,
                f"acute-danger {key}",
                _strs(before.get(key)),
                _strs(after.get(key)),
                material=material,
            )
        else:
            c.value(
                scope, f"acute-danger {key}", before.get(key), after.get(key), material=material
            )


def _purpose(c: _Collector, pid: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    scope = f"purpose {pid}"
    c.members(
        scope, "provider", _strs(old.get("providers")), _strs(new.get("providers")), material=True
    )
    c.members(
        scope,
        "recipient",
        _strs(old.get("recipients")),
        _strs(new.get("recipients")),
        material=True,
    )
    c.members(
        scope,
        "legal basis",
        _strs(old.get("legal_basis_ids")),
        _strs(new.get("legal_basis_ids")),
        material=True,
        name=c.basis,
    )
    if old.get("consent") != new.get("consent"):
        count = sum(len(v or []) for v in (new.get("allowed_elements") or {}).values())
        c.add(
            scope,
            CHANGED,
            f"consent mode: {_show(old.get('consent'))} -> {_show(new.get('consent'))} "
            f"(applies to {count} allowed element{'s' if count != 1 else ''} of the purpose)",
            material=True,
        )
    _preconditions(c, scope, old.get("preconditions"), new.get("preconditions"))
    c.value(
        scope,
        "response form",
        old.get("response_form", "full"),
        new.get("response_form", "full"),
        material=True,
    )
    _acute(c, scope, old.get("acute_danger"), new.get("acute_danger"))
    c.value(scope, "retention", old.get("retention"), new.get("retention"), material=False)
    c.members(
        scope,
        "proportionality note",
        [_show(n) for n in old.get("proportionality_notes") or []],
        [_show(n) for n in new.get("proportionality_notes") or []],
        material=False,
    )
    handled = _MATERIAL_PURPOSE | {"id", "retention", "proportionality_notes"}
    for key in sorted((set(old) | set(new)) - handled):
        c.value(scope, key, old.get(key), new.get(key), material=False)


def _consent_rule(c: _Collector, old: Agreement, new: Agreement) -> None:
    before, own_before = consent_rule_of(old)
    after, own_after = consent_rule_of(new)
    if own_before != own_after:
        c.add(
            "agreement",
            CHANGED if before != after else NOTE,
            "consent rule: "
            + ("the agreement's own" if own_before else "the statutory table")
            + " -> "
            + ("the agreement's own" if own_after else "the statutory table"),
            material=before != after,
        )
    for band in dict.fromkeys([*before, *after]):
        if before.get(band) != after.get(band):
            c.add(
                "agreement",
                CHANGED,
                f"consent for age {AGE_BANDS.get(band, band)}: "
                f"{givers_text(before.get(band, []))} -> {givers_text(after.get(band, []))}",
                material=True,
            )


def _signatories(c: _Collector, old: Any, new: Any) -> None:
    def keyed(values: Any) -> dict[str, Any]:
        return {
            f"{s.get('party')} ({s.get('organisation', '')})": s
            for s in values or []
            if isinstance(s, dict)
        }

    before, after = keyed(old), keyed(new)
    c.members("agreement", "signatory", list(before), list(after), material=False)
    for key in before.keys() & after.keys():
        if before[key] != after[key]:
            for field in sorted(set(before[key]) | set(after[key])):
                c.value(
                    "agreement",
                    f"signatory {key} {field}",
                    before[key].get(field),
                    after[key].get(field),
                    material=False,
                )


def diff_agreements(
    old: Agreement, new: Agreement, reference: ReferenceData | None = None
) -> AgreementDiff:
    """Every change from ``old`` to ``new`` (see the module docstring)."""
    c = _Collector(reference)
    o, n = old.source, new.source
    c.value("agreement", "id", old.id, new.id, material=True)
    c.value("agreement", "version", old.version, new.version, material=False)
    c.value("agreement", "status", o.get("status"), n.get("status"), material=True)
    c.value(
        "agreement",
        "validity",
        f"{o.get('valid_from')} to {o.get('valid_until')}",
        f"{n.get('valid_from')} to {n.get('valid_until')}",
        material=True,
    )
    for key in ("title", "title_en"):
        c.value("agreement", key, o.get(key), n.get(key), material=False)
    c.members(
        "agreement", "party", _strs(o.get("parties")), _strs(n.get("parties")), material=False
    )
    _consent_rule(c, old, new)
    _signatories(c, o.get("signatories"), n.get("signatories"))
    c.members(
        "agreement",
        "general rule",
        [_show(r) for r in o.get("general_rules") or []],
        [_show(r) for r in n.get("general_rules") or []],
        material=False,
    )
    for key in sorted((set(o) | set(n)) - _HANDLED_TOP):
        c.value("agreement", key, o.get(key), n.get(key), material=False)
    if old.rego_source != new.rego_source:
        diff = difflib.unified_diff(
            old.rego_source.splitlines(),
            new.rego_source.splitlines(),
            "old/policy.rego",
            "new/policy.rego",
            lineterm="",
            n=1,
        )
        c.add(
            "agreement",
            CHANGED,
            "policy.rego changed (the precondition checks may decide differently):\n"
            + "\n".join(diff),
            material=True,
        )

    old_purposes, new_purposes = old.purposes, new.purposes
    for pid in new_purposes:
        if pid not in old_purposes:
            c.add(f"purpose {pid}", CHANGED, f"purpose added: {pid}", material=True)
    for pid in old_purposes:
        if pid not in new_purposes:
            c.add(f"purpose {pid}", CHANGED, f"purpose removed: {pid}", material=True)
    modes: set[str] = set()
    for pid in new_purposes.keys() & old_purposes.keys():
        if old_purposes[pid].get("consent") != new_purposes[pid].get("consent"):
            modes.add(pid)
    _cells(c, build_matrix(old), build_matrix(new), modes)
    for pid in [p for p in new_purposes if p in old_purposes]:
        _purpose(c, pid, old_purposes[pid], new_purposes[pid])
    return AgreementDiff(
        old_id=old.id,
        new_id=new.id,
        old_version=old.version,
        new_version=new.version,
        changes=tuple(c.changes),
    )


def _scopes(changes: list[Change]) -> dict[str, list[Change]]:
    grouped: dict[str, list[Change]] = {}
    for change in changes:
        grouped.setdefault(change.scope, []).append(change)
    return dict(sorted(grouped.items(), key=lambda kv: (kv[0] != "agreement", kv[0])))


def format_diff(d: AgreementDiff) -> str:
    """The changes, material first, grouped by agreement and purpose."""
    name = d.new_id if d.old_id == d.new_id else f"{d.old_id} -> {d.new_id}"
    lines = [f"Agreement {name}: version {d.old_version} -> {d.new_version}"]
    material = [c for c in d.changes if c.material]
    other = [c for c in d.changes if not c.material]
    for title, group in (
        ("Changes in what is allowed", material),
        ("Other changes (do not change what is allowed)", other),
    ):
        if not group:
            continue
        lines.append("")
        lines.append(f"{title}:")
        for scope, changes in _scopes(group).items():
            lines.append(f"  {scope}")
            for change in changes:
                first, *rest = change.line().split("\n")
                lines.append(f"    {first}")
                lines.extend(f"        {line}" for line in rest)
    lines.append("")
    if d.material:
        lines.append(
            f"Result: the new version changes what is allowed ({len(d.newly_allowed)} newly "
            f"allowed, {len(d.newly_forbidden)} newly forbidden, "
            f"{len(material) - len(d.newly_allowed) - len(d.newly_forbidden)} other changes "
            "to the rules)."
        )
    elif d.changes:
        lines.append("Result: no differences in what is allowed (editorial changes only).")
    else:
        lines.append("Result: no differences.")
    return "\n".join(lines) + "\n"


class _ReadError(click.ClickException):
    exit_code = 2


def _load(path: Path) -> Agreement:
    folder = path.parent if path.is_file() else path
    try:
        return load_agreement(folder)
    except (BrokerError, OSError) as exc:
        message = exc.diagnostics() if isinstance(exc, BrokerError) else str(exc)
        raise _ReadError(f"cannot read agreement at {path}: {message}") from exc


def _version(policy_dir: Path | None, agreement_id: str, version: str) -> Agreement:
    try:
        policy_set = load_policies(policy_dir)
    except click.ClickException as exc:
        raise _ReadError(exc.message) from exc
    agreement = policy_set.version(agreement_id, version)
    if agreement is None:
        known = ", ".join(a.version for a in policy_set.versions.get(agreement_id, ())) or "none"
        raise _ReadError(f"agreement {agreement_id} has no version {version} (versions: {known})")
    return agreement


@click.command("diff")
@click.argument("old")
@click.argument("new")
@click.option(
    "--agreement",
    "agreement_id",
    default=None,
    help="OLD and NEW are versions of this agreement in the policy folder, not folders",
)
@policy_dir_option
def diff_command(*, old: str, new: str, agreement_id: str | None, policy_dir: Path | None) -> None:
    """Compare two versions of an agreement: two folders OLD and NEW, or with
    --agreement two version labels (e.g. ``--agreement agr-x 3.0 3.1``).

    Lists what the new version newly allows (+) or forbids (-) per purpose,
    recipient and element, and changes (~) in providers, recipients, legal bases,
    consent mode or rule, preconditions, response form, validity and the
    acute-danger clause; editorial changes are marked *.

    Exit status: 0 when nothing changes what is allowed, 1 when something does,
    2 when a folder cannot be read.
    """
    if agreement_id is not None:
        before = _version(policy_dir, agreement_id, old)
        after = _version(policy_dir, agreement_id, new)
    else:
        for given in (old, new):
            if not Path(given).exists():
                raise _ReadError(f"cannot read agreement at {given}: no such file or folder")
        before, after = _load(Path(old)), _load(Path(new))
    try:
        reference: ReferenceData | None = ReferenceData.load(policy_dir or default_policy_dir())
    except (OSError, ValueError, KeyError, TypeError):
        reference = None  # names are a courtesy; the diff itself needs only the folders
    result = diff_agreements(before, after, reference)
    click.echo(format_diff(result), nl=False)
    if result.material:
        raise click.exceptions.Exit(1)
