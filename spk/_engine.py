"""The one adapter between the SPK and the unicorn engine.

Nothing else in the project imports unicorn, sees a ``UC_*`` constant or a
``UcError``: an import-linter contract enforces it. The adapter offers a small
vocabulary instead: an :class:`Engine` per vCPU over a shared physical RAM,
raw :class:`Context` buffers whose register slots can be read and written
in place, trap callbacks (:class:`TrapSink`), an exact virtual-time budget
counted in native code (``_clock.c``, built by :mod:`spk._native`) and a
flush of the engine's translation caches.

Why raw ctypes: the Python binding costs ~2 us per register access, which is
most of a trap. The hot paths (hypercall, syscall bounce, world switch) save
the CPU state into a context buffer with one C call, read and write its
register slots as a ``memoryview`` and restore it with one C call (see
``shared`` notes: ~1.5 us per hypercall). Restoring a context also clears
the engine's "previous exception" state, which otherwise escalates a second
fault into #DF.

Engine facts this module relies on are located at start-up (never hard-coded)
and pinned by tests in ``tests/test_engine_facts.py``:

* the offsets of the 16 GPRs, RIP and CR3 inside a saved context;
* the address of the live CPU state (QEMU's ``env``), which the native
  clock reads rip from when a trap ends a block early.

Virtual time: one tick is one byte of guest instruction retired, counted by
a native block hook (see ``_clock.c`` for why bytes); a window ends at the
first instruction boundary at or after its budget, found by running the
block that crosses it alone up to that boundary (the engine's "until").

Errors: :class:`EngineError` (an engine call failed: a bug or an exhausted
host, never a guest's doing).
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import os
import struct
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import capstone
import unicorn
import unicorn.unicorn_py3.unicorn as _ucmod
from unicorn import x86_const as _x86

from spk import _native
from spk.errors import EngineError

_LIB = _ucmod.uclib
_UC_ARCH_X86 = unicorn.UC_ARCH_X86
_UC_MODE_64 = unicorn.UC_MODE_64

# Register ids the adapter exposes by name (slow path: set-up, diagnostics).
_REG_IDS: dict[str, int] = {
    name: getattr(_x86, f"UC_X86_REG_{name.upper()}")
    for name in (
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
        "rip", "rflags", "cs", "ss", "ds", "es", "fs", "gs",
        "cr0", "cr2", "cr3", "cr4", "fs_base", "gs_base",
    )
}  # fmt: skip
#: System registers only ring 0 sets (see Engine.impose_system_state), and EFER's MSR number.
_SYSTEM_REGS = (
    _x86.UC_X86_REG_CR0, _x86.UC_X86_REG_CR4, _x86.UC_X86_REG_GDTR, _x86.UC_X86_REG_IDTR,
    _x86.UC_X86_REG_LDTR, _x86.UC_X86_REG_TR, _x86.UC_X86_REG_DR7,
)  # fmt: skip
_MSR_EFER = 0xC000_0080
#: The guest-visible CPU state a partition carries between hosts (spk-migration/2), by name,
#: with its width in bytes: what a guest at CPL 2 or 3 can read or set. Order matters on a
#: write: a selector load may reset its base, so the bases come after the selectors, and
#: FPSW (which holds the x87 stack top) before FP0-7, so they land where they were read.
GUEST_REGISTERS: tuple[tuple[str, int], ...] = (
    *((name, 8) for name in ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")),
    ("rip", 8), ("rflags", 8),
    ("cs", 2), ("ss", 2), ("ds", 2), ("es", 2), ("fs", 2), ("gs", 2),
    ("fs_base", 8), ("gs_base", 8),
    ("fpcw", 2), ("fpsw", 2), ("fptag", 2), ("fop", 2), ("fip", 8), ("fcs", 2), ("fdp", 8), ("fds", 2),
    *((f"fp{i}", 10) for i in range(8)),
    ("mxcsr", 4),
    *((f"xmm{i}", 16) for i in range(16)),
)  # fmt: skip
_GUEST_REG_IDS = {name: getattr(_x86, f"UC_X86_REG_{name.upper()}") for name, _width in GUEST_REGISTERS}
_GPR_NAMES = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip

# --- raw C entry points ----------------------------------------------------
_c_uint64_p = ctypes.POINTER(ctypes.c_uint64)
_LIB.uc_context_save.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_LIB.uc_context_save.restype = ctypes.c_int
_LIB.uc_context_restore.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_LIB.uc_context_restore.restype = ctypes.c_int
_LIB.uc_context_alloc.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
_LIB.uc_context_alloc.restype = ctypes.c_int
_LIB.uc_context_free.argtypes = [ctypes.c_void_p]
_LIB.uc_context_free.restype = ctypes.c_int
_LIB.uc_context_size.argtypes = [ctypes.c_void_p]
_LIB.uc_context_size.restype = ctypes.c_size_t
_LIB.uc_reg_read.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
_LIB.uc_reg_read.restype = ctypes.c_int
_LIB.uc_reg_write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
_LIB.uc_reg_write.restype = ctypes.c_int
_LIB.uc_emu_stop.argtypes = [ctypes.c_void_p]
_LIB.uc_emu_stop.restype = ctypes.c_int
# An argtypes-free twin of the library, for pre-bound hot-path calls that
# skip ctypes' per-call conversion (see Engine.reader).
_RAW_LIB = ctypes.CDLL(_LIB._name)
#: Ring 0's trap callbacks, as the native helper calls them (see _clock.c).
_INTR_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_uint32)
_SYSCALL_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.c_uint32)
_PORT_CFUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint64)
_SCAN_CFUNC = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint32)
_FV_PORT_CFUNC = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32)
_UC_PROT_EXEC = unicorn.UC_PROT_EXEC
_LIB.uc_vmem_read.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_LIB.uc_vmem_read.restype = ctypes.c_int
_LIB.uc_emu_start.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t]
_LIB.uc_emu_start.restype = ctypes.c_int
_LIB.uc_strerror.argtypes = [ctypes.c_int]
_LIB.uc_strerror.restype = ctypes.c_char_p
#: The virtual-time modes (``[system] time``): exact (deterministic) and fast (host clock).
TIME_MODES = ("exact", "fast")
#: uc_ctl codes: (type | arg count << 26 | io << 30), as unicorn.h's UC_CTL macro.
_CTL_TLB_FLUSH = unicorn.UC_CTL_TLB_FLUSH | (unicorn.UC_CTL_IO_WRITE << 30)
_CTL_TLB_FLUSH_ARG = ctypes.c_int(_CTL_TLB_FLUSH)
#: The engine's invlpg (target/i386 misc_helper.c): ``helper_invlpg(CPUX86State *env, target_ulong addr)``.
#: Its SVM intercept check returns at once outside an SVM guest, which an engine here never is.
_INVLPG = _LIB.helper_invlpg_x86_64
_INVLPG.argtypes = (ctypes.c_void_p, ctypes.c_uint64)
_INVLPG.restype = None
# QEMU's drop of the code translated from a physical range (uc_struct, ram_addr_t start, end).
_TB_INVALIDATE_PHYS_RANGE = _LIB.tb_invalidate_phys_range_x86_64
_TB_INVALIDATE_PHYS_RANGE.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)
_TB_INVALIDATE_PHYS_RANGE.restype = None

#: RIP value used as ``until``: non-canonical, so no instruction ever sits there.
_NEVER = 0xFFFF_0000_0000_0000 - 1
_MASK64 = (1 << 64) - 1
#: How spk_run_step says the clock ended an engine run (bits above its status).
_RUN_AT_LIMIT, _RUN_NEED_TAIL, _RUN_USER_STOP = 1 << 16, 1 << 17, 1 << 18
_RUN_SENSITIVE, _RUN_IRQ, _RUN_TRIPWIRE = 1 << 19, 1 << 20, 1 << 21
#: SPK_SCAN_SLOTS of _clock.c
_SCAN_SLOTS = 8192


class _ScanEntry(ctypes.Structure):
    _fields_ = [("address", ctypes.c_uint64), ("size", ctypes.c_uint32), ("offset", ctypes.c_int32)]
_RUN_YIELD = 1 << 22
#: spk_run: the run ended in that one call; the ticks it executed sit above bit 24.
_RUN_ENDED, _RUN_EXECUTED_SHIFT = 1 << 23, 24
_U64 = ctypes.c_uint64
_PTR, _I64 = ctypes.c_void_p, ctypes.c_int64
#: Budgets below this go through spk_run (its executed ticks fit in the bits above 24).
_RUN_ONCE_BUDGET = 1 << 39
#: Longest guest copy done by the native helper in one call (longer ones go page by page in Python).
NATIVE_COPY_MAX = 1 << 20
#: Size of the x86 ``syscall`` instruction, re-added by the engine after its hook.
SYSCALL_INSN_LEN = 2

_MARK = 0x5A17_0000_0000_0000


class TrapSink(Protocol):
    """What the SPK answers when the engine reports a trap.

    Every method runs inside the engine's callback: it may read and write the
    CPU through its :class:`Engine`, restore a context to redirect the vCPU,
    or call :meth:`Engine.stop`. It must not raise: the SPK catches all.
    """

    def on_interrupt(self, vector: int) -> None:
        """An ``int n``, an exception (0..31) or a refused gate."""

    def on_port_io(self, port: int, is_write: bool, rip: int) -> bool:
        """An ``in``/``out`` instruction at ``rip`` (the engine does not fault it).

        Return True to refuse it: #GP is then raised at the instruction
        (``on_interrupt(13)``), which does not complete.
        """

    def on_syscall_insn(self, rip: int, plain: bool) -> None:
        """A ``syscall`` instruction at ``rip``.

        ``plain``: its bytes, as the app reads them through its page tables,
        are the 2-byte form ``0F 05`` (checked natively: see ``_clock.c``).
        The engine adds the decoded length to rip after this call.
        """

    def on_refused_insn(self, rip: int, vector: int) -> None:
        """An instruction the engine lets through but the CPU would refuse (``sysenter``)."""

    def on_invalid_insn(self) -> bool:
        """An invalid opcode (#UD). Return True when handled (vCPU redirected)."""

    def on_bad_memory(self, address: int) -> None:
        """A physical access outside RAM (an SPK bug: tables only name RAM)."""


class FullTrapSink(TrapSink, Protocol):
    """A full partition's trap sink: the :class:`TrapSink` calls plus what only full guests need."""

    def on_scan(self, address: int, size: int) -> int:
        """Offset of the first instruction ring 0 must emulate in the block ``[address, +size)``, or -1."""

    def on_sensitive(self, address: int) -> None:
        """Emulate the instruction at ``address`` (a block scan found it); set rip past it."""

    def on_fv_port(self, port: int, size: int, value: int, is_write: int) -> int:
        """Port I/O: the value read (for ``in``), or 1 << 32 to raise #GP at the instruction."""

    def on_cpuid(self) -> None:
        """Answer ``cpuid`` (set rax, rbx, rcx, rdx from eax and ecx)."""


class Context:
    """A raw engine context: the vCPU state saved in one C call.

    ``words`` is a live ``memoryview`` of u64 over the saved state; the slot
    indices of the GPRs, RIP and CR3 are located once per process
    (:func:`context_layout`). Writing a slot and restoring the context is how
    the SPK changes registers on its hot paths.
    """

    __slots__ = ("_engine", "handle", "layout", "ref", "size", "words")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        handle = ctypes.c_void_p()
        _check(_LIB.uc_context_alloc(engine.handle, ctypes.byref(handle)), "context_alloc")
        self.handle: int = handle.value or 0
        self.ref = handle  #: the handle as a ready ctypes argument (raw calls on the switch path)
        # uc_context_size is the whole allocation: header + CPU state.
        self.size = int(_LIB.uc_context_size(engine.handle))
        words = (ctypes.c_uint64 * (self.size // 8)).from_address(self.handle)
        self.words = memoryview(words).cast("B").cast("Q")
        self.layout = engine.layout

    def free(self) -> None:
        """Release the C buffer (idempotent)."""
        if self.handle:
            _LIB.uc_context_free(self.handle)
            self.handle = 0
            self.ref = ctypes.c_void_p(0)

    def __del__(self, _quietly: type[suppress] = suppress) -> None:  # pragma: no cover - shutdown order
        # At interpreter shutdown module globals may be gone: the default binds what is needed.
        with _quietly(Exception):
            self.free()

    def set_gpr(self, index: int, value: int) -> None:
        self.words[self.layout.gpr0 + index] = value & 0xFFFF_FFFF_FFFF_FFFF

    @property
    def rip(self) -> int:
        return int(self.words[self.layout.rip])

    @rip.setter
    def rip(self, value: int) -> None:
        self.words[self.layout.rip] = value & 0xFFFF_FFFF_FFFF_FFFF

    @property
    def cr3(self) -> int:
        return int(self.words[self.layout.cr3])

    @cr3.setter
    def cr3(self, value: int) -> None:
        self.words[self.layout.cr3] = value

    @property
    def cpl(self) -> int:
        """Current privilege level, from the saved CS selector."""
        return int(self.words[self.layout.cs_word] >> self.layout.cs_shift) & 3

    def load_gprs(self, values: memoryview | list[int] | tuple[int, ...]) -> None:
        base = self.layout.gpr0
        self.words[base : base + 16] = memoryview(struct.pack("<16Q", *values)).cast("Q")

    def copy_from(self, other: Context) -> None:
        """Copy the whole saved state of ``other`` into this buffer."""
        ctypes.memmove(self.handle, other.handle, self.size)


class LiveRegisters:
    """The vCPU's live registers, read and written in place (no engine call).

    The same rip/cr3/cpl accessors as :class:`Context`, over the engine's
    own state: a context restore on x86 is only a ``memcpy`` into it, so
    :meth:`load_privilege` (a partial restore) is a plain copy of words.
    """

    __slots__ = (
        "cr3_slot", "cs_shift", "cs_word", "exc_mask", "exc_word", "int_word", "privilege", "rip_slot", "words",
    )  # fmt: skip

    def __init__(self, words: memoryview, layout: ContextLayout) -> None:
        self.words = words
        self.rip_slot = layout.rip - layout.gpr0
        self.cr3_slot = layout.cr3 - layout.gpr0
        self.cs_word = layout.cs_word - layout.gpr0
        self.cs_shift = layout.cs_shift
        self.int_word = layout.int_word - layout.gpr0
        self.exc_word = layout.exc_word - layout.gpr0
        self.exc_mask = 0xFFFF_FFFF << layout.exc_shift
        self.privilege = layout.privilege_words

    def clear_exception_state(self) -> None:
        """Forget the exception "in flight" (QEMU's old_exception := -1).

        The engine never delivers exceptions, so nothing clears this state:
        left alone, a partition's next fault would escalate to #DF, and the
        one after would vanish (see unicorn-notes). Stopping the engine sets
        it (a window's end, a yield); hypercalls do not. The machine clears
        it before every run.
        """
        self.words[self.exc_word] |= self.exc_mask

    @property
    def software_interrupt(self) -> bool:
        """Inside an interrupt hook: was it an ``int n``, not a CPU exception?"""
        return bool((int(self.words[self.int_word]) >> 32) & 1)

    @property
    def rip(self) -> int:
        return int(self.words[self.rip_slot])

    @rip.setter
    def rip(self, value: int) -> None:
        self.words[self.rip_slot] = value & 0xFFFF_FFFF_FFFF_FFFF

    @property
    def cr3(self) -> int:
        return int(self.words[self.cr3_slot])

    @cr3.setter
    def cr3(self, value: int) -> None:
        self.words[self.cr3_slot] = value

    @property
    def cpl(self) -> int:
        return int(self.words[self.cs_word] >> self.cs_shift) & 3

    def load_privilege(self, ctx: Context) -> None:
        """Load only the privilege state of a template (a world switch).

        The words that differ between the CPL 2 and CPL 3 templates (segment
        caches, hflags, flags, rip), found at bring-up. Everything else stays
        as it was: the GPRs and the x87/SSE state the app or kernel left, as
        an interrupt gate or ``iretq`` leaves them on hardware.
        """
        base = ctx.layout.gpr0
        words, source = self.words, ctx.words
        for i in self.privilege:
            words[i] = source[base + i]


@dataclass(frozen=True)
class ContextLayout:
    """u64 slot indices of the registers inside a saved context."""

    gpr0: int
    rip: int
    cr3: int
    cs_word: int  #: found at bring-up (-1 before)
    cs_shift: int
    #: word holding QEMU's (error_code, exception_is_int) pair, found at bring-up
    int_word: int = -1
    #: where QEMU's old_exception (the exception "in flight") sits, found at bring-up
    exc_word: int = -1
    exc_shift: int = 0
    #: live-state words (GPRs excluded) that differ between CPL 2 and CPL 3: the
    #: privilege state a world switch loads (segments, hflags, flags, rip)
    privilege_words: tuple[int, ...] = ()


#: SPK_MAX_PRIVILEGE_WORDS of ``_clock.c``.
_MAX_PRIVILEGE_WORDS = 16


class _ClockStruct(ctypes.Structure):
    """``struct spk_clock`` of ``_clock.c``, field by field (same order, same types)."""

    _fields_ = [
        ("counter", ctypes.c_uint64), ("limit", ctypes.c_uint64),
        ("block_start", ctypes.c_uint64), ("block_end", ctypes.c_uint64),
        ("tail_pc", ctypes.c_uint64), ("tail_armed", ctypes.c_uint64),
        ("need_tail", ctypes.c_uint64), ("need_pc", ctypes.c_uint64), ("need_size", ctypes.c_uint64),
        ("stopping", ctypes.c_uint64), ("at_limit", ctypes.c_uint64),
        ("env", ctypes.c_uint64), ("rip_offset", ctypes.c_uint64),
        ("uc", ctypes.c_void_p), ("emu_stop", ctypes.c_void_p), ("raise_exception", ctypes.c_void_p),
        ("on_port", ctypes.c_void_p), ("on_interrupt", ctypes.c_void_p),
        ("want_user", ctypes.c_uint64), ("user_stop", ctypes.c_uint64),
        ("cs_offset", ctypes.c_uint64), ("cs_shift", ctypes.c_uint64),
        ("on_syscall", ctypes.c_void_p), ("cr3_offset", ctypes.c_uint64),
        ("ram", ctypes.c_uint64), ("ram_size", ctypes.c_uint64),
        ("bounce_vector", ctypes.c_uint64), ("bounce_entry", ctypes.c_uint64),
        ("bounce_stack", ctypes.c_uint64), ("bounce_count", ctypes.c_uint64),
        ("template_words", ctypes.c_uint64), ("privilege_count", ctypes.c_uint64),
        ("privilege", ctypes.c_uint64 * _MAX_PRIVILEGE_WORDS),
        ("exc_word", ctypes.c_uint64), ("exc_mask", ctypes.c_uint64),
        ("user_cs", ctypes.c_uint64), ("user_ss", ctypes.c_uint64),
        ("reg_read", ctypes.c_void_p), ("reg_write", ctypes.c_void_p),
        ("rflags_id", ctypes.c_uint64), ("kernel_rflags", ctypes.c_uint64),
        ("fv", ctypes.c_uint64), ("hflags_offset", ctypes.c_uint64), ("eflags_offset", ctypes.c_uint64),
        ("irq_wait", ctypes.c_uint64), ("irq_stop", ctypes.c_uint64), ("tripwire", ctypes.c_uint64),
        ("need_sensitive", ctypes.c_uint64), ("sens_offset", ctypes.c_uint64),
        ("scan", ctypes.c_void_p), ("on_scan", ctypes.c_void_p), ("scan_misses", ctypes.c_uint64),
        ("on_fv_port", ctypes.c_void_p),
        ("ctl", ctypes.c_void_p),
        ("yield_vector", ctypes.c_uint64), ("yield_number", ctypes.c_uint64),
        ("yield_armed", ctypes.c_uint64), ("yield_stop", ctypes.c_uint64),
        ("context_save", ctypes.c_void_p), ("context_restore", ctypes.c_void_p),
        ("ctl_tlb_flush", ctypes.c_uint64), ("run_start", ctypes.c_uint64),
        ("map_number", ctypes.c_uint64), ("unmap_number", ctypes.c_uint64),
        ("spaces", ctypes.c_void_p), ("space_slots", ctypes.c_uint64), ("owner", ctypes.c_int64),
        ("frame_owner", ctypes.c_void_p), ("frame_type", ctypes.c_void_p),
        ("map_count", ctypes.c_void_p), ("writable_count", ctypes.c_void_p), ("no_exec", ctypes.c_void_p),
        ("frame_count", ctypes.c_uint64), ("data_type", ctypes.c_uint64),
        ("user_base", ctypes.c_uint64), ("user_end", ctypes.c_uint64),
        ("kernel_base", ctypes.c_uint64), ("kernel_end", ctypes.c_uint64),
        ("invlpg", ctypes.c_void_p), ("mm_done", ctypes.c_uint64), ("tb_invalidate", ctypes.c_void_p),
    ]  # fmt: skip


class RunResult(NamedTuple):
    """How one :meth:`Engine.run` ended (a named tuple: built once per run, on the switch path)."""

    executed: int  #: ticks: instruction bytes retired (exact mode) or host nanoseconds (fast mode)
    budget_exhausted: bool  #: stopped because the budget ran out
    engine_error: str | None  #: the engine refused to go on (diagnostic text)
    #: virtual time the run took: ``executed``, or the whole budget when it ran out
    #: (the part of an instruction that did not fit passes idle)
    elapsed: int = 0


class Engine:
    """One emulated x86-64 vCPU over a shared physical RAM.

    The RAM is a host buffer (an ``mmap``) mapped at guest-physical 0 with
    ``mem_map_ptr``, so several engines can share it and the SPK can read and
    write guest-physical memory without engine calls.

    Virtual time (``time_mode``): "exact" counts ticks, one per byte of guest
    instruction retired, in native code at translated-block granularity (see
    ``_clock.c``): deterministic, bit for bit. "fast" counts host nanoseconds
    on the vCPU and ends runs by a host-clock watchdog: engine speed, not
    repeatable.

    Errors: :class:`EngineError` when the engine cannot be created, a set-up
    call fails, or the native helper cannot be built (gcc missing).
    """

    def __init__(
        self, ram_address: int, ram_size: int, sink: TrapSink, *, time_mode: str = "exact", full: bool = False
    ) -> None:
        if time_mode not in TIME_MODES:
            raise EngineError(f"unknown time mode {time_mode!r} (one of {', '.join(TIME_MODES)})")
        self.time_mode = time_mode
        self._exact = time_mode == "exact"
        native = _native.library()
        try:
            self._uc = unicorn.Uc(_UC_ARCH_X86, _UC_MODE_64)
            # A plain 64-bit model: no RDRAND/RDSEED, whose host entropy would
            # make runs non-deterministic (rdtsc is closed by CR4.TSD).
            self._uc.ctl_set_cpu_model(_x86.UC_CPU_X86_QEMU64)
            self._uc.mem_map_ptr(0, ram_size, unicorn.UC_PROT_ALL, ram_address)
        except unicorn.UcError as exc:
            raise EngineError(f"cannot create the engine: {exc}") from exc
        self.handle: int = ctypes.cast(self._uc._uch, ctypes.c_void_p).value or 0
        self._handle_ref = ctypes.c_void_p(self.handle)
        self._sink = sink
        self.layout = context_layout()
        self._scratch = ctypes.c_uint64()
        self._stop_requested = False
        self._code_hooks = 0  #: debugger hooks (add_code_hook) in place
        self._scratch_ctx: Context | None = None
        self._disasm: capstone.Cs | None = None
        self._boundaries: dict[tuple[int, bytes], list[int]] = {}
        size = int(_LIB.uc_context_size(self.handle)) - self.layout.gpr0 * 8
        self._env_address = locate_cpu_state(self.handle, self.write)
        #: The live CPU state as u64 words: word i is context word gpr0 + i.
        #: Writing it is what a context restore does (a memcpy into it).
        self.live = memoryview((ctypes.c_uint64 * (size // 8)).from_address(self._env_address)).cast("B").cast("Q")
        self._native = native
        self._clock = _ClockStruct()
        self._clock.limit = 0
        self._clock.env = self._env_address
        self._clock.rip_offset = (self.layout.rip - self.layout.gpr0) * 8
        self._clock.cr3_offset = (self.layout.cr3 - self.layout.gpr0) * 8
        self._clock.ram = ram_address
        self._clock.ram_size = ram_size
        self._ram_size = ram_size
        self._cr3_word = self.layout.cr3 - self.layout.gpr0  #: CR3's word in :attr:`live`
        self._store_guard: int | None = None  #: the hook over all of RAM while the store guard is up
        self._clock.uc = self.handle
        self._clock.emu_stop = ctypes.cast(_RAW_LIB.uc_emu_stop, ctypes.c_void_p).value
        try:  # QEMU's own exception raiser, exported by unicorn 2.1.4's library (pinned by the port tests)
            raiser = _RAW_LIB.raise_exception_err_ra_x86_64
        except AttributeError as exc:
            raise EngineError("this unicorn library does not export raise_exception_err_ra_x86_64") from exc
        self._clock.raise_exception = ctypes.cast(raiser, ctypes.c_void_p).value
        self._clock.ctl = ctypes.cast(_RAW_LIB.uc_ctl, ctypes.c_void_p).value
        self._clock.tb_invalidate = ctypes.cast(_TB_INVALIDATE_PHYS_RANGE, ctypes.c_void_p).value
        self._clock.ctl_tlb_flush = _CTL_TLB_FLUSH
        self._clock.context_save = ctypes.cast(_RAW_LIB.uc_context_save, ctypes.c_void_p).value
        self._clock.context_restore = ctypes.cast(_RAW_LIB.uc_context_restore, ctypes.c_void_p).value
        self._clock_ref = ctypes.byref(self._clock)
        self._walk = self.page_walker()  #: the native page walk, for drops by frame
        # The run loop's entry and exit, one native call each (see _clock.c).
        clock_address = ctypes.addressof(self._clock)
        for name, restype, argtypes in (
            ("spk_run_begin", ctypes.c_uint64, [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]),
            ("spk_run_step", ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]),
            ("spk_run_end", ctypes.c_uint64, [ctypes.c_void_p]),
            ("spk_run", ctypes.c_uint64, [ctypes.c_void_p] * 2 + [ctypes.c_uint64] * 4),
            ("spk_window_enter", ctypes.c_uint32, [ctypes.c_void_p] * 2 + [ctypes.c_uint64] * 4 + [_PTR, _I64]),
            ("spk_window_leave", ctypes.c_uint64, [ctypes.c_void_p] * 2 + [ctypes.c_uint64]),
            ("spk_copy_in", ctypes.c_int64, [ctypes.c_void_p, *[ctypes.c_uint64] * 4, ctypes.c_char_p]),
            ("spk_copy_out", ctypes.c_int64, [ctypes.c_void_p, *[_U64] * 4, ctypes.c_char_p, _U64]),
        ):
            function = getattr(native, name)
            function.restype, function.argtypes = restype, argtypes
        emu_start = ctypes.cast(_RAW_LIB.uc_emu_start, ctypes.c_void_p).value
        self._run_begin = functools.partial(native.spk_run_begin, clock_address)
        self._run_step = functools.partial(native.spk_run_step, clock_address, emu_start)
        self._run_end = functools.partial(native.spk_run_end, clock_address)
        self._run_once = functools.partial(native.spk_run, clock_address, emu_start)
        self._copy_in = functools.partial(native.spk_copy_in, clock_address)
        self._window_enter = functools.partial(native.spk_window_enter, clock_address)
        self._window_leave = functools.partial(native.spk_window_leave, clock_address)
        self._windows_ready = False  #: configure_windows done
        self._copy_out = functools.partial(native.spk_copy_out, clock_address)
        #: ring 0's answer to a YIELD done natively (configure_windows), called once the run returns
        self._on_native_yield: Callable[[], None] | None = None
        self._fast_start = 0
        self._fast_deadline = 0
        self._watchdog: int | None = None
        #: why the last run of a full partition's engine stopped early: "irq", "tripwire" or None
        self.fv_stop: str | None = None
        self._full = full
        self._install_hooks()
        if full:
            self._install_full_hooks(sink)  # type: ignore[arg-type]
        if not self._exact:
            self._start_watchdog()

    # -- hooks ------------------------------------------------------------
    def _native_hook(self, kind: int, name: str, *extra: object) -> None:
        """Register a function of the native helper as a hook, the clock as its user data."""
        hook = ctypes.c_size_t()
        address = ctypes.cast(getattr(self._native, name), ctypes.c_void_p)
        status = _RAW_LIB.uc_hook_add(
            ctypes.c_void_p(self.handle), ctypes.byref(hook), ctypes.c_int(kind), address, self._clock_ref,
            ctypes.c_uint64(1), ctypes.c_uint64(0), *extra,
        )  # fmt: skip
        _check(status, f"hook_add({name})")

    def _install_hooks(self) -> None:
        uc = self._uc
        sink = self._sink
        # The interrupt hook is the hot path (every hypercall and syscall): the
        # native helper settles virtual time at the trapping rip, then calls
        # ring 0 through one ctypes callback. The sink never raises (see TrapSink).
        on_interrupt = sink.on_interrupt
        self._intr_cb = _INTR_CFUNC(on_interrupt)
        self._clock.on_interrupt = ctypes.cast(self._intr_cb, ctypes.c_void_p).value
        self._native_hook(unicorn.UC_HOOK_INTR, "spk_on_interrupt")
        if self._exact:
            self._native_hook(unicorn.UC_HOOK_BLOCK, "spk_on_block_fv" if self._full else "spk_on_block")

        # Port I/O: the engine faults none of it. Ring 0 answers whether to
        # refuse it; the helper then raises #GP at the instruction itself.
        def on_port(port: int, is_write: int, rip: int) -> int:
            return 1 if sink.on_port_io(port, bool(is_write), rip) else 0

        self._port_cb = _PORT_CFUNC(on_port)
        self._clock.on_port = ctypes.cast(self._port_cb, ctypes.c_void_p).value
        self._native_hook(unicorn.UC_HOOK_INSN, "spk_on_in", ctypes.c_int(_x86.UC_X86_INS_IN))
        self._native_hook(unicorn.UC_HOOK_INSN, "spk_on_out", ctypes.c_int(_x86.UC_X86_INS_OUT))

        # The syscall instruction (the Linux personality's every call): the
        # native helper checks its encoding and calls ring 0 through one
        # ctypes callback, as for interrupts.
        self._syscall_cb = _SYSCALL_CFUNC(lambda rip, plain: sink.on_syscall_insn(rip, bool(plain)))
        self._clock.on_syscall = ctypes.cast(self._syscall_cb, ctypes.c_void_p).value
        self._native_hook(unicorn.UC_HOOK_INSN, "spk_on_syscall", ctypes.c_int(_x86.UC_X86_INS_SYSCALL))

        def on_sysenter(_uc: object, _ud: object) -> None:
            # Without a hook the engine silently skips sysenter; in long mode
            # with no SYSENTER MSRs the CPU refuses it: the SPK reports #UD.
            sink.on_refused_insn(self.read("rip"), 6)

        uc.hook_add(unicorn.UC_HOOK_INSN, on_sysenter, None, 1, 0, _x86.UC_X86_INS_SYSENTER)

        def on_invalid(_uc: object, _ud: object) -> bool:
            self.settle()  # the invalid instruction does not retire
            return sink.on_invalid_insn()

        uc.hook_add(unicorn.UC_HOOK_INSN_INVALID, on_invalid)

        def on_unmapped(_uc: object, _access: int, address: int, *_rest: object) -> bool:
            sink.on_bad_memory(address)
            return False

        # Only physical addresses outside RAM are unmapped. A paravirtual
        # engine bounds the hook to them: a hook covering a frame keeps every
        # store to it on the engine's slow path (see guard_stores). A full
        # partition's engine keeps it everywhere: its guest writes its own
        # page tables, so ring 0 cannot keep the rules of spk._coherence.
        self._on_unmapped = on_unmapped
        if self._full:
            uc.hook_add(unicorn.UC_HOOK_MEM_UNMAPPED, on_unmapped)
        else:
            uc.hook_add(unicorn.UC_HOOK_MEM_UNMAPPED, on_unmapped, None, self._ram_size, _MASK64)

    def _install_full_hooks(self, sink: FullTrapSink) -> None:
        """A full partition's engine: the checks of ``fv_block`` (_clock.c), its port I/O and ``cpuid``.

        QEMU's hflags (CPL in bits 0-1, the interrupt shadow in bit 3) and
        eflags sit at fixed words after the GPRs (CPUX86State: regs[16],
        eip, eflags, cc_dst, cc_src, cc_src2, cc_op/df, hflags/hflags2);
        spk._fv_cpu's bring-up checks both against real CPL 1 and CPL 3
        states before the guest runs.
        """
        clock = self._clock
        self._scan_table = (_ScanEntry * _SCAN_SLOTS)()
        clock.scan = ctypes.addressof(self._scan_table)
        clock.hflags_offset = 22 * 8
        clock.eflags_offset = 17 * 8
        self._scan_cb = _SCAN_CFUNC(sink.on_scan)
        clock.on_scan = ctypes.cast(self._scan_cb, ctypes.c_void_p).value
        self._fv_port_cb = _FV_PORT_CFUNC(sink.on_fv_port)
        clock.on_fv_port = ctypes.cast(self._fv_port_cb, ctypes.c_void_p).value

        def on_cpuid(_uc: object, _ud: object) -> int:
            sink.on_cpuid()
            return 1  # answered: the engine skips its own CPUID

        self._uc.hook_add(unicorn.UC_HOOK_INSN, on_cpuid, None, 1, 0, _x86.UC_X86_INS_CPUID)
        clock.fv = 1

    def map_region(self, address: int, size: int, host_address: int) -> None:
        """Map ``size`` bytes of host memory at engine-physical ``address`` (a shadow pool).

        Errors: :class:`EngineError` when the engine refuses (overlap, alignment).
        """
        try:
            self._uc.mem_map_ptr(address, size, unicorn.UC_PROT_ALL, host_address)
        except unicorn.UcError as exc:
            raise EngineError(f"cannot map {size:#x} bytes at {address:#x}: {exc}") from exc

    def full_checks(self, enabled: bool) -> None:
        """Turn a full partition's block checks on or off (off only while ring 0 brings its vCPU up)."""
        if self._full:
            self._clock.fv = 1 if enabled else 0

    def step(self, rip: int) -> int:
        """Run exactly the one instruction at ``rip`` (outside any hook); returns the ticks it took.

        For a shadow MMU's stepped write to a protected table. The budget is
        the instruction's length, so a branch ends the step at its target.
        Errors: none; an instruction that cannot be fetched or decoded runs
        as one block of at most 15 bytes.
        """
        code = self.read_code(rip, 15) or self.read_code(rip, 0x1000 - (rip & 0xFFF)) or b""
        if self._disasm is None:
            self._disasm = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        decoded = next(self._disasm.disasm_lite(code, rip, 1), None)
        length = decoded[1] if decoded is not None else 15
        until = rip + length
        clock = self._clock
        waiting, clock.irq_wait = clock.irq_wait, 0
        self._stop_requested = False
        start = self._run_begin(length, 0)
        # A longer block translated at rip by a normal run would be refused by this budget
        # and nothing would run (found by the shadow helper): translate the step afresh.
        self._remove_cache(rip, rip + 1)
        ended = self._run_step(rip, until)
        self._remove_cache(until, until + 1)
        if ended & _RUN_SENSITIVE and not self._stop_requested:
            self._sink.on_sensitive(int(clock.need_pc))  # type: ignore[attr-defined]
        clock.irq_wait = waiting
        return int(self._run_end() - start)

    def regions(self) -> list[tuple[int, int]]:
        """(first, last) engine-physical address of every region the engine maps (an invariant's input)."""
        return [(int(begin), int(end)) for begin, end, _perms in self._uc.mem_regions()]

    def retire(self, length: int) -> None:
        """Charge ``length`` ticks ring 0 spent for the guest (an emulated instruction, an exit).

        Charged up to the run's end at most: a run never passes its budget
        (the window it was given), whatever ring 0 did inside it.
        """
        if self._exact:
            clock = self._clock
            counter = int(clock.counter)
            clock.counter = min(counter + length, max(counter, int(clock.limit)))

    def set_irq_wait(self, waiting: bool) -> None:
        """Full partitions: stop the next run before the first block with IF set (an interrupt waits)."""
        self._clock.irq_wait = 1 if waiting else 0

    def forget_scans(self) -> None:
        """Full partitions: decode every block again (the guest's code changed under the cache)."""
        ctypes.memset(self._scan_table, 0, ctypes.sizeof(self._scan_table))

    @property
    def scan_misses(self) -> int:
        return int(self._clock.scan_misses)

    def _start_watchdog(self) -> None:
        lib = self._native
        lib.spk_watchdog_new.restype = ctypes.c_void_p
        lib.spk_watchdog_new.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.spk_watchdog_arm.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        lib.spk_watchdog_disarm.argtypes = [ctypes.c_void_p]
        lib.spk_watchdog_disarm.restype = ctypes.c_int
        lib.spk_watchdog_quit.argtypes = [ctypes.c_void_p]
        watchdog = lib.spk_watchdog_new(self.handle, self._clock.emu_stop)
        if not watchdog:
            raise EngineError("cannot start the fast mode's watchdog thread")
        self._watchdog = int(watchdog)
        # The thread must end before the engine goes (it may call emu_stop on it).
        self._finalizer = weakref.finalize(self, lib.spk_watchdog_quit, self._watchdog)

    def close(self) -> None:
        """End the fast mode's watchdog thread (idempotent; exact mode has none)."""
        if self._watchdog is not None:
            self._finalizer()
            self._watchdog = None

    # -- the native app system call bounce ------------------------------
    def configure_bounce(
        self, vector: int, template: Context, user_cs: int, user_ss: int, kernel_rflags: int
    ) -> None:
        """Set up the native bounce of ``int vector`` at CPL 3 (see ``bounce`` in ``_clock.c``).

        ``template``: the CPL 2 context whose privilege words a bounce loads
        (it must outlive the engine's use of it). Nothing happens until
        :meth:`arm_bounce` names a kernel entry. Errors: EngineError when
        the bring-up has not located the words a bounce needs.
        """
        layout = template.layout
        privilege = layout.privilege_words
        if not privilege or len(privilege) > _MAX_PRIVILEGE_WORDS or layout.exc_word < 0 or layout.cs_word < 0:
            raise EngineError("the native bounce needs the bring-up's privilege and exception words")
        clock = self._clock
        clock.bounce_entry = 0
        clock.bounce_vector = vector
        clock.template_words = template.handle + layout.gpr0 * 8
        clock.privilege_count = len(privilege)
        for i, word in enumerate(privilege):
            clock.privilege[i] = word
        clock.exc_word = layout.exc_word - layout.gpr0
        clock.exc_mask = 0xFFFF_FFFF << layout.exc_shift
        clock.cs_offset = (layout.cs_word - layout.gpr0) * 8
        clock.cs_shift = layout.cs_shift
        clock.user_cs, clock.user_ss, clock.kernel_rflags = user_cs, user_ss, kernel_rflags
        clock.reg_read = ctypes.cast(_RAW_LIB.uc_reg_read, ctypes.c_void_p).value
        clock.reg_write = ctypes.cast(_RAW_LIB.uc_reg_write, ctypes.c_void_p).value
        clock.rflags_id = _REG_IDS["rflags"]

    def arm_bounce(self, entry: int, stack: int) -> None:
        """Bounce natively into ``entry`` on the kernel stack ``stack`` (0 for either: ring 0 decides)."""
        clock = self._clock
        clock.bounce_entry = entry if stack else 0
        clock.bounce_stack = stack

    def configure_windows(self, vector: int, number: int, on_yield: Callable[[], None] | None) -> None:
        """Set up :meth:`enter_window` and the native YIELD (``int vector`` at CPL 2, rax = ``number``).

        Ring 0's ``hc_yield`` does nothing but rax = 0 and end the run; done
        in C (``spk_on_interrupt``) it costs no ctypes callback and no Python
        dispatch. ``on_yield`` is called once the run returns (it counts the
        hypercall and records the stop's reason); None never answers it
        natively (a hypercall trace must see every call). The native yield is
        armed only inside a window :meth:`enter_window` opened with it, so a
        partition whose traps go elsewhere never has it. Errors: EngineError
        before the bring-up located the CS and exception words.
        """
        layout = self.layout
        if layout.cs_word < 0 or layout.exc_word < 0:
            raise EngineError("windows need the bring-up's CS and exception words")
        clock = self._clock
        clock.cs_offset = (layout.cs_word - layout.gpr0) * 8
        clock.cs_shift = layout.cs_shift
        clock.exc_word = layout.exc_word - layout.gpr0
        clock.exc_mask = 0xFFFF_FFFF << layout.exc_shift
        clock.yield_vector, clock.yield_number = vector, number
        self._on_native_yield = on_yield
        self._windows_ready = True

    def configure_page_tables(
        self,
        numbers: tuple[int, int],
        frame_table: tuple[int, int, int, int, int],
        frame_count: int,
        data_type: int,
        halves: tuple[int, int, int, int],
        space_slots: int,
    ) -> None:
        """Set up the native MAP and UNMAP (``spk_on_interrupt``'s ``pv_map``/``pv_unmap``).

        ``numbers``: MAP's and UNMAP's hypercall numbers (at the vector
        :meth:`configure_windows` set); ``frame_table``: host addresses of
        the frame table's owners (int32), types (uint8), map, writable and
        no-execute counts (int32), ``frame_count`` elements each, which the
        native path reads and counts in place (a frame whose no-execute
        element is not zero is left to ring 0: spk._coherence); ``data_type``: the type code
        of a mappable frame; ``halves``: the user half's and the kernel
        slot's [start, end); ``space_slots``: how many handles a partition's
        space array (:meth:`enter_window`'s ``spaces``) holds. Only the
        success path is done natively, with ring 0's own steps; every other
        call goes to ring 0's handler. Armed per window by :meth:`enter_window`.
        """
        clock = self._clock
        clock.map_number, clock.unmap_number = numbers
        clock.frame_owner, clock.frame_type, clock.map_count, clock.writable_count, clock.no_exec = frame_table
        clock.frame_count, clock.data_type, clock.space_slots = frame_count, data_type, space_slots
        clock.user_base, clock.user_end, clock.kernel_base, clock.kernel_end = halves
        clock.invlpg = ctypes.cast(_INVLPG, ctypes.c_void_p).value

    def enter_window(
        self, ctx: Context, *, flush_tlb: bool, entry: int, stack: int, spaces: int = 0, owner: int = 0
    ) -> None:
        """Begin a window with one native call (``spk_window_enter``).

        Loads ``ctx`` (a restore also forgets fault escalation), clears the
        exception in flight, flushes the TLB when ``flush_tlb`` (the CR3 the
        engine holds translations of differs: a restore copies CR3 without
        flushing), arms the native bounce into ``entry`` on ``stack`` (0 for
        either: ring 0 decides), the native yield when configured, and the
        native MAP and UNMAP for partition ``owner`` whose spaces' CR3s by
        handle are at host address ``spaces`` (0: not armed; see
        :meth:`configure_page_tables`).
        Errors: EngineError before :meth:`configure_windows`, or when the
        engine refuses the restore.
        """
        if not self._windows_ready:
            raise EngineError("enter_window before configure_windows")
        yield_on = 1 if self._on_native_yield else 0
        status = self._window_enter(ctx.handle, 1 if flush_tlb else 0, entry, stack, yield_on, spaces or None, owner)
        if status:
            raise EngineError(f"context restore failed: {self._error_text(status)}")

    def disarm_page_tables(self) -> None:
        """Stop answering MAP and UNMAP natively until the next window (the partition went away)."""
        self._clock.spaces = None

    def take_page_table_calls(self) -> int:
        """How many MAPs and UNMAPs were answered natively since the last call."""
        clock = self._clock
        count = clock.mm_done
        if count:
            clock.mm_done = 0
        return int(count)

    def leave_window(self, ctx: Context, *, save: bool) -> int:
        """End a window with one native call (``spk_window_leave``): returns the native bounces since the last count.

        Saves the vCPU into ``ctx`` when ``save`` (not after a fault: the
        last good state stays), disarms the native bounce and yield.
        """
        return int(self._window_leave(ctx.handle, 1 if save else 0))

    def copy_in(self, cr3: int, va: int, length: int, need: int) -> bytes | None:
        """``length`` bytes of guest virtual memory through ``cr3``, or None when any is unreachable.

        ``need``: the rights every level must grant (2 writable, 4 user;
        present always), the rule of :meth:`page_walker`; no wrap past 2**64,
        canonical addresses only. One native call (``spk_copy_in``); at most
        :data:`NATIVE_COPY_MAX` bytes (ValueError beyond).
        """
        if length > NATIVE_COPY_MAX:
            raise ValueError(f"native copies are at most {NATIVE_COPY_MAX} bytes")
        buffer = ctypes.create_string_buffer(length)
        if self._copy_in(cr3, va, length, need, buffer) < 0:
            return None
        return buffer.raw

    def copy_out(self, cr3: int, va: int, data: bytes, need: int, *, drop_code: bool) -> int:
        """Write ``data`` to guest virtual memory through ``cr3`` (writable pages only).

        Every page is checked before anything is written: -1 (nothing
        written) when a byte is not writable with ``need``'s rights. With
        ``drop_code`` (inside an interrupt hook, ``cr3`` the loaded space:
        see :meth:`drop_code_pages`), the code translated from each frame
        written goes at once, by physical address. 0 when written. At most
        :data:`NATIVE_COPY_MAX` bytes (ValueError beyond).
        """
        if len(data) > NATIVE_COPY_MAX:
            raise ValueError(f"native copies are at most {NATIVE_COPY_MAX} bytes")
        if type(data) is not bytes:
            data = bytes(data)
        return int(self._copy_out(cr3, va, len(data), need, data, 1 if drop_code else 0))

    def take_bounces(self) -> int:
        """How many native bounces happened since the last call."""
        clock = self._clock
        count = clock.bounce_count
        if count:
            clock.bounce_count = 0
        return int(count)

    def page_walker(self) -> Callable[[int, int, int], int]:
        """The native page walk over this engine's RAM: ``walk(cr3, va, need) -> paddr or -1``.

        ``need``: the bits every level must have (2 writable, 4 user; present
        always). The same rule as :meth:`spk._paging.Walker.translate`, 4 KiB
        pages, canonical addresses only; a table entry outside RAM is absent.
        """
        fn = self._native.spk_walk
        fn.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]
        fn.restype = ctypes.c_int64
        return functools.partial(fn, self._clock_ref)

    # -- registers (slow path, by name) -----------------------------------
    def read(self, name: str) -> int:
        """Read one register by name with one raw C call."""
        _LIB.uc_reg_read(self.handle, _REG_IDS[name], ctypes.byref(self._scratch))
        return int(self._scratch.value)

    def reader(self, name: str) -> Callable[[], int]:
        """A pre-bound, argument-free reader of one register, for hot paths."""
        cell = ctypes.c_uint64()
        call = functools.partial(_RAW_LIB.uc_reg_read, ctypes.c_void_p(self.handle), _REG_IDS[name], ctypes.byref(cell))

        def read() -> int:
            call()
            return cell.value

        return read

    def writer(self, name: str) -> Callable[[int], None]:
        """A pre-bound writer of one register, for hot paths (no per-call argument conversion).

        Errors: EngineError when the engine refuses the write (a bug).
        """
        cell = ctypes.c_uint64()
        handle = ctypes.c_void_p(self.handle)
        call = functools.partial(_RAW_LIB.uc_reg_write, handle, _REG_IDS[name], ctypes.byref(cell))

        def write(value: int) -> None:
            cell.value = value & 0xFFFF_FFFF_FFFF_FFFF
            status = call()
            if status:
                _check(status, name)

        return write

    def write(self, name: str, value: int) -> None:
        """Write one register by name with one raw C call."""
        self._scratch.value = value & 0xFFFF_FFFF_FFFF_FFFF
        _check(_LIB.uc_reg_write(self.handle, _REG_IDS[name], ctypes.byref(self._scratch)), name)

    def read_msr(self, msr: int) -> int:
        """Read a model-specific register of the vCPU (EFER, say)."""
        return int(self._uc.msr_read(msr))

    def write_msr(self, msr: int, value: int) -> None:
        """Write a model-specific register of the vCPU. Errors: EngineError when refused."""
        try:
            self._uc.msr_write(msr, value)
        except unicorn.UcError as exc:
            raise EngineError(f"engine refused MSR {msr:#x}: {exc}") from exc

    def read_code(self, va: int, size: int) -> bytes | None:
        """The ``size`` bytes at ``va`` as the vCPU would fetch them now (its current tables), or None."""
        buffer = ctypes.create_string_buffer(size)
        if _LIB.uc_vmem_read(self.handle, va, _UC_PROT_EXEC, buffer, size) != 0:
            return None
        return buffer.raw

    def write_gdtr(self, base: int, limit: int) -> None:
        self._uc.reg_write(_x86.UC_X86_REG_GDTR, (0, base, limit, 0))

    # -- contexts ---------------------------------------------------------
    def live_registers(self) -> LiveRegisters:
        """A view of the live registers (create it after CPU bring-up)."""
        return LiveRegisters(self.live, self.layout)

    def new_context(self) -> Context:
        return Context(self)

    def save(self, ctx: Context) -> None:
        """Save the vCPU state into ``ctx`` (one C call)."""
        _RAW_LIB.uc_context_save(self._handle_ref, ctx.ref)

    def restore(self, ctx: Context) -> None:
        """Load ``ctx`` into the vCPU (one C call); also clears fault escalation."""
        _RAW_LIB.uc_context_restore(self._handle_ref, ctx.ref)

    # -- running ----------------------------------------------------------
    def _emu_start(self, rip: int, until: int) -> str | None:
        status = _LIB.uc_emu_start(self.handle, rip, until, 0, 0)
        return self._error_text(status) if status != 0 else None

    def run(self, rip: int, budget: int, *, until_user: bool = False) -> RunResult:
        """Run from ``rip`` for at most ``budget`` ticks.

        Returns early when a trap handler calls :meth:`stop`. Exact mode:
        when the budget runs out, the run ends at the last instruction
        boundary at or before it (the instruction that would cross it runs
        in the next run), the same boundary every time, and ``elapsed``
        counts the budget whole (the part of an instruction left over
        passes idle). Fast mode: after ``budget`` host nanoseconds.
        ``until_user``: also end before the first instruction executed at
        CPL 3 (exact mode; a CPL change ends a block, so that point is exact).
        """
        if budget <= 0:
            return RunResult(0, True, None, 0)
        self._stop_requested = False
        if not self._exact:
            return self._run_fast(rip, budget)
        clock = self._clock
        if until_user:  # the CS slot is known once the CPU is brought up (spk._cpu)
            clock.cs_offset = (self.layout.cs_word - self.layout.gpr0) * 8
            clock.cs_shift = self.layout.cs_shift
        want_user = 1 if until_user else 0
        self.fv_stop = None
        first: int | None = None  # the first engine start's bits, when spk_run did it
        if budget < _RUN_ONCE_BUDGET:
            # The common case in one native call: begin, run, end (spk_run).
            first = self._run_once(rip, _NEVER, budget, want_user)
            if first & _RUN_ENDED:
                return self._run_ended(first)
            start = int(clock.run_start)  # ring 0's loop goes on from that start
        else:
            start = self._run_begin(budget, want_user)
        step = self._run_step
        until = tail_end = prefix_end = _NEVER
        exhausted = False
        error: str | None = None
        while True:
            if first is None:
                ended = step(rip, until)
            else:
                ended, first = first, None
            if ended & 0xFFFF:
                error = self._error_text(ended & 0xFFFF)
            if until != _NEVER:
                # The engine drops the block holding the "until" address itself;
                # a block that starts there would be an exit stub: drop it too.
                self._remove_cache(until, until + 1)
                until = _NEVER
            if ended & _RUN_YIELD:  # answered natively (configure_windows): ring 0 learns it now
                self._stop_requested = True
                if self._on_native_yield is not None:
                    self._on_native_yield()
            if error is not None or self._stop_requested or ended & _RUN_USER_STOP:
                break
            if ended & (_RUN_IRQ | _RUN_TRIPWIRE):
                self.fv_stop = "tripwire" if ended & _RUN_TRIPWIRE else "irq"
                break
            if ended & _RUN_AT_LIMIT:
                exhausted = True
                break
            if ended & _RUN_SENSITIVE:
                # A full partition's block holds an instruction ring 0 emulates
                # (see fv_block): run the part before it alone, then emulate it.
                clock.tail_armed = 0
                pc, offset = int(clock.need_pc), int(clock.sens_offset)
                if offset:
                    until = prefix_end = pc + offset
                    rip = pc
                    continue
                self._sink.on_sensitive(pc)  # type: ignore[attr-defined]
                if self._stop_requested:
                    break
                rip = int(self.live[self.layout.rip - self.layout.gpr0])
                continue
            if not ended & _RUN_NEED_TAIL:
                live_rip = int(self.live[self.layout.rip - self.layout.gpr0])
                if prefix_end != _NEVER and live_rip == prefix_end:  # the part before a sensitive instruction ran
                    rip, prefix_end = live_rip, _NEVER
                    continue
                # The engine returned by itself: a tail run reached its end.
                exhausted = tail_end != _NEVER and live_rip == tail_end
                break
            # A block would cross the limit: run it alone up to the last
            # instruction boundary at or before the limit (its "until" address).
            rip, size = int(clock.need_pc), int(clock.need_size)
            tail_end = self._tail_end(rip, size, int(clock.limit - clock.counter))
            if tail_end == rip:  # its first instruction already crosses the limit
                exhausted = True
                break
            self._remove_cache(rip, rip + size)
            clock.tail_pc, clock.tail_armed = rip, 1
            until = tail_end
        executed = self._run_end() - start
        elapsed = max(executed, int(clock.limit - start)) if exhausted else executed
        return RunResult(executed, exhausted, error, elapsed)

    def _run_ended(self, ended: int) -> RunResult:
        """The result of a run :meth:`run` did in one native call (spk_run ended it)."""
        executed = ended >> _RUN_EXECUTED_SHIFT
        error = self._error_text(ended & 0xFFFF) if ended & 0xFFFF else None
        if ended & _RUN_YIELD:  # answered natively (configure_windows): ring 0 learns it now
            self._stop_requested = True
            if self._on_native_yield is not None:
                self._on_native_yield()
        if error is None and not self._stop_requested and not ended & _RUN_USER_STOP and ended & _RUN_AT_LIMIT:
            # the whole budget passed: up to the limit, which a trap may have moved (set_remaining)
            clock = self._clock
            return RunResult(executed, True, None, max(executed, int(clock.limit - clock.run_start)))
        return RunResult(executed, False, error, executed)

    @staticmethod
    def _error_text(status: int) -> str:
        return f"{(_LIB.uc_strerror(status) or b'engine error').decode()} (UC_ERR {status})"

    def _run_fast(self, rip: int, budget: int) -> RunResult:
        import time

        lib = self._native
        self._fast_start = start = time.perf_counter_ns()
        self._fast_deadline = start + budget
        lib.spk_watchdog_arm(self._watchdog, budget)
        self._clock.stopping = 0
        error = self._emu_start(rip, _NEVER)
        lib.spk_watchdog_disarm(self._watchdog)
        executed = max(1, time.perf_counter_ns() - start)
        return RunResult(executed, executed >= self._fast_deadline - start, error, executed)

    def _remove_cache(self, start: int, end: int) -> None:
        with suppress(unicorn.UcError):
            self._uc.ctl_remove_cache(start, end)

    def _tail_end(self, pc: int, size: int, room: int) -> int:
        """The last instruction boundary at most ``room`` bytes after ``pc`` in the block ``[pc, pc+size)``.

        A translated block is straight-line code (it ends at the first
        branch), so its instructions retire in order: decoding them gives
        the boundary. When its bytes cannot be read or decoded (capstone
        and the engine disagree: not seen), the block's own end: that run
        then ends past its budget, by less than the block. Boundaries are
        memoised by the block's address and bytes (a compute-bound
        partition ends its windows in the same few blocks).
        """
        buffer = ctypes.create_string_buffer(size)
        if _LIB.uc_vmem_read(self.handle, pc, _UC_PROT_EXEC, buffer, size) != 0:
            return pc + size
        key = (pc, buffer.raw)
        ends = self._boundaries.get(key)
        if ends is None:
            if self._disasm is None:
                self._disasm = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
            # [] when capstone decodes nothing: the block's end is the only boundary known
            ends = [address + length - pc for address, length, _m, _o in self._disasm.disasm_lite(key[1], pc)]
            if len(self._boundaries) >= 4096:
                self._boundaries.clear()
            self._boundaries[key] = ends
        if not ends:
            return pc + size
        fit = bisect.bisect_right(ends, room)
        return pc + ends[fit - 1] if fit else pc  # pc: its first instruction does not fit

    def settle(self) -> None:
        """Inside a hook: the instruction at the live rip did not retire (a fault, a stop before it).

        The block hook counted the whole block when it was entered; this
        takes back the bytes from rip to the block's end (a no-op outside
        the block, or in fast mode).
        """
        self._native.spk_settle_at(self._clock_ref, ctypes.c_uint64(int(self.live[self.layout.rip - self.layout.gpr0])))

    def stop_before(self) -> None:
        """Inside a code hook: end the run *before* the hooked instruction (a debugger stop).

        The engine synchronises rip before a code hook: the instruction there
        has not retired and is not counted (:meth:`settle`).
        """
        self.settle()
        self.stop()

    # -- debugging (slow path: only while a debugger is attached) --------------
    def add_code_hook(self, begin: int, end: int, callback: Callable[[int], None]) -> int:
        """Call ``callback(address)`` before each instruction in ``[begin, end]``; ``begin > end``: all.

        A bounded hook costs nothing outside its range (unicorn-notes). The
        callback must not raise. Translated code is dropped so the hook
        applies to code already translated. Returns the hook's handle.
        """

        def on_code(_uc: object, address: int, _size: int, _ud: object) -> None:
            callback(address)

        handle = self._uc.hook_add(unicorn.UC_HOOK_CODE, on_code, None, begin, end)
        self._code_hooks += 1
        self.flush_code()
        return int(handle)

    def remove_hook(self, handle: int) -> None:
        """Remove a hook :meth:`add_code_hook` returned."""
        self._uc.hook_del(handle)
        self._code_hooks -= 1
        self.flush_code()

    def context_read(self, ctx: Context, names: Sequence[str]) -> list[int]:
        """Registers of a saved context, by name (the engine computes lazy flags and bases).

        The live state is put back afterwards: this may run between two runs only.
        """
        scratch = self._debug_scratch()
        self.save(scratch)
        self.restore(ctx)
        values = []
        try:
            for name in names:
                self._scratch.value = 0  # a selector fills only the low bytes
                _LIB.uc_reg_read(self.handle, _REG_IDS[name], ctypes.byref(self._scratch))
                values.append(int(self._scratch.value))
        finally:
            self.restore(scratch)
        return values

    def context_write(self, ctx: Context, name: str, value: int) -> None:
        """Change one register of a saved context, by name (between two runs only)."""
        scratch = self._debug_scratch()
        self.save(scratch)
        self.restore(ctx)
        try:
            self.write(name, value)
            self.save(ctx)
        finally:
            self.restore(scratch)

    def impose_system_state(self, ctx: Context, template: Context, rflags_mask: int, rflags_fixed: int) -> None:
        """Give ``ctx`` the control and descriptor-table registers of ``template`` (between runs only).

        Why: a context that comes from elsewhere (a migrated partition's) is
        the guest's registers plus system state the guest can never set itself:
        CR0, CR4, EFER, GDTR, IDTR, LDTR, TR, DR7. Those are ring 0's, so they
        are taken from ring 0's own template, never from the bytes that came;
        RFLAGS keeps only the bits an IRET would let a guest have.
        """
        scratch = self._debug_scratch()
        self.save(scratch)
        uc = self._uc
        try:
            self.restore(template)
            values = [(reg, uc.reg_read(reg)) for reg in _SYSTEM_REGS]
            efer = uc.msr_read(_MSR_EFER)
            self.restore(ctx)
            for reg, value in values:
                uc.reg_write(reg, value)
            uc.msr_write(_MSR_EFER, efer)
            self.write("rflags", (self.read("rflags") & rflags_mask) | rflags_fixed)
            self.save(ctx)
        finally:
            self.restore(scratch)

    def guest_state_read(self, ctx: Context) -> dict[str, int]:
        """The guest-visible registers of a saved context (:data:`GUEST_REGISTERS`), by name.

        Why by name: the saved context is the engine's own structure, with
        host pointers and bytes no guest can see; what leaves the host is only
        what the guest could observe. Wide registers (x87 80-bit, XMM) come as
        little-endian integers of their width. Between two runs only (the
        live state is put back). Errors: EngineError (the engine refused a read).
        """
        scratch = self._debug_scratch()
        self.save(scratch)
        self.restore(ctx)
        buffer = ctypes.create_string_buffer(16)
        values: dict[str, int] = {}
        try:
            for name, width in GUEST_REGISTERS:
                ctypes.memset(buffer, 0, 16)
                _check(_LIB.uc_reg_read(self.handle, _GUEST_REG_IDS[name], buffer), name)
                values[name] = int.from_bytes(buffer.raw[:width], "little")
        finally:
            self.restore(scratch)
        return values

    def guest_state_write(self, ctx: Context, template: Context, values: dict[str, int]) -> None:
        """Make ``ctx`` ``template`` with the named guest registers of ``values`` written over it.

        Why: a vCPU that comes from elsewhere starts as ring 0's own (system
        registers, hidden segment state, exception state: the template's) and
        only the registers a guest can see are taken, in :data:`GUEST_REGISTERS`
        order. The caller validates the values (this only writes them); names
        not in ``values`` keep the template's. Between two runs only. Errors:
        EngineError (the engine refused a write).
        """
        scratch = self._debug_scratch()
        self.save(scratch)
        self.restore(template)
        buffer = ctypes.create_string_buffer(16)
        try:
            for name, width in GUEST_REGISTERS:
                if name in values:
                    ctypes.memset(buffer, 0, 16)
                    ctypes.memmove(buffer, values[name].to_bytes(width, "little"), width)
                    _check(_LIB.uc_reg_write(self.handle, _GUEST_REG_IDS[name], buffer), name)
            self.save(ctx)
        finally:
            self.restore(scratch)

    def _debug_scratch(self) -> Context:
        if self._scratch_ctx is None:
            self._scratch_ctx = Context(self)
        return self._scratch_ctx

    def executed(self) -> int:
        """Ticks executed so far in the current :meth:`run` (inside a hook)."""
        if not self._exact:
            import time

            return max(0, time.perf_counter_ns() - self._fast_start)
        clock = self._clock
        return int(clock.counter - clock.run_start)

    def remaining(self) -> int:
        """Ticks left in the current run's budget (inside a hook)."""
        if not self._exact:
            import time

            return max(0, self._fast_deadline - time.perf_counter_ns())
        return max(0, int(self._clock.limit) - int(self._clock.counter))

    def set_remaining(self, remaining: int) -> None:
        """Move the current run's end to ``remaining`` ticks from now."""
        if not self._exact:
            import time

            self._fast_deadline = time.perf_counter_ns() + max(0, remaining)
            self._native.spk_watchdog_arm(self._watchdog, max(0, remaining))
            return
        self._clock.limit = int(self._clock.counter) + max(0, remaining)

    def stop(self) -> None:
        """End the current :meth:`run`: at once from a trap or code hook, else at the block's end."""
        self._stop_requested = True
        self._clock.stopping = 1
        _LIB.uc_emu_stop(self.handle)

    # -- caches -------------------------------------------------------------
    def flush_tlb(self) -> None:
        """Drop cached translations: required after CR3 or page-table changes.

        A context restore copies CR3 without flushing (unlike ``mov cr3``),
        so every world switch that changes CR3 must call this.
        """
        _RAW_LIB.uc_ctl(self._handle_ref, _CTL_TLB_FLUSH_ARG)

    def flush_page(self, va: int) -> None:
        """Drop the cached translations of the page holding ``va``, as the guest's own ``invlpg`` does.

        After one leaf PTE changed (an UNMAP): the engine's own invlpg helper
        (QEMU's ``helper_invlpg``) removes the page from every MMU index's TLB
        and victim TLB (all of that index when ``va`` lies in a large page it
        mapped) and the jump-cache entries of the page and the one before it
        (a block may span both). A full flush (:meth:`flush_tlb`) costs a
        clear of every TLB table and their refill; this costs one page.
        Errors: none (any address is accepted; a non-canonical one matches nothing).
        """
        _INVLPG(self._env_address, va & 0xFFFF_FFFF_FFFF_FFFF)

    def drop_code(self, start: int, end: int) -> None:
        """Drop translated code of the virtual range ``[start, end)`` (current address space).

        Falls back to flushing everything when the engine refuses the range.
        """
        if end <= start:
            return
        try:
            self._uc.ctl_remove_cache(start, end)
        except unicorn.UcError:
            self.flush_code()

    def drop_code_pages(self, va: int, length: int) -> None:
        """Drop translated code of every page of ``[va, va+length)`` (current address space), now.

        For an interrupt hook (a hypercall writing guest memory): the engine
        runs no block while it calls one, and looks the next block up after
        it, so no stale translation of these pages can run. Each page is
        walked in the loaded tables and its frame's code dropped by physical
        address (:meth:`drop_frame_code`): an alias at another address loses
        it too, and no fetch walk runs (the engine's own drop by virtual
        address walks as a fetch, and on a no-execute page leaves a page
        fault in flight for the guest). A page not mapped is skipped.
        """
        walk = self._walk
        cr3 = self.live[self._cr3_word]
        page = va & ~0xFFF
        end = va + length
        while page < end:
            frame = walk(cr3, page & _MASK64, 1)
            if frame >= 0:
                _TB_INVALIDATE_PHYS_RANGE(self.handle, frame & ~0xFFF, (frame & ~0xFFF) + 0x1000)
            page += 0x1000

    def flush_code(self) -> None:
        """Drop translated code: required after the host writes guest code."""
        self._uc.ctl_flush_tb()

    def drop_frame_code(self, mfn: int) -> None:
        """Drop the code translated from physical frame ``mfn``, whatever address it ran at.

        QEMU's ``tb_invalidate_phys_range`` over the frame (RAM is one block
        at guest-physical 0, so its RAM addresses are guest-physical ones).
        Safe between blocks (ring 0's hypercalls) and outside runs.
        """
        _TB_INVALIDATE_PHYS_RANGE(self.handle, mfn << 12, (mfn + 1) << 12)

    def guard_stores(self, on: bool) -> None:
        """Keep every guest store to RAM on the engine's checked path, or let them run fast again.

        Up: a second unmapped-access hook over all of RAM (it never fires:
        RAM is mapped) makes the engine's ``notdirty_write`` leave every
        TLB entry checked, and the TLB is flushed so no entry made fast
        before survives. Ring 0 raises it while a frame could be written
        through one alias and run through another (:mod:`spk._coherence`).
        A full partition's engine never lowers its all-address hook.
        """
        if self._full:
            return
        if on and self._store_guard is None:
            self._store_guard = self._uc.hook_add(
                unicorn.UC_HOOK_MEM_WRITE_UNMAPPED, self._on_unmapped, None, 0, self._ram_size - 1
            )
            self.flush_tlb()
        elif not on and self._store_guard is not None:
            self._uc.hook_del(self._store_guard)
            self._store_guard = None

    @property
    def stores_guarded(self) -> bool:
        """Whether the store guard is up (:meth:`guard_stores`)."""
        return self._full or self._store_guard is not None


def _check(status: int, what: str) -> None:
    if status != 0:
        raise EngineError(f"engine call {what} failed with status {status}")


# --- start-up location of engine facts --------------------------------------
_layout_cache: ContextLayout | None = None


def _scratch_uc() -> unicorn.Uc:
    uc = unicorn.Uc(_UC_ARCH_X86, _UC_MODE_64)
    uc.mem_map(0, 0x10000)
    return uc


def context_layout() -> ContextLayout:
    """Locate the register slots inside a saved context, by marker values.

    Errors: :class:`EngineError` when a marker is not found exactly once
    (the engine's layout changed: the SPK must not run on guesses).
    """
    global _layout_cache
    if _layout_cache is not None:
        return _layout_cache
    uc = _scratch_uc()
    handle = ctypes.cast(uc._uch, ctypes.c_void_p).value or 0
    for i, name in enumerate(_GPR_NAMES):
        uc.reg_write(_REG_IDS[name], _MARK | (i + 1))
    uc.reg_write(_REG_IDS["rip"], _MARK | 0x100)
    uc.reg_write(_REG_IDS["cr3"], 0x7654_3000)
    ctx = ctypes.c_void_p()
    _check(_LIB.uc_context_alloc(handle, ctypes.byref(ctx)), "context_alloc")
    _check(_LIB.uc_context_save(handle, ctx), "context_save")
    size = _LIB.uc_context_size(handle)
    raw = ctypes.string_at(ctx.value or 0, size)
    words = struct.unpack_from(f"<{len(raw) // 8}Q", raw)

    def find(value: int, what: str) -> int:
        hits = [i for i, w in enumerate(words) if w == value]
        if len(hits) != 1:
            raise EngineError(f"engine context layout: {what} found {len(hits)} times")
        return hits[0]

    gpr0 = find(_MARK | 1, "rax")
    for i in range(16):
        if words[gpr0 + i] != _MARK | (i + 1):
            raise EngineError(f"engine context layout: GPR {_GPR_NAMES[i]} not contiguous")
    rip = find(_MARK | 0x100, "rip")
    cr3 = find(0x7654_3000, "cr3")
    # The CS selector (hence the CPL) cannot be located here: loading a
    # selector needs a GDT. CPU bring-up finds it from two real contexts at
    # CPL 2 and CPL 3 (find_value_slot) and records it (set_bringup_slots).
    _LIB.uc_context_free(ctx)
    _layout_cache = ContextLayout(gpr0=gpr0, rip=rip, cr3=cr3, cs_word=-1, cs_shift=0)
    return _layout_cache


def set_bringup_slots(
    cs_word: int, cs_shift: int, int_word: int, exc_word: int, exc_shift: int, privilege_words: tuple[int, ...]
) -> ContextLayout:
    """Record the slots only a real CPU bring-up can locate; returns the full layout."""
    global _layout_cache
    base = context_layout()
    _layout_cache = ContextLayout(
        base.gpr0, base.rip, base.cr3, cs_word, cs_shift, int_word, exc_word, exc_shift, privilege_words
    )
    return _layout_cache


def find_next_eip_slot(ctx_a: Context, next_a: int, ctx_b: Context, next_b: int) -> int:
    """Find QEMU's ``(error_code, exception_is_int)`` word, from two ``int3`` contexts.

    In a hook for a software interrupt the engine holds ``exception_is_int``
    = 1 and ``exception_next_eip`` = the next instruction (the same value as
    RIP, so the RIP slot is skipped). The pair word sits just before it.
    Errors: :class:`EngineError` unless exactly one word matches.
    """
    rip = ctx_a.layout.rip
    hits = [
        w - 1
        for w in range(1, min(len(ctx_a.words), len(ctx_b.words)))
        if w != rip
        and int(ctx_a.words[w]) == next_a
        and int(ctx_b.words[w]) == next_b
        and (int(ctx_a.words[w - 1]) >> 32) == 1
        and (int(ctx_b.words[w - 1]) >> 32) == 1
    ]
    if len(hits) != 1:
        raise EngineError(f"engine context layout: exception_is_int found {len(hits)} times")
    return hits[0]


def find_value_slot(ctx_a: Context, sel_a: int, ctx_b: Context, sel_b: int) -> tuple[int, int]:
    """Find the (u64 word, bit shift) of a u32 field holding a in one context, b in the other.

    Used at bring-up with real contexts whose values are known: the CS
    selector at CPL 2 and CPL 3 (QEMU keeps ``segs[ES, CS, SS, ...]`` in that
    order, so the first match is CS), and old_exception before and after a
    #GP. Errors: :class:`EngineError` when no position matches.
    """
    hits = []
    n = min(len(ctx_a.words), len(ctx_b.words))
    for w in range(n):
        a, b = int(ctx_a.words[w]), int(ctx_b.words[w])
        for shift in (0, 32):
            if (a >> shift) & 0xFFFF_FFFF == sel_a and (b >> shift) & 0xFFFF_FFFF == sel_b:
                hits.append((w, shift))
    if not hits:
        raise EngineError(f"engine context layout: no u32 field holds {sel_a:#x} then {sel_b:#x}")
    return hits[0]


def locate_cpu_state(uc_handle: int, write_reg: Callable[[str, int], None]) -> int:
    """Find the address of the engine's live CPU state (QEMU's ``env``).

    A saved context is a byte copy of ``env`` (``uc_context_save`` is a
    memcpy of it), so with the register slots known the live registers can
    be read and written in place, with no engine call: the hypercall path
    needs none at all. ``env`` is found by writing 16 marker values into the
    GPRs and searching the memory the engine's ``uc_struct`` points to. All
    reads go through ``/proc/self/mem``, so a stale pointer is an error
    code, never a crash. Verified by a second marker write.

    Errors: :class:`EngineError` when not found exactly once or not verified.
    """
    global _probe_serial
    _probe_serial += 1
    serial = (_probe_serial & 0xFFFF) << 24
    marks = [_MARK | serial | 0x55_0000 | i for i in range(16)]
    for name, value in zip(_GPR_NAMES, marks, strict=True):
        write_reg(name, value)
    pattern = struct.pack("<16Q", *marks)
    hits: set[int] = set()
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        words = struct.unpack("<1024Q", os.pread(fd, 8192, uc_handle))
        for pointer in words:
            if not 0x10000 < pointer < (1 << 47):
                continue
            try:
                blob = os.pread(fd, 1 << 16, pointer)
            except OSError:
                continue
            at = blob.find(pattern)
            while at >= 0:
                hits.add(pointer + at)
                at = blob.find(pattern, at + 1)
        # Stale copies of the pattern (a buffer the engine copied it into) do
        # not follow a new write: the live state is the one that does.
        check = _MARK | serial | 0xABC
        write_reg("rax", check)
        live = [a for a in sorted(hits) if struct.unpack("<Q", os.pread(fd, 8, a))[0] == check]
    finally:
        os.close(fd)
    if len(live) != 1:
        raise EngineError(f"engine CPU state: {len(live)} live candidates of {len(hits)}, expected one")
    return live[0]


_probe_serial = 0


def bare_run(
    code: bytes,
    base: int,
    *,
    until: int,
    registers: dict[str, int],
    counted: bool,
    memory: dict[int, bytes] | None = None,
) -> float:
    """Run ``code`` on a bare engine (no SPK, no paging, no hooks); return seconds.

    The benchmark baseline: the same engine the SPK drives, nothing around
    it, from ``base`` until RIP reaches ``until``. ``counted`` runs it under
    the engine's own exact instruction budget (a hook before every
    instruction, as the SPK's virtual time once was) instead of free.
    ``memory`` is written into the 8 MiB of RAM first (a stack, a return
    address). Lives here because only this adapter may touch the engine.
    """
    import time

    uc = unicorn.Uc(_UC_ARCH_X86, _UC_MODE_64)
    uc.mem_map(0, 0x80_0000)
    uc.mem_write(base, code)
    for address, data in (memory or {}).items():
        uc.mem_write(address, data)
    for name, value in registers.items():
        uc.reg_write(_REG_IDS[name], value)
    start = time.perf_counter()
    uc.emu_start(base, until, 0, (1 << 62) if counted else 0)
    return time.perf_counter() - start


class _BareWindows(ctypes.Structure):
    """Mirror of ``struct spk_bare_windows`` (_clock.c)."""

    _fields_ = [
        ("start", ctypes.c_void_p), ("context_save", ctypes.c_void_p), ("context_restore", ctypes.c_void_p),
        ("ctl", ctypes.c_void_p), ("ctl_tlb_flush", ctypes.c_uint64), ("rip", ctypes.c_uint64),
        ("until", ctypes.c_uint64),
    ]  # fmt: skip


#: The bare window's guest: add dword [rsp], imm32 (its partition's number + 1); int 0x80 (the stop).
_BARE_WINDOW_CODE = (bytes.fromhex("810424"), bytes.fromhex("cd80"))
_BARE_CODE_VA, _BARE_STACK_VA = 0x1000, 0x2000
_BARE_SUM = 0x800  #: rsp's offset in the stack page: the word each window adds to
_BARE_TABLES, _BARE_FRAMES = 0x10_0000, 0x40_0000  # 4 table pages, then 2 frames, per partition
_BARE_MAX_PARTITIONS = (_BARE_FRAMES - _BARE_TABLES) // 0x4000
_BARE_MAX_WINDOWS = 1 << 24  # each partition's sum of its number stays within 32 bits


def bare_windows(partitions: int, windows: int, *, own_engines: bool) -> tuple[float, float]:
    """The bare engine's cost of a partition window: (seconds per window, MiB of engines added).

    The baseline of the switch figures (``spk bench``, keys ``bare_*``): no
    SPK, no block hook, only an interrupt hook that stops the engine. Each
    partition has its own address space (page tables of its own mapping the
    same virtual code and stack pages onto frames of its own, as paravirtual
    partitions do) and runs a 2-instruction window: an add of its number to
    a word on its stack and the ``int`` that ends it. The sums are checked
    after each timed loop (each partition's frame holds its number times its
    windows), so a baseline that skipped a flush it needs, even once, cannot
    pass.
    With ``own_engines`` false the partitions share one engine as the SPK's
    do: each window restores the partition's saved context, flushes the TLB
    when the address space is not the last window's, runs and saves; with
    it true each partition has an engine of its own over the same RAM (its
    TLB keeps its own entries) and a window is the engine run alone. The windows go round the partitions in turn,
    timed in native code (``spk_bare_windows``). The MiB are the resident
    memory the engines added to this process. Lives here because only this
    adapter may touch the engine.
    Errors: EngineError when the engine refuses a call, a window did not
    run in its own space, or ``partitions`` or ``windows`` is out of range.
    """
    import mmap

    if not 1 <= partitions <= _BARE_MAX_PARTITIONS:
        raise EngineError(f"bare_windows: 1 to {_BARE_MAX_PARTITIONS} partitions, not {partitions}")
    if not 1 <= windows <= _BARE_MAX_WINDOWS:
        raise EngineError(f"bare_windows: 1 to {_BARE_MAX_WINDOWS} windows, not {windows}")
    size = _BARE_FRAMES + partitions * 0x2000
    ram = mmap.mmap(-1, size)
    for k in range(partitions):
        tables, code = _BARE_TABLES + k * 0x4000, _bare_code_frame(k)
        for level in range(3):  # PML4[0] -> PDPT[0] -> PD[0] -> PT
            struct.pack_into("<Q", ram, tables + level * 0x1000, (tables + (level + 1) * 0x1000) | 0x3)
        struct.pack_into("<Q", ram, tables + 0x3000 + 8 * (_BARE_CODE_VA >> 12), code | 0x1)  # present, read-only
        struct.pack_into("<Q", ram, tables + 0x3000 + 8 * (_BARE_STACK_VA >> 12), (code + 0x1000) | 0x3)  # writable
        program = _BARE_WINDOW_CODE[0] + (k + 1).to_bytes(4, "little") + _BARE_WINDOW_CODE[1]
        ram[code : code + len(program)] = program
    native = _native.library()
    native.spk_bare_windows.restype = ctypes.c_double
    native.spk_bare_windows.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3
    stop = ctypes.cast(native.spk_bare_stop, ctypes.c_void_p)
    view = ctypes.c_char.from_buffer(ram)  # pins the mapping while the engines use it
    ram_address = ctypes.addressof(view)
    emu_stop = ctypes.c_void_p(ctypes.cast(_RAW_LIB.uc_emu_stop, ctypes.c_void_p).value)

    def address(pointer: Any) -> int:  # a ctypes function or pointer (the binding's handles are untyped)
        return ctypes.cast(pointer, ctypes.c_void_p).value or 0

    def engine() -> unicorn.Uc:
        uc = unicorn.Uc(_UC_ARCH_X86, _UC_MODE_64)
        uc.ctl_set_cpu_model(_x86.UC_CPU_X86_QEMU64)
        uc.mem_map_ptr(0, size, unicorn.UC_PROT_ALL, ram_address)
        hook = ctypes.c_size_t()
        status = _RAW_LIB.uc_hook_add(
            ctypes.c_void_p(address(uc._uch)), ctypes.byref(hook), ctypes.c_int(unicorn.UC_HOOK_INTR), stop,
            emu_stop, ctypes.c_uint64(1), ctypes.c_uint64(0),
        )  # fmt: skip
        _check(status, "hook_add(bare stop)")
        return uc

    def enter(uc: unicorn.Uc, k: int) -> None:  # partition k's address space, paging on
        uc.reg_write(_x86.UC_X86_REG_CR4, uc.reg_read(_x86.UC_X86_REG_CR4) | 0x20)  # PAE
        uc.reg_write(_x86.UC_X86_REG_CR3, _BARE_TABLES + k * 0x4000)
        uc.reg_write(_x86.UC_X86_REG_CR0, uc.reg_read(_x86.UC_X86_REG_CR0) | 0x8000_0001)  # PG, PE
        uc.reg_write(_x86.UC_X86_REG_RSP, _BARE_STACK_VA + _BARE_SUM)

    before = _rss_mib()
    engines: list[unicorn.Uc] = []
    contexts: list[Any] = []
    try:
        for k in range(partitions if own_engines else 1):
            engines.append(engine())
            if own_engines:
                enter(engines[-1], k)
        for k in range(0 if own_engines else partitions):
            enter(engines[0], k)
            contexts.append(engines[0].context_save())
        handles = (ctypes.c_void_p * len(engines))(*(address(uc._uch) for uc in engines))
        saved = (ctypes.c_void_p * max(1, len(contexts)))(*(address(c._context) for c in contexts))
        spec = _BareWindows(
            address(_RAW_LIB.uc_emu_start), address(_RAW_LIB.uc_context_save),
            address(_RAW_LIB.uc_context_restore), address(_RAW_LIB.uc_ctl), _CTL_TLB_FLUSH, _BARE_CODE_VA, _NEVER,
        )  # fmt: skip
        args = (ctypes.byref(spec), handles, saved, partitions, int(own_engines))

        def run(count: int) -> float:  # nanoseconds a window, every window of every partition checked
            sums = [_bare_code_frame(k) + 0x1000 + _BARE_SUM for k in range(partitions)]  # its stack frame follows
            for address_of_sum in sums:
                struct.pack_into("<I", ram, address_of_sum, 0)
            ns = native.spk_bare_windows(*args, count)
            if ns < 0:
                raise EngineError("bare_windows: the engine refused a call")
            # Every window added its own partition's number + 1 in its own
            # stack frame: a window that ran another's code, or stored
            # through another's mapping (a flush skipped even once), leaves
            # a wrong sum in some frame.
            for k, address_of_sum in enumerate(sums):
                runs = count // partitions + (k < count % partitions)
                if struct.unpack_from("<I", ram, address_of_sum)[0] != runs * (k + 1):
                    raise EngineError(f"bare_windows: partition {k}'s windows did not all run in its own address space")
            return float(ns)

        run(2 * partitions)  # translate, fill each engine's caches
        added = _rss_mib() - before
        ns = run(max(windows, partitions))
        return ns / 1e9, added
    except unicorn.UcError as exc:
        raise EngineError(f"bare_windows: {exc}") from exc
    finally:  # the engines close when their last reference goes (the binding's finalizer)
        contexts.clear()
        engines.clear()


def _bare_code_frame(k: int) -> int:
    """Partition ``k``'s code frame in :func:`bare_windows`' RAM (its stack frame is the next one)."""
    return _BARE_FRAMES + k * 0x2000


def _rss_mib() -> float:
    """This process's resident memory, MiB (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
