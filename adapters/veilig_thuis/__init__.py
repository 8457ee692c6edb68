"""Veilig Thuis adapter (case files, reports, safety assessments, status, contact person)."""

from adapters.veilig_thuis.adapter import MAPPING_PATH, VeiligThuisAdapter

__all__ = ["MAPPING_PATH", "VeiligThuisAdapter"]
