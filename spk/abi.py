"""The guest-visible ABI of the SPK: hypercall numbers, status codes, layouts.

This module is the single Python source of the numbers a guest kernel relies on.
``docs/abi.md`` documents every entry and a test checks the two agree; the
guest kernels' assembly gets the same numbers through :func:`asm_equates`, so
the kernel, its guests and the docs cannot drift apart.

Nothing here touches the engine: it is plain data, safe to import anywhere.
"""

from __future__ import annotations

import enum

ABI_MAJOR = 1
ABI_MINOR = 1
ABI_VERSION = (ABI_MAJOR << 16) | ABI_MINOR

PAGE_SIZE = 4096
PAGE_SHIFT = 12

#: Vector of the hypercall gate. Only CPL 2 may use it.
HYPERCALL_VECTOR = 0x82
#: Vector of the legacy application system-call gate (CPL 3 -> guest kernel).
SYSCALL_VECTOR = 0x80


class Hypercall(enum.IntEnum):
    """Hypercall numbers, passed in ``rax``; arguments in rdi, rsi, rdx, r10, r8."""

    VERSION = 0
    CONSOLE_WRITE = 1
    SET_ENTRY = 2
    SET_KERNEL_STACK = 3
    ASPACE_CREATE = 4
    ASPACE_DESTROY = 5
    MAP = 6
    UNMAP = 7
    ASPACE_SWITCH = 8
    IRET = 9
    YIELD = 10
    BLOCK = 11
    EXIT = 12
    TIMER_SET = 13
    TIME_NOW = 14
    FRAME_ALLOC = 15
    FRAME_FREE = 16
    MEASURE = 17
    ATTEST = 18
    PORT_OPEN = 19
    PORT_SEND = 20
    PORT_RECEIVE = 21
    PORT_STATUS = 22
    RAISE_ERROR = 23
    PART_LIST = 24
    PART_QUERY = 25
    PART_CONTROL = 26


class Status(enum.IntEnum):
    """Result codes. A hypercall returns ``-code`` in ``rax`` on failure.

    The set is closed: a new failure must map onto one of these.
    """

    OK = 0
    INVALID_ARGUMENT = 1
    DENIED = 2
    NO_MEMORY = 3
    BUSY = 4
    NOT_SUPPORTED = 5
    BAD_HANDLE = 6
    BAD_ADDRESS = 7
    NOT_FOUND = 8


class EntryKind(enum.IntEnum):
    """Which guest-kernel entry point SET_ENTRY registers."""

    SYSCALL = 0  #: app ``int 0x80`` and ``syscall``
    TRAP = 1  #: faults and refused instructions in an app
    TIMER = 2  #: virtual timer upcall, delivered while an app runs


class MapFlags(enum.IntFlag):
    """Flags of the MAP hypercall. Every other bit is reserved and must be zero."""

    WRITE = 1 << 0
    USER = 1 << 1
    #: not executable (the leaf's NX bit): a fetch from it faults as a page fault
    NO_EXEC = 1 << 2


MAP_FLAGS_VALID = int(MapFlags.WRITE | MapFlags.USER | MapFlags.NO_EXEC)


class Register(enum.IntEnum):
    """Measurement registers each partition has (SHA-256, reg = H(reg || digest))."""

    CONFIG = 0  #: the system description the partition was created from
    KERNEL = 1  #: its guest-kernel image (measured by the SPK when loading it)
    APPS = 2  #: its applications (measured by its guest kernel through MEASURE)


#: Largest region MEASURE hashes in one call.
MEASURE_MAX = 16 << 20
#: Longest event name MEASURE takes.
MEASURE_NAME_MAX = 64
#: Nonce length ATTEST takes (bytes, at most).
NONCE_MAX = 64


#: Longest port name PORT_OPEN takes.
PORT_NAME_MAX = 31


