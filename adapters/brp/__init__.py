"""Population-register (BRP) client in the Haal Centraal "BRP Personen Bevragen" shape."""

from adapters.brp.client import BRP_PATH, MAX_BATCH, BrpRegister

__all__ = ["BRP_PATH", "MAX_BATCH", "BrpRegister"]
