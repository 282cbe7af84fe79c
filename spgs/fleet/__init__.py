"""A fleet of SPK hosts that balances itself: gossip with a few neighbours, local rules, live migration.

``load_fleet`` reads a ``fleet.toml``; ``run_fleet`` runs it on a transport
(``RayTransport`` in :mod:`spgs.fleet.ray_transport`, or ``LocalTransport``)
and returns a :class:`FleetReport`; :class:`FleetStatus` is the live view a
management API serves. docs/fleet.md explains the rules and the numbers.
"""

from spgs.fleet.config import FleetDescription, LoadedFleet, load_fleet
from spgs.fleet.report import FleetReport, FleetStatus
from spgs.fleet.runner import LocalTransport, run_fleet, scaling_description

__all__ = [
    "FleetDescription",
    "FleetReport",
    "FleetStatus",
    "LoadedFleet",
    "LocalTransport",
    "load_fleet",
    "run_fleet",
    "scaling_description",
]
