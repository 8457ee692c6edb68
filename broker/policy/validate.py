"""Validation of the policy set with readable, line-precise errors.

``validate_policy_dir`` reads every ``agreements/*/agreement.yaml`` with line numbers
(``yaml.compose``), checks it against the reference data (catalogue, parties, legal
bases) and against the folder's ``policy.rego``, compares the versions of one agreement
for overlapping validity, and compiles the Rego with regorus and regopy. Every fault
becomes a ``Problem`` (file relative to the policy root, line, message); bad input never
raises. ``broker policy check`` (``check_command``) prints them as ``file:line: message``;
``assert_valid`` refuses an invalid set with ``PolicyInvalid``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click
import regopy
import regorus
import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from broker.core.errors import BrokerError, PolicyInvalid
from broker.information_duties import rules as duty_rules
from broker.policy.loader import (
    DECISION_QUERY,
    add_calendar_duration,
    agreement_package,
    duration_seconds,
    load_policy_set,
)
from broker.settings import Settings

try:
    from yaml import CSafeLoader as _YamlLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _YamlLoader  # type: ignore[assignment]

REQUIRED_FIELDS = (
    "id",
    "title",
    "version",
    "status",
    "valid_from",
    "parties",
    "purposes",
    "signatories",
)  # valid_until may be left out (or null) by the latest version only: an open end
REQUIRED_PURPOSE_FIELDS = (
    "id",
    "providers",
    "recipients",
    "allowed_elements",
    "legal_basis_ids",
    "consent",
    "response_form",
)
REQUIRED_ACUTE_FIELDS = ("declarable_by", "allowed_elements", "max_duration")
REQUIRED_SUBSCRIPTION_FIELDS = ("event_type", "purpose", "publishers", "recipients", "elements")
REQUIRED_SIGNAL_FIELDS = ("parties", "subject_kinds", "legal_basis_ids")
SIGNAL_FIELDS = (*REQUIRED_SIGNAL_FIELDS, "description", "max_duration")
SIGNAL_SUBJECT_KINDS = ("child", "household")
SIGNAL_MAX_DURATION = "P2Y"  # the longest a signal may live (and the default)
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
STATUSES = ("draft", "active", "suspended", "expired", "superseded")
CONSENT_MODES = ("required", "not_required_with_basis", "required_unless_acute_danger")
RESPONSE_FORMS = ("full", "boolean_only")
PRIOR_ANSWER_FIELDS = ("purpose", "element", "window_hours")
MAX_PRIOR_ANSWER_HOURS = 24 * 366  # a year
AGE_BANDS = ("age_0_11", "age_12_15", "age_16_17", "age_18_plus")
CONSENT_GIVERS = ("child", "all_authority_holders", "any_authority_holder", "subject")
MAX_REPORTED = 20

_PACKAGE = re.compile(r"^[ \t]*package[ \t]+([A-Za-z0-9_.]+)", re.MULTILINE)
_PRECONDITION = re.compile(r'^[ \t]*precondition[ \t]+contains[ \t]+"([^"\\\n]*)"', re.MULTILINE)
_ACUTE_EVIDENCE = re.compile(r"^[ \t]*acute_evidence\b", re.MULTILINE)
_REGORUS_AT = re.compile(r"-->\s*(?P<file>\S.*?):(?P<line>[0-9]+):(?P<col>[0-9]+)")
_REGORUS_MSG = re.compile(r"^error:\s*(?P<msg>.+)$", re.MULTILINE)
_REGOPY_ERROR = re.compile(rb"\(error (?P<n>[0-9]+):")
_REGOPY_AT = re.compile(rb"\|(?P<offset>[0-9]+)\|(?P<length>[0-9]+)")
_REGOPY_MSG = re.compile(rb"\(errormsg (?P<n>[0-9]+):")


@dataclass(frozen=True)
class Problem:
    """One fault in the policy set: a file (relative to the policy root), a line, a message."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _rel(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _listing(values: Iterable[str]) -> str:
    return ", ".join(values)


