"""The emulated PC devices of full virtualization (spk/_fv_devices.py), alone and against QEMU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spk._fv_devices import (
    COM_PORTS,
    PIT_HZ,
    PcDevices,
    Pic8259,
    Pic8259Pair,
    Pit8253,
    SerialLink,
    Uart16550,
)
from spk_tools.qemu import boot, pcref_elf

GOLDEN = Path(__file__).parent / "golden" / "pcref.serial"


def init_pics(pair: Pic8259Pair) -> None:
    """The reference kernel's sequence (partitions/pcref/kernel.c pic_init)."""
    for chip, base, icw3 in ((pair.master, 0x20, 4), (pair.slave, 0x28, 2)):
        chip.write(0, 0x11)
        chip.write(1, base)
        chip.write(1, icw3)
        chip.write(1, 0x01)


def test_uart_divisor_latch_scratch_and_output() -> None:
    u = Uart16550()
    for offset, value in ((1, 0), (3, 0x80), (0, 1), (1, 0), (3, 0x03), (2, 0xC7), (4, 0x03), (7, 0x5A)):
        u.write(offset, value)
    assert (u.dll, u.dlm, u.lcr, u.mcr) == (1, 0, 0x03, 0x03)
    assert u.read(7) == 0x5A and u.read(5) == 0x60 and u.read(2) == 0xC1  # FIFOs on, nothing pending
    u.write(0, ord("h"))
    u.write(0, ord("i"))
    assert bytes(u.output) == b"hi"
    u.write(3, 0x80)  # with DLAB set, offset 0 is the divisor again, not output
    u.write(0, 12)
    assert u.read(0) == 12 and bytes(u.output) == b"hi"


def test_uart_thr_empty_interrupt_identification() -> None:
    u = Uart16550()
    u.write(1, 0x02)  # enabling THRI with THR empty raises it
    assert u.read(2) == 0x02 and u.read(2) == 0x01  # reading IIR clears it
    u.write(0, 0x41)
    assert u.read(2) == 0x02


def test_pic_init_masks_priority_and_eoi() -> None:
    pair = Pic8259Pair()
    init_pics(pair)
    pair.master.write(1, 0xFF)
    pair.slave.write(1, 0xFF)
    assert (pair.master.read(1), pair.slave.read(1)) == (0xFF, 0xFF)
    pair.set_irq(0, True)
    pair.set_irq(0, False)
    assert not pair.pending()  # masked: stays in IRR
    assert pair.master.irr == 1
    pair.master.write(1, 0xFC)  # IRQ 0 and 1 open
    pair.set_irq(1, True)
    assert pair.acknowledge() == 32  # IRQ 0 first: highest priority
    assert (pair.master.isr, pair.master.irr) == (1, 2)
    assert pair.acknowledge() is None  # IRQ 1 waits behind IRQ 0 in service
    pair.master.write(0, 0x20)  # non-specific EOI
    assert pair.acknowledge() == 33
    pair.master.write(0, 0x0B)  # OCW3: read ISR
    assert pair.master.read(0) == 2
    pair.master.write(0, 0x61)  # specific EOI for IRQ 1
    assert pair.master.read(0) == 0
    pair.set_irq(1, True)  # still high: no new edge, no new request
    assert not pair.pending()


def test_slave_irqs_cascade_through_irq2() -> None:
    pair = Pic8259Pair()
    init_pics(pair)
    pair.master.write(1, 0xFB)  # only the cascade open
    pair.slave.write(1, 0x00)
    pair.set_irq(12, True)
    assert pair.pending()
    assert pair.acknowledge() == 0x28 + 4
    assert pair.master.isr == 4 and pair.slave.isr == 1 << 4
    assert pair.acknowledge() is None


def test_pic_icw1_resets_state() -> None:
    chip = Pic8259(irr=0xFF, isr=0x0F, imr=0x33)
    chip.write(0, 0x11)
    assert (chip.irr, chip.isr, chip.imr, chip.init_step) == (0, 0, 0, 1)


