"""A full-virtualization partition: an unmodified PC kernel on its own engine, devices and memory.

Ring 0 builds one :class:`FullPartition` per ``virtualization = "full"``
partition (docs/fullvirt.md):

* its memory is its quota, one contiguous run of frames seen by the guest as
  physical memory from 0 (:class:`spk._fv_mmu.GuestPhysical`);
* its engine is its own: guest-physical memory mapped at 0 and nothing else
  (nested MMU), plus a private shadow pool above it (shadow MMU);
* its vCPU (:class:`spk._fv_cpu.FullVcpu`) traps and emulates the kernel at
  real CPL 1; its devices (:mod:`spk._fv_devices`) sit on their ports;
* its time is the machine's virtual time: the PIT counts it, ``hlt`` sleeps
  until the next timer edge without executing.

The ELF is loaded at its physical addresses; the vCPU starts at its entry
in 64-bit mode with paging on, ring 0's boot tables (in the top pages of
its memory) identity-mapping its whole memory, interrupts off, CS 0x08 and
SS 0x10 as the guest sees them.

Errors: ImageError (not an x86-64 ELF executable, a segment outside the
memory or over the boot tables), EngineError (the engine cannot be created
or is not what this module verified at bring-up).
"""

from __future__ import annotations

import io
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from spk._engine import Engine
from spk._fv_cpu import EXIT_TICKS, FullVcpu
from spk._fv_devices import PcDevices, pit_clock, ticks_of
from spk._fv_faults import FullStop
from spk._fv_mmu import PTE_A, PTE_D, PTE_P, PTE_PS, PTE_W, GuestPhysical, Mmu, NestedMmu
from spk._fv_state import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_TSD,
    HF_CS64,
    HF_SEGMENT_MODE,
    REAL_IOPL,
    W_CR2,
    W_EFLAGS,
    W_GDT,
    W_HFLAGS,
    W_IDT,
    W_LDT,
    W_SEG,
    W_TR,
)
from spk._measure import Measurements
from spk._partition import Counters, KernelFault, State
from spk._x86 import EFER_NXE, MSR_EFER
from spk.errors import EngineError, ImageError

PAGE = 4096
#: the guest's view of its boot selectors (its own GDT comes later)
BOOT_CS, BOOT_SS = 0x08, 0x10
MMU_MODES = ("nested", "shadow")
#: the same page fault handled by ring 0 this many times in a row with no progress: a livelock
HIDDEN_FAULT_LIMIT = 256
#: pages at the top of guest memory holding ring 0's boot tables (PML4, PDPT, PD, PT)
BOOT_TABLE_PAGES = 4


@dataclass
class FullImage:
    """A PC kernel ELF as ring 0 loads it: (physical address, bytes, memory size) per segment, its entry."""

    segments: list[tuple[int, bytes, int]]
    entry: int
    measured: bytes


def read_pc_image(data: bytes) -> FullImage:
    """Read a PC kernel: an ELF64 x86-64 executable loaded at its physical addresses.

    Rules (ImageError.rule): elf_malformed, elf_class, elf_machine,
    elf_type, elf_no_segment, elf_segment_file_size.
    """
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 64 or not elf.little_endian or elf["e_machine"] != "EM_X86_64":
            raise ImageError("a full partition's kernel must be an ELF64 x86-64 file", "elf_class")
        if elf["e_type"] != "ET_EXEC":
            raise ImageError(f"{elf['e_type']}: a PC kernel is a statically linked executable (ET_EXEC)", "elf_type")
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_memsz"] > 0]
        headers = [(s["p_paddr"], s["p_offset"], s["p_filesz"], s["p_memsz"]) for s in loads]
        entry = int(elf["e_entry"])
    except (ELFError, ValueError, KeyError, OSError, AssertionError) as exc:
        raise ImageError(f"not a readable ELF file: {exc}", "elf_malformed") from None
    if not headers:
        raise ImageError("no loadable (PT_LOAD) segment", "elf_no_segment")
    segments = []
    for paddr, offset, filesz, memsz in headers:
        if filesz > memsz or offset + filesz > len(data):
            raise ImageError(f"segment at {paddr:#x}: {filesz:#x} file bytes in {memsz:#x}", "elf_segment_file_size")
        segments.append((paddr, data[offset : offset + filesz], memsz))
    return FullImage(segments, entry, data)


