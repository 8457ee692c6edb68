"""Reference data the product needs at run time: the data-element catalogue,
party types and legal bases (copied from the domain files into policies/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from broker.core.types import SubjectKind


@dataclass(frozen=True, slots=True)
class Element:
    id: str
    domain: str
    name_nl: str
    subject: str
    gdpr_category: str
    sensitivity: int
    typical_sources: tuple[str, ...]
    example: Any

    @property
    def subject_kind(self) -> SubjectKind:
        return SubjectKind.HOUSEHOLD if self.subject == "household" else SubjectKind.PERSON


@dataclass(frozen=True, slots=True)
class Party:
    id: str
    name_nl: str
    name_en: str


@dataclass(frozen=True, slots=True)
class LegalBasis:
    id: str
    law: str
    law_nl: str
    article: str
    kind: str
    consent_required: bool

    @property
    def citation(self) -> str:
        return f"{self.law_nl} art. {self.article}"


@dataclass(frozen=True, slots=True)
class ReferenceData:
    elements: dict[str, Element]
    parties: dict[str, Party]
    legal_bases: dict[str, LegalBasis]

    @classmethod
    def load(cls, policy_dir: Path) -> ReferenceData:
        cat = _read(policy_dir / "catalogue" / "catalogue.yaml")
        parties = _read(policy_dir / "parties" / "parties.yaml")
        bases = _read(policy_dir / "legal_bases" / "legal_bases.yaml")
        return cls(
            elements={
                e["id"]: Element(
                    id=e["id"],
                    domain=e["domain"],
                    name_nl=e.get("name_nl", e["id"]),
                    subject=e.get("subject", "any_person"),
                    gdpr_category=e.get("gdpr_category", "ordinary"),
                    sensitivity=int(e.get("sensitivity", 1)),
                    typical_sources=tuple(e.get("typical_sources", ())),
                    example=(e.get("value") or {}).get("example"),
                )
                for e in cat["elements"]
            },
            parties={
                p["id"]: Party(
                    id=p["id"], name_nl=p.get("name_nl", p["id"]), name_en=p.get("name_en", p["id"])
                )
                for p in parties["parties"]
            },
            legal_bases={
                b["id"]: LegalBasis(
                    id=b["id"],
                    law=str(b.get("law", "")),
                    law_nl=str(b.get("law_nl", b.get("law", ""))),
                    article=str(b.get("article", "")),
                    kind=str(b.get("kind", "")),
                    consent_required=bool(b.get("consent_required", False)),
                )
                for b in bases["legal_bases"]
            },
        )


def _read(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data
