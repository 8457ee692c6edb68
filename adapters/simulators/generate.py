"""Deterministic synthetic families for load tests, in the registry's own shape.

``generate_families(n, seed)`` returns a ``kind: registry`` document (households, persons,
veilig_thuis_register, mda_cases) that :class:`adapters.simulators.registry.Registry` merges
next to the Lindeburg registry. The same ``(n, seed)`` always gives the same families, and the
first ``k`` families do not depend on ``n``. BSNs are valid (elfproef), unique, taken in order
from 990000000 upward and never collide with the ``exclude`` set (e.g. the scenario BSNs).
All names and addresses are invented.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from broker.core.bsn import is_valid_bsn

__all__ = ["BSN_START", "MAX_FAMILIES", "generate_families", "synthetic_bsns"]

BSN_START = 990_000_000
MAX_FAMILIES = 100_000

_GIVEN_V = (
    "Anna",
    "Emma",
    "Fleur",
    "Iris",
    "Julia",
    "Lieke",
    "Maud",
    "Nina",
    "Roos",
    "Saar",
    "Tess",
    "Yasmin",
    "Zoë",
    "Amira",
    "Esra",
    "Hanna",
    "Ilse",
    "Marloes",
)
_GIVEN_M = (
    "Bram",
    "Daan",
    "Finn",
    "Gijs",
    "Jesse",
    "Lars",
    "Luuk",
    "Milan",
    "Niels",
    "Omar",
    "Pim",
    "Sem",
    "Thijs",
    "Youssef",
    "Mehmet",
    "Koen",
    "Ruben",
    "Stijn",
)
_SURNAMES = (
    "de Vries",
    "van der Meer",
    "Bakker",
    "Visser",
    "Smit",
    "de Boer",
    "Mulder",
    "van Dijk",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "van den Berg",
    "Dekker",
    "Kok",
    "Yilmaz",
    "El Idrissi",
    "Postma",
    "Hoekman",
    "ter Horst",
    "van Leeuwen",
    "Kramer",
)
_STREETS = (
    "Lindelaan",
    "Beukenstraat",
    "Eikenhof",
    "Acaciaweg",
    "Iepenplein",
    "Lariksdreef",
    "Platanenstraat",
    "Hazelaarhof",
    "Vlierstraat",
    "Meidoornweg",
    "Elzenlaan",
    "Sparrenhof",
)
_POSTCODE_LETTERS = "ABCEGHJKLMNPRTVXZ"
_ORIGINS = ("politie", "school", "huisarts", "ggz", "gemeente_wijkteam")


def synthetic_bsns(exclude: set[str] | frozenset[str] = frozenset()) -> Iterator[str]:
    """Valid BSNs in increasing order from BSN_START, skipping ``exclude``."""
    n = BSN_START
    while n <= 999_999_999:
        candidate = f"{n:09d}"
        if is_valid_bsn(candidate) and candidate not in exclude:
            yield candidate
        n += 1


def _birth(rng: random.Random, first: int, last: int) -> date:
    start = date(first, 1, 1)
    return start + timedelta(days=rng.randrange((date(last, 12, 31) - start).days + 1))


def _person(
    rng: random.Random, bsns: Iterator[str], gender: str, born: date, surname: str
) -> dict[str, Any]:
    given = rng.choice(_GIVEN_V if gender == "V" else _GIVEN_M)
    return {
        "name": f"{given} {surname}",
        "born": born.isoformat(),
        "bsn": next(bsns),
        "gender": gender,
    }


def _address(rng: random.Random) -> str:
    postcode = f"9999 {rng.choice(_POSTCODE_LETTERS)}{rng.choice(_POSTCODE_LETTERS)}"
    return f"{rng.choice(_STREETS)} {rng.randint(1, 250)}, {postcode} Lindeburg"


def generate_families(
    n: int, seed: int = 20260401, exclude_bsns: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A registry document with ``n`` synthetic families (see the module docstring)."""
    if not 0 <= n <= MAX_FAMILIES:
        raise ValueError(f"n must be between 0 and {MAX_FAMILIES}")
    bsns = synthetic_bsns(exclude_bsns)
    households: dict[str, Any] = {}
    persons: dict[str, Any] = {}
    vt_register: dict[str, Any] = {}
    mda: dict[str, Any] = {}

    for fam in range(1, n + 1):
        rng = random.Random(f"{seed}:{fam}")  # noqa: S311 - synthetic test data
        fid = f"G{fam:05d}"
        hid = f"HH-{fid}"
        surname = rng.choice(_SURNAMES)
        address = _address(rng)
        shape = rng.choice(
            ("two_parents", "two_parents", "single_mother", "single_father", "single_adult")
        )
        members: list[str] = []

        mother_ref, father_ref = f"{fid}-M", f"{fid}-F"
        persons[mother_ref] = _person(rng, bsns, "V", _birth(rng, 1976, 1998), surname)
        if shape != "single_father":
            members.append(mother_ref)
        has_father = shape in ("two_parents", "single_mother", "single_father")
        if has_father:
            father_surname = surname if shape == "two_parents" else rng.choice(_SURNAMES)
            persons[father_ref] = _person(rng, bsns, "M", _birth(rng, 1972, 1996), father_surname)
        if shape in ("two_parents", "single_father"):
            members.append(father_ref)
        if shape == "single_mother" and has_father:
            # The father lives elsewhere, in his own (one-person) household.
            households[f"{hid}-F"] = {"address": _address(rng), "members": [father_ref]}
        if shape == "single_father":
            households[f"{hid}-M"] = {"address": _address(rng), "members": [mother_ref]}

        if shape != "single_adult":
            authority = {
                "two_parents": {
                    "type": "gezamenlijk_gezag_ouders",
                    "holders": [mother_ref, father_ref],
                },
                "single_mother": {
                    "type": "eenhoofdig_gezag_moeder",
                    "holders": [mother_ref],
                    "parents_without_authority": [father_ref],
                },
                "single_father": {
                    "type": "eenhoofdig_gezag_vader",
                    "holders": [father_ref],
                    "parents_without_authority": [mother_ref],
                },
            }[shape]
            for k in range(1, rng.randint(1, 3) + 1):
                ref = f"{fid}-C{k}"
                gender = rng.choice("MV")
                persons[ref] = {
                    **_person(rng, bsns, gender, _birth(rng, 2009, 2025), surname),
                    "authority": authority,
                }
                members.append(ref)

        households[hid] = {"address": address, "members": members}
        roll = rng.random()
        if roll < 0.2:
            opened = _birth(rng, 2024, 2026)
            record: dict[str, Any] = {
                "case_opened": opened.isoformat(),
                "origin": rng.choice(_ORIGINS),
            }
            if rng.random() < 0.5:
                record["case_closed"] = (opened + timedelta(days=rng.randint(30, 200))).isoformat()
            vt_register[hid] = record
            if roll < 0.05:
                mda[hid] = {
                    "mda_case_id": f"MDA-LB-{opened.year}-{fam:05d}",
                    "registered": (opened + timedelta(days=30)).isoformat(),
                    "brought_in_by": "veilig_thuis",
                }

    return {
        "kind": "registry",
        "households": households,
        "persons": persons,
        "veilig_thuis_register": vt_register,
        "mda_cases": mda,
    }
