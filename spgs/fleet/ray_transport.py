"""Fleet hosts as Ray actors: one actor per host, each its own process with its own SPK machine.

Ray places the actors (on this machine, or across a cluster given its
address), runs their phases in parallel and carries the messages, payloads
included, between the driver and them. It decides nothing: which partition
moves where follows from the fleet file, the seed and the hosts' gossip
(:mod:`spgs.fleet.runner` sorts every inbox and gathers results by host
name, so the order Ray runs things in never shows). A failure in the fleet
file is a real one: the actor is killed (``ray.kill``), and its neighbours
notice only its silence.

Errors: RuntimeError when the ``cluster`` extra (Ray) is not installed,
when Ray cannot start or reach the cluster, or when an actor fails other
than by the fleet file's will.
"""

from __future__ import annotations

from typing import Any

from spgs.fleet.host import FleetHost, HostSpec
from spgs.fleet.messages import Message, PhaseResult
from spgs.fleet.moves import Mover

#: ``--ray local`` (the default) starts a Ray instance on this machine for the run.
LOCAL = "local"


class _HostActor:
    """The body of a host's actor: a :class:`FleetHost`, called one phase at a time."""

    def __init__(self, spec: HostSpec) -> None:
        self.host = FleetHost(spec, Mover(spec.settings.seed))

    def phase(self, name: str, round_: int, inbox: list[Message]) -> PhaseResult:
        result: PhaseResult = getattr(self.host, name)(round_, inbox)
        return result


class RayTransport:
    """Hosts in Ray actors on the cluster at ``address`` (``local``: a Ray instance started for the run).

    When Ray is already initialised in this process (a test's shared
    instance) it is used as it is and left running.
    """

    def __init__(self, address: str = LOCAL) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError("spk fleet needs the cluster extra (Ray): pip install '.[cluster]'") from exc
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            try:
                ray.init(address=None if address == LOCAL else address, include_dashboard=False,
                         log_to_driver=False)  # fmt: skip
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise RuntimeError(f"cannot start or reach Ray at {address!r}: {exc}") from None
        # No CPU is reserved per actor: a host is idle between phases, and a fleet
        # may have more hosts than the machine has cores.
        self._actor: Any = ray.remote(num_cpus=0, max_restarts=0)(_HostActor)
        self._actors: dict[str, Any] = {}

    def create(self, spec: HostSpec) -> None:
        self._actors[spec.name] = self._actor.remote(spec)

    def call(self, phase: str, round_: int, inboxes: dict[str, list[Message]]) -> dict[str, PhaseResult]:
        names = sorted(inboxes)
        refs = [self._actors[name].phase.remote(phase, round_, inboxes[name]) for name in names]
        try:
            return dict(zip(names, self._ray.get(refs), strict=True))
        except self._ray.exceptions.RayError as exc:  # a host crashed (a bug) or Ray lost an actor
            raise RuntimeError(f"round {round_}, phase {phase}: a host's actor failed: {exc}") from exc

    def kill(self, name: str) -> None:
        actor = self._actors.pop(name)
        self._ray.kill(actor, no_restart=True)

    def close(self) -> None:
        for name in sorted(self._actors):
            self._ray.kill(self._actors.pop(name), no_restart=True)
        if self._started:
            self._ray.shutdown()
