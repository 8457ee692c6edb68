"""The fictional world the simulators serve: persons, households, the Veilig Thuis register
and MDA++ cases, loaded from ``data/lindeburg.yaml`` (a copy of the scenarios' registry block)
plus any synthetic families from :mod:`adapters.simulators.generate`.

Persons are minors exactly when the registry records parental authority over them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_REGISTRY_PATH",
    "Address",
    "Authority",
    "Household",
    "MdaCase",
    "Person",
    "Registry",
    "VtRecord",
    "split_name",
]

DEFAULT_REGISTRY_PATH = Path(__file__).with_name("data") / "lindeburg.yaml"

_PREFIXES = ("van der", "van den", "van de", "in 't", "van", "de", "den", "der", "ter", "te", "'t")
_ADDRESS = re.compile(
    r"^(?P<street>.+?)\s+(?P<number>\d+\s?[A-Za-z0-9-]*),\s*"
    r"(?P<postcode>\d{4}\s?[A-Z]{2})\s+(?P<city>.+)$"
)


def split_name(full: str) -> tuple[str, str | None, str]:
    """Split "Given [Names] [prefix] Surname" into (given_names, prefix, surname)."""
    words = full.split()
    if len(words) == 1:
        return words[0], None, words[0]
    lowered = [w.lower() for w in words]
    for prefix in _PREFIXES:  # longest prefixes first
        plen = len(prefix.split())
        for start in range(1, len(words) - plen):
            if " ".join(lowered[start : start + plen]) == prefix:
                return (
                    " ".join(words[:start]),
                    " ".join(words[start : start + plen]),
                    " ".join(words[start + plen :]),
                )
    return " ".join(words[:-1]), None, words[-1]


def _as_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class Address:
    street: str
    number: str
    postcode: str
    city: str

    @classmethod
    def parse(cls, text: str) -> Address:
        m = _ADDRESS.match(text.strip())
        if m is None:
            raise ValueError(f"cannot parse address {text!r}")
        return cls(m["street"], m["number"].replace(" ", ""), m["postcode"], m["city"])

    def to_value(self) -> dict[str, str]:
        return {
            "street": self.street,
            "number": self.number,
            "postcode": self.postcode,
            "city": self.city,
        }


@dataclass(frozen=True, slots=True)
class Authority:
    type: str
    holders: tuple[str, ...]
    parents_without_authority: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Person:
    ref: str
    name: str
    birth_date: date
    bsn: str
    gender: str  # M | V | O
    authority: Authority | None = None
    note: str | None = None

    @property
    def is_minor(self) -> bool:
        return self.authority is not None


@dataclass(frozen=True, slots=True)
class Household:
    id: str
    address: Address
    members: tuple[str, ...]

    @property
    def address_object_id(self) -> str:
        """A stable 16-digit BAG-style id (gemeentecode 9999, object type 01 = verblijfsobject)."""
        digest = int.from_bytes(hashlib.sha256(self.id.encode()).digest()[:8], "big")
        return f"999901{digest % 10**10:010d}"


@dataclass(frozen=True, slots=True)
class VtRecord:
    household: str
    case_opened: date
    case_closed: date | None
    origin: str | None
    linked_persons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MdaCase:
    household: str
    case_id: str
    registered: date
    brought_in_by: str | None
    closed: date | None = None


@dataclass(slots=True)
class Registry:
    persons: dict[str, Person] = field(default_factory=dict)
    households: dict[str, Household] = field(default_factory=dict)
    veilig_thuis: dict[str, VtRecord] = field(default_factory=dict)
    mda_cases: dict[str, MdaCase] = field(default_factory=dict)
    _by_bsn: dict[str, Person] = field(default_factory=dict)
    _household_of: dict[str, str] = field(default_factory=dict)
    _children_of: dict[str, list[str]] = field(default_factory=dict)
    _vt_linked: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: Path = DEFAULT_REGISTRY_PATH) -> Registry:
        reg = cls()
        reg.add_document(yaml.safe_load(path.read_text(encoding="utf-8")))
        return reg

    def add_document(self, doc: Mapping[str, Any]) -> None:
        """Merge one registry-shaped document (``kind: registry``) into this registry."""
        if doc.get("kind") != "registry":
            raise ValueError("not a registry document")
        for ref, p in (doc.get("persons") or {}).items():
            auth = p.get("authority")
            person = Person(
                ref=str(ref),
                name=str(p["name"]),
                birth_date=_as_date(p["born"]) or date(1970, 1, 1),
                bsn=str(p["bsn"]),
                gender=str(p.get("gender") or _gender_from_note(p.get("note"), ref)),
                authority=(
                    Authority(
                        type=str(auth["type"]),
                        holders=tuple(str(h) for h in auth.get("holders") or ()),
                        parents_without_authority=tuple(
                            str(h) for h in auth.get("parents_without_authority") or ()
                        ),
                    )
                    if auth
                    else None
                ),
                note=p.get("note"),
            )
            if person.bsn in self._by_bsn or person.ref in self.persons:
                raise ValueError(f"duplicate person {person.ref}")
            self.persons[person.ref] = person
            self._by_bsn[person.bsn] = person
        for hid, h in (doc.get("households") or {}).items():
            hh = Household(
                id=str(hid),
                address=Address.parse(str(h["address"])),
                members=tuple(str(m) for m in h.get("members") or ()),
            )
            self.households[hh.id] = hh
            for member in hh.members:
                self._household_of[member] = hh.id
        for hid, v in (doc.get("veilig_thuis_register") or {}).items():
            record = VtRecord(
                household=str(hid),
                case_opened=_as_date(v["case_opened"]) or date(1970, 1, 1),
                case_closed=_as_date(v.get("case_closed")),
                origin=v.get("origin"),
                linked_persons=tuple(str(x) for x in v.get("linked_persons") or ()),
            )
            self.veilig_thuis[record.household] = record
            for ref in record.linked_persons:
                self._vt_linked.setdefault(ref, record.household)
        for hid, m in (doc.get("mda_cases") or {}).items():
            self.mda_cases[str(hid)] = MdaCase(
                household=str(hid),
                case_id=str(m["mda_case_id"]),
                registered=_as_date(m["registered"]) or date(1970, 1, 1),
                brought_in_by=m.get("brought_in_by"),
                closed=_as_date(m.get("closed")),
            )
        self._children_of.clear()
        for person in self.persons.values():
            if person.authority:
                auth = person.authority
                for parent in (*auth.holders, *auth.parents_without_authority):
                    self._children_of.setdefault(parent, []).append(person.ref)

    # ------------------------------------------------------------------ queries

    def by_bsn(self, bsn: str) -> Person | None:
        return self._by_bsn.get(bsn)

    def household_of(self, person: Person) -> Household | None:
        hid = self._household_of.get(person.ref)
        return self.households.get(hid) if hid else None

    def children_of(self, person: Person) -> list[Person]:
        return [self.persons[r] for r in self._children_of.get(person.ref, ()) if r in self.persons]

    def vt_record(self, person: Person) -> VtRecord | None:
        """The Veilig Thuis record on the person's household, or one that links the person."""
        hh = self.household_of(person)
        if hh is not None and hh.id in self.veilig_thuis:
            return self.veilig_thuis[hh.id]
        linked = self._vt_linked.get(person.ref)
        return self.veilig_thuis.get(linked) if linked else None

    def mda_case(self, person: Person) -> MdaCase | None:
        hh = self.household_of(person)
        return self.mda_cases.get(hh.id) if hh else None

    def relation(self, person: Person) -> str:
        """Relation to the children (household.composition): moeder | vader | kind | overig."""
        if person.is_minor:
            return "kind"
        if self.children_of(person):
            return {"V": "moeder", "M": "vader"}.get(person.gender, "overig")
        return "overig"

    def iter_persons(self) -> Iterable[Person]:
        return self.persons.values()


def _gender_from_note(note: Any, ref: Any) -> str:
    """The scenario registry has no gender field; its notes say "mother"/"father"."""
    text = str(note or "").lower()
    if re.search(r"\bmother\b", text):
        return "V"
    if re.search(r"\bfather\b", text):
        return "M"
    # Deterministic fallback for persons the notes do not describe.
    return "MV"[int(hashlib.sha256(str(ref).encode()).hexdigest(), 16) % 2]
