"""Municipality adapter (wijkteam and schuldhulpverlening: involvement, debts, housing)."""

from adapters.municipality.adapter import MAPPING_PATH, MunicipalityAdapter

__all__ = ["MAPPING_PATH", "MunicipalityAdapter"]
