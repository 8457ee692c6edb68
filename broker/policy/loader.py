"""Loads the policy set: agreements (YAML + Rego) and the shared Rego library.

An agreement version is a folder with ``agreement.yaml`` (what is allowed:
validity, purposes, parties, whitelists, legal bases, consent rule) and
``policy.rego`` (the preconditions and acute-danger evidence, in package
``agreements.<id>.v<version>``, both with underscores for other characters).
An agreement with one version may live in ``policies/agreements/<id>/``; several
versions of one agreement live side by side in ``policies/agreements/<id>/<version>/``,
each with its own validity window and signatures. The generic decision procedure
lives once in ``policies/lib/``; for a request it picks the version of the
agreement whose window covers the request date and that is in force. The loader
turns the YAML into the data document ``data.broker.agreements[<id>].versions``
that the Rego library reads, and hashes everything into a bundle hash that every
decision names.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from broker.core.canonical import canonical_json, sha256_hex
from broker.core.errors import PolicyInvalid
from broker.reference import ReferenceData

DECISION_QUERY = "x = data.broker.decision.result"
DECISION_PATH = "broker/decision/result"

# Days, hours, minutes, seconds; ASCII digits; a "T" must be followed by a component.
_DURATION = re.compile(
    r"P(?:(?P<d>[0-9]+)D)?(?:T(?=[0-9])(?:(?P<h>[0-9]+)H)?(?:(?P<m>[0-9]+)M)?(?:(?P<s>[0-9]+)S)?)?"
)


def duration_seconds(text: str) -> int:
    """Seconds in an ISO 8601 duration of days/hours/minutes/seconds (e.g. PT72H)."""
    m = _DURATION.fullmatch(text)
    if not m or text == "P":
        raise ValueError(f"unsupported ISO 8601 duration {text!r}")
    d, h, mi, s = (int(m.group(g) or 0) for g in ("d", "h", "m", "s"))
    return ((d * 24 + h) * 60 + mi) * 60 + s


# Years, months and days (calendar arithmetic; e.g. P2Y for a signal's lifetime).
_CALENDAR = re.compile(r"P(?=[0-9])(?:(?P<y>[0-9]+)Y)?(?:(?P<mo>[0-9]+)M)?(?:(?P<d>[0-9]+)D)?")


def add_calendar_duration(day: date, text: str) -> date:
    """``day`` plus an ISO 8601 duration of years, months and days (e.g. P2Y, P6M,
    P90D); a day past the end of the month lands on its last day (29 Feb + P1Y is
    28 Feb). Raises ValueError for another form or a result beyond year 9999."""
    m = _CALENDAR.fullmatch(text)
    if not m:
        raise ValueError(f"unsupported ISO 8601 duration {text!r} (years, months, days)")
    years, months, days = (int(m.group(g) or 0) for g in ("y", "mo", "d"))
    month_index = day.month - 1 + months
    year = day.year + years + month_index // 12
    month = month_index % 12 + 1
    if not 1 <= year <= 9999:
        raise ValueError(f"duration {text!r} leaves the calendar")
    last = calendar.monthrange(year, month)[1]
    try:
        return date(year, month, min(day.day, last)) + timedelta(days=days)
    except OverflowError as exc:
        raise ValueError(f"duration {text!r} leaves the calendar") from exc


def rego_package(agreement_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", agreement_id)


def version_package(version: str) -> str:
    """The package segment of an agreement version: ``3.0`` -> ``v3_0``."""
    return "v" + re.sub(r"[^A-Za-z0-9_]", "_", version)


def agreement_package(agreement_id: str, version: str) -> str:
    """The Rego package of one agreement version's ``policy.rego``."""
    return f"agreements.{rego_package(agreement_id)}.{version_package(version)}"


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order of version labels: 2.10 after 2.9."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.\-_]", version)
    )


