"""Police adapter (incidents, zorgmeldingen, house bans over the police JSON REST API)."""

from adapters.police.adapter import MAPPING_PATH, PoliceAdapter

__all__ = ["MAPPING_PATH", "PoliceAdapter"]