class _Invalid:
    """A scalar YAML could resolve but not construct (e.g. the date 2025-02-30)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


# --------------------------------------------------------------------------- YAML reading
class _YamlFile:
    """One YAML file read as nodes (for line numbers); collects the file's problems."""

    def __init__(self, path: Path, rel: Path, problems: list[Problem]) -> None:
        self.path = path
        self.rel = rel
        self._problems = problems
        self._values: dict[int, tuple[Node, Any]] = {}  # id(node) -> (node, value)

    def add(self, at: Node | int, message: str) -> None:
        line = at if isinstance(at, int) else _line(at)
        self._problems.append(Problem(self.rel, line, message))

    def compose(self) -> Node | None:
        """The document's root node, or None (reported) when it cannot be read."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.add(0 if isinstance(exc, OSError) else 1, f"cannot read file ({exc})")
            return None
        loader = _YamlLoader(text)
        try:
            node: Node | None = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            message = f"YAML does not parse: {exc.problem or exc.context}"
            if exc.problem and exc.context:
                where = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
                message += f" ({exc.context}{where})"
            self.add(mark.line + 1 if mark else 1, message)
            return None
        except yaml.YAMLError as exc:
            self.add(1, f"YAML does not parse: {exc}")
            return None
        finally:
            loader.dispose()
        if node is None:
            self.add(1, "the file is empty")
        return node

    def value(self, node: Node) -> Any:
        """The Python value of a scalar node; an ``_Invalid`` when it cannot be built."""
        if not isinstance(node, ScalarNode):
            return _Invalid("not a scalar")
        if id(node) not in self._values:
            # A fresh constructor per scalar: a failed construction leaves state behind.
            try:
                value = SafeConstructor().construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
                value = _Invalid(f"cannot read {node.value!r} ({exc})")
            self._values[id(node)] = (node, value)
        return self._values[id(node)][1]

    def describe(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        value = self.value(node)
        kinds: list[tuple[type | tuple[type, ...], str]] = [
            (_Invalid, "an unreadable value"),
            (type(None), "null"),
            (bool, "a boolean"),
            ((int, float), "a number"),
            (datetime, "a timestamp"),
            (date, "a date"),
            (str, "a string"),
        ]
        for kind, text in kinds:
            if isinstance(value, kind):
                return text
        return f"a {type(value).__name__}"

    def wrong(self, node: Node, where: str, expected: str) -> None:
        value = self.value(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, _Invalid):
            self.add(node, f"{where}: {value.reason}")
        else:
            self.add(node, f"{where}: expected {expected}, got {self.describe(node)}")

    def mapping(self, node: Node, where: str) -> dict[str, tuple[Node, Node]] | None:
        """Keys (as text) to (key node, value node); reports a non-mapping and duplicate keys."""
        if not isinstance(node, MappingNode):
            self.wrong(node, where or "document", "a mapping")
            return None
        out: dict[str, tuple[Node, Node]] = {}
        prefix = f"{where}: " if where else ""
        for key_node, value_node in node.value:
            key = self.value(key_node)
            text = key if isinstance(key, str) else str(getattr(key_node, "value", key))
            if text in out:
                first = _line(out[text][0])
                self.add(key_node, f"{prefix}duplicate key '{text}' (first at line {first})")
            out[text] = (key_node, value_node)
        return out

    def require(
        self, fields: dict[str, tuple[Node, Node]], node: Node, where: str, names: Iterable[str]
    ) -> None:
        prefix = f"{where}: " if where else ""
        for name in names:
            if name not in fields:
                self.add(node, f"{prefix}missing required field '{name}'")

    def text(self, node: Node, where: str) -> str | None:
        value = self.value(node)
        if isinstance(value, str) and value.strip():
            return value
        self.wrong(node, where, "a non-empty string")
        return None

    def day(self, node: Node, where: str) -> date | None:
        value = self.value(node)
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        self.wrong(node, where, "a date (YYYY-MM-DD)")
        return None

    def items(self, node: Node, where: str, what: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.wrong(node, where, f"a list of {what}")
            return None
        return list(node.value)

    def ids(
        self, node: Node, where: str, what: str, *, non_empty: bool = True
    ) -> list[tuple[str, Node]]:
        """A list of id strings with their nodes; reports the list and each bad item."""
        items = self.items(node, where, what)
        if items is None:
            return []
        if not items and non_empty:
            self.add(node, f"{where}: expected a non-empty list of {what}")
        out: list[tuple[str, Node]] = []
        for index, item in enumerate(items):
            text = self.text(item, f"{where}[{index}]")
            if text is not None:
                out.append((text, item))
        return out

    def records(self, node: Node, where: str, what: str) -> Iterator[tuple[str, MappingNode]]:
        """The mappings of a list of mappings, each with its label ``where[index]``."""
        for index, item in enumerate(self.items(node, where, what) or []):
            label = f"{where}[{index}]"
            if isinstance(item, MappingNode):
                yield label, item
            else:
                self.wrong(item, label, "a mapping")


# --------------------------------------------------------------------------- reference data
@dataclass
class _Reference:
    """Known ids; ``None`` where the reference file itself is unusable (checks skipped)."""

    elements: set[str] | None = None
    parties: set[str] | None = None
    legal_bases: set[str] | None = None


def _reference_ids(
    root: Path, rel: str, key: str, required: tuple[str, ...], problems: list[Problem]
) -> set[str] | None:
    path = root / rel
    doc = _YamlFile(path, Path(rel), problems)
    if not path.is_file():
        doc.add(0, "reference file is missing")
        return None
    node = doc.compose()
    top = doc.mapping(node, "") if node is not None else None
    if top is None:
        return None
    if key not in top:
        doc.add(node or 1, f"missing required field '{key}'")
        return None
    seen: dict[str, int] = {}
    for label, entry in doc.records(top[key][1], key, "entries"):
        fields = doc.mapping(entry, label) or {}
        doc.require(fields, entry, label, required)
        if "sensitivity" in fields:
            sensitivity = doc.value(fields["sensitivity"][1])
            if not isinstance(sensitivity, int) or isinstance(sensitivity, bool):
                doc.wrong(fields["sensitivity"][1], f"{label}.sensitivity", "an integer")
        if "value" in fields and not isinstance(fields["value"][1], MappingNode):
            doc.wrong(fields["value"][1], f"{label}.value", "a mapping")
        if "id" not in fields:
            continue
        ident = doc.text(fields["id"][1], f"{label}.id")
        if ident is None:
            continue
        if ident in seen:
            doc.add(fields["id"][1], f"{key}: duplicate id '{ident}' (first at line {seen[ident]})")
        else:
            seen[ident] = _line(fields["id"][1])
    return set(seen)


def _load_reference(root: Path, problems: list[Problem]) -> _Reference:
    return _Reference(
        elements=_reference_ids(
            root, "catalogue/catalogue.yaml", "elements", ("id", "domain"), problems
        ),
        parties=_reference_ids(root, "parties/parties.yaml", "parties", ("id",), problems),
        legal_bases=_reference_ids(
            root, "legal_bases/legal_bases.yaml", "legal_bases", ("id",), problems
        ),
    )


# --------------------------------------------------------------------------- one agreement
@dataclass(frozen=True)
class _Window:
    agreement_id: str
    version: str
    start: date
    end: date | None  # None: open-ended
    rel: Path
    line: int
    entry: bool  # True: a ``supersedes`` entry; False: the folder's own validity

    def before(self, other: _Window) -> bool:
        """Whether this window ends before ``other`` starts."""
        return self.end is not None and self.end < other.start


@dataclass
class _Agreement:
    """What the cross-agreement checks need from one agreement.yaml."""

    rel: Path
    id: str | None = None
    id_line: int = 1
    version: str | None = None
    version_line: int = 1
    windows: list[_Window] = field(default_factory=list)
    preconditions: list[tuple[str, str, Node]] = field(default_factory=list)  # purpose, id, node
    acute_nodes: list[tuple[str, Node]] = field(default_factory=list)  # purpose, key node


# Of one purpose: providers, recipients, and per recipient the allowed elements.
_Outline = tuple[set[str], set[str], dict[str, set[str]]]


class _AgreementChecker:
    """Checks one agreement.yaml; ``result`` feeds the checks across files."""

    def __init__(self, doc: _YamlFile, ref: _Reference) -> None:
        self.doc = doc
        self.ref = ref
        self.result = _Agreement(rel=doc.rel)
        self.parties: set[str] | None = None  # None: unreadable, membership not checked
        self.fields: dict[str, tuple[Node, Node]] = {}

    # ------------------------------------------------------------ helpers
    def _known(self, node: Node, where: str, value: str, known: set[str] | None, kind: str) -> bool:
        if known is not None and value not in known:
            self.doc.add(node, f"{where}: unknown {kind} '{value}'")
            return False
        return True

    def _party_ids(self, node: Node, where: str, *, member: bool) -> set[str]:
        """Party ids in a list: known, and (``member``) among the agreement's parties."""
        out: set[str] = set()
        for value, item in self.doc.ids(node, where, "party ids"):
            out.add(value)
            if not self._known(item, where, value, self.ref.parties, "party"):
                continue
            if member and self.parties is not None and value not in self.parties:
                self.doc.add(item, f"{where}: '{value}' is not a party of this agreement")
        return out

    def _elements(self, node: Node, where: str) -> None:
        for value, item in self.doc.ids(node, where, "element ids", non_empty=False):
            self._known(item, where, value, self.ref.elements, "element")

    def _whitelists(self, node: Node, where: str, receivers: set[str]) -> None:
        """allowed_elements: {recipient party: [element ids]}."""
        for key, (key_node, value_node) in (self.doc.mapping(node, where) or {}).items():
            if self._known(key_node, where, key, self.ref.parties, "party") and (
                key not in receivers
            ):
                self.doc.add(
                    key_node,
                    f"{where}: '{key}' is neither a recipient nor an acute additional recipient",
                )
            self._elements(value_node, f"{where}.{key}")

    # ------------------------------------------------------------ top level
    def check(self, root_node: Node) -> bool:
        """Checks the document; False when it is not even a mapping."""
        fields = self.doc.mapping(root_node, "")
        if fields is None:
            return False
        self.fields = fields
        self.doc.require(fields, root_node, "", REQUIRED_FIELDS)
        self._header(fields)
        if "parties" in fields:
            parties = self._party_ids(fields["parties"][1], "parties", member=False)
            if isinstance(fields["parties"][1], SequenceNode):
                self.parties = parties
        if "consent_rule" in fields:
            self._consent_rule(fields["consent_rule"][1])
        if "purposes" in fields:
            self._purposes(fields["purposes"][1])
        if "signatories" in fields:
            self._signatories(fields["signatories"][1])
        if "subscriptions" in fields:
            self._subscriptions(fields["subscriptions"][1])
        if "signals" in fields:
            self._signals(fields["signals"][1])
        return True

    def _header(self, fields: dict[str, tuple[Node, Node]]) -> None:
        doc = self.doc
        values: dict[str, str | None] = {}
        for name in ("id", "title", "version", "status"):
            if name in fields:
                values[name] = doc.text(fields[name][1], name)
        self.result.id = values.get("id")
        if "id" in fields:
            self.result.id_line = _line(fields["id"][1])
        self.result.version = values.get("version")
        if "version" in fields:
            self.result.version_line = _line(fields["version"][1])
        status = values.get("status")
        if status is not None and status not in STATUSES:
            doc.add(fields["status"][1], f"status: '{status}' is not one of {_listing(STATUSES)}")
        start = doc.day(fields["valid_from"][1], "valid_from") if "valid_from" in fields else None
        open_end = "valid_until" not in fields or doc.value(fields["valid_until"][1]) is None
        end = None if open_end else doc.day(fields["valid_until"][1], "valid_until")
        if start is not None and (end is not None or open_end):
            if end is not None and start > end:
                doc.add(fields["valid_from"][1], f"valid_from {start} is after valid_until {end}")
            elif self.result.id and self.result.version:
                self.result.windows.append(
                    _Window(
                        self.result.id,
                        self.result.version,
                        start,
                        end,
                        doc.rel,
                        _line(fields["valid_from"][1]),
                        entry=False,
                    )
                )
        if "supersedes" in fields:
            self._supersedes(fields["supersedes"][1])

    def _supersedes(self, node: Node) -> None:
        doc = self.doc
        entries: list[tuple[str, Node]]
        if isinstance(node, MappingNode):
            entries = [("supersedes", node)]
        elif isinstance(node, SequenceNode):
            entries = list(doc.records(node, "supersedes", "{version, valid_from, valid_until}"))
        else:
            doc.wrong(node, "supersedes", "a mapping or a list of mappings")
            return
        for label, entry in entries:
            fields = doc.mapping(entry, label) or {}
            doc.require(fields, entry, label, ("version", "valid_from", "valid_until"))
            if not all(k in fields for k in ("version", "valid_from", "valid_until")):
                continue
            version = doc.text(fields["version"][1], f"{label}.version")
            start = doc.day(fields["valid_from"][1], f"{label}.valid_from")
            end = doc.day(fields["valid_until"][1], f"{label}.valid_until")
            if version is None or start is None or end is None:
                continue
            if start > end:
                doc.add(
                    fields["valid_from"][1],
                    f"{label}: valid_from {start} is after valid_until {end}",
                )
            elif version == self.result.version:
                doc.add(
                    fields["version"][1],
                    f"{label}: version {version} is this agreement's own version",
                )
            elif self.result.id:
                self.result.windows.append(
                    _Window(
                        self.result.id,
                        version,
                        start,
                        end,
                        doc.rel,
                        _line(fields["valid_until"][1]),
                        entry=True,
                    )
                )

    def _consent_rule(self, node: Node) -> None:
        doc = self.doc
        fields = doc.mapping(node, "consent_rule")
        if fields is None:
            return
        doc.require(fields, node, "consent_rule", AGE_BANDS)
        for band, (key_node, value_node) in fields.items():
            where = f"consent_rule.{band}"
            if band not in AGE_BANDS:
                doc.add(
                    key_node,
                    f"consent_rule: unknown age band '{band}' (expected {_listing(AGE_BANDS)})",
                )
                continue
            for giver, item in doc.ids(value_node, where, "consent givers"):
                if giver not in CONSENT_GIVERS:
                    doc.add(
                        item,
                        f"{where}: unknown consent giver '{giver}' "
                        f"(expected {_listing(CONSENT_GIVERS)})",
                    )

    def _signatories(self, node: Node) -> None:
        doc = self.doc
        items = doc.items(node, "signatories", "signatories")
        if items is not None and not items:
            doc.add(node, "signatories: expected a non-empty list of signatories")
        for label, entry in doc.records(node, "signatories", "signatories"):
            fields = doc.mapping(entry, label) or {}
            doc.require(fields, entry, label, ("party",))
            if "party" in fields:
                value_node = fields["party"][1]
                party = doc.text(value_node, f"{label}.party")
                if party is not None:
                    self._known(value_node, f"{label}.party", party, self.ref.parties, "party")

    # ------------------------------------------------------------ signals
    def _signals(self, node: Node) -> None:
        """signals: {parties, subject_kinds, legal_basis_ids, max_duration?, description?}:
        which parties may register involvement and be matched (never informants-only
        parties: a match is something they would receive), on the child alone or also
        on the household, and how long a signal may live (at most P2Y)."""
        doc = self.doc
        fields = doc.mapping(node, "signals")
        if fields is None:
            return
        doc.require(fields, node, "signals", REQUIRED_SIGNAL_FIELDS)
        for name, (key_node, _) in fields.items():
            if name not in SIGNAL_FIELDS:
                doc.add(
                    key_node,
                    f"signals: unknown field '{name}' (expected {_listing(SIGNAL_FIELDS)})",
                )
        if "parties" in fields:
            self._signal_parties(fields["parties"][1])
        if "subject_kinds" in fields:
            at = "signals.subject_kinds"
            for kind, item in doc.ids(fields["subject_kinds"][1], at, "subject kinds"):
                if kind not in SIGNAL_SUBJECT_KINDS:
                    doc.add(
                        item,
                        f"{at}: unknown subject kind '{kind}' "
                        f"(expected {_listing(SIGNAL_SUBJECT_KINDS)})",
                    )
        if "legal_basis_ids" in fields:
            at = "signals.legal_basis_ids"
            for basis, item in doc.ids(fields["legal_basis_ids"][1], at, "legal basis ids"):
                self._known(item, at, basis, self.ref.legal_bases, "legal basis")
        if "max_duration" in fields:
            self._signal_duration(fields["max_duration"][1])
        if "description" in fields:
            doc.text(fields["description"][1], "signals.description")

    def _signal_parties(self, node: Node) -> None:
        doc = self.doc
        informants = self._informants_only()
        for party, item in doc.ids(node, "signals.parties", "party ids"):
            if not self._known(item, "signals.parties", party, self.ref.parties, "party"):
                continue
            if self.parties is not None and party not in self.parties:
                doc.add(item, f"signals.parties: '{party}' is not a party of this agreement")
            elif party in informants:
                doc.add(
                    item,
                    f"signals.parties: '{party}' is informants-only in this agreement "
                    "and never receives (a match is received)",
                )

    def _informants_only(self) -> set[str]:
        roles = self.fields.get("roles", (None, None))[1]
        if not isinstance(roles, MappingNode):
            return set()
        for key_node, value_node in roles.value:
            if self.doc.value(key_node) == "informants_only" and isinstance(
                value_node, SequenceNode
            ):
                return {
                    v for v in (self.doc.value(i) for i in value_node.value) if isinstance(v, str)
                }
        return set()

    def _signal_duration(self, node: Node) -> None:
        text = self.doc.text(node, "signals.max_duration")
        if text is None:
            return
        start = date(2000, 1, 1)
        try:
            end = add_calendar_duration(start, text)
        except ValueError:
            self.doc.add(
                node,
                f"signals.max_duration: '{text}' is not an ISO 8601 duration of years, "
                "months and days (e.g. P2Y)",
            )
            return
        if end <= start or end > add_calendar_duration(start, SIGNAL_MAX_DURATION):
            self.doc.add(
                node,
                f"signals.max_duration: '{text}' must be longer than nothing and at most "
                f"{SIGNAL_MAX_DURATION}",
            )

    # ------------------------------------------------------------ subscriptions
    def _purpose_outline(self) -> dict[str, _Outline]:
        """Purpose id -> (providers, recipients, whitelists), read without reporting
        (``_purposes`` reports the faults)."""
        doc = self.doc
        node = self.fields.get("purposes", (None, None))[1]

        def pairs(n: Node | None) -> dict[str, Node]:
            return {str(doc.value(k)): v for k, v in n.value} if isinstance(n, MappingNode) else {}

        def texts(n: Node | None) -> set[str]:
            if not isinstance(n, SequenceNode):
                return set()
            return {v for v in (doc.value(i) for i in n.value) if isinstance(v, str)}

        out: dict[str, _Outline] = {}
        for entry in node.value if isinstance(node, SequenceNode) else []:
            fields = pairs(entry)
            pid = doc.value(fields["id"]) if "id" in fields else None
            if isinstance(pid, str):
                out[pid] = (
                    texts(fields.get("providers")),
                    texts(fields.get("recipients")),
                    {k: texts(v) for k, v in pairs(fields.get("allowed_elements")).items()},
                )
        return out

    def _subscriptions(self, node: Node) -> None:
        """subscriptions: [{event_type, purpose, publishers, recipients, elements}]: who
        may publish an event type, which parties receive it, under which purpose, and
        the elements the event may carry (the purpose's whitelists still decide)."""
        doc = self.doc
        purposes = self._purpose_outline()
        seen: dict[str, int] = {}
        for label, entry in doc.records(node, "subscriptions", "subscriptions"):
            fields = doc.mapping(entry, label) or {}
            where = self._event_type(fields, label, seen)
            doc.require(fields, entry, where, REQUIRED_SUBSCRIPTION_FIELDS)
            outline = None
            if "purpose" in fields:
                pid = doc.text(fields["purpose"][1], f"{where}.purpose")
                if pid is not None and pid not in purposes:
                    doc.add(fields["purpose"][1], f"{where}.purpose: unknown purpose '{pid}'")
                outline = purposes.get(pid) if pid is not None else None
            elements: set[str] = set()
            if "elements" in fields:
                at = f"{where}.elements"
                for value, item in doc.ids(fields["elements"][1], at, "element ids"):
                    if self._known(item, at, value, self.ref.elements, "element"):
                        elements.add(value)
            for role in ("publishers", "recipients"):
                if role in fields:
                    self._subscribers(fields[role][1], f"{where}.{role}", outline, elements)

    def _event_type(
        self, fields: dict[str, tuple[Node, Node]], label: str, seen: dict[str, int]
    ) -> str:
        """Checks a subscription's event type; returns the label to report under."""
        if "event_type" not in fields:
            return label
        doc = self.doc
        value_node = fields["event_type"][1]
        event_type = doc.text(value_node, f"{label}.event_type")
        if event_type is None:
            return label
        where = f"subscriptions[{event_type}]"
        if not _EVENT_TYPE.match(event_type):
            doc.add(
                value_node,
                f"{where}.event_type: '{event_type}' is not a dotted lower-case name "
                "(e.g. police.zorgmelding)",
            )
        if event_type in seen:
            doc.add(
                value_node,
                f"subscriptions: duplicate event type '{event_type}' "
                f"(first at line {seen[event_type]})",
            )
        else:
            seen[event_type] = _line(value_node)
        return where

    def _subscribers(
        self, node: Node, where: str, outline: _Outline | None, elements: set[str]
    ) -> None:
        """Publishers must be providers, recipients recipients of the purpose; every
        recipient must be allowed at least one of the subscription's elements."""
        publishers = where.endswith(".publishers")
        for party, item in self.doc.ids(node, where, "party ids"):
            if not self._known(item, where, party, self.ref.parties, "party"):
                continue
            if self.parties is not None and party not in self.parties:
                self.doc.add(item, f"{where}: '{party}' is not a party of this agreement")
            elif outline is None:
                continue
            elif party not in outline[0 if publishers else 1]:
                kind = "provider" if publishers else "recipient"
                self.doc.add(item, f"{where}: '{party}' is not a {kind} of the purpose")
            elif not publishers and elements and not elements & outline[2].get(party, set()):
                self.doc.add(
                    item,
                    f"{where}: the purpose allows none of the subscription's elements to '{party}'",
                )

    # ------------------------------------------------------------ purposes
    def _purposes(self, node: Node) -> None:
        doc = self.doc
        items = doc.items(node, "purposes", "purposes")
        if items is not None and not items:
            doc.add(node, "purposes: expected a non-empty list of purposes")
        seen: dict[str, int] = {}
        for label, entry in doc.records(node, "purposes", "purposes"):
            fields = doc.mapping(entry, label) or {}
            where = label
            if "id" in fields:
                pid = doc.text(fields["id"][1], f"{label}.id")
                if pid is not None:
                    where = f"purposes[{pid}]"
                    if pid in seen:
                        doc.add(
                            fields["id"][1],
                            f"purposes: duplicate purpose id '{pid}' (first at line {seen[pid]})",
                        )
                    else:
                        seen[pid] = _line(fields["id"][1])
            doc.require(fields, entry, where, REQUIRED_PURPOSE_FIELDS)
            self._purpose(fields, where)

    def _purpose(self, fields: dict[str, tuple[Node, Node]], where: str) -> None:
        doc = self.doc
        if "providers" in fields:
            self._party_ids(fields["providers"][1], f"{where}.providers", member=True)
        recipients: set[str] = set()
        if "recipients" in fields:
            recipients = self._party_ids(
                fields["recipients"][1], f"{where}.recipients", member=True
            )
        acute = fields.get("acute_danger")
        additional = self._acute(acute[1], f"{where}.acute_danger", recipients) if acute else set()
        if acute is not None:
            self.result.acute_nodes.append((where, acute[0]))
        if "allowed_elements" in fields:
            self._whitelists(
                fields["allowed_elements"][1], f"{where}.allowed_elements", recipients | additional
            )
        if "request_payload_elements" in fields:
            self._elements(
                fields["request_payload_elements"][1], f"{where}.request_payload_elements"
            )
        if "legal_basis_ids" in fields:
            self._legal_bases(fields["legal_basis_ids"][1], f"{where}.legal_basis_ids")
        if "consent" in fields:
            self._consent(fields["consent"][1], f"{where}.consent", acute)
        if "preconditions" in fields:
            self._preconditions(fields["preconditions"][1], where)
        if "response_form" in fields:
            form = doc.text(fields["response_form"][1], f"{where}.response_form")
            if form is not None and form not in RESPONSE_FORMS:
                doc.add(
                    fields["response_form"][1],
                    f"{where}.response_form: '{form}' is not one of {_listing(RESPONSE_FORMS)}",
                )
        if "information_duty" in fields:
            self._information_duty(fields["information_duty"][1], f"{where}.information_duty")
        if "prior_answer" in fields:
            own = doc.value(fields["id"][1]) if "id" in fields else None
            self._prior_answer(
                fields["prior_answer"][1],
                f"{where}.prior_answer",
                own if isinstance(own, str) else None,
            )

    # ------------------------------------------------------------ prior answers
    def _prior_answer(self, node: Node, where: str, own: str | None = None) -> None:
        """``prior_answer: {purpose, element, window_hours}``: the earlier boolean
        answer (of a yes/no-only purpose of this agreement) the broker looks up
        in its own records for the precondition that needs it."""
        doc = self.doc
        fields = doc.mapping(node, where)
        if fields is None:
            return
        doc.require(fields, node, where, PRIOR_ANSWER_FIELDS)
        for key, (key_node, _) in fields.items():
            if key not in PRIOR_ANSWER_FIELDS:
                doc.add(
                    key_node,
                    f"{where}: unknown field '{key}' (expected {_listing(PRIOR_ANSWER_FIELDS)})",
                )
        # Checked against the named purpose only where that purpose is itself sound
        # (its own faults are reported where they are).
        outline = self._purpose_outline()
        sound = self._sound_purposes()
        purpose: str | None = None
        if "purpose" in fields:
            value_node = fields["purpose"][1]
            purpose = doc.text(value_node, f"{where}.purpose")
            if purpose is not None and purpose == own and own in sound:
                doc.add(
                    value_node,
                    f"{where}.purpose: a purpose cannot rest on an earlier answer of its own",
                )
                purpose = None
            elif purpose is not None and purpose not in outline:
                doc.add(
                    value_node, f"{where}.purpose: unknown purpose '{purpose}' of this agreement"
                )
            elif purpose is not None and sound.get(purpose) == "full":
                doc.add(
                    value_node,
                    f"{where}.purpose: '{purpose}' is not answered yes/no only "
                    "(response_form: boolean_only), so it leaves no answer to look up",
                )
        if "element" in fields:
            value_node = fields["element"][1]
            element = doc.text(value_node, f"{where}.element")
            known = element is not None and self._known(
                value_node, f"{where}.element", element, self.ref.elements, "element"
            )
            released = (
                purpose not in sound
                or purpose is None
                or any(element in whitelist for whitelist in outline[purpose][2].values())
            )
            if known and not released:
                doc.add(
                    value_node,
                    f"{where}.element: '{element}' is not released under purpose '{purpose}'",
                )
        if "window_hours" in fields:
            value_node = fields["window_hours"][1]
            hours = doc.value(value_node)
            if isinstance(hours, bool) or not isinstance(hours, int | float):
                doc.wrong(value_node, f"{where}.window_hours", "a number of hours")
            elif not 0 < hours <= MAX_PRIOR_ANSWER_HOURS:
                doc.add(
                    value_node,
                    f"{where}.window_hours: expected more than 0 and at most "
                    f"{MAX_PRIOR_ANSWER_HOURS} hours, got {hours}",
                )

    def _sound_purposes(self) -> dict[str, str]:
        """Purpose id -> its response form, for the purposes that are sound enough to
        check another block against: the id is unique, the response form is known
        and every whitelist is a list of known element ids. Read without reporting."""
        doc = self.doc
        node = self.fields.get("purposes", (None, None))[1]
        out: dict[str, str] = {}
        seen: set[str] = set()
        for entry in node.value if isinstance(node, SequenceNode) else []:
            if not isinstance(entry, MappingNode):
                continue
            fields = {str(doc.value(k)): v for k, v in entry.value}
            pid = doc.value(fields["id"]) if "id" in fields else None
            if not isinstance(pid, str):
                continue
            if pid in seen:
                out.pop(pid, None)
                continue
            seen.add(pid)
            # response_form is required: a purpose without one is not sound.
            form = doc.value(fields["response_form"]) if "response_form" in fields else None
            lists = fields.get("allowed_elements")
            whitelists = lists.value if isinstance(lists, MappingNode) else None
            if form not in RESPONSE_FORMS or whitelists is None:
                continue
            if all(
                isinstance(v, SequenceNode)
                and all(
                    self.ref.elements is None or doc.value(i) in self.ref.elements for i in v.value
                )
                for _, v in whitelists
            ):
                out[pid] = str(form)
        return out

    # ------------------------------------------------------------ AVG art. 14
    def _information_duty(self, node: Node, where: str) -> None:
        """``information_duty`` (see broker/information_duties/rules.py)."""
        doc = self.doc
        fields = doc.mapping(node, where)
        if fields is None:
            return
        doc.require(fields, node, where, duty_rules.REQUIRED_FIELDS)
        required = doc.value(fields["required"][1]) if "required" in fields else None
        if "required" in fields and not isinstance(required, bool):
            doc.wrong(fields["required"][1], f"{where}.required", "a boolean")
            return
        known = duty_rules.DUTY_FIELDS if required else duty_rules.EXEMPT_FIELDS
        for key, (key_node, _) in fields.items():
            if key not in known:
                doc.add(key_node, f"{where}: unknown field '{key}' (expected {_listing(known)})")
        if required is False:
            doc.require(fields, node, where, ("exemption_ids",))
            if "exemption_ids" in fields:
                self._legal_bases(fields["exemption_ids"][1], f"{where}.exemption_ids")
            return
        if required is True:
            doc.require(fields, node, where, duty_rules.REQUIRED_DUTY_FIELDS)
            self._duty_terms(fields, where)

    def _duty_terms(self, fields: dict[str, tuple[Node, Node]], where: str) -> None:
        doc = self.doc
        if "legal_basis_ids" in fields:
            self._legal_bases(fields["legal_basis_ids"][1], f"{where}.legal_basis_ids")
        if "informed_by" in fields:
            value_node = fields["informed_by"][1]
            by = doc.text(value_node, f"{where}.informed_by")
            if by is not None and by not in duty_rules.INFORMED_BY:
                doc.add(
                    value_node,
                    f"{where}.informed_by: '{by}' is not one of {_listing(duty_rules.INFORMED_BY)}",
                )
        if "within" in fields:
            self._period(fields["within"][1], f"{where}.within")
        if "outcomes" in fields:
            for value, item in doc.ids(fields["outcomes"][1], f"{where}.outcomes", "outcomes"):
                if value not in duty_rules.ALLOW_OUTCOMES:
                    doc.add(
                        item,
                        f"{where}.outcomes: '{value}' is not one of "
                        f"{_listing(duty_rules.ALLOW_OUTCOMES)}",
                    )
        if "embargo" in fields:
            self._duty_embargo(fields["embargo"][1], f"{where}.embargo")

    def _duty_embargo(self, node: Node, where: str) -> None:
        fields = self.doc.mapping(node, where)
        if fields is None:
            return
        self.doc.require(fields, node, where, duty_rules.REQUIRED_EMBARGO_FIELDS)
        if "legal_basis_ids" in fields:
            self._legal_bases(fields["legal_basis_ids"][1], f"{where}.legal_basis_ids")
        if "investigated_by" in fields:
            self._party_ids(fields["investigated_by"][1], f"{where}.investigated_by", member=True)
        if "lapses_after" in fields:
            self._period(fields["lapses_after"][1], f"{where}.lapses_after")

    def _period(self, node: Node, where: str) -> None:
        text = self.doc.text(node, where)
        if text is None:
            return
        try:
            duty_rules.parse_period(text)
        except ValueError:
            self.doc.add(
                node,
                f"{where}: '{text}' is not an ISO 8601 period of years, months, weeks or days "
                "(e.g. P1M)",
            )

    def _legal_bases(self, node: Node, where: str) -> None:
        items = self.doc.items(node, where, "legal basis ids")
        if items is not None and not items:
            self.doc.add(node, f"{where}: a purpose needs at least one legal basis")
            return
        for value, item in self.doc.ids(node, where, "legal basis ids"):
            self._known(item, where, value, self.ref.legal_bases, "legal basis")

    def _consent(self, node: Node, where: str, acute: tuple[Node, Node] | None) -> None:
        doc = self.doc
        mode = doc.text(node, where)
        if mode is None:
            return
        if mode not in CONSENT_MODES:
            doc.add(node, f"{where}: '{mode}' is not one of {_listing(CONSENT_MODES)}")
            return
        if mode != "not_required_with_basis" and "consent_rule" not in self.fields:
            doc.add(node, f"{where}: '{mode}' needs a top-level consent_rule")
        if mode == "required_unless_acute_danger" and acute is None:
            doc.add(node, f"{where}: '{mode}' needs an acute_danger block")
        if mode != "required_unless_acute_danger" and acute is not None:
            doc.add(
                acute[0],
                f"{where.removesuffix('.consent')}.acute_danger: only allowed with consent "
                "'required_unless_acute_danger'",
            )

    def _acute(self, node: Node, where: str, recipients: set[str]) -> set[str]:
        """Checks an acute_danger block; returns its additional recipients."""
        doc = self.doc
        fields = doc.mapping(node, where)
        if fields is None:
            return set()
        doc.require(fields, node, where, REQUIRED_ACUTE_FIELDS)
        if "declarable_by" in fields:
            self._party_ids(fields["declarable_by"][1], f"{where}.declarable_by", member=True)
        additional: set[str] = set()
        if "additional_recipients" in fields:
            additional = self._party_ids(
                fields["additional_recipients"][1], f"{where}.additional_recipients", member=True
            )
        if "allowed_elements" in fields:
            self._whitelists(
                fields["allowed_elements"][1], f"{where}.allowed_elements", recipients | additional
            )
        if "max_duration" in fields:
            value_node = fields["max_duration"][1]
            text = doc.text(value_node, f"{where}.max_duration")
            if text is not None:
                try:
                    seconds = duration_seconds(text)
                except ValueError:
                    doc.add(
                        value_node,
                        f"{where}.max_duration: '{text}' is not an ISO 8601 duration "
                        "(days, hours, minutes, seconds, e.g. PT72H)",
                    )
                else:
                    if seconds <= 0:
                        doc.add(value_node, f"{where}.max_duration: must be longer than zero")
        return additional

    def _preconditions(self, node: Node, where: str) -> None:
        for label, entry in self.doc.records(node, f"{where}.preconditions", "preconditions"):
            fields = self.doc.mapping(entry, label) or {}
            self.doc.require(fields, entry, label, ("id",))
            if "id" in fields:
                pid = self.doc.text(fields["id"][1], f"{label}.id")
                if pid is not None:
                    self.result.preconditions.append((where, pid, fields["id"][1]))


