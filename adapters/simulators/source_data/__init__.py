"""Deterministic records of the simulated source systems (police, Raad, Veilig Thuis and the
municipal social domain), in each system's own shape, derived from the fictional world.

The Lindeburg households get the facts of the domain scenarios (S01: the assault at Esdoornlaan
12 on 14 March 2026 with Ruben P01 as suspect and his earlier registrations; S03: the Veilig
Thuis investigation of the Hoekstra household; the Mansour household's closed case). Synthetic
families (``generate.py``) get records by fixed rules from their Veilig Thuis record and MDA++
case, with choices taken from a hash of their ids, so every run serves the same data. Every
name, number and text is invented.

Each ``*_records`` function answers one resource for one person: a list of records, one record
(a dict), or ``None`` when the system does not know the person.
"""

from __future__ import annotations

from collections.abc import Callable

from adapters.simulators.registry import Person
from adapters.simulators.source_data._common import Answer
from adapters.simulators.source_data.municipality import (
    gm_arrears,
    gm_debt_trajectory,
    gm_housing,
    gm_mda_cases,
    gm_resident,
    gm_signals,
)
from adapters.simulators.source_data.police import (
    police_house_bans,
    police_incidents,
    police_person,
    police_zorgmeldingen,
)
from adapters.simulators.source_data.raad import (
    raad_authority,
    raad_investigations,
    raad_measures,
    raad_person,
)
from adapters.simulators.source_data.veilig_thuis import (
    vt_assessments,
    vt_chain_information,
    vt_conclusions,
    vt_dossiers,
    vt_person,
    vt_reports,
    vt_safety_agreements,
)
from adapters.simulators.values import World

__all__ = ["RESOURCES", "raad_measures"]

RESOURCES: dict[str, Callable[[World, Person], Answer]] = {
    "police_person": police_person,
    "police_incidents": police_incidents,
    "police_zorgmeldingen": police_zorgmeldingen,
    "police_house_bans": police_house_bans,
    "raad_person": raad_person,
    "raad_investigations": raad_investigations,
    "raad_measures": raad_measures,
    "raad_authority": raad_authority,
    "vt_person": vt_person,
    "vt_dossiers": vt_dossiers,
    "vt_reports": vt_reports,
    "vt_assessments": vt_assessments,
    "vt_conclusions": vt_conclusions,
    "vt_safety_agreements": vt_safety_agreements,
    "vt_chain_information": vt_chain_information,
    "gm_resident": gm_resident,
    "gm_mda_cases": gm_mda_cases,
    "gm_signals": gm_signals,
    "gm_arrears": gm_arrears,
    "gm_debt_trajectory": gm_debt_trajectory,
    "gm_housing": gm_housing,
}
