"""The subject facts of a policy input, built one way for requests and publications.

A person element is decided about the person's pseudonym (``psn:…``) with the birth date,
age on the request date and the pseudonyms of the parental-authority holders the register
gave; a household element about the household's pseudonym (``hh:…``; a person the register
does not know forms a household of their own). Only pseudonyms enter the facts."""

from __future__ import annotations

from datetime import date

from broker.core.clock import age_on
from broker.core.protocols import PersonRecord
from broker.core.types import SubjectFacts, SubjectKind
from broker.crypto.keys import Pseudonymizer

__all__ = ["subject_key"]


def subject_key(
    pseudonymizer: Pseudonymizer,
    bsn: str,
    kind: SubjectKind,
    *,
    record: PersonRecord | None,
    today: date,
    subjects: dict[str, SubjectFacts],
) -> str:
    """The pseudonymised key of ``bsn``'s subject of ``kind``; its facts are added to
    ``subjects`` (key -> facts) the first time it is seen."""
    if kind is SubjectKind.HOUSEHOLD:
        household = record.household_id if record and record.household_id else f"of:{bsn}"
        key = pseudonymizer.household(household)
        subjects.setdefault(key, SubjectFacts(key=key, kind=SubjectKind.HOUSEHOLD))
        return key
    key = pseudonymizer.person(bsn)
    if key not in subjects:
        birth = record.birth_date if record else None
        subjects[key] = SubjectFacts(
            key=key,
            kind=SubjectKind.PERSON,
            birth_date=birth,
            age=age_on(birth, today) if birth else None,
            authority_holders=tuple(
                pseudonymizer.person(h) for h in (record.authority_holder_bsns if record else ())
            ),
        )
    return key