def test_pit_mode2_fires_every_divisor_clocks_on_virtual_time() -> None:
    pit = Pit8253()
    divisor = (PIT_HZ + 50) // 100  # the reference kernel's 100 Hz
    pit.write(0x43, 0x34, now=5)
    pit.write(0x40, divisor & 0xFF, now=5)
    assert pit.next_edge() is None  # not running until the high byte
    pit.write(0x40, divisor >> 8, now=7)
    assert pit.next_edge() == 7 + divisor
    assert pit.advance(7 + divisor - 1) == 0
    assert pit.advance(7 + divisor) == 1
    assert pit.advance(7 + 10 * divisor + 3) == 9
    assert pit.count(7 + 10 * divisor + 3) == divisor - 3
    pit.write(0x43, 0x00, now=7 + 10 * divisor + 3)  # latch channel 0
    latched = pit.read(0x40, now=0), pit.read(0x40, now=0)
    assert latched[0] | latched[1] << 8 == divisor - 3


def test_pit_mode0_fires_once_and_zero_means_65536() -> None:
    pit = Pit8253()
    pit.write(0x43, 0x30, now=0)
    pit.write(0x40, 0, now=0)
    pit.write(0x40, 0, now=0)
    assert pit.reload == 0x10000
    assert pit.advance(10**9) == 1 and pit.next_edge() is None


def test_devices_deliver_timer_ticks_by_virtual_time_only() -> None:
    dev = PcDevices()
    init_pics(dev.pic)
    for port, value in ((0x21, 0xFE), (0xA1, 0xFF), (0x43, 0x34), (0x40, 0x9C), (0x40, 0x2E)):
        dev.port_out(port, 1, value, now=0)
    assert dev.next_event() == 11932
    dev.advance(11931)
    assert dev.acknowledge() is None
    dev.advance(3 * 11932)  # three ticks while the CPU had IF clear: one request (edges coalesce)
    assert dev.acknowledge() == 32 and dev.acknowledge() is None
    dev.port_out(0x20, 1, 0x20, now=3 * 11932)
    dev.advance(4 * 11932)
    assert dev.acknowledge() == 32
    dev.port_out(0xF4, 1, 0, now=0)
    assert dev.exit.status == 0
    assert dev.port_in(0x60, 1, now=0) == 0xFF and dev.unclaimed == 1


def test_the_pit_reports_its_period_in_virtual_time() -> None:
    """describe()'s IRQ 0 period in ticks (1 tick = 1 ns), None unless the counter runs periodically."""
    dev = PcDevices()

    def pit() -> dict[str, object]:
        return next(d for d in dev.describe() if d["device"] == "pit8253")

    assert pit()["period_ticks"] is None  # never loaded
    for port, value in ((0x43, 0x34), (0x40, 2), (0x40, 0)):  # mode 2, divisor 2
        dev.port_out(port, 1, value, now=0)
    assert pit()["period_ticks"] == 1677  # 2 / 1,193,182 Hz, rounded up
    for port, value in ((0x43, 0x34), (0x40, 0x9C), (0x40, 0x2E)):  # divisor 11932: 100 Hz
        dev.port_out(port, 1, value, now=0)
    assert pit()["period_ticks"] == 10_000_151  # about 100 Hz
    for port, value in ((0x43, 0x30), (0x40, 2), (0x40, 0)):  # mode 0: one shot
        dev.port_out(port, 1, value, now=0)
    assert pit()["period_ticks"] is None


_EVENT = re.compile(
    r"^(serial|pic_ioport)_(read|write) (?:read|write|master (\d)) addr (0x[0-9a-f]+) val (0x[0-9a-f]+)"
)