# --------------------------------------------------------------------------- Rego
@dataclass(frozen=True)
class _Module:
    name: str  # path relative to the root, as given to the engines
    source: str
    rel: Path


def _rego_rules(text: str, pattern: re.Pattern[str]) -> list[tuple[str, int]]:
    """(first group, line) of every match of ``pattern`` in a Rego source."""
    return [(m.group(1), text.count("\n", 0, m.start()) + 1) for m in pattern.finditer(text)]


def _check_rego_against_yaml(
    agreement: _Agreement, module: _Module | None, problems: list[Problem]
) -> None:
    source = module.source if module else ""
    rules: dict[str, list[int]] = {}
    for name, line in _rego_rules(source, _PRECONDITION):
        rules.setdefault(name, []).append(line)
    declared = {pid for _, pid, _ in agreement.preconditions}
    for where, pid, node in agreement.preconditions:
        if pid not in rules:
            problems.append(
                Problem(
                    agreement.rel,
                    _line(node),
                    f'{where}.preconditions: no rule precondition contains "{pid}" in policy.rego',
                )
            )
    if module is not None:
        for name, lines in rules.items():
            if name not in declared:
                problems.extend(
                    Problem(
                        module.rel, line, f'precondition "{name}" is not declared in agreement.yaml'
                    )
                    for line in lines
                )
    if agreement.acute_nodes and not _ACUTE_EVIDENCE.search(source):
        for where, node in agreement.acute_nodes:
            problems.append(
                Problem(
                    agreement.rel,
                    _line(node),
                    f"{where}.acute_danger: policy.rego has no acute_evidence rule, "
                    "so acute danger can never be established",
                )
            )
    if module is not None and agreement.id and agreement.version:
        expected = agreement_package(agreement.id, agreement.version)
        for name, line in _rego_rules(source, _PACKAGE)[:1]:
            if name != expected:
                problems.append(
                    Problem(
                        module.rel,
                        line,
                        f"package {name} does not match agreement {agreement.id} version "
                        f"{agreement.version} (expected package {expected})",
                    )
                )


