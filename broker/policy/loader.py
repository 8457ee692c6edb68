"""Loads the policy set: agreements (YAML + Rego) and the shared Rego library.

An agreement is a folder ``policies/agreements/<id>/`` with ``agreement.yaml``
(what is allowed: purposes, parties, whitelists, legal bases, consent rule) and
``policy.rego`` (the preconditions and acute-danger evidence, in package
``agreements.<id with underscores>``). The generic decision procedure lives once
in ``policies/lib/``. The loader turns the YAML into the data document
``data.broker.agreements`` that the Rego library reads, and hashes everything
into a bundle hash that every decision names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
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


def rego_package(agreement_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", agreement_id)


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
        doc["content_hash"] = self.content_hash
        return doc


@dataclass(frozen=True, slots=True)
class PolicySet:
    """An immutable, hashed snapshot of every policy file the engine compiles."""

    root: Path
    reference: ReferenceData
    agreements: dict[str, Agreement]
    library: dict[str, str]  # relative path -> Rego source
    bundle_hash: str
    # Ids of agreements whose every signatory signed the current content hash.
    # None: no signature gating (tools that simulate, test or replay drafts).
    enforced: frozenset[str] | None = None

    def modules(self) -> dict[str, str]:
        mods = dict(self.library)
        for a in self.agreements.values():
            if a.rego_path is not None:
                # Named by id, so a draft folder outside the root compiles the same.
                mods[f"agreements/{a.id}/{a.rego_path.name}"] = a.rego_source
        return mods

    def data_document(self) -> dict[str, Any]:
        agreements = {}
        for a in self.agreements.values():
            doc = a.data_document()
            if self.enforced is not None and a.id not in self.enforced:
                doc["status"] = "unsigned"  # not in force until every signatory signed
            agreements[a.id] = doc
        return {"broker": {"agreements": agreements}}

    def with_enforced(self, enforced: frozenset[str]) -> PolicySet:
        """This set, enforcing only the fully signed agreements ``enforced``."""
        return PolicySet(
            root=self.root,
            reference=self.reference,
            agreements=self.agreements,
            library=self.library,
            bundle_hash=_bundle_hash(self.library, self.agreements, enforced),
            enforced=enforced,
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
    agreements: dict[str, Agreement],
    enforced: frozenset[str] | None = None,
) -> str:
    document: dict[str, Any] = {
        "library": library,
        "agreements": {a.id: a.content_hash for a in agreements.values()},
    }
    if enforced is not None:
        document["enforced"] = sorted(enforced)
    return "sha256:" + sha256_hex(canonical_json(document))


def with_agreement(policy_set: PolicySet, agreement: Agreement) -> PolicySet:
    """The same policy set with ``agreement`` added or replacing its namesake
    (e.g. a draft version to simulate or replay)."""
    agreements = dict(policy_set.agreements)
    agreements[agreement.id] = agreement
    return PolicySet(
        root=policy_set.root,
        reference=policy_set.reference,
        agreements=agreements,
        library=policy_set.library,
        bundle_hash=_bundle_hash(policy_set.library, agreements, policy_set.enforced),
        enforced=policy_set.enforced,
    )


def load_policy_set(root: Path) -> PolicySet:
    """Reads every agreement folder and the shared library under ``root``."""
    root = root.resolve()
    reference = ReferenceData.load(root)
    agreements: dict[str, Agreement] = {}
    for folder in sorted((root / "agreements").iterdir()):
        if not (folder / "agreement.yaml").exists():
            continue
        agreement = load_agreement(folder)
        if agreement.id in agreements:
            raise PolicyInvalid(f"{folder}: duplicate agreement id {agreement.id}")
        agreements[agreement.id] = agreement
    library = {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted((root / "lib").glob("*.rego"))
        if not p.name.endswith("_test.rego")
    }
    return PolicySet(
        root=root,
        reference=reference,
        agreements=agreements,
        library=library,
        bundle_hash=_bundle_hash(library, agreements),
    )
