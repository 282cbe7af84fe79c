"""Full-virtualization partitions as the review sees them: trapped operations, devices, cables, memory.

A ``virtualization = "full"`` partition runs an unmodified PC kernel on an
engine of its own (docs/fullvirt.md). What a reviewer asks of it is read
from ring 0 after the review's run, through the public API only:

* what its virtual CPU traps, the static list :func:`spk.full_trapped_operations`
  (derived by ring 0 from its emulator's handlers and its hooks), each with
  the number of times the guest did it in the run
  (``Machine.full_state(pid)["traps"]``); a counter the list does not name
  is shown too, marked;
* its emulated devices: ports, interrupt line, what went through them;
* its serial cables: a UART wired to a channel port, which is how an
  unmodified kernel reaches another partition (an edge of the
  information-flow graph exactly as a paravirtual port);
* its memory map: the regions its own engine maps (the quota at
  engine-physical 0; for a shadow MMU also ring 0's shadow pool), its quota
  frames, and the statement ``Machine.check_invariants()`` proves when it
  holds: the engine maps those regions and nothing else, and the partition
  owns exactly its quota run.

Errors: none of its own; SpkError(NOT_FOUND) from ``Machine.full_state``
cannot happen for the pids passed (only full partitions are read).
"""

from __future__ import annotations

from collections.abc import Mapping

from spk import Machine, full_trapped_operations
from spk.abi import PAGE_SIZE
from spk_review.model import (
    DeviceFacts,
    EngineRegion,
    FullMemory,
    FullPartitionFacts,
    SerialCableFacts,
    TrappedOperation,
)

#: The PC's serial ports (the UART each base is), as ring 1's ``serial = "com2"`` names them.
UARTS = {0x3F8: "COM1", 0x2F8: "COM2", 0x3E8: "COM3", 0x2E8: "COM4"}
#: The counter ring 0 uses for "any other exception N" in the static list.
_EXCEPTION = "exception_N"
NOT_LISTED = "not in the static table"


def full_pids(machine: Machine) -> list[int]:
    """The running full-virtualization partitions, by pid."""
    return [pid for pid in sorted(machine.partitions) if machine.info(pid).virtualization == "full"]


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def trapped_operations(counts: Mapping[str, int]) -> list[TrappedOperation]:
    """The static list of what the vCPU traps, with the run's counts, then any counter the list lacks.

    ``exception_13`` and its kind are counted under the list's ``exception_N`` row and shown by name.
    """
    table = full_trapped_operations()
    rows = [TrappedOperation(operation=op, how=how, count=counts.get(op, 0)) for op, how in table.items()
            if op != _EXCEPTION]  # fmt: skip
    for op, count in sorted(counts.items()):
        if op in table:
            continue
        if op.startswith("exception_") and _EXCEPTION in table:
            rows.append(TrappedOperation(operation=op, how=table[_EXCEPTION], count=count))
        else:
            rows.append(TrappedOperation(operation=op, how=NOT_LISTED, count=count))
    if _EXCEPTION in table and not any(r.operation.startswith("exception_") for r in rows):
        rows.append(TrappedOperation(operation=_EXCEPTION, how=table[_EXCEPTION], count=0))
    return sorted(rows, key=lambda r: r.operation)


def _ports(value: object) -> list[int]:
    """A device's ports: ring 0 lists a UART or the PIT as (first, last), the PIC pair port by port."""
    ports = [p for p in value if isinstance(p, int)] if isinstance(value, (tuple, list)) else []
    if len(ports) == 2 and ports[1] > ports[0] + 1:
        return list(range(ports[0], ports[1] + 1))
    return ports


def _activity(value: object) -> int | str | list[int] | None:
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, int)]
    if value is None or isinstance(value, (int, str)):
        return value
    return str(value)


def devices(state: Mapping[str, object]) -> list[DeviceFacts]:
    """Every emulated device of a full partition, as ``full_state()["devices"]`` lists them."""
    out = []
    for raw in _list(state.get("devices")):
        d = _dict(raw)
        irq = d.get("irq")
        activity = {k: _activity(v) for k, v in d.items() if k not in ("device", "ports", "irq")}
        out.append(DeviceFacts(device=str(d.get("device")), ports=_ports(d.get("ports")),
                               irq=irq if isinstance(irq, int) else None, activity=activity))  # fmt: skip
    return out


