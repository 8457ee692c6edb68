"""Adapter SDK: the pieces every partner adapter shares.

- :mod:`adapters.sdk.calls`: one resilient way to call an endpoint (pooled session, total
  deadline, bounded retries with jitter, circuit breaker per endpoint).
- :mod:`adapters.sdk.mapping`: declarative mapping files (source resource, selection, field
  paths and transforms -> catalogue element ids), validated against the catalogue at start-up
  with ``file:line`` errors.
- :mod:`adapters.sdk.source`: :class:`MappedRestAdapter`, the generic engine that serves a
  JSON REST source system from such a mapping file.
"""

from adapters.sdk.calls import Call, CallEnd, CallFailed, Guarded, ResilientHttp
from adapters.sdk.mapping import MappingError, SourceMapping, load_source_mapping
from adapters.sdk.source import MappedRestAdapter

__all__ = [
    "Call",
    "CallEnd",
    "CallFailed",
    "Guarded",
    "MappedRestAdapter",
    "MappingError",
    "ResilientHttp",
    "SourceMapping",
    "load_source_mapping",
]