def test_models_answer_what_qemu_answered_to_the_reference_kernel() -> None:
    """Replay QEMU's own trace of every UART and PIC access (firmware and kernel) into the models."""
    run = boot(pcref_elf(), timeout=60, trace=("serial_read", "serial_write", "pic_ioport_read", "pic_ioport_write"))
    assert run.status == 0
    dev = PcDevices()
    reads = 0
    for line in run.trace.splitlines():
        match = _EVENT.match(line)
        if not match:
            continue
        device, op, master, addr, val = match.groups()
        if device == "serial":
            port = 0x3F8 + int(addr, 16)
        else:
            port = (0x20 if master == "1" else 0xA0) + int(addr, 16)
        if op == "write":
            dev.port_out(port, 1, int(val, 16), now=0)
        else:
            reads += 1
            assert dev.port_in(port, 1, now=0) == int(val, 16), line
    assert reads > 1000  # every LSR poll of every byte, the scratch and IMR read-backs
    assert bytes(dev.uart.output) == GOLDEN.read_bytes() == run.serial


@pytest.mark.parametrize("value", [0x00, 0x7F, 0xFF])
def test_any_byte_on_any_port_is_accepted(value: int) -> None:
    dev = PcDevices()
    for port in range(0x400):
        dev.port_out(port, 1, value, now=port)
        assert 0 <= dev.port_in(port, 1, now=port) <= 0xFF


# ---- the UART's receive side, more UARTs, serial links ----


def uart_8n1(u: Uart16550, fcr: int = 0xC7, ier: int = 0) -> None:
    """spk_sdk/pc/uart.c pc_uart_init's sequence (115200 8N1), then FCR and IER as given."""
    for offset, value in ((1, 0), (3, 0x80), (0, 1), (1, 0), (3, 0x03), (2, fcr), (4, 0x0B), (1, ier)):
        u.write(offset, value)


def drain(u: Uart16550) -> bytes:
    out = bytearray()
    while u.read(5) & 0x01:
        out.append(u.read(0))
    return bytes(out)


def test_uart_reset_values_are_qemus() -> None:
    u = Uart16550()
    u.write(3, 0x80)
    assert (u.read(0), u.read(1)) == (0x0C, 0)  # 9600 baud
    u.write(3, 0)
    assert (u.read(4), u.read(6), u.read(5), u.read(2)) == (0x08, 0xB0, 0x60, 0x01)


def test_uart_receives_through_the_fifo_with_flow_control_and_no_overrun() -> None:
    u = Uart16550()
    uart_8n1(u)  # trigger level 14
    assert not u.read(5) & 0x01
    data = bytes(range(40))
    u.feed(data)
    assert len(u.fifo) == 14 and len(u.line) == 26  # QEMU's backend fills up to the trigger level
    assert u.read(5) == 0x61  # DR, THRE, TEMT
    assert drain(u) == data and u.received == 40
    assert u.read(5) == 0x60 and u.read(0) == 0  # an empty FIFO reads 0


def test_uart_without_fifo_holds_one_byte() -> None:
    u = Uart16550()
    uart_8n1(u, fcr=0x00, ier=0x01)
    u.feed(b"ab")
    assert (len(u.line), u.rbr) == (1, ord("a"))
    assert u.read(2) == 0x04 and u.irq_level  # received data available, no FIFO bits
    assert u.read(0) == ord("a") and u.read(0) == ord("b")
    assert u.read(2) == 0x01 and not u.irq_level