def serial_cables(
    state: Mapping[str, object], channel_names: Mapping[int, str], port_names: Mapping[tuple[str, str], str]
) -> list[SerialCableFacts]:
    """A full partition's UARTs wired to channels.

    ``channel_names`` names ring 0's channel ids; ``port_names`` maps
    (UART, direction) to the configured port's name (ring 0 names the port
    after its UART when ring 1 gave none).
    """
    sent = {int(d.ports[0]): d.activity.get("messages_sent") for d in devices(state) if d.ports}
    out = []
    for raw in _list(state.get("serial_cables")):
        c = _dict(raw)
        base, direction = _int(c.get("port_base")), str(c.get("direction"))
        uart = UARTS.get(base, f"UART {base:#x}")
        cid = _int(c.get("channel"))
        messages = sent.get(base)
        out.append(
            SerialCableFacts(
                uart=uart, port_base=base, port=port_names.get((uart, direction), str(c.get("port"))),
                channel=channel_names.get(cid, f"channel {cid}"),
                direction="source" if direction == "source" else "destination",
                messages=messages if isinstance(messages, int) and direction == "source" else None,
                dropped=_int(c.get("dropped")),
            )
        )  # fmt: skip
    return out


def full_partition_facts(
    machine: Machine,
    pid: int,
    channel_names: Mapping[int, str] | None = None,
    port_names: Mapping[tuple[str, str], str] | None = None,
) -> FullPartitionFacts:
    """What ring 0 reports of full partition ``pid`` now: trapped operations, devices, serial cables."""
    info = machine.info(pid)
    state = machine.full_state(pid)
    counts = {str(k): _int(v) for k, v in _dict(state.get("traps")).items()}
    registers = {str(k): _int(v) for k, v in _dict(state.get("virtual_registers")).items()}
    return FullPartitionFacts(
        name=info.name, pid=pid, mmu="shadow" if info.mmu == "shadow" else "nested", state=info.state,
        trapped=trapped_operations(counts), devices=devices(state),
        serial_cables=serial_cables(state, channel_names or {}, port_names or {}), virtual_registers=registers,
    )  # fmt: skip


def full_memory(machine: Machine, pid: int, *, invariants_hold: bool) -> FullMemory:
    """A full partition's engine memory map, its quota run, and what the invariant check proves of it."""
    info = machine.info(pid)
    state = machine.full_state(pid)
    mmu = _dict(state.get("mmu"))
    regions = [
        EngineRegion(engine_physical=_int(r.get("engine_physical")), size=_int(r.get("size")), what=str(r.get("what")))
        for r in map(_dict, _list(mmu.get("regions")))
    ]  # fmt: skip
    quota = next((_dict(q) for q in _list(state.get("memory")) if _dict(q).get("what") == "quota"), {})
    first, frames = _int(quota.get("host_frame")), _int(quota.get("size")) // PAGE_SIZE
    stats = {k: v for k, v in mmu.items() if isinstance(v, int) and not isinstance(v, bool)}
    proven = None
    if invariants_hold:
        spans = "; ".join(f"[{r.engine_physical:#x}, {r.engine_physical + r.size:#x}) {r.what}" for r in regions)
        proven = (
            f"Machine.check_invariants() holds: the engine of {info.name} maps exactly {spans} and nothing else, "
            f"so its vCPU can name no other memory whatever its page tables, GDT or I/O say; and {info.name} owns "
            f"exactly frames {first:#x}..{first + frames - 1:#x}, its quota run"
        )
    return FullMemory(
        mmu="shadow" if info.mmu == "shadow" else "nested", quota_first_frame=first, quota_frames=frames,
        regions=regions, mmu_counts={str(k): _int(v) for k, v in _dict(mmu.get("counts")).items()},
        mmu_stats=stats, proven=proven,
    )  # fmt: skip
