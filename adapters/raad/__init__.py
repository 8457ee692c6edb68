"""Raad voor de Kinderbescherming adapter (investigations, measures, authority)."""

from adapters.raad.adapter import MAPPING_PATH, RaadAdapter

__all__ = ["MAPPING_PATH", "RaadAdapter"]
