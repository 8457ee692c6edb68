"""Deterministic fictional partner systems and population register for tests and load tests.

Run ``python -m adapters.simulators serve`` (see ``__main__``) or use :func:`start_simulators`
in-process. Everything they serve is invented (see data/lindeburg.yaml).
"""

from adapters.simulators.faults import FaultConfig
from adapters.simulators.partner import PARTY_ORDER
from adapters.simulators.runner import RunningSimulators, build_world, port_for, start_simulators

__all__ = [
    "PARTY_ORDER",
    "FaultConfig",
    "RunningSimulators",
    "build_world",
    "port_for",
    "start_simulators",
]
