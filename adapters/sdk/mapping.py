"""Declarative mapping files: a JSON REST source system's resources -> catalogue elements.

A mapping file (one per adapter, e.g. ``adapters/police/mapping.yaml``; format in
``docs/partner-guide.md``) has three parts:

- ``source``: what the source answers for an unknown subject (``not_found_status``) and its
  accepted media type;
- ``resources``: per source resource its ``path`` (with ``{bsn}``), fixed ``params``, where the
  records sit in the body (``records``), the link to the next page (``next``), the source's
  field-selection parameter (``fields_param``) and the source fields a record may have
  (``fields``, dotted paths);
- ``elements``: per catalogue element id the ``resource``, the ``subjects`` it is answered for,
  the record selection (``where``, ``order_by``, ``select``), the ``value`` (field paths with
  ``transform``/``map``/``each``/``default``) or a ``derive`` function of the adapter, what a
  boolean-only answer reads (``boolean``), the value when nothing matches (``empty``) and the
  original ``source`` party when the provider is a secondary holder.

:func:`load_source_mapping` validates it against the catalogue at start-up and raises
:class:`MappingError` listing every problem as ``file:line: message``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from broker.core.types import SubjectKind

__all__ = [
    "DEFAULT_CATALOGUE_PATH",
    "SELECTIONS",
    "Derivation",
    "ElementRule",
    "FieldRule",
    "MappingError",
    "Resource",
    "SourceMapping",
    "Transform",
    "load_source_mapping",
]

DEFAULT_CATALOGUE_PATH = (
    Path(__file__).resolve().parents[2] / "policies" / "catalogue" / "catalogue.yaml"
)

# A field transform: the source value -> the catalogue value (may raise: item unavailable).
Transform = Callable[[Any], Any]
# An element derivation: (matching records, params, subject bsn, the request's date)
# -> value or None. Periods counted back are counted from the request's date.
Derivation = Callable[[list[dict[str, Any]], Mapping[str, Any], str, date], Any]

SELECTIONS = ("single", "latest", "earliest", "all", "exists", "count")
_TOP_KEYS = {"schema_version", "source", "resources", "elements"}
_SOURCE_KEYS = {"system", "accept", "not_found_status"}
_RESOURCE_KEYS = {"path", "params", "records", "next", "fields_param", "fields", "max_pages"}
_ELEMENT_KEYS = {
    "resource",
    "subjects",
    "where",
    "order_by",
    "select",
    "value",
    "derive",
    "params",
    "reads",
    "boolean",
    "empty",
    "source",
}
_FIELD_KEYS = {"path", "transform", "map", "each", "default"}
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class MappingError(ValueError):
    """A mapping file is invalid; ``problems`` are ``file:line: message`` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid mapping file:\n  " + "\n  ".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class FieldRule:
    """How one value field is read: a dotted ``path`` in the record, then ``map`` (code
    table), ``transform`` and ``default``; ``each`` maps every object of a list field."""

    path: str | None
    transform: str | None = None
    mapping: Mapping[Any, Any] | None = None
    each: Mapping[str, FieldRule] | None = None
    default: Any = None


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    records: str | None = None  # dotted path of the record list; None: the body is one record
    next: str | None = None  # dotted path of the next page's relative link
    fields_param: str | None = None
    fields: frozenset[str] = frozenset()
    max_pages: int = 20


@dataclass(frozen=True, slots=True)
class ElementRule:
    element: str
    resource: str
    subjects: frozenset[SubjectKind]
    select: str
    where: Mapping[str, Any] = field(default_factory=dict)
    order_by: str | None = None
    value: FieldRule | Mapping[str, FieldRule] | None = None
    derive: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    reads: tuple[str, ...] = ()  # the source fields a derivation reads
    boolean: str | None = None
    empty: Any = None
    has_empty: bool = False
    source: str | None = None
    line: int = 0

    def source_fields(self) -> set[str]:
        """The (dotted) source fields this element reads: what the source is asked for."""
        paths: set[str] = set(self.where) | set(self.reads)
        if self.order_by:
            paths.add(self.order_by)
        return paths | _rule_paths(self.value)


@dataclass(frozen=True, slots=True)
class SourceMapping:
    path: Path
    not_found_status: frozenset[int]
    accept: str
    resources: Mapping[str, Resource]
    elements: Mapping[str, ElementRule]