def _plain(value: Any) -> Any:
    """YAML values as JSON values (dates become ISO strings)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Agreement:
    id: str
    version: str
    folder: Path
    source: dict[str, Any]  # agreement.yaml as JSON values
    rego_path: Path | None
    rego_source: str
    content_hash: str

    @property
    def purposes(self) -> dict[str, dict[str, Any]]:
        return {p["id"]: p for p in self.source.get("purposes", [])}

    @property
    def valid_from(self) -> str:
        return str(self.source.get("valid_from") or "")

    @property
    def valid_until(self) -> str | None:
        """The last day of the validity window; None: open-ended."""
        end = self.source.get("valid_until")
        return None if end is None else str(end)

    def covers(self, day: date) -> bool:
        """Whether ``day`` lies inside this version's validity window."""
        iso = day.isoformat()
        return self.valid_from <= iso and (self.valid_until is None or iso <= self.valid_until)

    @property
    def package(self) -> str:
        return agreement_package(self.id, self.version)

    @property
    def order(self) -> tuple[str, tuple[tuple[int, int | str], ...]]:
        """Sort key among the versions of one agreement: window start, then version."""
        return (self.valid_from, _version_key(self.version))

    @property
    def subscriptions(self) -> dict[str, dict[str, Any]]:
        """Event subscriptions by event type (``subscriptions:``, see broker/publications)."""
        return {s["event_type"]: s for s in self.source.get("subscriptions") or []}

    @property
    def signals(self) -> dict[str, Any] | None:
        """Signal and match (``signals:``, see broker/signals); None: not offered."""
        section = self.source.get("signals")
        return section if isinstance(section, dict) else None

    def data_document(self) -> dict[str, Any]:
        doc = dict(self.source)
        purposes: dict[str, Any] = {}
        for pid, p in self.purposes.items():
            purpose = dict(p)
            acute = purpose.get("acute_danger")
            if isinstance(acute, dict):
                acute = dict(acute)
                acute["max_duration_ns"] = (
                    duration_seconds(str(acute.get("max_duration", "PT0S"))) * 1_000_000_000
                )
                purpose["acute_danger"] = acute
            purposes[pid] = purpose
        doc["purposes"] = purposes
        doc["rego_package"] = rego_package(self.id)
        doc["rego_version"] = version_package(self.version)
        doc["content_hash"] = self.content_hash
        return doc


@dataclass(frozen=True, slots=True)
class PolicySet:
    """An immutable, hashed snapshot of every policy file the engine compiles."""

    root: Path
    reference: ReferenceData
    # Every version of every agreement, by id; each tuple ordered oldest first.
    versions: dict[str, tuple[Agreement, ...]]
    library: dict[str, str]  # relative path -> Rego source
    bundle_hash: str
    # Content hashes of the versions whose every signatory signed them.
    # None: no signature gating (tools that simulate, test or replay drafts).
    enforced: frozenset[str] | None = None
    # The latest version of every agreement, by id (derived from ``versions``).
    agreements: dict[str, Agreement] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "agreements", {a: vs[-1] for a, vs in self.versions.items()})

    def all_versions(self) -> list[Agreement]:
        """Every version of every agreement, by id and then oldest first."""
        return [a for versions in self.versions.values() for a in versions]

    def version(self, agreement_id: str, version: str) -> Agreement | None:
        return next((a for a in self.versions.get(agreement_id, ()) if a.version == version), None)

    def is_enforced(self, agreement: Agreement) -> bool:
        return self.enforced is None or agreement.content_hash in self.enforced

    def current(self, agreement_id: str, day: date) -> Agreement | None:
        """The version the decision procedure uses on ``day``: the one in force
        (active, fully signed, window covering ``day``), else one whose window
        covers ``day``, else the latest. None for an unknown agreement."""
        versions = self.versions.get(agreement_id, ())
        covering = [a for a in versions if a.covers(day)]
        in_force = [
            a for a in covering if a.source.get("status") == "active" and self.is_enforced(a)
        ]
        for candidates in (in_force, covering, list(versions)):
            if candidates:
                return candidates[-1]
        return None

    def select(self, agreement_id: str, version: str | None, day: date) -> Agreement | None:
        """``version`` of the agreement when given, else the one used on ``day``."""
        if version is not None:
            return self.version(agreement_id, version)
        return self.current(agreement_id, day)

    def modules(self) -> dict[str, str]:
        mods = dict(self.library)
        for a in self.all_versions():
            if a.rego_path is not None:
                mods[_module_name(self.root, a)] = a.rego_source
        mods[DISPATCH_MODULE] = dispatch_module(self.all_versions())
        return mods

    def data_document(self) -> dict[str, Any]:
        agreements: dict[str, Any] = {}
        for agreement_id, versions in self.versions.items():
            docs = {}
            for a in versions:
                doc = a.data_document()
                if not self.is_enforced(a):
                    doc["status"] = "unsigned"  # not in force until every signatory signed
                docs[a.version] = doc
            agreements[agreement_id] = {"versions": docs}
        return {"broker": {"agreements": agreements}}

    def with_enforced(self, enforced: frozenset[str]) -> PolicySet:
        """This set, enforcing only the fully signed versions (content hashes ``enforced``)."""
        return PolicySet(
            root=self.root,
            reference=self.reference,
            versions=self.versions,
            library=self.library,
            bundle_hash=_bundle_hash(self.library, self.versions, enforced),
            enforced=enforced,
        )

    def with_versions(self, versions: dict[str, tuple[Agreement, ...]]) -> PolicySet:
        """This set with the agreement versions ``versions`` instead (ordered here)."""
        ordered = {aid: tuple(sorted(vs, key=lambda a: a.order)) for aid, vs in versions.items()}
        return PolicySet(
            root=self.root,
            reference=self.reference,
            versions=ordered,
            library=self.library,
            bundle_hash=_bundle_hash(self.library, ordered, self.enforced),
            enforced=self.enforced,
        )


