"""Partner API adapter: reaches a provider's system over the broker's partner HTTP API."""

from adapters.partner_api.adapter import FETCH_PATH, BreakerState, PartnerApiAdapter

__all__ = ["FETCH_PATH", "BreakerState", "PartnerApiAdapter"]
