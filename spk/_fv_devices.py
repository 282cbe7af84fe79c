"""Emulated PC devices of a full-virtualization partition (ring 0).

An unmodified PC kernel (docs/fullvirt.md, partitions/pcref) drives
hardware by port I/O. Ring 0 traps every ``in`` and ``out`` of such a
partition (the engine's instruction hooks) and hands it to these models:

- :class:`Uart16550`: COM1's registers; bytes written to THR are console output.
- :class:`Pic8259Pair`: the master and slave 8259s (IRR, ISR, IMR, the ICW
  sequence, non-specific and specific EOI, OCW3 register select).
- :class:`Pit8253`: channel 0 of the 8253/8254 on *virtual* time, counted
  in PIT input clocks (1.193182 MHz); modes 0, 2 and 3.
- :class:`DebugExit`: QEMU's ``isa-debug-exit`` port; a byte written there
  ends the partition with that status.

:class:`PcDevices` puts them on their ports and wires the PIT to IRQ 0.
Nothing here knows the engine, the machine or the clock: ring 0 passes
virtual time in and takes interrupt vectors and console bytes out, so the
models are deterministic and unit-tested alone (tests/test_fv_devices.py,
which also replays QEMU's own trace of the reference kernel's port I/O).

Behaviour not modelled, on purpose (the reference kernel does not use it):
UART input, its modem lines and its interrupt line; 8259 rotation, special
mask and poll modes and level-triggered inputs; PIT channels 1 and 2,
modes 1, 4 and 5, BCD counting and the read-back command. A write there is
accepted and ignored; a read returns what a real part's idle state would.

Errors: none. A guest can write anything to any port; every value is
accepted (a misbehaving guest cannot crash ring 0 through a device).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: PIT input clock, Hz.
PIT_HZ = 1_193_182
UART_BASE = 0x3F8
PIC_MASTER, PIC_SLAVE = 0x20, 0xA0
PIT_BASE = 0x40
DEBUG_EXIT_PORT = 0xF4

_LSR_THRE, _LSR_TEMT = 0x20, 0x40
_IER_THRI = 0x02


@dataclass
class Uart16550:
    """A 16550 whose transmitter is infinitely fast and whose receiver never receives.

    LSR always says THR and the transmitter are empty; every THR write is
    appended to :attr:`output`. IIR reports a pending THR-empty interrupt
    when IER enables it, cleared by reading IIR or writing THR, as on the
    part (QEMU's model does the same).
    """

    ier: int = 0
    lcr: int = 0
    mcr: int = 0
    fcr: int = 0
    scr: int = 0
    dll: int = 0
    dlm: int = 0
    thr_pending: bool = False
    output: bytearray = field(default_factory=bytearray)

    @property
    def dlab(self) -> bool:
        return bool(self.lcr & 0x80)

    def read(self, offset: int) -> int:
        """The register at ``offset`` (0-7) from the base, as an ``in`` sees it."""
        if offset == 0:
            return self.dll if self.dlab else 0  # RBR: nothing received
        if offset == 1:
            return self.dlm if self.dlab else self.ier
        if offset == 2:
            fifo = 0xC0 if self.fcr & 0x01 else 0
            if self.thr_pending:
                self.thr_pending = False
                return fifo | 0x02
            return fifo | 0x01  # no interrupt pending
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            return _LSR_THRE | _LSR_TEMT
        if offset == 6:
            return 0  # MSR: no modem lines
        return self.scr

    def write(self, offset: int, value: int) -> None:
        """An ``out`` of ``value`` to the register at ``offset`` (0-7)."""
        value &= 0xFF
        if offset == 0:
            if self.dlab:
                self.dll = value
            else:
                self.output.append(value)
                self.thr_pending = bool(self.ier & _IER_THRI)  # sent at once: empty again
        elif offset == 1:
            if self.dlab:
                self.dlm = value
            else:
                if value & _IER_THRI and not self.ier & _IER_THRI:
                    self.thr_pending = True  # enabling it with THR empty raises it
                self.ier = value & 0x0F
        elif offset == 2:
            self.fcr = value & 0xC9  # the clear bits (1, 2) self-clear: nothing to clear
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value & 0x1F
        elif offset == 7:
            self.scr = value
        # 5 and 6 (LSR, MSR) are read-only: a write is ignored


@dataclass
class Pic8259:
    """One 8259A in the mode a PC uses: edge-triggered, fixed priority (IRQ 0 highest)."""

    irr: int = 0
    isr: int = 0
    imr: int = 0
    vector_base: int = 0
    auto_eoi: bool = False
    read_isr: bool = False
    init_step: int = 0  # 0 ready; 1, 2, 3 expecting ICW2, ICW3, ICW4
    needs_icw4: bool = False
    single: bool = False
    levels: int = 0  # the input lines as last set (edges raise IRR)

    def write(self, a0: int, value: int) -> None:
        """An ``out`` to the command port (``a0`` 0) or the data port (``a0`` 1)."""
        value &= 0xFF
        if a0 == 0:
            if value & 0x10:  # ICW1: start initialization
                self.irr = self.isr = self.imr = self.levels = 0
                self.read_isr = self.auto_eoi = False
                self.needs_icw4, self.single = bool(value & 0x01), bool(value & 0x02)
                self.init_step = 1
            elif value & 0x08:  # OCW3
                if value & 0x02:
                    self.read_isr = bool(value & 0x01)
            else:  # OCW2
                command = value >> 5
                if command == 1:  # non-specific EOI: the highest-priority request in service
                    if self.isr:
                        self.isr &= self.isr - 1
                elif command == 3:  # specific EOI
                    self.isr &= ~(1 << (value & 7))
            return
        if self.init_step == 1:
            self.vector_base = value & 0xF8
            self.init_step = 2 if not self.single else (3 if self.needs_icw4 else 0)
        elif self.init_step == 2:
            self.init_step = 3 if self.needs_icw4 else 0  # ICW3: the cascade wiring is fixed here
        elif self.init_step == 3:
            self.auto_eoi = bool(value & 0x02)
            self.init_step = 0
        else:
            self.imr = value  # OCW1

    def read(self, a0: int) -> int:
        """An ``in`` from the command port (IRR or ISR, as OCW3 selected) or the data port (IMR)."""
        if a0 == 1:
            return self.imr
        return self.isr if self.read_isr else self.irr

    def set_line(self, irq: int, level: bool) -> None:
        """Drive input ``irq`` (0-7); a rising edge sets its IRR bit."""
        bit = 1 << irq
        if level and not self.levels & bit:
            self.irr |= bit
        self.levels = self.levels | bit if level else self.levels & ~bit

    def pending(self) -> int | None:
        """The input the chip would signal now: unmasked, requested, above everything in service."""
        ready = self.irr & ~self.imr & 0xFF
        if not ready:
            return None
        irq = (ready & -ready).bit_length() - 1  # lowest number = highest priority
        if self.isr and (self.isr & -self.isr).bit_length() - 1 <= irq:
            return None
        return irq

    def acknowledge(self, irq: int) -> int:
        """The CPU's INTA for ``irq`` (from :meth:`pending`): IRR to ISR; the vector."""
        bit = 1 << irq
        self.irr &= ~bit
        if not self.auto_eoi:
            self.isr |= bit
        return self.vector_base + irq


@dataclass
class Pic8259Pair:
    """The PC's cascade: the slave's output on the master's IRQ 2; IRQs 0-15."""

    master: Pic8259 = field(default_factory=Pic8259)
    slave: Pic8259 = field(default_factory=Pic8259)

    def set_irq(self, irq: int, level: bool) -> None:
        """Drive IRQ ``irq`` (0-15)."""
        if irq < 8:
            self.master.set_line(irq, level)
        else:
            self.slave.set_line(irq - 8, level)
            self._cascade()

    def _cascade(self) -> None:
        self.master.set_line(2, self.slave.pending() is not None)

    def pending(self) -> bool:
        """Whether an interrupt waits for the CPU (it takes it when its IF allows)."""
        self._cascade()
        return self.master.pending() is not None

    def acknowledge(self) -> int | None:
        """The CPU takes the interrupt: its vector, or None if nothing is pending."""
        self._cascade()
        irq = self.master.pending()
        if irq is None:
            return None
        if irq == 2:
            inner = self.slave.pending()
            self.master.acknowledge(2)
            if inner is None:  # the request went away: the slave answers with its IRQ 7
                return self.slave.vector_base + 7
            vector = self.slave.acknowledge(inner)
            self._cascade()
            return vector
        return self.master.acknowledge(irq)


@dataclass
class Pit8253:
    """Channel 0 of the PIT, counting virtual time in PIT input clocks.

    A counter starts when its reload value is complete. Mode 0 raises its
    output once, ``reload`` clocks later; modes 2 and 3 raise it every
    ``reload`` clocks (the edge IRQ 0 counts). A reload of 0 means 65536.
    """

    mode: int = 0
    access: int = 3  # 1 low byte, 2 high byte, 3 low then high
    reload: int = 0
    start: int | None = None  # clock at which counting began, None when not running
    fired: int = 0  # periods already reported by advance()
    _low_next: bool = True
    _partial: int = 0
    _latch: list[int] = field(default_factory=list)

    def write(self, port: int, value: int, now: int) -> None:
        """An ``out`` to 0x40-0x43 at virtual time ``now`` (PIT clocks)."""
        value &= 0xFF
        if port == 0x43:
            if value >> 6 != 0:
                return  # channels 1, 2 and read-back: not modelled
            access = (value >> 4) & 3
            if access == 0:  # counter latch
                count = self.count(now)
                self._latch = [count & 0xFF, count >> 8 & 0xFF]
                return
            self.access, self.mode = access, (value >> 1) & 7
            self.start, self._low_next, self._partial = None, True, 0
            return
        if port != 0x40:
            return
        if self.access == 1:
            self._load(value, now)
        elif self.access == 2:
            self._load(value << 8, now)
        elif self._low_next:
            self._partial, self._low_next = value, False
        else:
            self._low_next = True
            self._load(self._partial | value << 8, now)

    def _load(self, value: int, now: int) -> None:
        self.reload = value or 0x10000
        self.start, self.fired = now, 0

    def count(self, now: int) -> int:
        """The counter's value at ``now`` (what a latch or a read sees)."""
        if self.start is None:
            return 0
        elapsed = now - self.start
        if self.mode == 0:
            return max(self.reload - elapsed, 0) & 0xFFFF
        return (self.reload - elapsed % self.reload) & 0xFFFF

    def read(self, port: int, now: int) -> int:
        """An ``in`` from 0x40 (latched bytes first); other ports read 0xFF."""
        if port != 0x40:
            return 0xFF
        if self._latch:
            return self._latch.pop(0)
        count = self.count(now)
        if self.access == 2:
            return count >> 8 & 0xFF
        return count & 0xFF  # lobyte/hibyte read order is not modelled: the low byte

    def next_edge(self) -> int | None:
        """The clock of the next rising edge of the output (IRQ 0), None if none will come."""
        if self.start is None or self.mode not in (0, 2, 3):
            return None
        if self.mode == 0:
            return self.start + self.reload if self.fired == 0 else None
        return self.start + (self.fired + 1) * self.reload

    def advance(self, now: int) -> int:
        """How many rising edges of the output happened up to ``now`` since the last call."""
        edges = 0
        while (edge := self.next_edge()) is not None and edge <= now:
            self.fired += 1
            edges += 1
        return edges


@dataclass
class DebugExit:
    """QEMU's isa-debug-exit device: the first byte written is the guest's exit status."""

    status: int | None = None

    def write(self, value: int) -> None:
        if self.status is None:
            self.status = value & 0xFF


@dataclass
class PcDevices:
    """The devices on their ports, the PIT wired to IRQ 0 of the PIC pair.

    Ring 0 calls :meth:`port_in` and :meth:`port_out` from the partition's
    trapped ``in``/``out`` with the partition's virtual time in PIT clocks,
    :meth:`advance` as virtual time passes, and :meth:`acknowledge` when it
    delivers an interrupt (the guest's virtual IF set).
    """

    uart: Uart16550 = field(default_factory=Uart16550)
    pic: Pic8259Pair = field(default_factory=Pic8259Pair)
    pit: Pit8253 = field(default_factory=Pit8253)
    exit: DebugExit = field(default_factory=DebugExit)
    unclaimed: int = 0  # accesses to ports no device answers

    def port_in(self, port: int, size: int, now: int) -> int:
        """The value an ``in`` of ``size`` bytes from ``port`` reads; an unclaimed port reads all ones."""
        self.advance(now)
        if UART_BASE <= port < UART_BASE + 8:
            return self.uart.read(port - UART_BASE)
        if port in (PIC_MASTER, PIC_MASTER + 1):
            return self.pic.master.read(port - PIC_MASTER)
        if port in (PIC_SLAVE, PIC_SLAVE + 1):
            return self.pic.slave.read(port - PIC_SLAVE)
        if PIT_BASE <= port < PIT_BASE + 4:
            return self.pit.read(port, now)
        self.unclaimed += 1
        return (1 << (8 * size)) - 1

    def port_out(self, port: int, size: int, value: int, now: int) -> None:
        """An ``out`` of ``value`` (``size`` bytes) to ``port``; unclaimed ports ignore it."""
        self.advance(now)
        value &= (1 << (8 * size)) - 1
        if UART_BASE <= port < UART_BASE + 8:
            self.uart.write(port - UART_BASE, value)
        elif port in (PIC_MASTER, PIC_MASTER + 1):
            self.pic.master.write(port - PIC_MASTER, value)
        elif port in (PIC_SLAVE, PIC_SLAVE + 1):
            self.pic.slave.write(port - PIC_SLAVE, value)
        elif PIT_BASE <= port < PIT_BASE + 4:
            self.pit.write(port, value, now)
        elif port == DEBUG_EXIT_PORT:
            self.exit.write(value)
        else:
            self.unclaimed += 1

    def advance(self, now: int) -> None:
        """Let virtual time reach ``now``: each PIT output edge is an IRQ 0 edge (edges coalesce in IRR)."""
        if self.pit.advance(now):
            self.pic.set_irq(0, True)
            self.pic.set_irq(0, False)

    def next_event(self) -> int | None:
        """The virtual time (PIT clocks) of the next timer edge: how far a halted vCPU may sleep."""
        return self.pit.next_edge()

    def acknowledge(self) -> int | None:
        """The vector of the interrupt the CPU takes now, or None."""
        return self.pic.acknowledge()