def _regorus_problem(text: str, modules: dict[str, _Module], fallback: _Module) -> Problem:
    """Parses regorus' ``--> <file>:<line>:<col> ... error: <message>``."""
    text = text.split("Stack backtrace", maxsplit=1)[0]
    msg = _REGORUS_MSG.search(text)
    message = msg.group("msg").strip() if msg else " ".join(text.split()) or "error"
    message = f"Rego does not compile (regorus): {message}"
    at = _REGORUS_AT.search(text)
    module = modules.get(at.group("file").strip()) if at else None
    if at is None or module is None:
        return Problem(fallback.rel, 1, message)
    return Problem(module.rel, int(at.group("line")), message)


def _check_regorus(modules: list[_Module]) -> tuple[list[Problem], set[str]]:
    """Adds every module to one regorus engine; returns problems and the failing modules."""
    by_name = {m.name: m for m in modules}
    problems: list[Problem] = []
    failed: set[str] = set()
    engine = regorus.Engine()
    for module in modules:
        try:
            engine.add_policy(module.name, module.source)
        except RuntimeError as exc:
            problem = _regorus_problem(str(exc), by_name, module)
            problems.append(problem)
            failed.add(module.name)
    if not failed and modules:
        # Some faults (unknown functions, unsafe variables) surface only when evaluated.
        try:
            engine.set_input_json("{}")
            engine.eval_query("data")
        except RuntimeError as exc:
            problem = _regorus_problem(str(exc), by_name, modules[0])
            problems.append(problem)
            failed.update(m.name for m in modules if m.rel == problem.path)
    return problems, failed