def memory_needed(image: FullImage) -> int:
    """Bytes of guest memory a kernel needs: its highest segment, plus ring 0's boot tables."""
    top = max(paddr + memsz for paddr, _data, memsz in image.segments)
    return ((top + PAGE - 1) // PAGE + BOOT_TABLE_PAGES) * PAGE


@dataclass
class FullPartition:
    """One full partition: what ring 0 keeps (the machine holds it beside the paravirtual ones)."""

    pid: int
    name: str
    quota: int
    mmu_mode: str
    first_frame: int
    image: FullImage
    state: State = State.READY
    exit_code: int | None = None
    fault: KernelFault | None = None
    counters: Counters = field(default_factory=Counters)
    console_buffer: bytearray = field(default_factory=bytearray)
    measurements: Measurements = field(default_factory=Measurements)
    may_manage: bool = False
    restarts: int = 0
    paused_from: State | None = None
    timer_deadline: int = 0
    timer_pending: bool = False
    pending_traps: list[tuple[int, int, int]] = field(default_factory=list)
    virtualization: str = "full"
    #: what a paravirtual partition has and a full one has not (generic code iterates them): no
    #: ring-0 address spaces (its tables are its own), no hypercall ports (serial cables instead)
    spaces: dict[int, object] = field(default_factory=dict)
    ports: dict[str, object] = field(default_factory=dict)


class FullMachine:
    """The engine, vCPU, MMU and devices of one full partition, and its run loop.

    ``ram_view``/``ram_address`` are the host view and address of the whole
    machine RAM; the partition's memory is ``quota`` frames from
    ``first_frame``. ``on_output(data)`` receives COM1's bytes.
    """

    def __init__(
        self,
        part: FullPartition,
        ram_view: memoryview,
        ram_address: int,
        *,
        time_mode: str,
        on_output: Callable[[bytes], None],
        mmu_factory: Callable[[GuestPhysical, Callable[[], None], int], Mmu] | None = None,
    ) -> None:
        self.part = part
        size = part.quota * PAGE
        start = part.first_frame * PAGE
        self.mem = GuestPhysical(ram_view[start : start + size], ram_address + start)
        self.devices = PcDevices()
        #: bytes waiting for a UART whose line the guest has not opened yet (see serial_input)
        self._waiting_input: dict[int, bytearray] = {}
        self._lines_open: set[int] = set()
        self._on_output = on_output
        self._uart_seen = 0
        self.vcpu = FullVcpu(self.mem, self)
        # Always exact: the block checks (tripwire, interrupt window, scan) are part of its isolation.
        self.time_mode = time_mode
        self.engine = Engine(self.mem.host_address, size, self.vcpu, time_mode="exact", full=True)
        self._pool: mmap.mmap | None = None
        self.mmu = self._make_mmu(part.mmu_mode, mmu_factory)
        self.vcpu.bind(self.engine, self.mmu)
        self._now = 0
        self._run_start = 0
        self._last_fault: tuple[int, int, int] | None = None
        self._same_fault = 0
        self.halted = False
        self._bring_up()
        self._boot()

    # -- construction ----------------------------------------------------------
    def _make_mmu(self, mode: str, factory: Callable[..., Mmu] | None) -> Mmu:
        flush = self.engine.flush_tlb
        if mode == "nested":
            return NestedMmu(self.mem, flush, self.engine.flush_page)
        if mode != "shadow":
            raise ImageError(f"mmu {mode!r}: one of {', '.join(MMU_MODES)}", "mmu")
        from spk._fv_shadow import ShadowMmu

        pages = max(256, self.part.quota // 8)
        self._pool = mmap.mmap(-1, pages * PAGE)
        import ctypes

        pool_address = ctypes.addressof(ctypes.c_char.from_buffer(self._pool))
        pool_base = ((self.mem.size + (1 << 21) - 1) >> 21) << 21  # above the guest's memory, 2 MiB aligned
        pool = GuestPhysical(memoryview(self._pool), pool_address)
        mmu: Mmu = ShadowMmu(self.mem, pool, pool_base, flush, self.engine.flush_page)
        for address, size, host in mmu.engine_regions():
            if address != 0:
                self.engine.map_region(address, size, host)
        return mmu

    def _bring_up(self) -> None:
        """Reach real CPL 1 and CPL 3 once, through the guest's (still empty) memory, and record them.

        The engine enters a privilege level only through ``iretq`` (a
        register write does not change the CPL), so a stub does it and
        ``int3`` stops at each level. What the vCPU keeps: the CS and SS
        caches and hflags of each level, checked to be what the layout of
        :mod:`spk._fv_state` says (CPL in hflags, IOPL 1 in eflags).
        """
        mem, engine, vcpu = self.mem, self.engine, self.vcpu
        if mem.size < 0x10000:
            raise ImageError(f"{mem.size:#x} bytes of memory: a full partition needs 64 KiB at least", "quota")
        gdt = (0, 0, 0, 0x00AF_BB00_0000_FFFF, 0x00CF_B300_0000_FFFF, 0x00AF_FB00_0000_FFFF, 0x00CF_F300_0000_FFFF)
        mem.write(0x1000, struct.pack("<7Q", *gdt))
        mem.write_u64(0x2000, 0x3000 | 7)
        mem.write_u64(0x3000, 0x4000 | 7)
        mem.write_u64(0x4000, 0x87 | PTE_A | PTE_D)  # 0..2 MiB, user, writable
        mem.write(0x5000, bytes.fromhex("48cf"))  # iretq to CPL 1
        mem.write(0x5100, bytes.fromhex("cc48cf"))  # int3 ; iretq to CPL 3
        mem.write(0x5200, bytes.fromhex("cc"))  # int3
        mem.write(0x6000, struct.pack("<5Q", 0x5100, 0x19, 0x1002, 0x7000, 0x21))
        mem.write(0x7000, struct.pack("<5Q", 0x5200, 0x2B, 0x1202, 0x7800, 0x33))
        engine.write("cr3", 0x2000)
        engine.write("cr4", engine.read("cr4") | CR4_PAE | CR4_TSD)
        engine.write("cr0", engine.read("cr0") | CR0_PE | CR0_PG | CR0_WP)
        engine.write_gdtr(0x1000, len(gdt) * 8 - 1)
        engine.write("rsp", 0x6000)
        seen: list[tuple[int, int, int, int]] = []
        w = engine.live

        def capture(vector: int) -> None:
            seen.append((vector, int(w[W_HFLAGS]), int(w[W_SEG["cs"] + 2]), int(w[W_SEG["ss"] + 2])))
            if len(seen) == 1 and int(w[W_EFLAGS]) & 0x3000 != REAL_IOPL:
                seen.append((-1, 0, 0, 0))  # not the IOPL the vCPU relies on: bring-up fails below
            if len(seen) >= 2:
                engine.stop()

        vcpu.bringup = capture
        engine.full_checks(False)
        try:
            result = engine.run(0x5000, 100_000)  # each trap costs EXIT_TICKS
        finally:
            vcpu.bringup = None
            engine.full_checks(True)
        if result.engine_error or len(seen) != 2 or [s[0] for s in seen] != [3, 3]:
            raise EngineError(f"full vCPU bring-up failed: {result.engine_error or seen}")
        (_v1, hflags1, cs1, ss1), (_v3, hflags3, cs3, ss3) = seen
        if hflags1 & 3 != 1 or hflags3 & 3 != 3 or (hflags1 ^ hflags3) & ~3 or not hflags1 & HF_CS64:
            raise EngineError(f"full vCPU bring-up: hflags {hflags1:#x} / {hflags3:#x} are not CPL 1 / CPL 3, 64-bit")
        vcpu.hflags_cpl = {1: 1, 3: 3}
        vcpu.hflags_mode = hflags1 & HF_SEGMENT_MODE
        vcpu.cs_cache = {1: cs1, 3: cs3}
        vcpu.ss_cache = {1: ss1, 3: ss3}
        mem.view[:] = bytes(mem.size)
        self.engine.flush_tlb()
        self.engine.flush_code()
        self.engine.forget_scans()

    def _boot(self) -> None:
        """Load the ELF, build the boot tables, and set the vCPU at the entry (the boot contract)."""
        mem, vcpu, engine = self.mem, self.vcpu, self.engine
        image = self.part.image
        tables = mem.size - BOOT_TABLE_PAGES * PAGE
        for paddr, data, memsz in image.segments:
            if paddr < PAGE or paddr + memsz > tables:
                raise ImageError(
                    f"segment at physical {paddr:#x} (+{memsz:#x}) outside the guest's memory below its boot "
                    f"tables ({PAGE:#x}..{tables:#x})", "elf_segment_region",
                )  # fmt: skip
            mem.write(paddr, data + bytes(memsz - len(data)))
        pml4, pdpt, pd, pt = (tables + i * PAGE for i in range(BOOT_TABLE_PAGES))
        mem.view[tables : mem.size] = bytes(BOOT_TABLE_PAGES * PAGE)
        mem.write_u64(pml4, pdpt | PTE_P | PTE_W | PTE_A)
        mem.write_u64(pdpt, pd | PTE_P | PTE_W | PTE_A)
        huge = min(mem.size >> 21, 512)
        for i in range(huge):
            mem.write_u64(pd + i * 8, (i << 21) | PTE_P | PTE_W | PTE_PS | PTE_A | PTE_D)
        if huge < 512 and mem.size & ((1 << 21) - 1):
            mem.write_u64(pd + huge * 8, pt | PTE_P | PTE_W | PTE_A)
            for i in range((mem.size >> 12) & 511):
                mem.write_u64(pt + i * 8, ((huge << 21) + (i << 12)) | PTE_P | PTE_W | PTE_A | PTE_D)
        w = engine.live
        for i in range(16):
            w[i] = 0
        for seg in ("ds", "es", "fs", "gs"):
            word = W_SEG[seg]
            w[word] = w[word + 1] = w[word + 2] = 0
        for word in (W_LDT, W_TR, W_GDT, W_IDT):
            w[word] = w[word + 1] = w[word + 2] = 0
        vcpu.enter_cpl(1, BOOT_CS, BOOT_SS)
        v = vcpu.v
        v.cr3 = pml4
        engine.write("cr4", CR4_PAE | CR4_TSD)
        real_wp = CR0_WP if self.mmu.mode == "shadow" else 0
        engine.write("cr0", CR0_PE | CR0_PG | CR0_ET | real_wp)
        self.mmu.wp = False
        efer = engine.read_msr(MSR_EFER)
        engine.write_msr(MSR_EFER, efer & ~(EFER_NXE | 1))  # NXE and SCE off, as the guest's
        engine.write("cr3", self.mmu.load_cr3(pml4))
        w[W_CR2] = 0
        vcpu.set_rflags(0)
        vcpu.rip = image.entry
        self.halted = False
        engine.flush_tlb()
        engine.flush_code()

    # -- the board: time and devices (called by the vCPU inside hooks) ------------
    def now(self) -> int:
        return self._run_start + self.engine.executed() if self._in_run else self._now

    _in_run = False

    pit_clock = staticmethod(pit_clock)
    ticks_of = staticmethod(ticks_of)

    def port_in(self, port: int, size: int) -> int:
        if port & 7 in (0, 5):  # RBR or LSR: the guest looks at its receiver
            self._open_line(port & ~7)
        value = self.devices.port_in(port, size, self.pit_clock(self.now()))
        self._after_io()  # a read can raise an IRQ (the next received byte) or arm a UART timeout
        return value

    def port_out(self, port: int, size: int, value: int) -> None:
        self.devices.port_out(port, size, value, self.pit_clock(self.now()))
        if port & 7 == 1 and value & 1:  # IER: receive interrupts on
            self._open_line(port & ~7)
        self._after_io()

    def _open_line(self, base: int) -> None:
        uart = self.devices.uarts.get(base)
        if uart is None or base in self._lines_open or uart.dlab:
            return
        self._lines_open.add(base)  # the guest's driver is ready for input
        waiting = self._waiting_input.pop(base, None)
        if waiting:
            uart.feed(bytes(waiting), self.pit_clock(self.now()))

    def serial_input(self, base: int, data: bytes) -> None:
        """Bytes on the receive line of the UART at ``base``.

        They wait until the guest's driver is ready for input (it reads RBR
        or LSR, or turns receive interrupts on), as a terminal waits for the
        port to be opened: a driver's initialization resets the receiver
        (FCR), which would otherwise lose input given before the kernel booted.
        """
        uart = self.devices.add_uart(base)
        if base in self._lines_open:
            uart.feed(data, self.pit_clock(self.now()))
        else:
            self._waiting_input.setdefault(base, bytearray()).extend(data)

    def _after_io(self) -> None:
        """Inside a run, after a device access: console bytes out, the guest's exit, IRQs and timers."""
        output = self.devices.uart.output
        if len(output) > self._uart_seen:
            data = bytes(output[self._uart_seen :])
            del output[:]
            self._uart_seen = 0
            self._on_output(data)
        status = self.devices.exit.status
        if status is not None:
            self.vcpu.request_stop(("exit", status))
        edge = self.devices.next_event()
        if edge is not None and self._in_run:  # the guest (re)armed its timer: the run ends at the edge
            self.engine.set_remaining(min(self.engine.remaining(), max(1, self.ticks_of(edge) - self.now())))
        if self.devices.pic.pending() and not self.vcpu.interruptible():
            self.engine.set_irq_wait(True)

    # -- running -------------------------------------------------------------------
    def run(self, start: int, until: int) -> tuple[str, int, int]:
        """Run from virtual time ``start`` to ``until`` at the latest: (reason, end time, wake-up).

        Reasons: "window_end"; "blocked" (halted with nothing to wake it
        before ``until``: wake-up is the next timer edge, 0 for never);
        "exit" (the guest wrote its status to the debug-exit port:
        ``exit_code``); "fault" (a FullStop: ``fault``).
        """
        now = start
        vcpu, engine, devices = self.vcpu, self.engine, self.devices
        while now < until:
            self._now = now
            devices.advance(self.pit_clock(now))
            if self.halted:
                if devices.pic.pending() and vcpu.rflags() & 0x200:
                    self.halted = False
                else:
                    edge = devices.next_event()
                    if edge is None:
                        return "blocked", until, 0
                    wake = max(now + 1, self.ticks_of(edge))
                    if wake > until:
                        return "blocked", until, wake
                    now = wake
                    continue
            try:
                if devices.pic.pending() and vcpu.interruptible():
                    vector = devices.acknowledge()
                    if vector is not None:
                        vcpu.counts["irq"] += 1
                        vcpu.deliver(vector, None, vcpu.rip)
            except FullStop as failure:
                self._fault(failure)
                return "fault", now, 0
            engine.set_irq_wait(devices.pic.pending())
            budget = until - now
            edge = devices.next_event()
            if edge is not None:
                budget = min(budget, max(1, self.ticks_of(edge) - now))
            vcpu.stop = None
            vcpu.pending_fault = None
            vcpu.regs.clear_exception_state()
            self._run_start, self._in_run = now, True
            try:
                result = engine.run(vcpu.rip, budget)
            finally:
                self._in_run = False
            now += result.elapsed
            self.part.counters.instructions += result.elapsed
            if result.engine_error and vcpu.stop is None:
                self._fault(FullStop("internal_error", f"engine: {result.engine_error}"))
                return "fault", now, 0
            if vcpu.pending_fault is not None and vcpu.stop is None:
                cost = self._page_fault(progress=result.elapsed > EXIT_TICKS)
                now = min(now + cost, max(now, until))  # ring 0's work is charged up to the window's end
            if engine.fv_stop == "tripwire" and not vcpu.repair_null_ss():
                self._fault(FullStop("cpl0_tripwire", f"the vCPU reached real CPL 0 at {vcpu.rip:#x}"))
                return "fault", now, 0
            stop = vcpu.stop
            if stop is None:
                continue
            if stop[0] == "halt":
                self.halted = True
            elif stop[0] == "exit":
                status = int(str(stop[1]))
                self.part.exit_code = status
                if status != 0:
                    self._fault(FullStop("kernel_panic", f"the guest wrote status {status} to the debug-exit port"))
                    return "fault", now, 0
                return "exit", now, 0
            elif isinstance(stop[1], FullStop):
                self._fault(stop[1])
                return "fault", now, 0
        return "window_end", now, 0

    def _page_fault(self, *, progress: bool) -> int:
        """A #PF the engine raised: the MMU's (a shadow fill, a stepped table write) or the guest's."""
        fault = self.vcpu.pending_fault
        assert fault is not None
        self.vcpu.pending_fault = None
        stepped = 0

        def step() -> None:
            nonlocal stepped
            stepped += self.engine.step(fault.rip)

        error = self.mmu.page_fault(fault.va, fault.access, step)
        key = (fault.va, fault.access, fault.rip)
        if error is None:
            # Handled by ring 0: the instruction is retried. The same fault handled again and
            # again with nothing retired between is ring 0 going round in circles (an MMU that
            # cannot satisfy it): end the partition rather than the host.
            self._same_fault = self._same_fault + 1 if key == self._last_fault and not progress else 0
            self._last_fault = key
            if self._same_fault >= HIDDEN_FAULT_LIMIT:
                self.vcpu.stop = ("fault", FullStop(
                    "mmu_livelock", f"{self.mmu.mode} MMU handled the fault at {fault.va:#x} (rip {fault.rip:#x}) "
                    f"{HIDDEN_FAULT_LIMIT} times without progress",
                ))  # fmt: skip
            return stepped + EXIT_TICKS
        self._last_fault, self._same_fault = None, 0
        self.vcpu.v.cr2 = fault.va
        try:
            self.vcpu.deliver(14, error, fault.rip)
        except FullStop as failure:
            self.vcpu.stop = ("fault", failure)
        return stepped + EXIT_TICKS

    def _fault(self, stop: FullStop) -> None:
        self.part.state = State.FAULTED
        self.part.fault = KernelFault(stop.kind, 0, self.vcpu.rip, 0, stop.detail)
        self.part.counters.faults += 1

    def close(self) -> None:
        """Close the engine; the shadow pool (if any) goes with the last view of it (the MMU's)."""
        self.engine.close()
        self._pool = None  # closing the mmap now would fail while the shadow MMU's views of it live

    def describe(self) -> dict[str, object]:
        """What review, fuzzing and benchmarks read: virtual registers, trap counts, memory map, devices."""
        return {
            "mmu": self.mmu.describe(),
            "virtual_registers": self.vcpu.v.as_dict(),
            "traps": dict(sorted(self.vcpu.counts.items())),
            "memory": [
                {"guest_physical": 0, "size": self.mem.size, "host_frame": self.part.first_frame, "what": "quota"},
            ],
            "scanned_blocks": self.engine.scan_misses,
            "exit_ticks": EXIT_TICKS,  # the virtual time every exit to ring 0 costs the guest
        }