DISPATCH_MODULE = "broker/agreement_rules.rego"
_DISPATCH_RULES = ("precondition", "acute_evidence")


def dispatch_module(versions: Iterable[Agreement]) -> str:
    """A generated Rego module that reaches the selected version's own rules.

    The library could name them as ``data.agreements[pkg][version].precondition``,
    but a dynamic reference makes the engines evaluate the rules of every
    agreement version; this index names each version's rules statically, guarded
    by the version the library selected, so only that version's rules run.
    """
    lines = [
        "# Generated by the broker from the agreement set (broker.policy.loader).",
        "# Do not edit: it indexes each agreement version's own rules.",
        "package broker.agreement_rules",
        "",
        "import rego.v1",
    ]
    for a in sorted(versions, key=lambda v: (v.id, _version_key(v.version))):
        if a.rego_path is None:
            continue
        package = agreement_package(a.id, a.version)
        guard = (
            f'\tdata.broker.decision.pkg == "{rego_package(a.id)}"\n'
            f'\tdata.broker.decision.pkg_version == "{version_package(a.version)}"\n'
        )
        lines.append("")
        lines.append(f"precondition := data.{package}.precondition if {{\n{guard}}}")
        lines.append("")
        lines.append(f"acute_evidence if {{\n{guard}\tdata.{package}.acute_evidence\n}}")
    return "\n".join(lines) + "\n"


def _module_name(root: Path, agreement: Agreement) -> str:
    """A version's module is named by its path under the policy root; a draft
    folder outside the root by id and version, so it compiles the same anywhere."""
    assert agreement.rego_path is not None
    try:
        return agreement.rego_path.relative_to(root).as_posix()
    except ValueError:
        return f"agreements/{agreement.id}/{agreement.version}/{agreement.rego_path.name}"


def windows_overlap(one: Agreement, other: Agreement) -> bool:
    """Whether the validity windows of two versions share a day."""
    return (one.valid_until is None or other.valid_from <= one.valid_until) and (
        other.valid_until is None or one.valid_from <= other.valid_until
    )


def is_signed_file(path: Path) -> bool:
    """The files whose bytes an agreement's signatures cover: everything in the
    folder except Rego tests (``*_test.rego``) and hidden files."""
    return path.is_file() and not path.name.startswith(".") and not path.name.endswith("_test.rego")