def _regopy_compile(modules: list[_Module]) -> str | None:
    """What ``regopy_engine.compile_policy_set`` does, without rego-cpp printing its error
    report on stdout (log level NONE); the error text, or None when it compiles."""
    rego = regopy.Interpreter()
    rego.log_level = regopy.LogLevel.NONE
    rego.strict_built_in_errors = True
    try:
        rego.add_data({"broker": {"agreements": {}}})
        for module in modules:
            rego.add_module(module.name, module.source)
        bundle = rego.build(DECISION_QUERY)
    except regopy.RegoError as exc:
        return str(exc) or "unknown error"
    return None if bundle.ok() else "the bundle did not build (rego-cpp gives no location)"


def _regopy_problems(text: str, modules: list[_Module]) -> list[Problem]:
    """Parses rego-cpp's ``(error <n>:<file>|<offset>|<length> (errormsg <n>:<text>) ...)``."""
    by_name = {m.name: m for m in modules}
    raw = text.encode("utf-8")
    problems: list[Problem] = []
    for err in _REGOPY_ERROR.finditer(raw):
        start = err.end()
        name = raw[start : start + int(err.group("n"))].decode("utf-8", "replace")
        at = _REGOPY_AT.match(raw, start + int(err.group("n")))
        msg = _REGOPY_MSG.search(raw, start)
        message = "error"
        if msg:
            begin = msg.end()
            message = raw[begin : begin + int(msg.group("n"))].decode("utf-8", "replace")
        module = by_name.get(name, modules[-1])
        line = 1
        if at and name in by_name:
            line = module.source.encode("utf-8").count(b"\n", 0, int(at.group("offset"))) + 1
        problems.append(Problem(module.rel, line, f"Rego does not compile (regopy): {message}"))
    if not problems:
        first = text.strip().splitlines()[0] if text.strip() else "error"
        problems.append(Problem(modules[-1].rel, 1, f"Rego does not compile (regopy): {first}"))
    return problems


