"""The emulated PC devices of full virtualization (spk/_fv_devices.py), alone and against QEMU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spk._fv_devices import (
    PIT_HZ,
    PcDevices,
    Pic8259,
    Pic8259Pair,
    Pit8253,
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