class PartOp(enum.IntEnum):
    """Operations of PART_CONTROL (system partitions only)."""

    PAUSE = 0
    RESUME = 1
    HALT = 2
    RESTART = 3  #: cold restart
    START = 4  #: a partition declared with boot = false
    DESTROY = 5  #: tear it down; it may be started again
    MIGRATE = 6  #: move it, running, to another host of the fleet (ring 1 chooses; spgs.migration)


class PartState(enum.IntEnum):
    """Partition states as PART_LIST and PART_QUERY report them."""

    READY = 0
    BLOCKED = 1
    EXITED = 2
    FAULTED = 3
    STOPPED = 4
    DECLARED = 5  #: declared, not running: never started, or destroyed
    PAUSED = 6


#: PART_LIST entry: id, state, then the name (32 bytes, NUL padded).
PART_ENTRY_SIZE = 48
#: PART_QUERY record: instructions, hypercalls, syscalls, faults, windows,
#: preemptions, frames in use, quota (frames), restarts; u64 each.
PART_QUERY_WORDS = 9


class Event(enum.IntFlag):
    """Event bits BLOCK returns."""

    TIMER = 1 << 0


# ---------------------------------------------------------------------------
# Virtual layout of every address space of a partition
# ---------------------------------------------------------------------------
#: Lowest user address a guest may map (page 0 stays unmapped).
USER_BASE = 0x0000_0000_0000_1000
#: One past the highest user address (end of the lower canonical half).
USER_END = 0x0000_8000_0000_0000
#: Base of the guest-kernel half: PML4 slot 256, shared by all of a partition's spaces.
KERNEL_BASE = 0xFFFF_8000_0000_0000
#: One past the guest-kernel region (one PML4 slot, 512 GiB).
KERNEL_END = 0xFFFF_8080_0000_0000
#: The SPK's own slot (PML4 511): GDT, mapped read-only, supervisor.
SPK_BASE = 0xFFFF_FF80_0000_0000
GDT_VADDR = SPK_BASE

#: Where the SPK loads the guest-kernel image; its entry point is the first byte.
KERNEL_IMAGE_VADDR = KERNEL_BASE
KERNEL_IMAGE_MAX = 0x8_0000
#: Zeroed, writable data area of the guest kernel (its .bss).
KERNEL_DATA_VADDR = KERNEL_BASE + 0x8_0000
KERNEL_DATA_SIZE = 0x4000
#: Read-only start-info page describing the partition to its kernel.
START_INFO_VADDR = KERNEL_BASE + 0x10_0000
#: Boot kernel stack: KERNEL_STACK_SIZE bytes ending at KERNEL_STACK_TOP.
KERNEL_STACK_TOP = KERNEL_BASE + 0x20_0000
KERNEL_STACK_SIZE = 0x4000

#: Where applications are linked.
APP_IMAGE_VADDR = 0x40_0000

# ---------------------------------------------------------------------------
# Start-info page (all little-endian u64 unless said otherwise)
# ---------------------------------------------------------------------------
START_INFO_MAGIC = 0x5452_4154_534B_5053  # b"SPKSTART"
SI_MAGIC = 0
SI_ABI_VERSION = 8
SI_PARTITION_ID = 16
SI_MODULE_COUNT = 24
SI_QUOTA_FRAMES = 32
SI_FREE_FRAMES = 40
SI_NAME = 48  # 32 bytes, NUL padded
SI_NAME_LEN = 32
SI_MODULES = 128
SI_MODULE_SIZE = 64
SI_MAX_MODULES = 16
# fields of one module entry
SIM_FIRST_MFN = 0
SIM_PAGES = 8
SIM_BYTES = 16
SIM_NAME = 32  # 32 bytes, NUL padded

# ---------------------------------------------------------------------------
# Frames the SPK pushes on the guest-kernel stack when it enters the kernel
# ---------------------------------------------------------------------------
#: iret frame, as the CPU pushes it: rip, cs, rflags, rsp, ss (5 u64).
IRET_FRAME_SIZE = 40
#: Trap entry: vector, error code, fault address, then the iret frame.
TRAP_FRAME_SIZE = 24 + IRET_FRAME_SIZE