def _check_regopy(library: list[_Module], agreements: list[_Module]) -> list[Problem]:
    """The whole set at once; when that fails, the library alone and then the library with
    each agreement's module in turn, so that every error is put on the right file."""
    if not library:
        return []
    whole = _regopy_compile([*library, *agreements])
    if whole is None:
        return []
    error = _regopy_compile(library)
    if error is not None:
        return _regopy_problems(error, library)
    problems: list[Problem] = []
    for module in agreements:
        error = _regopy_compile([*library, module])
        if error is not None:
            problems.extend(_regopy_problems(error, [*library, module]))
    return problems or _regopy_problems(whole, [*library, *agreements])


def _read_rego(path: Path, root: Path, problems: list[Problem]) -> _Module | None:
    rel = _rel(path, root)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(rel, 1, f"cannot read file ({exc})"))
        return None
    return _Module(name=rel.as_posix(), source=source, rel=rel)


# --------------------------------------------------------------------------- across agreements
def _check_versions(agreements: list[_Agreement], problems: list[Problem]) -> None:
    first: dict[tuple[str, str], _Agreement] = {}
    for agreement in agreements:
        if agreement.id is None or agreement.version is None:
            continue
        key = (agreement.id, agreement.version)
        if key in first:
            problems.append(
                Problem(
                    agreement.rel,
                    agreement.version_line,
                    f"agreement {agreement.id} version {agreement.version} is also defined in "
                    f"{first[key].rel}",
                )
            )
        else:
            first[key] = agreement
    # A supersedes entry naming a version that has its own folder adds nothing: the folder counts.
    windows = [
        w
        for a in agreements
        for w in a.windows
        if not (w.entry and first.get((w.agreement_id, w.version)) is not None)
    ]
    for window in windows:
        later = [
            w
            for w in windows
            if w.agreement_id == window.agreement_id
            and w.version != window.version
            and w.start > window.start
        ]
        if window.end is None and later:
            first_later = min(later, key=lambda w: w.start)
            problems.append(
                Problem(
                    window.rel,
                    window.line,
                    f"version {window.version} has no valid_until, but version "
                    f"{first_later.version} starts later ({first_later.start}); only the "
                    "latest version may be open-ended",
                )
            )
    for index, one in enumerate(windows):
        for other in windows[index + 1 :]:
            if (
                one.agreement_id != other.agreement_id
                or one.version == other.version
                or other.before(one)
                or one.before(other)
            ):
                continue
            here, there = _report_at(one, other)
            label = "supersedes: " if here.entry else ""
            elsewhere = f" in {there.rel}" if there.rel != here.rel else ""
            problems.append(
                Problem(
                    here.rel,
                    here.line,
                    f"{label}version {here.version} ({here.start}..{here.end or ''}) overlaps "
                    f"version {there.version} ({there.start}..{there.end or ''}){elsewhere}",
                )
            )


