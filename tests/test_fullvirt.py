"""Full-virtualization partitions in ring 0 (docs/fullvirt.md): an unmodified PC kernel, trapped and emulated.

The reference kernel (partitions/pcref) must print under the SPK exactly what
it prints under QEMU (tests/golden/pcref.serial, which tests/test_pcref_qemu.py
checks against QEMU itself), with the same result on every run. Small hostile
kernels (tests/fvguests/hostile.c) attack their own virtual hardware: a call
gate to real CPL 0, page tables naming memory beyond the quota, a CR3 outside
it, a triple fault; each must end as the virtual hardware says while a
paravirtual partition beside it runs on untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spgs.cbuild import build_c
from spk import Machine
from spk.errors import ImageError, SpkError
from spk_tools.qemu import pcref_elf
from tests.guests import Recorder, bundled

GOLDEN = Path(__file__).parent / "golden" / "pcref.serial"
HOSTILE = Path(__file__).parent.parent / "partitions" / "pc_hostile"
PCREF_FRAMES = 1040  # 4 MiB for the kernel's identity map, and ring 0's boot tables
MMUS = ["nested", "shadow"]


def run_to_end(m: Machine, pids: list[int], window: int = 2_000_000, limit: int = 400_000_000) -> None:
    """Round-robin windows until every partition in ``pids`` has exited or faulted."""
    while m.now < limit and any(m.info(pid).state in ("ready", "blocked") for pid in pids):
        for pid in pids:
            end = m.now + window
            m.run(pid, end)
            m.advance(end)
            m.check_invariants()


def pcref_machine(mmu: str, recorder: Recorder) -> tuple[Machine, int]:
    m = Machine(32 << 20, on_event=recorder)
    return m, m.create_full_partition("pcref", pcref_elf(), PCREF_FRAMES, mmu=mmu)


@pytest.mark.parametrize("mmu", MMUS)
def test_pcref_prints_what_it_prints_on_qemu(mmu: str) -> None:
    recorder = Recorder()
    m, pid = pcref_machine(mmu, recorder)
    run_to_end(m, [pid])
    info = m.info(pid)
    assert (info.state, info.exit_code, info.virtualization, info.mmu) == ("exited", 0, "full", mmu)
    transcript = "".join(line + "\n" for line in recorder.lines("pcref"))
    assert transcript == GOLDEN.read_text()
    devices = m.full_state(pid)["devices"]
    assert isinstance(devices, list)
    console = next(d for d in devices if d.get("role") == "console")
    assert console["transmitted"] == len(GOLDEN.read_bytes())  # every byte the kernel sent, drained or not


@pytest.mark.parametrize("mmu", MMUS)
def test_pcref_run_is_deterministic_and_traps_what_the_spec_lists(mmu: str) -> None:
    runs = []
    for _ in range(2):
        recorder = Recorder()
        m, pid = pcref_machine(mmu, recorder)
        run_to_end(m, [pid])
        runs.append(([(e.time, e.partition, e.event, e.args) for e in recorder.events], m.full_state(pid)))
    assert runs[0] == runs[1]
    traps = runs[0][1]["traps"]
    assert isinstance(traps, dict)
    # every kind of operation docs/fullvirt.md says the kernel performs was trapped and emulated
    ops = ("lgdt", "lidt", "ltr", "lldt", "mov_cr", "mov_seg", "retfq", "iretq", "sysretq", "syscall", "rdmsr",
           "wrmsr", "cpuid", "pushf", "hlt", "invlpg", "irq", "port_in", "port_out", "page_fault")  # fmt: skip
    for op in ops:
        assert traps.get(op, 0) > 0, op
    state = runs[0][1]
    registers = state["virtual_registers"]
    assert isinstance(registers, dict)
    assert (registers["cr0"], registers["cr4"], registers["efer"] & 0xD01) == (0x80010033, 0x20, 0x501)


def hostile(m: Machine, name: str, mode: int) -> int:
    """A partition running partitions/pc_hostile with attack ``mode`` (its first COM1 byte)."""
    from spgs.cbuild import program_sources

    pid = m.create_full_partition(name, build_c("pc", "pc_hostile", program_sources(HOSTILE)), 1024)
    m.serial_input(pid, 0x3F8, str(mode).encode())
    return pid


@pytest.mark.parametrize(
    ("mode", "state", "fault", "line"),
    [
        (1, "faulted", "cpl0_tripwire", "calling through a gate"),
        (2, "faulted", "machine_check", "reading beyond my memory"),
        (3, "exited", None, "trap 13 error 0x0 cr2 0x0"),
        (4, "faulted", "triple_fault", "no IDT, now a page fault"),
    ],
)
def test_a_hostile_kernel_ends_as_its_virtual_hardware_says_and_others_run_on(
    mode: int, state: str, fault: str | None, line: str
) -> None:
    recorder = Recorder()
    m = Machine(32 << 20, on_event=recorder)
    bad = hostile(m, "bad", mode)
    good = m.create_partition("p", bundled("kernel", "refkernel"), [("hello", bundled("app", "hello"))], 256)
    run_to_end(m, [bad, good])
    info = m.info(bad)
    assert info.state == state
    assert (info.fault.kind if info.fault else None) == fault
    assert line in recorder.lines("bad")
    assert "reached ring 0 through the gate" not in recorder.lines("bad")
    assert m.info(good).state == "exited" and m.info(good).exit_code == 0
    if fault is not None:
        assert [e.args["kind"] for e in recorder.of("kernel_fault") if e.partition == "bad"] == [fault]
        assert [h.event for h in m.take_health_events() if h.pid == bad] == [fault]


def test_virtual_time_is_what_rdtsc_reads_and_is_repeatable() -> None:
    lines = []
    for _ in range(2):
        recorder = Recorder()
        m = Machine(32 << 20, on_event=recorder)
        pid = hostile(m, "t", 5)
        run_to_end(m, [pid])
        lines.append(recorder.lines("t"))
    assert lines[0] == lines[1]
    first, second = (int(x) for x in lines[0][0].split()[1::2])
    assert 0 < first < second


def test_bad_full_partitions_are_refused_with_a_rule() -> None:
    m = Machine(32 << 20)
    with pytest.raises(ImageError) as bad_elf:
        m.create_full_partition("x", b"not an elf file", 1024)
    assert bad_elf.value.rule == "elf_malformed"
    with pytest.raises(ImageError) as small:
        m.create_full_partition("x", pcref_elf(), 64)
    assert small.value.rule == "quota"
    with pytest.raises(ImageError) as mmu:
        m.create_full_partition("x", pcref_elf(), PCREF_FRAMES, mmu="magic")
    assert mmu.value.rule == "mmu"
    assert m.partition_table() == []  # nothing was created, no frame kept
    assert m.frames.pool_free_count(1) == 0


def test_snapshots_migration_and_the_debugger_refuse_a_full_partition() -> None:
    m, pid = pcref_machine("nested", Recorder())
    with pytest.raises(SpkError, match="full-virtualization"):
        m.snapshot()
    with pytest.raises(SpkError, match="full-virtualization"):
        m.export_partition(pid)
    with pytest.raises(SpkError, match="paravirtual"):
        m.debug_attach(pid)


def test_a_restart_boots_the_kernel_again_and_destroy_returns_its_frames() -> None:
    recorder = Recorder()
    m, pid = pcref_machine("nested", recorder)
    run_to_end(m, [pid])
    m.reset_partition(pid, pcref_elf(), [])
    assert m.info(pid).state == "ready" and m.info(pid).restarts == 1
    run_to_end(m, [pid])
    assert recorder.lines("pcref") == 2 * GOLDEN.read_text().splitlines()
    assert m.destroy_partition(pid) == PCREF_FRAMES
    assert pid not in m.partitions and m.frames.owned(pid) == []
    m.check_invariants()


def test_serial_cables_carry_channel_messages_through_an_unmodified_kernel() -> None:
    """partitions/fvecho reads lines on COM2 and answers on COM3; ring 0 wires both to channels."""
    from spgs.cbuild import program_sources

    recorder = Recorder()
    m = Machine(32 << 20, on_event=recorder)
    elf = build_c("pc", "fvecho", program_sources(Path(__file__).parent.parent / "partitions" / "fvecho"))
    pid = m.create_full_partition("fvecho", elf, PCREF_FRAMES)
    into, out_of = m.create_channel("queuing", 64, depth=2), m.create_channel("queuing", 64, depth=4)
    m.attach_serial(pid, 0x2F8, into, "destination")
    m.attach_serial(pid, 0x3E8, out_of, "source")
    m.attach_relay(into, "source")
    m.attach_relay(out_of, "destination")
    lines = [b"hello, world\n", b"Mixed Case\r\n", b"\n", b"quit\n"]
    answers: list[bytes] = []
    while m.now < 400_000_000 and m.info(pid).state in ("ready", "blocked"):
        sent = m.relay_put(into, [(line, m.now) for line in lines[:1]])
        del lines[:sent]
        m.run(pid, m.now + 2_000_000)
        m.advance(m.now + 2_000_000)
        answers += [message for message, _time in m.relay_take(out_of)]
        m.check_invariants()
    assert m.info(pid).state == "exited"
    assert answers == [b"1: HELLO, WORLD\n", b"2: MIXED CASE\n", b"3: \n"]
    assert recorder.lines("fvecho")[-1].endswith("3 lines served, 26 bytes in, 34 bytes out; powering off")
    cables = m.full_state(pid)["serial_cables"]
    assert isinstance(cables, list) and [c["port_base"] for c in cables] == [0x2F8, 0x3E8]
    with pytest.raises(SpkError):
        m.attach_serial(pid, 0x2F8, into, "destination")  # wired already
    with pytest.raises(SpkError):
        m.attach_serial(pid, 0x1234, into, "destination")  # not a COM port
    m.destroy_partition(pid)  # its destination end goes with it: the channel's senders are not held back
    assert m.channels[into].destinations == []


@pytest.mark.parametrize("mmu", MMUS)
def test_the_guest_s_invlpg_drops_one_page_through_the_engine_s_own(mmu: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """invlpg is the engine's invlpg of that page (Engine.flush_page), not a flush of the whole TLB.

    (tests/test_hypercalls.py shows Engine.flush_page dropping a page the engine had cached.)
    """
    from spk._engine import Engine

    calls: list[object] = []
    page, full = Engine.flush_page, Engine.flush_tlb

    def flush_page(self: Engine, va: int) -> None:
        calls.append(va)
        page(self, va)

    def flush_tlb(self: Engine) -> None:
        calls.append("all")
        full(self)

    monkeypatch.setattr(Engine, "flush_page", flush_page)
    monkeypatch.setattr(Engine, "flush_tlb", flush_tlb)
    m, pid = pcref_machine(mmu, Recorder())
    m.run(pid, m.now + 2_000_000)  # booted: its tables are live (and shadowed)
    calls.clear()
    m.full.machines[pid].mmu.invlpg(0x1000)
    assert calls == [0x1000]


def test_trapped_instructions_are_decoded_once_per_address_and_bytes() -> None:
    """The decode cache is keyed by the bytes fetched: new bytes at the same address decode anew."""
    m, pid = pcref_machine("nested", Recorder())
    vcpu = m.full.machines[pid].vcpu
    hlt, cli = b"\xf4" + bytes(14), b"\xfa" + bytes(14)
    first = vcpu._decode(hlt, 0x1000)
    assert first is not None and first.mnemonic == "hlt"
    assert vcpu._decode(hlt, 0x1000) is first  # the same bytes at the same address: decoded once
    rewritten = vcpu._decode(cli, 0x1000)  # the guest wrote other code there
    assert rewritten is not None and rewritten.mnemonic == "cli"
    moved = vcpu._decode(b"\xeb\x00" + bytes(13), 0x2000)  # a relative jump: its target depends on the address
    assert moved is not None and moved.op_str == "0x2002"