def _rule_paths(value: FieldRule | Mapping[str, FieldRule] | None, prefix: str = "") -> set[str]:
    if value is None:
        return set()
    if not isinstance(value, FieldRule):
        return set().union(*(_rule_paths(r, prefix) for r in value.values()))
    if value.path is None:
        return set()
    path = prefix + value.path
    if value.each is None:
        return {path}
    return _rule_paths(value.each, path + ".") or {path}


# ---------------------------------------------------------------------- yaml with lines


class _Lines:
    """Python values of a YAML document plus the line of every key and value by path."""

    def __init__(self, path: Path) -> None:
        self.file = path
        self.lines: dict[tuple[Any, ...], int] = {}
        self._loader = yaml.SafeLoader("")

    def load(self, text: str) -> Any:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        return None if node is None else self._value(node, ())

    def _value(self, node: yaml.Node, at: tuple[Any, ...]) -> Any:
        self.lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._loader.construct_object(key_node, deep=True)
                self.lines[(*at, key)] = key_node.start_mark.line + 1
                out[key] = self._value(value_node, (*at, key, "<value>"))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(n, (*at, i)) for i, n in enumerate(node.value)]
        return self._loader.construct_object(node, deep=True)

    def line(self, *at: Any) -> int:
        """The line of the key at ``at`` (or the closest enclosing one)."""
        path = tuple(at)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1

    def where(self, *at: Any) -> str:
        return f"{self.file}:{self.line(*at)}"


# ---------------------------------------------------------------------- catalogue


@dataclass(frozen=True, slots=True)
class _CatalogueElement:
    subject: str
    fields: frozenset[str] | None  # None: a scalar or a shape without named fields


def _catalogue(path: Path) -> dict[str, _CatalogueElement]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, _CatalogueElement] = {}
    for e in doc.get("elements") or ():
        value = e.get("value") or {}
        shape = value.get("fields")
        if shape is None and isinstance(value.get("items"), dict):
            shape = value["items"]
        fields = frozenset(str(k) for k in shape) if isinstance(shape, dict) else None
        out[str(e["id"])] = _CatalogueElement(str(e.get("subject", "any_person")), fields)
    return out


# ---------------------------------------------------------------------- loader


def load_source_mapping(
    path: Path,
    *,
    transforms: Mapping[str, Transform],
    derivations: Mapping[str, Derivation] | None = None,
    catalogue_path: Path = DEFAULT_CATALOGUE_PATH,
) -> SourceMapping:
    """Read and validate a mapping file; raises :class:`MappingError` (every problem with
    its file and line) on an unknown element id, field, resource, transform or key."""
    doc_lines = _Lines(path)
    try:
        doc = doc_lines.load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise MappingError([f"{path}:{line}: not valid YAML"]) from exc
    checker = _Checker(doc_lines, _catalogue(catalogue_path), transforms, derivations or {})
    mapping = checker.check(doc)
    if checker.problems:
        raise MappingError(checker.problems)
    assert mapping is not None
    return mapping