def _report_at(one: _Window, other: _Window) -> tuple[_Window, _Window]:
    """Where to report an overlap: at a supersedes entry (the likelier mistake) rather than at
    an agreement's own validity; otherwise at the version that starts later."""
    if one.entry != other.entry:
        return (one, other) if one.entry else (other, one)
    if (one.start, one.rel.parts, one.line) >= (other.start, other.rel.parts, other.line):
        return one, other
    return other, one


# --------------------------------------------------------------------------- entry points
def _read_library(root: Path, problems: list[Problem]) -> list[_Module]:
    library: list[_Module] = []
    for path in sorted((root / "lib").glob("*.rego")):
        if not path.name.endswith("_test.rego"):
            module = _read_rego(path, root, problems)
            if module is not None:
                library.append(module)
    if not library:
        problems.append(Problem(Path("lib"), 0, "no Rego library (lib/*.rego)"))
    return library


def _read_agreement(
    folder: Path, root: Path, reference: _Reference, problems: list[Problem]
) -> tuple[_Agreement, _Module | None]:
    yaml_path, rego_path = folder / "agreement.yaml", folder / "policy.rego"
    doc = _YamlFile(yaml_path, _rel(yaml_path, root), problems)
    checker = _AgreementChecker(doc, reference)
    node = doc.compose()
    readable = node is not None and checker.check(node)
    module = _read_rego(rego_path, root, problems) if rego_path.is_file() else None
    if readable:
        _check_rego_against_yaml(checker.result, module, problems)
    return checker.result, module