def test_uart_trigger_level_and_character_timeout_interrupts() -> None:
    u = Uart16550()
    uart_8n1(u, fcr=0x41, ier=0x01)  # FIFO, trigger at 4 bytes; receive interrupts on
    assert u.char_time() == (1_000_000_000 // 115_200) * 10 * PIT_HZ // 1_000_000_000 == 103
    u.feed(b"abc", now=1000)
    assert u.read(2) == 0xC1 and not u.irq_level  # below the trigger level: nothing yet
    assert u.next_event() == 1000 + 4 * 103
    u.advance(1000 + 4 * 103 - 1)
    assert not u.irq_level
    u.advance(1000 + 4 * 103)
    assert u.read(2) == 0xCC and u.irq_level  # character timeout
    assert u.read(0) == ord("a")  # a read clears it and re-arms the timer (data is left)
    assert u.read(2) == 0xC1 and u.next_event() == 1000 + 4 * 103 + 4 * 103
    assert drain(u) == b"bc" and u.next_event() is None
    u.feed(b"wxyz")
    assert u.read(2) == 0xC4 and u.irq_level  # the trigger level reached: received data available
    u.write(1, 0x00)
    assert u.read(2) == 0xC1 and not u.irq_level  # IER masks it


def test_uart_interrupt_priority_data_before_thr_empty() -> None:
    u = Uart16550()
    uart_8n1(u, fcr=0x01, ier=0x03)  # trigger 1, RDI and THRI
    assert u.read(2) == 0xC2  # THR empty (enabling THRI raised it); reading IIR clears it
    u.write(0, ord("x"))
    u.feed(b"y")
    assert u.read(2) == 0xC4 and u.read(2) == 0xC4  # data first; reading IIR does not clear it
    assert u.read(0) == ord("y")
    assert u.read(2) == 0xC2 and u.read(2) == 0xC1


def test_uart_fifo_reset_drops_received_bytes_and_waiting_ones_enter() -> None:
    u = Uart16550()
    uart_8n1(u, fcr=0x01)
    u.feed(b"12345")
    assert list(u.fifo) == [ord("1")]  # trigger level 1: one byte at a time
    u.write(2, 0x03)  # RCVR FIFO reset
    assert u.read(0) == ord("2") and drain(u) == b"345"


def test_uart_loopback_receives_what_it_sends() -> None:
    u = Uart16550()
    uart_8n1(u)
    u.write(4, 0x1B)  # LOOP | OUT2 | RTS | DTR
    assert u.read(6) == 0xB0  # DCD <- OUT2, CTS <- RTS, DSR <- DTR
    u.feed(b"ignored while looped")
    u.write(0, ord("L"))
    assert drain(u) == b"L" and bytes(u.output) == b""


def test_serial_link_gathers_lines_and_cuts_at_the_message_size() -> None:
    sent: list[bytes] = []
    dev = PcDevices()
    link = dev.attach(0x2F8, sent.append, message_size=8)
    for byte in b"hi\nthis is long\nend":
        dev.port_out(0x2F8, 1, byte, now=0)
    assert sent == [b"hi\n", b"this is ", b"long\n"]
    link.flush()
    assert sent[-1] == b"end" and link.sent == 4 and bytes(dev.uart.output) == b""
    link.flush()
    assert link.sent == 4  # nothing left


def test_serial_link_fixed_size_messages_keep_newlines_inside() -> None:
    sent: list[bytes] = []
    u = Uart16550()
    SerialLink(u, sent.append, message_size=4, lines=False)
    for byte in b"a\nbcdefgh":
        u.write(0, byte)
    assert sent == [b"a\nbc", b"defg"]
    with pytest.raises(ValueError, match="at least 1"):
        SerialLink(Uart16550(), sent.append, message_size=0)


@pytest.mark.parametrize(("base", "irq"), sorted(COM_PORTS.items()))
def test_each_com_port_raises_its_irq_on_the_pic(base: int, irq: int) -> None:
    dev = PcDevices()
    init_pics(dev.pic)
    dev.port_out(0x21, 1, 0xFF & ~(1 << irq), now=0)
    link = dev.attach(base, lambda _m: None)
    for offset, value in ((3, 0x03), (2, 0x01), (1, 0x01)):  # 8N1, FIFO trigger 1, receive interrupts
        dev.port_out(base + offset, 1, value, now=0)
    assert dev.acknowledge() is None
    link.feed(b"Q")
    assert dev.acknowledge() == 32 + irq
    assert dev.port_in(base + 2, 1, now=1) == 0xC4 and dev.port_in(base, 1, now=1) == ord("Q")
    dev.port_out(0x20, 1, 0x20, now=1)  # EOI
    assert dev.acknowledge() is None and not dev.uarts[base].irq_level


def test_com2_and_com4_share_irq3_as_a_wired_or() -> None:
    dev = PcDevices()
    init_pics(dev.pic)
    dev.port_out(0x21, 1, 0xF7, now=0)
    com2, com4 = dev.attach(0x2F8, lambda _m: None), dev.attach(0x2E8, lambda _m: None)
    for base in (0x2F8, 0x2E8):
        dev.port_out(base + 2, 1, 0x01, now=0)
        dev.port_out(base + 1, 1, 0x01, now=0)
    com2.feed(b"2")
    com4.feed(b"4")
    assert dev.acknowledge() == 35
    assert dev.port_in(0x2F8, 1, now=0) == ord("2")  # COM2 quiet again, COM4 still holds the line
    assert dev.pic.master.levels & 0x08
    dev.port_out(0x20, 1, 0x20, now=0)
    assert dev.acknowledge() is None  # no new edge while the line stayed high
    assert dev.port_in(0x2E8, 1, now=0) == ord("4") and not dev.pic.master.levels & 0x08


def test_com_ports_exist_only_when_wired_and_only_at_com_addresses() -> None:
    dev = PcDevices()
    assert dev.port_in(0x2F8 + 7, 1, now=0) == 0xFF and dev.unclaimed == 1
    dev.add_uart(0x2F8).write(7, 0x5A)
    assert dev.port_in(0x2FF, 1, now=0) == 0x5A
    with pytest.raises(ValueError, match="no COM port at 0x300"):
        dev.add_uart(0x300)
    with pytest.raises(ValueError, match="no UART at 0x3e8"):
        dev.feed(0x3E8, b"x")
    dev.feed(0x2F8, b"in")  # a receive-only port needs no link
    assert dev.port_in(0x2F8, 1, now=0) == ord("i") and dev.port_in(0x2FD, 1, now=0) & 0x01
    kinds = [d["device"] for d in dev.describe()]
    assert kinds == ["uart16550", "uart16550", "pic8259 pair", "pit8253", "isa-debug-exit"]


def test_a_uart_timeout_wakes_a_halted_cpu_before_the_timer() -> None:
    dev = PcDevices()
    init_pics(dev.pic)
    dev.port_out(0x21, 1, 0xEF, now=0)  # IRQ 4 only
    for offset, value in ((3, 0x03), (2, 0xC1), (1, 0x01)):  # trigger 14, receive interrupts
        dev.port_out(0x3F8 + offset, 1, value, now=0)
    dev.uart.feed(b"hi\n", now=50)
    assert dev.next_event() == 50 + 4 * dev.uart.char_time()
    dev.advance(dev.next_event() or 0)
    assert dev.acknowledge() == 36 and dev.port_in(0x3FA, 1, now=500) == 0xCC


def test_a_byte_before_set_up_survives_without_fifo_and_is_dropped_by_enabling_it() -> None:
    """Why fvecho opens COM2 without its FIFO: turning the FIFO on clears the receiver (QEMU's FCR write)."""
    kept, dropped = Uart16550(), Uart16550()
    for u in (kept, dropped):
        u.feed(b"ab")  # the line delivers before the kernel touches the UART (FIFO off after reset)
        assert u.rbr == ord("a") and list(u.line) == [ord("b")]
    for offset, value in ((1, 0), (3, 0x80), (0, 1), (1, 0), (3, 0x03), (4, 0x0B), (1, 0x01)):
        kept.write(offset, value)  # pc_uart_open(port, 0) then receive interrupts on
    assert kept.irq_level and drain(kept) == b"ab"
    dropped.write(2, 0xC7)  # pc_uart_init's FCR: FIFO on and cleared
    assert drain(dropped) == b"b"