#: IRET hypercall frame: 16 GPRs in this order, then rip, then rflags (18 u64).
GPR_ORDER = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip
APP_FRAME_WORDS = 18
APP_FRAME_SIZE = APP_FRAME_WORDS * 8
#: RFLAGS bits an app may set through IRET: CF PF AF ZF SF DF OF.
RFLAGS_USER_MASK = 0xCD5
#: Always set on entry to an app: bit 1 (reserved, one) and IF.
RFLAGS_FIXED = 0x202

# ---------------------------------------------------------------------------
# Segment selectors (GDT laid out by the SPK)
# ---------------------------------------------------------------------------
SEL_KERNEL_CODE0 = 0x08
SEL_KERNEL_DATA0 = 0x10
SEL_GUEST_CODE = 0x18 | 2  # CPL 2 code
SEL_GUEST_DATA = 0x20 | 2  # CPL 2 data
SEL_USER_CODE = 0x28 | 3  # CPL 3 code
SEL_USER_DATA = 0x30 | 3  # CPL 3 data

# ---------------------------------------------------------------------------
# x86 exception vectors the SPK reports
# ---------------------------------------------------------------------------


class Vector(enum.IntEnum):
    """x86 exception vectors the SPK reports to guests and to policy."""

    DE = 0  #: divide error
    DB = 1
    BP = 3
    OF = 4
    BR = 5
    UD = 6  #: invalid opcode
    NM = 7
    DF = 8
    TS = 10
    NP = 11
    SS = 12
    GP = 13  #: general protection (privileged instruction, refused gate)
    PF = 14  #: page fault
    MF = 16
    AC = 17
    XM = 19


#: Vector of a health-monitor event propagated to the guest kernel's trap
#: entry (error code: the event, see HEALTH_EVENT_CODES).
HEALTH_VECTOR = 32
HEALTH_EVENT_CODES = {"overrun": 1, "guest_error": 2}

#: Page-fault error-code bits (as the CPU defines them).
PF_PRESENT = 1 << 0
PF_WRITE = 1 << 1
PF_USER = 1 << 2
PF_FETCH = 1 << 4


def asm_equates() -> str:
    """Return ``.equ`` lines for every ABI constant, for guest assembly sources.

    Why: guest kernels and apps are assembled from text; generating their
    constants from this module keeps them in step with the SPK.
    """
    lines: list[str] = []
    for hc in Hypercall:
        lines.append(f".equ HC_{hc.name}, {int(hc)}")
    for st in Status:
        lines.append(f".equ E_{st.name}, {-int(st)}")
    for kind in EntryKind:
        lines.append(f".equ ENTRY_{kind.name}, {int(kind)}")
    for flag in MapFlags:
        lines.append(f".equ MAP_{flag.name}, {int(flag)}")
    for op in PartOp:
        lines.append(f".equ PART_{op.name}, {int(op)}")
    names = (
        "PAGE_SIZE", "KERNEL_BASE", "KERNEL_DATA_VADDR", "KERNEL_DATA_SIZE",
        "START_INFO_VADDR", "KERNEL_STACK_TOP", "APP_IMAGE_VADDR", "USER_END",
        "START_INFO_MAGIC", "SI_MODULE_COUNT", "SI_MODULES", "SI_MODULE_SIZE",
        "SIM_FIRST_MFN", "SIM_PAGES", "SIM_BYTES", "SIM_NAME", "SI_PARTITION_ID",
        "SEL_USER_CODE", "SEL_USER_DATA", "APP_FRAME_SIZE", "RFLAGS_FIXED",
        "HYPERCALL_VECTOR", "SYSCALL_VECTOR", "PART_ENTRY_SIZE",
    )  # fmt: skip
    for name in names:
        lines.append(f".equ {name}, {int(globals()[name]):#x}")
    return "\n".join(lines) + "\n"


