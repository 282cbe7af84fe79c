"""Full partitions on a machine: their lifecycle, windows, serial cables and console.

:class:`FullPartitions` is what :class:`spk.Machine` composes for
``virtualization = "full"`` partitions, beside its paravirtual paths: it
grants the contiguous quota, builds each partition's own engine, vCPU, MMU
and devices (:class:`spk._fv_partition.FullMachine`), runs its windows,
turns COM1's bytes into console lines, and wires serial ports to channels
(a null-modem cable to another partition: the only way an unmodified OS,
which knows no hypercall, talks to the others).

Errors: ImageError (a kernel that cannot be loaded), OutOfMemory (no
contiguous run of frames), SpkError NOT_FOUND / INVALID_ARGUMENT for an
unknown partition, port or channel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from spk._channels import Channel, ChannelKind, Direction, Port
from spk._frames import FrameTable, PhysicalMemory
from spk._fv_devices import COM_PORTS, SerialLink
from spk._fv_partition import MMU_MODES, FullMachine, FullPartition, memory_needed, read_pc_image
from spk._partition import State
from spk.abi import Register, Status
from spk.errors import ImageError, InternalError, OutOfMemory, SpkError

PAGE = 4096
#: messages a serial cable keeps for a channel whose queues are full, before it drops (and counts)
SERIAL_BACKLOG = 64


@dataclass
class SerialCable:
    """A UART of a full partition wired to one port of a channel."""

    base: int
    port: Port
    link: SerialLink
    backlog: list[bytes] = field(default_factory=list)
    dropped: int = 0
    fed: int = -1  #: sampling destination: the channel's ``sent`` last fed to the guest


class FullPartitions:
    """The full partitions of one machine (ring 0 mechanism: no policy)."""

    def __init__(
        self,
        ram: PhysicalMemory,
        frames: FrameTable,
        *,
        time_mode: str,
        emit: Callable[[FullPartition, str, dict[str, object]], None],
        console: Callable[[FullPartition, bytes], None],
        now: Callable[[], int],
    ) -> None:
        self.ram = ram
        self.frames = frames
        self.time_mode = time_mode
        self._emit = emit
        self._console = console
        self._now = now
        self.machines: dict[int, FullMachine] = {}
        self.cables: dict[int, list[SerialCable]] = {}

    # -- lifecycle -------------------------------------------------------------
    def create(
        self, pid: int, name: str, kernel_elf: bytes, quota: int, mmu: str, *,
        frame_hint: int, exact: bool, kernel_name: str, config_digest: bytes | None,
    ) -> FullPartition:  # fmt: skip
        """Grant ``quota`` contiguous frames, load the kernel, bring its vCPU to the entry.

        Errors: ImageError (rule "mmu", the ELF rules of read_pc_image,
        "quota" when the kernel and the boot tables do not fit),
        OutOfMemory (no contiguous run).
        """
        if mmu not in MMU_MODES:
            raise ImageError(f"{name}: mmu {mmu!r} (one of {', '.join(MMU_MODES)})", "mmu")
        image = read_pc_image(kernel_elf)
        if memory_needed(image) > quota * PAGE:
            raise ImageError(
                f"{name}: {quota} frames hold less than the kernel and its boot tables "
                f"({memory_needed(image) // PAGE} frames)", "quota",
            )  # fmt: skip
        granted = self.frames.grant(pid, quota, frame_hint, exact=exact)
        if granted != list(range(granted[0], granted[0] + quota)):
            self.frames.reclaim(pid)
            raise OutOfMemory(f"{name}: a full partition needs {quota} contiguous frames; RAM is fragmented")
        part = FullPartition(pid=pid, name=name, quota=quota, mmu_mode=mmu, first_frame=granted[0], image=image)
        try:
            self._start(part)
        except Exception:
            self.frames.reclaim(pid)
            raise
        if config_digest is not None:
            part.measurements.extend(Register.CONFIG, config_digest, "config", "system description")
        part.measurements.extend(Register.KERNEL, hashlib.sha256(image.measured).digest(), "kernel_image", kernel_name)
        return part

    def _start(self, part: FullPartition) -> None:
        def output(data: bytes) -> None:
            self._console(part, data)

        self.machines[part.pid] = FullMachine(part, self.ram.view, self.ram.address, time_mode=self.time_mode,
                                              on_output=output)  # fmt: skip
        self.cables.setdefault(part.pid, [])

    def destroy(self, part: FullPartition) -> int:
        """Close its engine and return its frames; returns how many."""
        machine = self.machines.pop(part.pid, None)
        if machine is not None:
            machine.close()
        for cable in self.cables.pop(part.pid, []):
            # a destination nobody reads any more must not fill up and hold its senders back
            if cable.port in cable.port.channel.destinations:
                cable.port.channel.destinations.remove(cable.port)
        return self.frames.reclaim(part.pid)

    def reset(self, part: FullPartition, kernel_elf: bytes | None = None) -> None:
        """Restart from its kernel's entry with zeroed memory (a new image when given), cables kept."""
        machine = self.machines.pop(part.pid)
        old_cables = self.cables.get(part.pid, [])
        machine.close()
        if kernel_elf is not None:
            part.image = read_pc_image(kernel_elf)
        self.ram.view[part.first_frame * PAGE : (part.first_frame + part.quota) * PAGE] = bytes(part.quota * PAGE)
        part.state, part.exit_code, part.fault = State.READY, None, None
        part.timer_deadline = 0
        part.console_buffer.clear()
        self._start(part)
        self.cables[part.pid] = []
        for cable in old_cables:
            self._wire(part, cable.base, cable.port)

    # -- serial cables -----------------------------------------------------------
    def attach_serial(self, part: FullPartition, base: int, channel: Channel, direction: Direction) -> None:
        """Wire the UART at ``base`` (COM2..COM4; COM1 as well) to a new port of ``channel``.

        Errors: SpkError(INVALID_ARGUMENT) for a port that is not a COM port or a UART wired
        twice; nothing is attached then.
        """
        if base not in COM_PORTS:
            raise SpkError(Status.INVALID_ARGUMENT, f"{part.name}: no COM port at {base:#x}")
        if any(c.base == base for c in self.cables.get(part.pid, [])):
            raise SpkError(Status.INVALID_ARGUMENT, f"{part.name}: the UART at {base:#x} is wired already")
        # the port is made only now: a port joins its channel's destinations when it is made
        self._wire(part, base, Port(part.pid, f"com@{base:#x}", direction, channel))

    def _wire(self, part: FullPartition, base: int, port: Port) -> None:
        cables = self.cables.setdefault(part.pid, [])
        machine = self.machines[part.pid]
        cable: SerialCable

        def send(message: bytes) -> None:
            cable.backlog.append(message)
            self._drain(cable)

        link = machine.devices.attach(base, send, port.channel.message_size)
        cable = SerialCable(base, port, link)
        cables.append(cable)

    def _drain(self, cable: SerialCable) -> None:
        channel: Channel = cable.port.channel
        while cable.backlog:
            try:
                channel.send(cable.port, cable.backlog[0], self._now())
            except SpkError as exc:
                if exc.status is not Status.BUSY:
                    cable.dropped += 1
                    cable.backlog.pop(0)
                    continue
                if len(cable.backlog) > SERIAL_BACKLOG:
                    cable.backlog.pop(0)
                    cable.dropped += 1
                return
            cable.backlog.pop(0)

    def _deliver_cables(self, part: FullPartition) -> None:
        """Before a window: channel messages into the UARTs' receive side, backlog out."""
        machine = self.machines[part.pid]
        for cable in self.cables.get(part.pid, []):
            if cable.port.direction is Direction.SOURCE:
                self._drain(cable)
                continue
            channel = cable.port.channel
            clock = machine.pit_clock(self._now())
            if channel.kind is ChannelKind.SAMPLING:
                if channel.latest is not None and channel.sent != cable.fed:
                    cable.fed = channel.sent
                    cable.link.feed(channel.latest, clock)
                    channel.received += 1
                continue
            # The UART's line holds what its receiver has not taken yet; a message leaves the
            # channel's queue only when the line is nearly drained, so a slow reader holds the
            # channel back (the sender sees BUSY) instead of ring 0 buffering without bound.
            while cable.port.queue and cable.link.uart.waiting < channel.message_size:
                message = channel.peek(cable.port)
                channel.consume(cable.port)
                cable.link.feed(message, clock)

    def serial_input(self, part: FullPartition, base: int, data: bytes) -> None:
        """Bytes on the receive line of the UART at ``base`` (ring 1's ``stdin`` feeds COM1)."""
        if base not in COM_PORTS:
            raise SpkError(Status.INVALID_ARGUMENT, f"{part.name}: no COM port at {base:#x}")
        self.machines[part.pid].serial_input(base, data)

    # -- running -----------------------------------------------------------------
    def run(self, part: FullPartition, start: int, until: int) -> tuple[str, int]:
        """One window of a full partition: (reason, end time), reasons as Machine.run's."""
        machine = self.machines[part.pid]
        if part.state is State.BLOCKED:  # halted: the vCPU wakes itself (timer, serial input)
            part.state = State.READY
            part.timer_deadline = 0
        self._deliver_cables(part)
        part.counters.windows += 1
        reason, end, wake = machine.run(start, until)
        if reason == "blocked":
            part.state = State.BLOCKED
            part.timer_deadline = wake
        elif reason == "exit":
            part.state = State.EXITED
        elif reason == "window_end":
            part.counters.preemptions += 1
        for cable in self.cables.get(part.pid, []):
            if cable.port.direction is Direction.SOURCE:
                self._drain(cable)
        return reason, end

    def check_invariants(self, pids: object = None) -> None:
        """Each full partition's engine maps its quota (and a shadow its pool) and nothing else.

        Errors: InternalError naming the partition and the region found.
        """
        for pid, machine in self.machines.items():
            if pids is not None and pid not in pids:  # type: ignore[operator]
                continue
            expected = sorted((start, start + size - 1) for start, size, _host in machine.mmu.engine_regions())
            found = sorted(machine.engine.regions())
            if found != expected:
                raise InternalError(f"{machine.part.name}: its engine maps {found}, not only its memory {expected}")
            audit = getattr(machine.mmu, "audit", None)
            problems = audit() if audit is not None else []  # a shadow MMU: leaves inside the quota, tables read-only
            if problems:
                raise InternalError(f"{machine.part.name}: shadow tables: {'; '.join(problems[:3])}")
            first, count = machine.part.first_frame, machine.part.quota
            owned = self.frames.owned(pid)
            if owned != list(range(first, first + count)):
                raise InternalError(f"{machine.part.name}: owns frames other than its quota run")

    def describe(self, part: FullPartition) -> dict[str, object]:
        machine = self.machines[part.pid]
        out = machine.describe()
        out["devices"] = machine.devices.describe()
        out["serial_cables"] = [
            {"port_base": c.base, "channel": c.port.channel.cid, "port": c.port.name,
             "direction": c.port.direction.value, "dropped": c.dropped}
            for c in self.cables.get(part.pid, [])
        ]  # fmt: skip
        return out