class _Checker:
    def __init__(
        self,
        lines: _Lines,
        catalogue: dict[str, _CatalogueElement],
        transforms: Mapping[str, Transform],
        derivations: Mapping[str, Derivation],
    ) -> None:
        self.lines = lines
        self.catalogue = catalogue
        self.transforms = transforms
        self.derivations = derivations
        self.problems: list[str] = []

    def fail(self, message: str, *at: Any) -> None:
        self.problems.append(f"{self.lines.where(*at)}: {message}")

    def _unknown_keys(self, spec: Mapping[str, Any], known: set[str], *at: Any) -> None:
        for key in spec:
            if key not in known:
                self.fail(f"unknown key {key!r}", *at, key)

    def check(self, doc: Any) -> SourceMapping | None:
        if not isinstance(doc, dict):
            self.fail("a mapping document (source, resources, elements) is required")
            return None
        self._unknown_keys(doc, _TOP_KEYS)
        source = doc.get("source") or {}
        if not isinstance(source, dict):
            self.fail("source: a mapping is required", "source")
            source = {}
        self._unknown_keys(source, _SOURCE_KEYS, "source", "<value>")
        statuses = source.get("not_found_status", [404])
        if not isinstance(statuses, list) or not all(
            isinstance(s, int) and 400 <= s < 500 for s in statuses
        ):
            self.fail("not_found_status: a list of 4xx statuses is required", "source")
            statuses = [404]
        resources = self._resources(doc.get("resources"))
        elements: dict[str, ElementRule] = {}
        specs = doc.get("elements")
        if not isinstance(specs, dict) or not specs:
            self.fail("elements: at least one element is required", "elements")
            specs = {}
        for key, spec in specs.items():
            rule = self._element(str(key), spec, resources)
            if rule is not None:
                elements[rule.element] = rule
        return SourceMapping(
            path=self.lines.file,
            not_found_status=frozenset(statuses),
            accept=str(source.get("accept") or "application/json"),
            resources=resources,
            elements=elements,
        )

    # ------------------------------------------------------------------ resources

    def _resources(self, specs: Any) -> dict[str, Resource]:
        out: dict[str, Resource] = {}
        if not isinstance(specs, dict) or not specs:
            self.fail("resources: at least one resource is required", "resources")
            return out
        for name, spec in specs.items():
            at = ("resources", "<value>", name)
            if not isinstance(spec, dict):
                self.fail(f"resource {name!r}: a mapping is required", *at)
                continue
            self._unknown_keys(spec, _RESOURCE_KEYS, *at, "<value>")
            path = str(spec.get("path") or "")
            params = {str(k): str(v) for k, v in (spec.get("params") or {}).items()}
            if not path.startswith("/") or "//" in path:
                self.fail(f"resource {name!r}: path must be absolute", *at, "<value>", "path")
            elif "{bsn}" not in path and not any("{bsn}" in v for v in params.values()):
                self.fail(
                    f"resource {name!r}: path or params must contain {{bsn}}",
                    *at,
                    "<value>",
                    "path",
                )
            fields = spec.get("fields")
            if not isinstance(fields, list) or not all(
                isinstance(f, str) and _PATH.match(f) for f in fields
            ):
                self.fail(
                    f"resource {name!r}: fields must list the record's field paths",
                    *at,
                    "<value>",
                    "fields",
                )
                fields = []
            for key in ("records", "next"):
                value = spec.get(key)
                if value is not None and not (isinstance(value, str) and _PATH.match(value)):
                    self.fail(
                        f"resource {name!r}: {key} must be a dotted path", *at, "<value>", key
                    )
            out[str(name)] = Resource(
                name=str(name),
                path=path,
                params=params,
                records=spec.get("records"),
                next=spec.get("next"),
                fields_param=spec.get("fields_param"),
                fields=_with_parents(fields),
                max_pages=int(spec.get("max_pages") or 20),
            )
        return out

    # ------------------------------------------------------------------ elements

    def _element(  # noqa: PLR0912 - one check per key, in file order
        self, element: str, spec: Any, resources: Mapping[str, Resource]
    ) -> ElementRule | None:
        at = ("elements", "<value>", element)
        entry = self.catalogue.get(element)
        if entry is None:
            self.fail(f"unknown catalogue element {element!r}", *at)
            return None
        if not isinstance(spec, dict):
            self.fail(f"{element}: a mapping is required", *at)
            return None
        here = (*at, "<value>")
        self._unknown_keys(spec, _ELEMENT_KEYS, *here)
        resource = resources.get(str(spec.get("resource")))
        if resource is None:
            self.fail(f"{element}: unknown resource {spec.get('resource')!r}", *here, "resource")
            return None
        expected = SubjectKind.HOUSEHOLD if entry.subject == "household" else SubjectKind.PERSON
        subjects = self._subjects(element, spec.get("subjects", [expected.value]), expected, here)
        select = str(spec.get("select") or "single")
        if select not in SELECTIONS:
            self.fail(
                f"{element}: unknown select {select!r} (one of {SELECTIONS})", *here, "select"
            )
        order_by = spec.get("order_by")
        if select in ("latest", "earliest") and not order_by:
            self.fail(f"{element}: select {select} needs order_by", *here, "select")
        where = spec.get("where") or {}
        if not isinstance(where, dict):
            self.fail(f"{element}: where must map source fields to values", *here, "where")
            where = {}
        for path in [*where, *([order_by] if order_by else [])]:
            self._source_path(element, str(path), resource, *here)
        value = self._value(
            element, raw=spec.get("value"), entry=entry, resource=resource, here=here
        )
        derive = spec.get("derive")
        if derive is not None and derive not in self.derivations:
            self.fail(f"{element}: unknown derivation {derive!r}", *here, "derive")
        reads = spec.get("reads") or []
        if not isinstance(reads, list):
            self.fail(f"{element}: reads must list source fields", *here, "reads")
            reads = []
        for path in reads:
            self._source_path(element, str(path), resource, *here, "reads")
        if derive is not None and not reads:
            self.fail(f"{element}: derive needs reads (the source fields it uses)", *here, "derive")
        if (value is None) == (derive is None) and select not in ("exists", "count"):
            self.fail(f"{element}: exactly one of value or derive is required", *at)
        boolean = spec.get("boolean")
        if boolean is not None and entry.fields is not None and boolean not in entry.fields:
            self.fail(f"{element}: boolean names unknown field {boolean!r}", *here, "boolean")
        return ElementRule(
            element=element,
            resource=resource.name,
            subjects=subjects,
            select=select,
            where=dict(where),
            order_by=str(order_by) if order_by else None,
            value=value,
            derive=str(derive) if derive else None,
            params=dict(spec.get("params") or {}),
            reads=tuple(str(r) for r in reads),
            boolean=str(boolean) if boolean else None,
            empty=spec.get("empty"),
            has_empty="empty" in spec,
            source=str(spec["source"]) if spec.get("source") else None,
            line=self.lines.line(*at),
        )

    def _subjects(
        self, element: str, raw: Any, expected: SubjectKind, here: tuple[Any, ...]
    ) -> frozenset[SubjectKind]:
        kinds: set[SubjectKind] = set()
        for name in raw if isinstance(raw, list) else [raw]:
            try:
                kinds.add(SubjectKind(str(name)))
            except ValueError:
                self.fail(f"{element}: unknown subject kind {name!r}", *here, "subjects")
        if kinds and kinds != {expected}:
            self.fail(
                f"{element}: subjects must be [{expected.value}] (catalogue subject)",
                *here,
                "subjects",
            )
        return frozenset(kinds or {expected})

    def _source_path(self, element: str, path: str, resource: Resource, *at: Any) -> None:
        if path not in resource.fields:
            self.fail(f"{element}: unknown field {path!r} of resource {resource.name!r}", *at)

    def _value(
        self,
        element: str,
        *,
        raw: Any,
        entry: _CatalogueElement,
        resource: Resource,
        here: tuple[Any, ...],
    ) -> FieldRule | dict[str, FieldRule] | None:
        if raw is None:
            return None
        at = (*here, "value")
        if isinstance(raw, dict) and not (set(raw) & {"path", "each"}):
            if entry.fields is None:
                self.fail(f"{element}: the catalogue value has no named fields", *at)
            out: dict[str, FieldRule] = {}
            for name, spec in raw.items():
                if entry.fields is not None and name not in entry.fields:
                    self.fail(
                        f"{element}: unknown field {name!r} of catalogue element {element!r}",
                        *at,
                        "<value>",
                        name,
                    )
                rule = self._field(element, spec, resource, (*at, "<value>", name), None)
                if rule is not None:
                    out[str(name)] = rule
            return out
        return self._field(element, raw, resource, at, None)

    def _field(
        self,
        element: str,
        raw: Any,
        resource: Resource,
        at: tuple[Any, ...],
        prefix: str | None,
    ) -> FieldRule | None:
        spec: dict[str, Any] = {"path": raw} if isinstance(raw, str) else raw
        if not isinstance(spec, dict):
            self.fail(f"{element}: a field path or a mapping is required", *at)
            return None
        self._unknown_keys(spec, _FIELD_KEYS, *at, "<value>")
        path = spec.get("path")
        if path is not None:
            full = f"{prefix}.{path}" if prefix else str(path)
            self._source_path(element, full, resource, *at)
        transform = spec.get("transform")
        if transform is not None and transform not in self.transforms:
            self.fail(f"{element}: unknown transform {transform!r}", *at)
        mapping = spec.get("map")
        if mapping is not None and not isinstance(mapping, dict):
            self.fail(f"{element}: map must be a code table", *at)
            mapping = None
        each: dict[str, FieldRule] | None = None
        if spec.get("each") is not None:
            if path is None:
                self.fail(f"{element}: each needs the path of a list field", *at)
            each = {}
            base = f"{prefix}.{path}" if prefix else str(path)
            for name, sub in (spec.get("each") or {}).items():
                rule = self._field(element, sub, resource, (*at, "<value>", "each", name), base)
                if rule is not None:
                    each[str(name)] = rule
        if path is None and "default" not in spec:
            self.fail(f"{element}: a field needs a path or a default", *at)
        return FieldRule(
            path=str(path) if path is not None else None,
            transform=str(transform) if transform else None,
            mapping=mapping,
            each=each,
            default=spec.get("default"),
        )


def _with_parents(paths: list[str]) -> frozenset[str]:
    """Declared paths plus their parents (``a.b`` declares ``a`` too)."""
    out: set[str] = set()
    for p in paths:
        parts = p.split(".")
        out |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return frozenset(out)