#: Every integer constant of this module that a C guest may need, by name (c_header emits them in this order).
_C_CONSTANTS = (
    "ABI_MAJOR", "ABI_MINOR", "ABI_VERSION", "PAGE_SIZE", "PAGE_SHIFT", "HYPERCALL_VECTOR", "SYSCALL_VECTOR",
    "MAP_FLAGS_VALID", "MEASURE_MAX", "MEASURE_NAME_MAX", "NONCE_MAX", "PORT_NAME_MAX", "PART_ENTRY_SIZE",
    "PART_QUERY_WORDS", "USER_BASE", "USER_END", "KERNEL_BASE", "KERNEL_END", "SPK_BASE", "GDT_VADDR",
    "KERNEL_IMAGE_VADDR", "KERNEL_IMAGE_MAX", "KERNEL_DATA_VADDR", "KERNEL_DATA_SIZE", "START_INFO_VADDR",
    "KERNEL_STACK_TOP", "KERNEL_STACK_SIZE", "APP_IMAGE_VADDR", "START_INFO_MAGIC", "SI_MAGIC", "SI_ABI_VERSION",
    "SI_PARTITION_ID", "SI_MODULE_COUNT", "SI_QUOTA_FRAMES", "SI_FREE_FRAMES", "SI_NAME", "SI_NAME_LEN",
    "SI_MODULES", "SI_MODULE_SIZE", "SI_MAX_MODULES", "SIM_FIRST_MFN", "SIM_PAGES", "SIM_BYTES", "SIM_NAME",
    "IRET_FRAME_SIZE", "TRAP_FRAME_SIZE", "APP_FRAME_WORDS", "APP_FRAME_SIZE", "RFLAGS_USER_MASK", "RFLAGS_FIXED",
    "SEL_KERNEL_CODE0", "SEL_KERNEL_DATA0", "SEL_GUEST_CODE", "SEL_GUEST_DATA", "SEL_USER_CODE", "SEL_USER_DATA",
    "HEALTH_VECTOR", "PF_PRESENT", "PF_WRITE", "PF_USER", "PF_FETCH",
)  # fmt: skip

#: Enumerations exported to C, with the prefix their members get.
_C_ENUMS: tuple[tuple[str, type[enum.IntEnum] | type[enum.IntFlag]], ...] = (
    ("HC_", Hypercall), ("E_", Status), ("ENTRY_", EntryKind), ("MAP_", MapFlags), ("REG_", Register),
    ("PART_", PartOp), ("PART_STATE_", PartState), ("EVENT_", Event), ("VEC_", Vector),
)  # fmt: skip


def c_header() -> str:
    """Return the C header (``spk_sdk/include/spk/abi.h``) with every ABI number.

    Why: C guests get their numbers from this module exactly as assembly
    guests do through :func:`asm_equates`; the header is committed so a guest
    can be built without Python, and a test regenerates it and fails when the
    two drift (``spk sdk-header`` prints it). Status codes are negative, as
    a hypercall returns them. The numbers are usable from C and from
    assembly run through the C preprocessor (``.S``): ``SPK_U``/``SPK_S``
    add the integer suffix only for C.
    """
    out = [
        "/* The SPK's guest ABI, generated from spk/abi.py (`spk sdk-header`). Do not edit. */",
        "#ifndef SPK_ABI_H",
        "#define SPK_ABI_H",
        "",
        "#ifdef __ASSEMBLER__",
        "#define SPK_U(x) x",
        "#define SPK_S(x) x",
        "#else",
        "#define SPK_U(x) x##ULL",
        "#define SPK_S(x) x##LL",
        "#endif",
        "",
    ]
    for name in _C_CONSTANTS:
        out.append(f"#define SPK_{name} SPK_U({int(globals()[name]):#x})")
    for prefix, members in _C_ENUMS:
        out.append("")
        for member in members:
            value = -int(member) if members is Status else int(member)
            out.append(f"#define SPK_{prefix}{member.name} ({'-' if value < 0 else ''}SPK_S({abs(value)}))")
    out.append("")
    for event, code in HEALTH_EVENT_CODES.items():
        out.append(f"#define SPK_HEALTH_{event.upper()} {code}")
    out += ["", "#endif /* SPK_ABI_H */", ""]
    return "\n".join(out)

