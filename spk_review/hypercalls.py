"""The hypercall table as this system sees it: number, name, who may call it.

Which check ring 0 makes before a hypercall does anything is ABI knowledge
(docs/abi.md, one section per call): the management calls need the
``system`` capability, the port calls a port of the right direction, ATTEST
an attestation key on the platform, the rest nothing. :data:`REQUIRES` states
it once; a test checks it against docs/abi.md. *Who* passes each check is
read from the booted system: the capability bit and the ports ring 1 gave
each running partition (ring 0's own records), and the configuration only
for partitions that are declared but not running.
"""

from __future__ import annotations

from spgs.system import System
from spk.abi import Hypercall
from spk_review.model import HypercallAccess, Requirement

#: The check ring 0 makes on the caller; a hypercall not listed has none ("any").
REQUIRES: dict[Hypercall, Requirement] = {
    Hypercall.ATTEST: "attestation_key",
    Hypercall.PORT_OPEN: "any_port",
    Hypercall.PORT_STATUS: "any_port",
    Hypercall.PORT_SEND: "source_port",
    Hypercall.PORT_RECEIVE: "destination_port",
    Hypercall.PART_LIST: "system_role",
    Hypercall.PART_QUERY: "system_role",
    Hypercall.PART_CONTROL: "system_role",
}

_DETAIL: dict[Requirement, str] = {
    "any": "every partition: the call acts only on the caller's own objects",
    "system_role": "partitions of role system (ring 0's management capability); the others get DENIED",
    "any_port": "partitions holding a port; PORT_OPEN of a name the configuration did not give is NOT_FOUND",
    "source_port": "holders of a source port; on a destination port the call is DENIED",
    "destination_port": "holders of a destination port; on a source port the call is DENIED",
    "attestation_key": "every partition while the platform holds an attestation key (the review boots with one); "
    "without a key the call is NOT_SUPPORTED",
}


def _capabilities(system: System) -> dict[str, tuple[bool, list[tuple[str, str]]]]:
    """Per partition that can run: (system capability, [(port, direction)]), marking declared ones.

    Running partitions are read from ring 0; declared ones from the
    configuration (ring 1 gives them exactly that when it starts them).
    Refused partitions never run and are left out, and so are full
    partitions: an unmodified PC kernel has no hypercall (its ``int`` and
    ``syscall`` go to its own IDT and LSTAR; its channels are serial cables).
    """
    machine = system.machine
    caps: dict[str, tuple[bool, list[tuple[str, str]]]] = {}
    running = {p.name: p for p in machine.partitions.values()}
    full = {machine.info(pid).name for pid in machine.partitions if machine.info(pid).virtualization == "full"}
    full |= {plan.name for plan in system.plans if plan.config.full}
    refused = {r.name for r in system.refused}
    for plan in system.plans:
        if plan.name in refused or plan.name in full:
            continue
        p = running.get(plan.name)
        if p is not None:
            caps[plan.name] = (p.may_manage, [(n, port.direction.value) for n, port in p.ports.items()])
        else:
            ports = [(port.name, str(port.direction)) for port in plan.config.ports]
            caps[f"{plan.name} (declared)"] = (plan.config.role == "system", ports)
    return caps


def hypercall_table(system: System) -> list[HypercallAccess]:
    """Every hypercall of the ABI with the partitions that pass ring 0's check on it."""
    caps = _capabilities(system)
    has_key = system.machine.attestation_public_key is not None
    rows = []
    for call in Hypercall:
        requires: Requirement = REQUIRES.get(call, "any")
        if requires == "system_role":
            callers = [name for name, (manage, _ports) in caps.items() if manage]
        elif requires in ("any_port", "source_port", "destination_port"):
            wanted = requires.removesuffix("_port")
            callers = [
                f"{name}.{port}" for name, (_m, ports) in caps.items() for port, d in ports if wanted in ("any", d)
            ]
        elif requires == "attestation_key":
            callers = list(caps) if has_key else []
        else:
            callers = list(caps)
        rows.append(
            HypercallAccess(
                number=int(call), name=call.name, requires=requires, callers=callers, detail=_DETAIL[requires]
            )
        )
    return rows