def _orphan_rego(folder: Path, root: Path, problems: list[Problem]) -> None:
    if (folder / "policy.rego").is_file():
        problems.append(
            Problem(
                _rel(folder / "policy.rego", root),
                1,
                "no agreement.yaml next to this policy.rego; the folder is ignored",
            )
        )


def _agreement_folders(
    folders: list[Path], root: Path, problems: list[Problem]
) -> list[tuple[Path, bool]]:
    """The agreement version folders: ``<id>/`` (one version) or each ``<id>/<version>/``
    (several side by side); True for the latter."""
    found: list[tuple[Path, bool]] = []
    for folder in folders:
        subfolders = sorted(
            p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        versions = [p for p in subfolders if (p / "agreement.yaml").is_file()]
        if (folder / "agreement.yaml").is_file():
            found.append((folder, False))
            for sub in versions:
                problems.append(
                    Problem(
                        _rel(sub / "agreement.yaml", root),
                        1,
                        f"{folder.name}/ holds an agreement.yaml itself; put every version in "
                        "its own folder <id>/<version>/; this folder is ignored",
                    )
                )
            continue
        _orphan_rego(folder, root, problems)
        for sub in subfolders:
            if (sub / "agreement.yaml").is_file():
                found.append((sub, True))
            else:
                _orphan_rego(sub, root, problems)
    return found


def _check_version_folder(folder: Path, agreement: _Agreement, problems: list[Problem]) -> None:
    """In ``<id>/<version>/`` the folder names must say what the file says."""
    if agreement.id is not None and folder.parent.name != agreement.id:
        problems.append(
            Problem(
                agreement.rel,
                agreement.id_line,
                f"id {agreement.id} does not match its folder {folder.parent.name}/",
            )
        )
    if agreement.version is not None and folder.name != agreement.version:
        problems.append(
            Problem(
                agreement.rel,
                agreement.version_line,
                f"version {agreement.version} does not match its folder "
                f"{folder.parent.name}/{folder.name}/",
            )
        )


def _validate(root: Path, problems: list[Problem]) -> None:
    reference = _load_reference(root, problems)
    library = _read_library(root, problems)
    folders: list[Path] = []
    if (root / "agreements").is_dir():
        folders = sorted(p for p in (root / "agreements").iterdir() if p.is_dir())
    else:
        problems.append(Problem(Path("agreements"), 0, "agreements directory is missing"))
    agreements: list[_Agreement] = []
    modules: list[_Module] = []
    for folder, versioned in _agreement_folders(folders, root, problems):
        agreement, module = _read_agreement(folder, root, reference, problems)
        agreements.append(agreement)
        modules.extend([module] if module is not None else [])
        if versioned:
            _check_version_folder(folder, agreement, problems)
    _check_versions(agreements, problems)
    compile_problems, failed = _check_regorus([*library, *modules])
    problems.extend(compile_problems)
    if not any(m.name in failed for m in library):
        problems.extend(_check_regopy(library, [m for m in modules if m.name not in failed]))


def validate_policy_dir(root: Path) -> list[Problem]:
    """Every problem in the policy set under ``root``, sorted by file and line."""
    if not root.is_dir():
        return [Problem(root, 0, "policy directory does not exist")]
    problems: list[Problem] = []
    try:
        _validate(root, problems)
    except Exception as exc:  # noqa: BLE001 - a fault the checks did not foresee is a problem too
        problems.append(Problem(Path("."), 0, f"validation stopped: {type(exc).__name__}: {exc}"))
    return sorted(set(problems), key=lambda p: (p.path.parts, p.line, p.message))


def assert_valid(root: Path) -> None:
    """Raises ``PolicyInvalid`` listing the (first 20) problems of the policy set."""
    problems = validate_policy_dir(root)
    if not problems:
        return
    lines = [str(p) for p in problems[:MAX_REPORTED]]
    if len(problems) > MAX_REPORTED:
        lines.append(f"... and {len(problems) - MAX_REPORTED} more")
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    raise PolicyInvalid(f"the policy set has {count}:\n" + "\n".join(lines))


@click.command("check")
@click.option(
    "--policy-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Policy folder (default: BROKER_POLICY_DIR, else the project's policies/).",
)
def check_command(policy_dir: Path | None) -> None:
    """Validate every agreement (file:line: message on stderr; exit 1 on problems)."""
    if policy_dir is None:
        try:
            policy_dir = Settings().policy_dir
        except ValueError as exc:
            raise click.ClickException(f"settings: {exc}") from exc
    problems = validate_policy_dir(policy_dir)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        sys.exit(1)
    try:
        policy_set = load_policy_set(policy_dir)
    except (BrokerError, OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        # The loader's messages start with the file or folder they are about.
        message = exc.message if isinstance(exc, BrokerError) else f"{type(exc).__name__}: {exc}"
        click.echo(
            message if isinstance(exc, BrokerError) else f"{policy_dir}: {message}", err=True
        )
        sys.exit(1)
    for agreement in policy_set.all_versions():
        click.echo(
            f"{agreement.id} v{agreement.version}: {len(agreement.purposes)} purposes, "
            f"{agreement.content_hash}"
        )
    click.echo(f"bundle {policy_set.bundle_hash}")
