"""Emulated PC devices of a full-virtualization partition (ring 0).

An unmodified PC kernel (docs/fullvirt.md, partitions/pcref) drives
hardware by port I/O. Ring 0 traps every ``in`` and ``out`` of such a
partition (the engine's instruction hooks) and hands it to these models:

- :class:`Uart16550`: a 16550A (COM1 at 0x3F8 is the console; COM2-COM4 at
  0x2F8, 0x3E8, 0x2E8 are serial cables to other partitions). Transmit is
  instant; receive has the 16-byte FIFO, its trigger level, LSR.DR, the
  receive-data and character-timeout interrupts, IIR priorities, and an
  interrupt line (COM1/COM3 on IRQ 4, COM2/COM4 on IRQ 3).
- :class:`SerialLink`: one end of a serial cable on a UART: the bytes the
  guest transmits are gathered into messages (one per line, newline
  included, or per ``message_size`` bytes) handed to a callback, and
  :meth:`SerialLink.feed` puts received bytes on the line.
- :class:`Pic8259Pair`: the master and slave 8259s (IRR, ISR, IMR, the ICW
  sequence, non-specific and specific EOI, OCW3 register select).
- :class:`Pit8253`: channel 0 of the 8253/8254 on *virtual* time, counted
  in PIT input clocks (1.193182 MHz); modes 0, 2 and 3.
- :class:`DebugExit`: QEMU's ``isa-debug-exit`` port; a byte written there
  ends the partition with that status.

:class:`PcDevices` puts them on their ports and wires the PIT to IRQ 0 and
the UARTs to IRQs 4 and 3. Nothing here knows the engine, the machine or
the clock: ring 0 passes virtual time in and takes interrupt vectors,
console bytes and serial messages out, so the models are deterministic and
unit-tested alone (tests/test_fv_devices.py, which also replays QEMU's own
trace of the reference kernel's port I/O).

The UART follows QEMU's model (hw/char/serial.c), the outside reference:
its register semantics, its interrupt priorities (line status, character
timeout, received data, THR empty, modem status), its FIFO timeout of four
character times at the programmed baud rate (here in PIT clocks of virtual
time), and its flow control from the backend: bytes waiting on the line
enter the receive FIFO only up to the trigger level (one byte without the
FIFO), as QEMU's ``serial_can_receive`` allows, so nothing is overrun.
Two differences, both deliberate: the moment waiting bytes enter the FIFO
is fixed (at once, whenever there is room; QEMU's is whenever its I/O
thread gets to it), and two UARTs on one IRQ drive it as a wired OR (in
QEMU the last one to change the shared line wins).

Behaviour not modelled, on purpose (no guest here uses it): UART break
and parity/framing errors, modem-line changes (MSR deltas); 8259
rotation, special mask and poll modes and level-triggered inputs; PIT
channels 1 and 2, modes 1, 4 and 5, BCD counting and the read-back
command. A write there is accepted and ignored; a read returns what a
real part's idle state would.

Errors: none from the guest's side. A guest can write anything to any
port; every value is accepted (a misbehaving guest cannot crash ring 0
through a device). Ring 0's own misuse (a UART asked for at a port that is
not a COM port) is a ValueError.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: PIT input clock, Hz.
PIT_HZ = 1_193_182
#: Virtual time is device time: one tick is one nanosecond.
NS_PER_SECOND = 1_000_000_000


def pit_clock(ticks: int) -> int:
    """The PIT clock count reached at virtual time ``ticks`` (rounded down)."""
    return ticks * PIT_HZ // NS_PER_SECOND


def ticks_of(clock: int) -> int:
    """The virtual time (ticks, rounded up) at which the PIT reaches clock count ``clock``."""
    return -(-clock * NS_PER_SECOND // PIT_HZ)
UART_BASE = 0x3F8
#: The PC's serial ports: base port -> IRQ line (COM1, COM2, COM3, COM4).
COM_PORTS = {0x3F8: 4, 0x2F8: 3, 0x3E8: 4, 0x2E8: 3}
PIC_MASTER, PIC_SLAVE = 0x20, 0xA0
PIT_BASE = 0x40
DEBUG_EXIT_PORT = 0xF4

#: The UART's reference clock divided by 16: the baud rate of divisor 1.
UART_BAUD_BASE = 115_200
UART_FIFO_SIZE = 16

_LSR_DR, _LSR_OE, _LSR_BI, _LSR_THRE, _LSR_TEMT = 0x01, 0x02, 0x10, 0x20, 0x40
_LSR_INT_ANY = 0x1E
_IER_RDI, _IER_THRI, _IER_RLSI, _IER_MSI = 0x01, 0x02, 0x04, 0x08
_IIR_NO_INT, _IIR_THRI, _IIR_RDI, _IIR_RLSI, _IIR_CTI = 0x01, 0x02, 0x04, 0x06, 0x0C
_FCR_FE, _FCR_RFR, _FCR_XFR = 0x01, 0x02, 0x04
_MCR_LOOP = 0x10
_TRIGGER_LEVELS = (1, 4, 8, 14)


@dataclass
class Uart16550:
    """A 16550A whose transmitter is infinitely fast, with QEMU's receiver.

    Transmit: LSR always says THR and the transmitter are empty; every THR
    write goes to :attr:`link` when one is attached (a serial cable), else
    to :attr:`output` (the console). IIR reports a pending THR-empty
    interrupt when IER enables it, cleared by reading IIR or writing THR, as
    on the part.

    Receive: :meth:`feed` puts bytes on the line; they wait in
    :attr:`line` and enter the receive FIFO (or the one-byte RBR with the
    FIFO off) as QEMU's flow control allows (see the module docstring).
    ``now`` arguments are virtual time in PIT clocks; a call without one
    keeps the last time the UART saw (the FIFO timeout counts from it).
    """

    irq: int = 4
    ier: int = 0
    lcr: int = 0
    mcr: int = 0x08  # QEMU's reset value: OUT2
    fcr: int = 0
    scr: int = 0
    dll: int = 0x0C  # QEMU's reset divisor: 9600 baud
    dlm: int = 0
    msr: int = 0xB0  # DCD, DSR, CTS: a cable is plugged in (no delta is ever reported)
    thr_pending: bool = False
    output: bytearray = field(default_factory=bytearray)
    link: SerialLink | None = field(default=None, repr=False, compare=False)
    #: Received bytes not yet in the FIFO (QEMU's character backend holds them).
    line: deque[int] = field(default_factory=deque)
    fifo: deque[int] = field(default_factory=deque)
    rbr: int = 0  # the holding register with the FIFO off
    lsr_rx: int = 0  # LSR's receive bits: DR, OE, BI
    trigger: int = 1  # the FIFO's interrupt trigger level, bytes
    timeout_pending: bool = False
    timeout_at: int | None = None  # when the character timeout fires (PIT clocks)
    now: int = 0
    received: int = 0  # bytes that entered the receiver (FIFO or RBR)
    transmitted: int = 0  # bytes the guest sent (to the console, or over its serial link)
    #: Called where QEMU's model updates its interrupt line (serial_update_irq): PcDevices
    #: drives the PIC input from it then, and only then, as QEMU does.
    on_irq: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    _update: bool = field(default=False, repr=False, compare=False)

    @property
    def dlab(self) -> bool:
        return bool(self.lcr & 0x80)

    @property
    def fifo_enabled(self) -> bool:
        return bool(self.fcr & _FCR_FE)

    def char_time(self) -> int:
        """One character's time on the line at the programmed rate and format, in PIT clocks.

        QEMU's arithmetic (``char_transmit_time``: whole nanoseconds per bit
        times the frame's bits) converted to PIT clocks, rounded down.
        """
        divisor = self.dll | self.dlm << 8
        if divisor == 0 or divisor > UART_BAUD_BASE:
            divisor = 0x0C  # QEMU keeps its previous rate; the reset one is close enough here
        bits = 1 + (self.lcr & 3) + 5 + (2 if self.lcr & 0x04 else 1) + (1 if self.lcr & 0x08 else 0)
        nanoseconds = (NS_PER_SECOND // (UART_BAUD_BASE // divisor)) * bits
        return pit_clock(nanoseconds)

    def interrupt_id(self) -> int:
        """IIR's interrupt identification (bits 0-3), by QEMU's priorities."""
        if self.ier & _IER_RLSI and self.lsr_rx & _LSR_INT_ANY:
            return _IIR_RLSI
        if self.ier & _IER_RDI and self.timeout_pending:
            return _IIR_CTI
        if self.ier & _IER_RDI and self.lsr_rx & _LSR_DR and (not self.fifo_enabled or len(self.fifo) >= self.trigger):
            return _IIR_RDI
        if self.ier & _IER_THRI and self.thr_pending:
            return _IIR_THRI
        return _IIR_NO_INT  # MSI: no modem-line delta is ever reported

    @property
    def irq_level(self) -> bool:
        """The interrupt output (MCR.OUT2 does not gate it: QEMU's model, not every PC's board)."""
        return self.interrupt_id() != _IIR_NO_INT

    def _changed(self) -> None:
        if self._update:
            self._update = False
            if self.on_irq is not None:
                self.on_irq()

    def _clock(self, now: int | None) -> None:
        if now is not None and now > self.now:
            self.now = now
        if self.timeout_at is not None and self.now >= self.timeout_at:
            self.timeout_at = None
            if self.fifo:  # QEMU's fifo_timeout_int
                self.timeout_pending = self._update = True

    def _arm_timeout(self) -> None:
        self.timeout_at = self.now + 4 * self.char_time()

    def _receive(self, byte: int) -> None:
        """A byte arrives at the receiver (QEMU's serial_receive1 for one byte)."""
        self.received += 1
        self._update = True
        if self.fifo_enabled:
            if len(self.fifo) < UART_FIFO_SIZE:
                self.fifo.append(byte)
            else:
                self.lsr_rx |= _LSR_OE
            self.lsr_rx |= _LSR_DR
            self._arm_timeout()
        else:
            if self.lsr_rx & _LSR_DR:
                self.lsr_rx |= _LSR_OE
            self.rbr = byte
            self.lsr_rx |= _LSR_DR

    @property
    def waiting(self) -> int:
        """Bytes fed but not yet taken into the receiver (the backlog on the line).

        A feeder that wants flow control (a queuing channel keeping its
        messages until the guest reads them) feeds the next message when
        this is 0; :meth:`feed` itself accepts any amount at any time.
        """
        return len(self.line)

    def room(self) -> int:
        """How many waiting bytes the receiver takes in now (QEMU's serial_can_receive): 1 to 14, not a
        bound on :meth:`feed`."""
        if self.mcr & _MCR_LOOP:
            return 0  # in loopback the line is disconnected
        if self.fifo_enabled:
            if len(self.fifo) >= UART_FIFO_SIZE:
                return 0
            return self.trigger - len(self.fifo) if len(self.fifo) <= self.trigger else 1
        return 0 if self.lsr_rx & _LSR_DR else 1

    def _fill(self) -> None:
        while self.line and (n := self.room()):
            for _ in range(min(n, len(self.line))):
                self._receive(self.line.popleft())

    def feed(self, data: bytes, now: int | None = None) -> None:
        """Bytes arrive on the line (a channel message, the console's input); they enter as room allows."""
        self._clock(now)
        self.line.extend(data)
        self._fill()
        self._changed()

    def advance(self, now: int) -> None:
        """Let virtual time reach ``now`` (the character timeout may fire)."""
        self._clock(now)
        self._changed()

    def next_event(self) -> int | None:
        """When the character timeout fires, if it is armed and would matter."""
        return self.timeout_at if self.fifo else None

    def read(self, offset: int, now: int | None = None) -> int:
        """The register at ``offset`` (0-7) from the base, as an ``in`` sees it."""
        self._clock(now)
        try:
            return self._read(offset)
        finally:
            self._fill()
            self._changed()

    def _read(self, offset: int) -> int:
        if offset == 0:
            if self.dlab:
                return self.dll
            if self.fifo_enabled:
                self._update = True
                value = self.fifo.popleft() if self.fifo else 0
                if not self.fifo:
                    self.lsr_rx &= ~(_LSR_DR | _LSR_BI)
                else:
                    self._arm_timeout()
                self.timeout_pending = False
                return value
            self.lsr_rx &= ~(_LSR_DR | _LSR_BI)
            self._update = True
            return self.rbr
        if offset == 1:
            return self.dlm if self.dlab else self.ier
        if offset == 2:
            ident = self.interrupt_id()
            if ident == _IIR_THRI:
                self.thr_pending = False
                self._update = True
            return (0xC0 if self.fifo_enabled else 0) | ident
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            value = _LSR_THRE | _LSR_TEMT | self.lsr_rx
            if self.lsr_rx & (_LSR_BI | _LSR_OE):
                self.lsr_rx &= ~(_LSR_BI | _LSR_OE)
                self._update = True
            return value
        if offset == 6:
            if self.mcr & _MCR_LOOP:  # the modem outputs wired back to the inputs
                return (self.mcr & 0x0C) << 4 | (self.mcr & 0x02) << 3 | (self.mcr & 0x01) << 5
            return self.msr
        return self.scr

    def write(self, offset: int, value: int, now: int | None = None) -> None:
        """An ``out`` of ``value`` to the register at ``offset`` (0-7)."""
        self._clock(now)
        self._write(offset, value & 0xFF)
        self._fill()
        self._changed()

    def _write(self, offset: int, value: int) -> None:
        if offset == 0:
            if self.dlab:
                self.dll = value
                return
            self._update = True
            if self.mcr & _MCR_LOOP:
                self._receive(value)  # loopback: what is sent is received
                self.thr_pending = True
            else:
                self.transmitted += 1
                if self.link is not None:
                    self.link.transmitted(value)
                else:
                    self.output.append(value)
                self.thr_pending = True  # sent at once: empty again
        elif offset == 1:
            if self.dlab:
                self.dlm = value
            else:
                changed = (self.ier ^ value) & 0x0F
                self.ier = value & 0x0F
                self._update |= bool(changed)
                if changed & _IER_THRI:  # enabling it with THR empty raises it
                    self.thr_pending = bool(self.ier & _IER_THRI)
        elif offset == 2:
            if (value ^ self.fcr) & _FCR_FE:  # FIFO on or off: both are cleared
                value |= _FCR_XFR | _FCR_RFR
            if value & _FCR_RFR:
                self.lsr_rx &= ~(_LSR_DR | _LSR_BI)
                self.timeout_at, self.timeout_pending = None, False
                self.fifo.clear()
            if value & _FCR_XFR:
                self.thr_pending = True
            self.fcr = value & 0xC9
            self.trigger = _TRIGGER_LEVELS[value >> 6]
            self._update = True
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value & 0x1F
        elif offset == 7:
            self.scr = value
        # 5 and 6 (LSR, MSR) are read-only: a write is ignored


@dataclass
class SerialLink:
    """One end of a null-modem cable on a UART: messages out, bytes in.

    Bytes the guest writes to THR are gathered into messages handed to
    ``on_message``: with ``lines`` (the default) a message ends with a
    newline (included) or when it reaches ``message_size`` bytes (a longer
    line is cut there); without, every ``message_size`` bytes make one.
    :meth:`feed` puts received bytes on the UART's line. ``message_size``
    is at least 1 (the channel's maximum message size).
    """

    uart: Uart16550 = field(repr=False, compare=False)
    on_message: Callable[[bytes], None] = field(repr=False, compare=False)
    message_size: int = 256
    lines: bool = True
    pending: bytearray = field(default_factory=bytearray)
    sent: int = 0  # messages handed to on_message

    def __post_init__(self) -> None:
        if self.message_size < 1:
            raise ValueError(f"a serial link's message_size must be at least 1, not {self.message_size}")
        self.uart.link = self

    def transmitted(self, byte: int) -> None:
        """The UART sent ``byte`` (called by the UART)."""
        self.pending.append(byte)
        if len(self.pending) >= self.message_size or (self.lines and byte == 0x0A):
            self._send()

    def _send(self) -> None:
        message = bytes(self.pending)
        self.pending.clear()
        self.sent += 1
        self.on_message(message)

    def flush(self) -> None:
        """Hand over a partial message (the guest ended mid-line), if any."""
        if self.pending:
            self._send()

    def feed(self, data: bytes, now: int | None = None) -> None:
        """Bytes arrive from the other end (a channel message): the guest reads them from RBR."""
        self.uart.feed(data, now)


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
    """The devices on their ports: the PIT on IRQ 0, the UARTs on IRQs 4 and 3 of the PIC pair.

    Ring 0 calls :meth:`port_in` and :meth:`port_out` from the partition's
    trapped ``in``/``out`` with the partition's virtual time in PIT clocks,
    :meth:`advance` as virtual time passes, and :meth:`acknowledge` when it
    delivers an interrupt (the guest's virtual IF set). COM1 (:attr:`uart`)
    is always there; COM2-COM4 exist once :meth:`add_uart` or
    :meth:`attach` put one on their port (as QEMU's ``-serial`` options do:
    a port without a UART reads all ones).
    """

    uart: Uart16550 = field(default_factory=Uart16550)
    pic: Pic8259Pair = field(default_factory=Pic8259Pair)
    pit: Pit8253 = field(default_factory=Pit8253)
    exit: DebugExit = field(default_factory=DebugExit)
    unclaimed: int = 0  # accesses to ports no device answers
    uarts: dict[int, Uart16550] = field(default_factory=dict)  # base port -> UART, COM1 included
    now: int = 0  # the latest virtual time (PIT clocks) the devices were told of

    def __post_init__(self) -> None:
        self.uarts[UART_BASE] = self.uart
        self.uart.irq = COM_PORTS[UART_BASE]
        self.uart.on_irq = self._update_serial_irqs

    def add_uart(self, base: int) -> Uart16550:
        """The UART at COM port ``base`` (0x3F8, 0x2F8, 0x3E8, 0x2E8), created if missing.

        Errors: ValueError for any other port.
        """
        if base not in COM_PORTS:
            ports = ", ".join(f"{p:#x}" for p in COM_PORTS)
            raise ValueError(f"no COM port at {base:#x} (a UART goes at {ports})")
        if base not in self.uarts:
            self.uarts[base] = Uart16550(irq=COM_PORTS[base], on_irq=self._update_serial_irqs)
        return self.uarts[base]

    def attach(
        self, base: int, on_message: Callable[[bytes], None], message_size: int = 256, *, lines: bool = True
    ) -> SerialLink:
        """The transmit side of a serial cable on the UART at ``base`` (created if missing); see :class:`SerialLink`.

        ``on_message`` is called from inside the guest's ``out`` (an engine
        hook): it must only queue. A second call replaces the first link.
        Errors: ValueError (not a COM port, message_size < 1).
        """
        return SerialLink(self.add_uart(base), on_message, message_size, lines)

    def feed(self, base: int, data: bytes, now: int | None = None) -> None:
        """Bytes arrive on the line of the UART at ``base`` (COM1's input, a channel's message).

        Only the receive side: a port that only receives needs no
        :class:`SerialLink` (what the guest transmits there accumulates in
        that UART's :attr:`Uart16550.output`). Errors: ValueError when no
        UART is at ``base`` (:meth:`add_uart` puts one there).
        """
        uart = self.uarts.get(base)
        if uart is None:
            raise ValueError(f"no UART at {base:#x}")
        uart.feed(data, self.now if now is None else now)

    def _uart_at(self, port: int) -> Uart16550 | None:
        uart = self.uarts.get(port & ~7)
        return uart

    def _update_serial_irqs(self) -> None:
        levels: dict[int, bool] = {}
        for uart in self.uarts.values():
            levels[uart.irq] = levels.get(uart.irq, False) or uart.irq_level
        for irq, level in levels.items():
            self.pic.set_irq(irq, level)

    def port_in(self, port: int, size: int, now: int) -> int:
        """The value an ``in`` of ``size`` bytes from ``port`` reads; an unclaimed port reads all ones."""
        self.advance(now)
        if (uart := self._uart_at(port)) is not None:
            return uart.read(port & 7, now)
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
        if (uart := self._uart_at(port)) is not None:
            uart.write(port & 7, value, now)
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
        """Let virtual time reach ``now``: each PIT output edge is an IRQ 0 edge (edges coalesce in IRR);
        a UART's character timeout may raise its line."""
        self.now = max(self.now, now)
        if self.pit.advance(now):
            self.pic.set_irq(0, True)
            self.pic.set_irq(0, False)
        for uart in self.uarts.values():
            if uart.timeout_at is not None:
                uart.advance(now)

    def next_event(self) -> int | None:
        """The virtual time (PIT clocks) of the next timer edge or UART timeout: how far a halted vCPU may sleep."""
        events = [t for t in (self.pit.next_edge(), *(u.next_event() for u in self.uarts.values())) if t is not None]
        return min(events, default=None)

    def acknowledge(self) -> int | None:
        """The vector of the interrupt the CPU takes now, or None."""
        return self.pic.acknowledge()

    def describe(self) -> list[dict[str, object]]:
        """The devices, their ports and IRQs and what went through them (for review and full_state)."""
        out: list[dict[str, object]] = []
        for base, uart in sorted(self.uarts.items()):
            link = uart.link
            out.append({
                "device": "uart16550", "ports": (base, base + 7), "irq": uart.irq,
                "role": "console" if base == UART_BASE else ("serial link" if link else "unconnected"),
                "transmitted": uart.transmitted, "received": uart.received,
                "messages_sent": link.sent if link is not None else None,
            })  # fmt: skip
        out.append({"device": "pic8259 pair", "ports": (PIC_MASTER, PIC_MASTER + 1, PIC_SLAVE, PIC_SLAVE + 1),
                    "irq": None, "imr": (self.pic.master.imr, self.pic.slave.imr)})  # fmt: skip
        periodic = self.pit.mode in (2, 3) and self.pit.start is not None
        out.append({"device": "pit8253", "ports": (PIT_BASE, PIT_BASE + 3), "irq": 0, "mode": self.pit.mode,
                    "reload": self.pit.reload,
                    # IRQ 0's period in virtual time (ticks, rounded up), when the counter runs periodically
                    "period_ticks": ticks_of(self.pit.reload) if periodic else None})  # fmt: skip
        out.append({"device": "isa-debug-exit", "ports": (DEBUG_EXIT_PORT,), "irq": None, "status": self.exit.status})
        return out