def folder_hash(folder: Path) -> str:
    """Content hash of an agreement folder: SHA-256 over the canonical JSON of
    {relative path: SHA-256 of the file's bytes} for every signed file. Any
    change to any of those files changes it (and invalidates signatures)."""
    files = {
        p.relative_to(folder).as_posix(): sha256_hex(p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if is_signed_file(p)
    }
    return "sha256:" + sha256_hex(canonical_json({"files": files}))


def load_agreement(folder: Path) -> Agreement:
    yaml_path = folder / "agreement.yaml"
    try:
        with yaml_path.open(encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyInvalid(f"{yaml_path}: cannot read agreement ({type(exc).__name__})") from exc
    if not isinstance(raw, dict) or "id" not in raw:
        raise PolicyInvalid(f"{yaml_path}: not an agreement (no id)")
    source = _plain(raw)
    rego_path = folder / "policy.rego"
    rego_source = rego_path.read_text(encoding="utf-8") if rego_path.exists() else ""
    content_hash = folder_hash(folder)
    return Agreement(
        id=str(source["id"]),
        version=str(source.get("version", "")),
        folder=folder,
        source=source,
        rego_path=rego_path if rego_path.exists() else None,
        rego_source=rego_source,
        content_hash=content_hash,
    )


def _bundle_hash(
    library: dict[str, str],
    versions: dict[str, tuple[Agreement, ...]],
    enforced: frozenset[str] | None = None,
) -> str:
    document: dict[str, Any] = {
        "library": library,
        "agreements": {
            aid: {a.version: a.content_hash for a in vs} for aid, vs in versions.items()
        },
    }
    if enforced is not None:
        document["enforced"] = sorted(enforced)
    return "sha256:" + sha256_hex(canonical_json(document))


_PACKAGE = re.compile(r"^[ \t]*package[ \t]+([A-Za-z0-9_.]+)", re.MULTILINE)


def check_package(agreement: Agreement) -> None:
    """Raises PolicyInvalid unless the version's policy.rego is in its own package
    (``agreements.<id>.v<version>``), so versions of one agreement never clash."""
    if agreement.rego_path is None:
        return
    found = _PACKAGE.search(agreement.rego_source)
    declared = found.group(1) if found else None
    if declared != agreement.package:
        raise PolicyInvalid(
            f"{agreement.rego_path}: package {declared} does not match agreement "
            f"{agreement.id} version {agreement.version} (expected package {agreement.package})"
        )


def with_agreement(policy_set: PolicySet, agreement: Agreement) -> PolicySet:
    """The same policy set with the version ``agreement`` added (e.g. a draft to
    simulate or replay) and treated as signed; it replaces the version of the same
    label and every version whose validity window overlaps its own."""
    check_package(agreement)
    kept = tuple(
        a
        for a in policy_set.versions.get(agreement.id, ())
        if a.version != agreement.version and not windows_overlap(a, agreement)
    )
    changed = policy_set.with_versions({**policy_set.versions, agreement.id: (*kept, agreement)})
    if policy_set.enforced is None:
        return changed
    return changed.with_enforced(policy_set.enforced | {agreement.content_hash})


def agreement_folders(agreements_dir: Path) -> list[Path]:
    """Every agreement version folder: ``<id>/`` holding an ``agreement.yaml``, or
    each ``<id>/<version>/`` holding one."""
    folders: list[Path] = []
    for folder in sorted(agreements_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        if (folder / "agreement.yaml").exists():
            folders.append(folder)
            continue
        folders.extend(
            sub
            for sub in sorted(folder.iterdir())
            if sub.is_dir() and not sub.name.startswith(".") and (sub / "agreement.yaml").exists()
        )
    return folders


def load_policy_set(root: Path) -> PolicySet:
    """Reads every agreement folder and the shared library under ``root``."""
    root = root.resolve()
    reference = ReferenceData.load(root)
    versions: dict[str, list[Agreement]] = {}
    for folder in agreement_folders(root / "agreements"):
        agreement = load_agreement(folder)
        check_package(agreement)
        same = versions.setdefault(agreement.id, [])
        if any(a.version == agreement.version for a in same):
            raise PolicyInvalid(
                f"{folder}: duplicate version {agreement.version} of agreement {agreement.id}"
            )
        same.append(agreement)
    library = {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted((root / "lib").glob("*.rego"))
        if not p.name.endswith("_test.rego")
    }
    ordered = {aid: tuple(sorted(vs, key=lambda a: a.order)) for aid, vs in versions.items()}
    return PolicySet(
        root=root,
        reference=reference,
        versions=ordered,
        library=library,
        bundle_hash=_bundle_hash(library, ordered),
    )
