"""The attack classes of the adversarial suite: attackers, parameters, judges.

Each :class:`AttackClass` names its attacker (``partitions/adversarial/`` and
``apps/adversarial/``), what the host tells it before it runs (what a guest
cannot know: frame numbers, port names), and a *judge*: a function of the
finished run that turns ring 0's facts and the attacker's own log into
facts, each true or false. The suite (:mod:`spk_review.adversarial`) adds the
checks every attack shares (invariants, the other partitions unchanged
against the baseline) and calls the attack contained when every fact holds.
Nothing here decides ``contained`` by itself: a refusal the SPK stops making
becomes a false fact.

The expected results below are those docs/abi.md documents; each list is
in the order the attacker makes its calls (its source says the same).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nacl.signing import VerifyKey

from spgs.config import HealthConfig
from spgs.trust import verify_quote
from spk import Machine
from spk.abi import (
    KERNEL_BASE,
    KERNEL_STACK_SIZE,
    KERNEL_STACK_TOP,
    PAGE_SIZE,
    PF_PRESENT,
    PF_USER,
    PF_WRITE,
    RFLAGS_FIXED,
    RFLAGS_USER_MASK,
    Hypercall,
    Status,
    Vector,
)
from spk_review.adversarial_lab import (
    LAYOUT,
    LOOP_DEPTH,
    LOOP_DESTINATION,
    LOOP_MESSAGE_SIZE,
    LOOP_SOURCE,
    OWNER_RING0,
    AttackerSpec,
    Lab,
    Record,
    Run,
    frame_label,
    read_data,
    read_log,
    u64s,
)

#: One judged fact: does it hold, and what it says.
Fact = tuple[bool, str]
Judge = Callable[[Lab, Run], list[Fact]]

REC_CALL, REC_TRAP, REC_SURVIVED = LAYOUT["REC_CALL"], LAYOUT["REC_TRAP"], LAYOUT["REC_SURVIVED"]
REC_REPORT, REC_TRY, REC_WROTE = LAYOUT["REC_REPORT"], LAYOUT["REC_TRY"], LAYOUT["REC_WROTE"]
REC_LOOP, REC_READ = LAYOUT["REC_LOOP"], LAYOUT["REC_READ"]
#: What map attackers write through a mapping they should not have got.
MARKER = int.from_bytes(b"ADVERSRY", "little")
#: Most frames a map attacker is pointed at (its log holds LOG_MAX records).
MAX_TARGETS = 24


@dataclass(frozen=True)
class AttackClass:
    """One attack class: a stable id, a title, the attacker and its judge."""

    attack_class: str
    title: str
    attacker: str
    spec: AttackerSpec
    judge: Judge


@dataclass(frozen=True)
class Expect:
    """A hypercall result the host expects: a status (a refusal), or success (a value when it matters)."""

    what: str
    status: Status | None = None
    value: int | None = None


OK = None  #: Expect(status=OK): the call must succeed


# -- showing what an attacker did -------------------------------------------------------
#: How many argument registers each hypercall reads (docs/abi.md; tests/test_adversarial.py
#: checks this against its "- Arguments:" lines). The others are left over, not shown.
ARGUMENTS: dict[Hypercall, int] = {
    Hypercall.CONSOLE_WRITE: 2, Hypercall.SET_ENTRY: 2, Hypercall.SET_KERNEL_STACK: 1,
    Hypercall.ASPACE_DESTROY: 1, Hypercall.MAP: 4, Hypercall.UNMAP: 2, Hypercall.ASPACE_SWITCH: 1,
    Hypercall.IRET: 2, Hypercall.EXIT: 1, Hypercall.TIMER_SET: 1, Hypercall.FRAME_FREE: 1, Hypercall.MEASURE: 4,
    Hypercall.ATTEST: 4, Hypercall.PORT_OPEN: 2, Hypercall.PORT_SEND: 3, Hypercall.PORT_RECEIVE: 3,
    Hypercall.PORT_STATUS: 1, Hypercall.RAISE_ERROR: 1, Hypercall.PART_LIST: 2, Hypercall.PART_QUERY: 2,
    Hypercall.PART_CONTROL: 2,
}  # fmt: skip


def signed(value: int) -> int:
    """A u64 register as the signed result it stands for (a negative value is kept)."""
    return value - (1 << 64) if value >> 63 and value > 0 else value


def show_result(value: int, *, frame: bool = False) -> str:
    """A result as its status name, a number, or (``frame``, or large) in hex."""
    result = signed(value)
    if result < 0 and -result in Status._value2member_map_:
        return Status(-result).name
    return f"{result:#x}" if frame or result > 0xFFFF else str(result)


def show_call(words: Sequence[int]) -> str:
    """``NAME(arg, ...) -> result`` of a REC_CALL record (only the arguments the call reads)."""
    number, result = words[0], words[5]
    if number in Hypercall._value2member_map_:
        name, count = Hypercall(number).name, ARGUMENTS.get(Hypercall(number), 0)
    else:
        name, count = f"hypercall {number:#x}", 0
    shown = show_result(result, frame=number == Hypercall.FRAME_ALLOC)
    return f"{name}({', '.join(f'{a:#x}' for a in words[1 : 1 + count])}) -> {shown}"


def _meets(expect: Expect, result: int) -> bool:
    value = signed(result)
    if expect.status is not None:
        return value == -int(expect.status)
    return value >= 0 and (expect.value is None or value == expect.value)


def _wanted(expect: Expect) -> str:
    if expect.status is not None:
        return expect.status.name
    return "success" if expect.value is None else str(expect.value)


def calls(records: list[Record]) -> list[Record]:
    return [r for r in records if r.tag == REC_CALL]


def check_calls(made: list[Record], expected: list[Expect]) -> list[Fact]:
    """One fact per expected call: made, with the expected result."""
    facts: list[Fact] = []
    for i, expect in enumerate(expected):
        if i >= len(made):
            facts.append((False, f"{expect.what}: never made (the attacker stopped after {len(made)} calls)"))
            continue
        ok = _meets(expect, made[i].words[5])
        facts.append((ok, f"{expect.what}: {show_call(made[i].words)} (expected {_wanted(expect)})"))
    if len(made) > len(expected):
        extra = ", ".join(show_call(r.words) for r in made[len(expected) :][:3])
        facts.append((False, f"{len(made) - len(expected)} more calls than the attack makes: {extra}"))
    return facts


def no_records(records: list[Record], tag: int, what: str) -> Fact:
    """None of the attacker's records has ``tag`` (an exploit write, a survived misdeed)."""
    found = [r for r in records if r.tag == tag]
    if not found:
        return (True, f"no {what}")
    shown = ", ".join(f"{r.words[0]:#x}:{r.words[1]:#x}" for r in found[:4])
    return (False, f"{len(found)} {what}: {shown}")


def names_of(run: Run) -> dict[int, str]:
    return {pid: name for name, pid in run.system.pids.items()}


# -- parameters (what the host tells an attacker) -------------------------------------------
def frames_of(machine: Machine, owner: int, kind: str) -> list[int]:
    """Frames of ``owner`` whose type is ``kind`` (a FrameType value), lowest first."""
    return [mfn for mfn, f in enumerate(machine.frames.entries) if f.owner == owner and f.type.value == kind]


def victim_frames(machine: Machine, victim: int) -> list[int]:
    """A partition's first data and page-table frames; a full partition's first frame (its guest-physical 0).

    A full partition's memory is one run of frames ring 0 granted it whole
    (type pool in the frame table): its guest's code, data and own page tables.
    """
    frames = frames_of(machine, victim, "data")[:1] + frames_of(machine, victim, "page_table")[:1]
    return frames or machine.frames.owned(victim)[:1]


def first_victim_frame(machine: Machine, attacker: int) -> int:
    """The lowest data frame of the first other partition (the first frame of a full one)."""
    other = min(pid for pid in machine.partitions if pid != attacker)
    return victim_frames(machine, other)[0]


def foreign_targets(machine: Machine, attacker: int) -> list[int]:
    """Other partitions' first data and page-table frames (a full one's first frame), free RAM, frames past RAM."""
    targets: list[int] = []
    for pid in sorted(machine.partitions):
        if pid != attacker and len(targets) < MAX_TARGETS - 4:
            targets += victim_frames(machine, pid)
    free = [mfn for mfn, f in enumerate(machine.frames.entries) if f.type.value == "free"]
    targets += free[:1] + free[-1:]
    return [*targets, len(machine.frames.entries), 1 << 40]


def map_params(targets: list[int], offset: int, value: int) -> bytes:
    """try_frames parameters: exploit offset and value, then the frames."""
    return u64s(offset, value, len(targets), *targets)


def own_table_params(machine: Machine, pid: int, _lab: Lab) -> bytes:
    tables = frames_of(machine, pid, "page_table")[:16]
    pte = (first_victim_frame(machine, pid) << 12) | 7  # present, writable, user
    return map_params(tables, 200 * 8, pte)


def foreign_params(machine: Machine, pid: int, _lab: Lab) -> bytes:
    return map_params(foreign_targets(machine, pid), 0, MARKER)


def ring0_params(machine: Machine, pid: int, _lab: Lab) -> bytes:
    return map_params(frames_of(machine, OWNER_RING0, "spk")[:MAX_TARGETS], 0, MARKER)


def pointer_params(machine: Machine, pid: int, _lab: Lab) -> bytes:
    return u64s(first_victim_frame(machine, pid) * PAGE_SIZE)


def configured_ports(lab: Lab) -> list[str]:
    """Every port the configuration gives a partition (by name, as PORT_OPEN takes it)."""
    return sorted({port.name for p in lab.config.description.partition for port in p.ports})


def port_params(_machine: Machine, _pid: int, lab: Lab) -> bytes:
    blob = bytearray(u64s(len(configured_ports(lab))))
    for name in configured_ports(lab):
        encoded = name.encode()
        blob += u64s(len(encoded)) + encoded.ljust(32, b"\0")
    return bytes(blob)


# -- the mapping classes ------------------------------------------------------------------
TRIES = ("MAP ring-3 writable", "MAP kernel-half writable", "MAP ring-3 read-only", "FRAME_FREE")


def try_facts(run: Run, made: list[Record], targets: list[int], status_of: Callable[[int], Status]) -> list[Fact]:
    """One fact per target of try_frames: its four tries, each refused with ``status_of(mfn)``."""
    names = names_of(run)
    facts: list[Fact] = []
    for k, mfn in enumerate(targets):
        tries = made[4 * k : 4 * k + 4]
        want = status_of(mfn)
        if len(tries) < 4:
            facts.append((False, f"{frame_label(run.machine, names, mfn)}: not all four tries made"))
            continue
        ok = all(_meets(Expect("", want), r.words[5]) and r.words[3 if i < 3 else 1] == mfn
                 for i, r in enumerate(tries))  # fmt: skip
        shown = ", ".join(f"{what} -> {show_result(r.words[5])}" for what, r in zip(TRIES, tries, strict=True))
        facts.append((ok, f"{frame_label(run.machine, names, mfn)}: {shown} (expected {want.name})"))
    return facts


def _beyond_ram(machine: Machine) -> Callable[[int], Status]:
    return lambda mfn: Status.INVALID_ARGUMENT if mfn >= len(machine.frames.entries) else Status.DENIED


def params_frames(run: Run) -> list[int]:
    """The frames the host named to a map attacker (D_PARAMS word 2: count, then frames)."""
    raw = read_data(run.machine, run.pid, LAYOUT["D_PARAMS"] + 16, 8 * (MAX_TARGETS + 1))
    count = int.from_bytes(raw[:8], "little")
    return [int.from_bytes(raw[8 + 8 * i : 16 + 8 * i], "little") for i in range(min(count, MAX_TARGETS))]


def judge_map_foreign(_lab: Lab, run: Run) -> list[Fact]:
    records = read_log(run.machine, run.pid)
    targets = params_frames(run)
    facts = try_facts(run, calls(records), targets, _beyond_ram(run.machine))
    if len(calls(records)) != 4 * len(targets):
        facts.append((False, f"{len(calls(records))} calls recorded, {4 * len(targets)} expected"))
    return [*facts, no_records(records, REC_WROTE, "write through a granted mapping")]


def judge_map_own_tables(_lab: Lab, run: Run) -> list[Fact]:
    records = read_log(run.machine, run.pid)
    made = calls(records)
    setup = [Expect("take a data frame D", OK)] + [Expect(f"allocate P{i}", OK) for i in range(4)]
    setup += [Expect(f"free P{i}", OK) for i in range(4)]
    setup += [Expect("create space S (its PML4 should be P0)", OK), Expect("map D in S (three new tables)", OK)]
    facts = check_calls(made[: len(setup)], setup)
    predicted = [signed(r.words[5]) for r in made[1:5]]
    targets = predicted + params_frames(run)
    facts += try_facts(run, made[len(setup) :], targets, lambda _mfn: Status.DENIED)
    facts.append(_prediction(run, predicted))
    facts.append(_tables_unmapped(run.machine))
    return [*facts, no_records(records, REC_WROTE, "write through a granted mapping")]


def _prediction(run: Run, predicted: list[int]) -> Fact:
    """Informational: did the attacker guess its new tables right (the frame table's word)?"""
    kinds = [run.machine.frames.entries[m].type.value if 0 <= m < len(run.machine.frames.entries) else "?"
             for m in predicted]  # fmt: skip
    shown = ", ".join(f"{m:#x}" for m in predicted)
    if all(kind == "page_table" for kind in kinds):
        return (True, f"the attacker predicted its new page tables without help: frames {shown} are its tables now")
    return (True, f"prediction of its new page tables missed ({shown}: {kinds}); the host-named tables still apply")


def _tables_unmapped(machine: Machine) -> Fact:
    tables = [(mfn, f) for mfn, f in enumerate(machine.frames.entries) if f.type.value == "page_table"]
    mapped = [f"{mfn:#x}" for mfn, f in tables if f.map_count]
    if mapped:
        return (False, f"page-table frames mapped: {', '.join(mapped[:6])}")
    return (True, f"frame table: none of the {len(tables)} page-table frames is mapped anywhere")


# -- hypercall pointers ----------------------------------------------------------------------
POINTERS = [
    Expect("unmapped user page", Status.BAD_ADDRESS),
    Expect("range running out of the user half", Status.BAD_ADDRESS),
    Expect("range wrapping past 2^64", Status.BAD_ADDRESS),
    Expect("range starting at a non-canonical address", Status.BAD_ADDRESS),
    Expect("range crossing the end of its data area", Status.BAD_ADDRESS),
    Expect("range crossing the end of the kernel half", Status.BAD_ADDRESS),
    Expect("ring 0's slot, past the GDT", Status.BAD_ADDRESS),
    Expect("the unmapped guard below its stack", Status.BAD_ADDRESS),
    Expect("MEASURE name wrapping past 2^64", Status.BAD_ADDRESS),
    Expect("MEASURE data leaving the user half", Status.BAD_ADDRESS),
    Expect("MEASURE of 16 MiB from its 16 KiB data area", Status.BAD_ADDRESS),
    Expect("ATTEST output into its read-only start-info page", Status.BAD_ADDRESS),
    Expect("ATTEST output into ring 0's GDT", Status.BAD_ADDRESS),
    Expect("ATTEST output crossing the end of its data area", Status.BAD_ADDRESS),
    Expect("ATTEST nonce wrapping past 2^64", Status.BAD_ADDRESS),
    Expect("ATTEST output wrapping past 2^64", Status.BAD_ADDRESS),
    Expect("PORT_OPEN name wrapping past 2^64", Status.BAD_ADDRESS),
    Expect("PORT_OPEN name leaving the kernel half", Status.BAD_ADDRESS),
    Expect("IRET frame wrapping past 2^64", Status.BAD_ADDRESS),
    Expect("IRET frame crossing the end of its data area", Status.BAD_ADDRESS),
    Expect("IRET frame read from ring 0's GDT (readable): its rip is no user address", Status.INVALID_ARGUMENT),
    Expect("trap entry in ring 0's slot", Status.BAD_ADDRESS),
    Expect("syscall entry in the user half", Status.BAD_ADDRESS),
    Expect("kernel stack in ring 0's slot", Status.BAD_ADDRESS),
    Expect("kernel stack past the kernel half", Status.BAD_ADDRESS),
    Expect("another partition's physical address used as a pointer", Status.BAD_ADDRESS),
]


def judge_pointers(_lab: Lab, run: Run) -> list[Fact]:
    facts = check_calls(calls(read_log(run.machine, run.pid)), POINTERS)
    tail = read_data(run.machine, run.pid, LAYOUT["D_TAIL"], 256)
    if any(tail):
        facts.append((False, "the refused ATTEST wrote into the end of its data area"))
    else:
        facts.append(
            (True, "the refused ATTEST across the end of its data area wrote nothing (its last 256 bytes are 0)")
        )
    return facts


# -- privilege -------------------------------------------------------------------------------
GP, UD, PF = int(Vector.GP), int(Vector.UD), int(Vector.PF)
#: The instructions reserved to CPL 0 (partitions/adversarial/privileged.inc, in its order),
#: tried at CPL 3 and at CPL 2, with the vector an app gets: #GP, but #UD for sysret
#: (SYSCALL is off in EFER) and rdpmc with the QEMU64 CPU model (docs/abi.md).
PRIVILEGED: list[tuple[str, int]] = [
    ("hlt", GP), ("cli", GP), ("sti", GP), ("mov cr3, rax", GP), ("mov cr0, rax", GP), ("mov rax, cr4", GP),
    ("lgdt", GP), ("lidt", GP), ("ltr", GP), ("wrmsr", GP), ("rdmsr", GP), ("in al, dx", GP), ("out dx, al", GP),
    ("insb", GP), ("outsb", GP), ("invlpg", GP), ("wbinvd", GP), ("swapgs", GP), ("sysret", UD),
    ("iretq into CPL 0's code selector", GP), ("mov ss, CPL 0's data selector", GP), ("rdtsc", GP), ("rdpmc", UD),
]  # fmt: skip
#: The app's attempts after its rflags probe: what, vector, error code (its own, then PRIVILEGED).
CPL3_ATTEMPTS: list[tuple[str, int, int]] = [
    ("int 0x82 asking for HC_EXIT", GP, (0x82 << 3) | 2), ("int 0x81", GP, (0x81 << 3) | 2),
    ("store into its kernel's data area", PF, PF_PRESENT | PF_WRITE | PF_USER),
    ("load from ring 0's GDT", PF, PF_PRESENT | PF_USER), ("iretq into CPL 2's code selector", GP, 0),
    ("mov ss, CPL 2's data selector", GP, 0), ("prefixed syscall (66 66 0f 05)", UD, 0), ("vmcall", UD, 0),
    ("ud2", UD, 0), *((what, vector, 0) for what, vector in PRIVILEGED),
]  # fmt: skip
#: The kernel's attempts (its own, then PRIVILEGED): what, and where ring 0 reports the fault
#: relative to the instruction (a software interrupt after it, as the CPU would push it).
CPL2_ATTEMPTS: list[tuple[str, int]] = [("int 0x80", 2), ("syscall", 0), *((what, 0) for what, _ in PRIVILEGED)]


def judge_cpl3(_lab: Lab, run: Run) -> list[Fact]:
    records = read_log(run.machine, run.pid)
    setup = calls(records)
    facts: list[Fact] = [(all(signed(r.words[5]) >= 0 for r in setup),
                          f"its kernel set up the app with {len(setup)} hypercalls, all accepted")]  # fmt: skip
    facts.append(_rflags_fact(records))
    traps = {r.words[0]: r for r in records if r.tag == REC_TRAP}
    for index, (what, vector, error) in enumerate(CPL3_ATTEMPTS, start=1):
        trap = traps.get(index)
        if trap is None:
            facts.append((False, f"{what}: no trap reached its kernel"))
            continue
        got = f"vector {trap.words[1]} error {trap.words[2]:#x} at rip {trap.words[4]:#x}"
        ok = (trap.words[1], trap.words[2]) == (vector, error)
        facts.append((ok, f"{what}: trapped to its kernel, {got} (expected vector {vector} error {error:#x})"))
    facts.append(no_records(records, REC_SURVIVED, "misdeed survived"))
    info = run.machine.info(run.pid)
    facts.append((info.state == "exited" and info.exit_code == 0,
                  f"the partition ended as its kernel chose: {info.state}, exit code {info.exit_code} "
                  "(HC_EXIT from ring 3 would have given 0x42)"))  # fmt: skip
    return facts


def _rflags_fact(records: list[Record]) -> Fact:
    report = next((r for r in records if r.tag == REC_REPORT and r.words[0] == 0), None)
    if report is None:
        return (False, "the app did not report its rflags")
    value = report.words[1]
    ok = not value & ~(RFLAGS_USER_MASK | RFLAGS_FIXED) and bool(value & 0x200)
    return (
        ok,
        f"IRET asked for rflags 0xffffffffffffffff (IOPL 3 included); the app got {value:#x}: "
        f"IOPL {(value >> 12) & 3}, IF {(value >> 9) & 1}, no bit outside {RFLAGS_USER_MASK | RFLAGS_FIXED:#x}",
    )


def judge_cpl2(_lab: Lab, run: Run) -> list[Fact]:
    records = read_log(run.machine, run.pid)
    tries = [r for r in records if r.tag == REC_TRY]
    faults = run.attacker_events("kernel_fault")
    facts: list[Fact] = []
    for index, (what, offset) in enumerate(CPL2_ATTEMPTS):
        attempt = next((t for t in tries if t.words[0] == index), None)
        fault = faults[index].args if index < len(faults) else None
        if attempt is None or fault is None:
            facts.append((False, f"{what}: not tried, or no kernel fault followed"))
            continue
        ok = fault["rip"] == attempt.words[1] + offset and fault["kind"] != "internal_error"
        facts.append((ok, f"{what} at {attempt.words[1]:#x}: kernel fault {fault['kind']} "
                          f"(vector {fault['vector']}) at {fault['rip']:#x}"))  # fmt: skip
    facts.append(no_records(records, REC_SURVIVED, "instruction survived at CPL 2"))
    info = run.machine.info(run.pid)
    facts.append((info.state == "exited" and info.exit_code == 0 and info.restarts == len(CPL2_ATTEMPTS),
                  f"ring 1 warm-restarted it after each fault (the suite's table for it): {info.restarts} restarts, "
                  f"then it finished: {info.state}, exit code {info.exit_code}"))  # fmt: skip
    return facts


# -- malformed arguments and huge counts ----------------------------------------------------------
MALFORMED = [
    Expect("ASPACE_SWITCH to a space never created", Status.BAD_HANDLE),
    Expect("ASPACE_SWITCH to handle 2^64-1", Status.BAD_HANDLE),
    Expect("ASPACE_DESTROY of the boot space", Status.DENIED),
    Expect("ASPACE_DESTROY of a space never created", Status.BAD_HANDLE),
    Expect("MAP in a space never created", Status.BAD_HANDLE),
    Expect("MAP with reserved flag bit 2", Status.INVALID_ARGUMENT),
    Expect("MAP with reserved flag bit 63", Status.INVALID_ARGUMENT),
    Expect("MAP at an unaligned address", Status.INVALID_ARGUMENT),
    Expect("MAP at page 0", Status.INVALID_ARGUMENT),
    Expect("MAP past the user half", Status.INVALID_ARGUMENT),
    Expect("MAP for ring 3 in the kernel half", Status.INVALID_ARGUMENT),
    Expect("MAP for the kernel in the user half", Status.INVALID_ARGUMENT),
    Expect("MAP over ring 0's GDT", Status.INVALID_ARGUMENT),
    Expect("MAP of frame 2^64-1", Status.INVALID_ARGUMENT),
    Expect("UNMAP of an unaligned address", Status.INVALID_ARGUMENT),
    Expect("UNMAP of ring 0's GDT", Status.INVALID_ARGUMENT),
    Expect("UNMAP where nothing is mapped", Status.NOT_FOUND),
    Expect("UNMAP in a space never created", Status.BAD_HANDLE),
    Expect("SET_ENTRY of kind 3", Status.INVALID_ARGUMENT),
    Expect("SET_ENTRY of kind 2^64-1", Status.INVALID_ARGUMENT),
    Expect("SET_KERNEL_STACK unaligned", Status.BAD_ADDRESS),
    Expect("SET_KERNEL_STACK at KERNEL_BASE", Status.BAD_ADDRESS),
    Expect("FRAME_FREE of frame 2^64-1", Status.INVALID_ARGUMENT),
    Expect("FRAME_FREE of frame 0 (ring 0's)", Status.DENIED),
    Expect("PORT_SEND on port 2^64-1", Status.BAD_HANDLE),
    Expect("PORT_RECEIVE on a port never opened", Status.BAD_HANDLE),
    Expect("PORT_STATUS with no port open", Status.BAD_HANDLE),
    Expect("PORT_OPEN with an empty name", Status.INVALID_ARGUMENT),
    Expect("PORT_OPEN with a 32-byte name", Status.INVALID_ARGUMENT),
    Expect("PART_CONTROL from a guest partition (bad op too)", Status.DENIED),
    Expect("PART_QUERY from a guest partition", Status.DENIED),
    Expect("PART_LIST from a guest partition", Status.DENIED),
    Expect("hypercall 27 (unknown)", Status.NOT_SUPPORTED),
    Expect("hypercall 0x82 (unknown)", Status.NOT_SUPPORTED),
    Expect("hypercall 0x7fffffff (unknown)", Status.NOT_SUPPORTED),
    Expect("HC_EXIT with bit 32 set (not truncated to EXIT)", Status.NOT_SUPPORTED),
    Expect("HC_YIELD with the high half set", Status.NOT_SUPPORTED),
    Expect("hypercall 2^63 (unknown)", Status.NOT_SUPPORTED),
    Expect("hypercall 2^64-1 (unknown)", Status.NOT_SUPPORTED),
    Expect("IRET to a rip in the kernel half", Status.INVALID_ARGUMENT),
    Expect("IRET to rip 0", Status.INVALID_ARGUMENT),
    Expect("IRET with rsp past the user half", Status.INVALID_ARGUMENT),
    Expect("IRET into a space never created", Status.BAD_HANDLE),
]


def judge_malformed(_lab: Lab, run: Run) -> list[Fact]:
    return check_calls(calls(read_log(run.machine, run.pid)), MALFORMED)


HUGE = [
    Expect("CONSOLE_WRITE of 2^64-1 bytes", Status.INVALID_ARGUMENT),
    Expect("CONSOLE_WRITE of CONSOLE_MAX + 1 bytes", Status.INVALID_ARGUMENT),
    Expect("MEASURE of 2^64-1 bytes", Status.INVALID_ARGUMENT),
    Expect("MEASURE of MEASURE_MAX + 1 bytes", Status.INVALID_ARGUMENT),
    Expect("MEASURE with a 2^63-byte name", Status.INVALID_ARGUMENT),
    Expect("MEASURE with a 65-byte name", Status.INVALID_ARGUMENT),
    Expect("ATTEST with a 2^64-1-byte nonce", Status.INVALID_ARGUMENT),
    Expect("ATTEST with a 65-byte nonce", Status.INVALID_ARGUMENT),
    Expect("PORT_OPEN with a 2^64-1-byte name", Status.INVALID_ARGUMENT),
    Expect("PORT_OPEN with a 32-byte name", Status.INVALID_ARGUMENT),
    Expect("PART_LIST of 2^64-1 entries", Status.DENIED),
]
FLOOD = 0xE00  #: line ends in the console flood (huge_counts.asm)


def judge_huge(_lab: Lab, run: Run) -> list[Fact]:
    records = read_log(run.machine, run.pid)
    expected = [*HUGE, Expect(f"one CONSOLE_WRITE of {FLOOD} line ends", OK, FLOOD)]
    facts = check_calls(calls(records), expected)
    facts.append(_flood_fact(run))
    loops = {r.words[0]: r.words for r in records if r.tag == REC_LOOP}
    facts += [_spaces_fact(run, loops), _frames_fact(run, loops), _log_fact(run, loops)]
    return facts


def _loop(loops: dict[int, tuple[int, ...]], number: Hypercall) -> tuple[int, int]:
    words = loops.get(int(number), (int(number), 0, 0))
    return words[1], signed(words[2])


def _flood_fact(run: Run) -> Fact:
    lines = [e.args["text"] for e in run.attacker_events("console")]
    empty = sum(1 for text in lines if text == "")
    notice = next((text for text in lines if "dropped" in text), None)
    ok = empty < FLOOD and notice is not None
    return (ok, f"{FLOOD} line ends in one write gave {empty} console lines and the notice {notice!r}")


def _spaces_fact(run: Run, loops: dict[int, tuple[int, ...]]) -> Fact:
    made, last = _loop(loops, Hypercall.ASPACE_CREATE)
    spaces = len(run.machine.partitions[run.pid].spaces)
    ok = last == -Status.NO_MEMORY and spaces == made + 1
    return (
        ok,
        f"ASPACE_CREATE until refused: {made} spaces, then {show_result(last)}; it holds {spaces} "
        "spaces (the boot space included)",
    )


def _frames_fact(run: Run, loops: dict[int, tuple[int, ...]]) -> Fact:
    made, last = _loop(loops, Hypercall.FRAME_ALLOC)
    info = run.machine.info(run.pid)
    ok = last == -Status.NO_MEMORY and info.frames_in_use == info.quota_frames
    return (
        ok,
        f"FRAME_ALLOC until refused: {made} frames, then {show_result(last)}; its quota is used up "
        f"exactly ({info.frames_in_use}/{info.quota_frames} frames), no frame came from elsewhere",
    )


def _log_fact(run: Run, loops: dict[int, tuple[int, ...]]) -> Fact:
    made, last = _loop(loops, Hypercall.MEASURE)
    events = len(run.machine.measurements(run.pid)[1])
    ok = last == -Status.NO_MEMORY and made > 0
    return (
        ok,
        f"MEASURE until refused: {made} measurements, then {show_result(last)}; its event log "
        f"stopped at {events} events",
    )


# -- channels ------------------------------------------------------------------------------
def channel_expectations(lab: Lab) -> list[Expect]:
    foreign = [Expect(f"PORT_OPEN of the configured port {name!r}", Status.NOT_FOUND) for name in configured_ports(lab)]
    own = [
        Expect(f"PORT_OPEN of its own {LOOP_SOURCE!r}", OK, 0),
        Expect(f"PORT_OPEN of its own {LOOP_DESTINATION!r}", OK, 1),
        Expect("PORT_SEND on its destination port", Status.DENIED),
        Expect("PORT_RECEIVE on its source port", Status.DENIED),
        Expect(f"PORT_SEND of {LOOP_MESSAGE_SIZE + 1} bytes (over message_size)", Status.INVALID_ARGUMENT),
        Expect("PORT_SEND of 0 bytes", Status.INVALID_ARGUMENT),
        Expect("PORT_SEND of 2^64-1 bytes", Status.INVALID_ARGUMENT),
        Expect("PORT_SEND 1", OK, 0),
        Expect("PORT_SEND 2 (queue full now)", OK, 0),
        Expect(f"PORT_SEND 3 into a queue of depth {LOOP_DEPTH}", Status.BUSY),
        Expect("PORT_STATUS: messages waiting", OK, LOOP_DEPTH),
        Expect("PORT_RECEIVE into a 4-byte buffer", Status.NO_MEMORY),
        Expect("PORT_RECEIVE into ring 0's GDT", Status.BAD_ADDRESS),
        Expect("PORT_RECEIVE into its read-only start-info page", Status.BAD_ADDRESS),
        Expect("PORT_RECEIVE into a range wrapping past 2^64", Status.BAD_ADDRESS),
        Expect("PORT_STATUS: nothing consumed by the refused receives", OK, LOOP_DEPTH),
        Expect("PORT_RECEIVE 1", OK, LOOP_MESSAGE_SIZE),
        Expect("PORT_RECEIVE 2", OK, LOOP_MESSAGE_SIZE),
        Expect("PORT_RECEIVE from an empty queue", Status.NOT_FOUND),
        Expect("PORT_STATUS on handle 2, never opened", Status.BAD_HANDLE),
    ]
    return foreign + own


def judge_channels(lab: Lab, run: Run) -> list[Fact]:
    name = lab.loop_channel_name()
    facts: list[Fact] = [
        (
            True,
            f"the suite gave the attacker a private queuing channel {name!r} from "
            f"{run.name}.{LOOP_SOURCE} to {run.name}.{LOOP_DESTINATION} (message_size "
            f"{LOOP_MESSAGE_SIZE}, depth {LOOP_DEPTH}), reachable by no configured partition",
        )
    ]
    facts += check_calls(calls(read_log(run.machine, run.pid)), channel_expectations(lab))
    channel = run.machine.channels[run.system.channel_ids[name]]
    ok = (channel.sent, channel.received) == (LOOP_DEPTH, LOOP_DEPTH)
    facts.append((ok, f"ring 0's count for {name!r}: {channel.sent} sent, {channel.received} received "
                      "(the refused send queued nothing, the refused receives consumed nothing)"))  # fmt: skip
    return facts


# -- double fetch --------------------------------------------------------------------------------
ORIGINAL, NONCE = b"ORIGINAL-MESSAGE", b"NONCE-ALIASED-01"
DOUBLE_FETCH = [
    Expect(f"PORT_OPEN {LOOP_SOURCE!r}", OK, 0), Expect(f"PORT_OPEN {LOOP_DESTINATION!r}", OK, 1),
    Expect("PORT_SEND of the original message", OK, 0), Expect("PORT_RECEIVE after the sender changed it", OK, 16),
    Expect("ATTEST with nonce and output aliased", OK), Expect("MEASURE (two distinct ranges)", OK, 0),
    Expect("CONSOLE_WRITE", OK, 19), Expect(f"PORT_OPEN {LOOP_SOURCE!r} again", OK, 0),
    Expect("IRET with a frame whose rip is 0", Status.INVALID_ARGUMENT),
]  # fmt: skip


def judge_double_fetch(_lab: Lab, run: Run) -> list[Fact]:
    facts: list[Fact] = [
        (
            True,
            "one vCPU, and a guest kernel is never interrupted at CPL 2: ring 0 handles a "
            "hypercall between two guest instructions, so no guest code can change a buffer "
            "while ring 0 reads it; what is checked is copy-once, which makes it safe on more",
        )
    ]
    made = calls(read_log(run.machine, run.pid))
    facts += check_calls(made, DOUBLE_FETCH)
    scratch = LAYOUT["D_SCRATCH"]
    received = read_data(run.machine, run.pid, scratch + 0x100, 16)
    facts.append((received == ORIGINAL, f"the receiver got {received!r}: the message as it was at PORT_SEND"))
    facts.append(_quote_fact(run, made))
    facts.append(_fetch_fact(run))
    return facts


def _quote_fact(run: Run, made: list[Record]) -> Fact:
    length = signed(made[4].words[5]) if len(made) > 4 else -1
    key = run.machine.attestation_public_key
    if length <= 0 or key is None:
        return (False, "no quote was written")
    quote = read_data(run.machine, run.pid, LAYOUT["D_SCRATCH"] + 0x200, length)
    problems = verify_quote(quote, platform_key=VerifyKey(key), nonce=NONCE, partition=run.name)
    nonce = bytes.fromhex(json.loads(quote).get("statement", {}).get("nonce", "")) if not problems else NONCE
    return (
        not problems,
        f"the quote written over its own nonce buffer is over nonce {nonce!r} and verifies"
        if not problems
        else f"the aliased quote does not verify: {problems}",
    )


def _fetch_fact(run: Run) -> Fact:
    """Ring 0 read each guest range once per hypercall (instrumented ``machine.mem.copy_in``).

    No read recorded at all is a failure too: the attack's hypercalls pass
    buffers, so an instrument that sees nothing is blind, not a proof.
    """
    spaces = {space.cr3 for space in run.machine.partitions[run.pid].spaces.values()}
    per_call: dict[int, list[tuple[int, int]]] = {}
    for fetch in run.fetches:
        if fetch.cr3 in spaces:
            per_call.setdefault(fetch.time, []).append((fetch.va, fetch.length))
    twice = [(time, r) for time, ranges in per_call.items() for r in set(ranges) if ranges.count(r) > 1]
    total = sum(len(r) for r in per_call.values())
    if twice:
        return (False, f"ring 0 read a guest range twice within one hypercall: {twice[:3]}")
    if not total:
        return (False, "no read of the attacker's memory by ring 0 was recorded: the instrument saw nothing")
    return (
        True,
        f"ring 0 read guest memory {total} times during {len(per_call)} of its hypercalls, "
        "each range once (instrumented machine.mem.copy_in)",
    )


# -- frames: double free, use after free ------------------------------------------------------------
UAF = [
    Expect("FRAME_ALLOC A", OK), Expect("MAP A writable in the kernel half", OK, 0),
    Expect("FRAME_FREE A while mapped", Status.BUSY), Expect("ASPACE_CREATE S", OK),
    Expect("MAP A in S too", OK, 0), Expect("UNMAP A from the boot space", OK, 0),
    Expect("FRAME_FREE A while still mapped in S", Status.BUSY), Expect("ASPACE_DESTROY S", OK, 0),
    Expect("FRAME_FREE A, mapped nowhere", OK, 0), Expect("FRAME_FREE A again (double free)", Status.DENIED),
    Expect("MAP A after its free (use after free)", Status.DENIED), Expect("FRAME_ALLOC B", OK),
    Expect("MAP B read-only", OK, 0), Expect("UNMAP B", OK, 0), Expect("FRAME_FREE B", OK, 0),
    Expect("FRAME_ALLOC C", OK), Expect("MAP C writable", OK, 0), Expect("UNMAP C after using it", OK, 0),
    Expect("FRAME_FREE C", OK, 0),
]  # fmt: skip
VA_C = KERNEL_BASE + 0x40002000  #: frame_uaf.asm's VA_C


def judge_uaf(_lab: Lab, run: Run) -> list[Fact]:
    records = read_log(run.machine, run.pid)
    made = calls(records)
    facts = check_calls(made, UAF)
    read = next((r for r in records if r.tag == REC_READ), None)
    if read is not None and len(made) > 11:
        a, b = signed(made[0].words[5]), signed(made[11].words[5])
        facts.append((read.words[1] == 0, f"frame {b:#x} allocated after A ({a:#x}) was freed reads "
                                          f"{read.words[1]:#x}: zeroed, nothing of A's contents"))  # fmt: skip
    else:
        facts.append((False, "the attacker did not read the reallocated frame"))
    facts.append(_stale_fact(run, records))
    return [*facts, no_records(records, REC_SURVIVED, "load through a stale mapping")]


def _stale_fact(run: Run, records: list[Record]) -> Fact:
    attempt = next((r for r in records if r.tag == REC_TRY), None)
    faults = run.attacker_events("kernel_fault")
    if attempt is None or not faults:
        return (False, "the load through the stale mapping was not tried, or did not fault")
    fault = faults[0].args
    ok = (fault["kind"], fault["address"], fault["rip"]) == ("memory_violation", VA_C, attempt.words[1])
    return (
        ok,
        f"the load through the unmapped, freed {VA_C:#x} faulted: kernel {fault['kind']} at address "
        f"{fault['address']:#x}, rip {fault['rip']:#x}; ring 1 then: {run.machine.info(run.pid).state}",
    )


# -- time and crashes: the configured health policy --------------------------------------------------
def policy_facts(lab: Lab, run: Run) -> list[Fact]:
    """Each health event of the attacker got the action its table gives (the restart limit applied)."""
    table: HealthConfig = lab.template.health
    stream = [e for e in run.events if e.partition == run.name and e.event in ("health_event", "health_action")]
    facts: list[Fact] = []
    restarts = 0
    for i, event in enumerate(stream):
        if event.event != "health_event":
            continue
        kind = event.args["event"]
        want = table.action(kind)
        if want in ("cold_restart", "warm_restart") and restarts >= table.restart_limit:
            want = "halt"
        nxt = stream[i + 1] if i + 1 < len(stream) and stream[i + 1].event == "health_action" else None
        got = nxt.args["action"] if nxt is not None else "ignore"
        restarts += got in ("cold_restart", "warm_restart")
        facts.append((got == want, f"{kind} at t={event.time}: ring 1 applied {got} "
                                   f"(the table of {lab.template.name!r} says {want})"))  # fmt: skip
    return facts[:8] + ([(all(ok for ok, _ in facts[8:]), f"... {len(facts) - 8} more events")] if facts[8:] else [])


def judge_overrun(lab: Lab, run: Run) -> list[Fact]:
    usage = run.system.usage[run.name]
    info = run.machine.info(run.pid)
    facts: list[Fact] = [(usage.overruns > 0 and usage.used <= usage.window_time,
                          f"it ran {usage.used} of the {usage.window_time} instructions of its {usage.windows} "
                          f"windows, never past a window's end; {usage.overruns} windows ended with it still "
                          f"running, preempted by ring 0 ({info.counters.preemptions} preemptions)")]  # fmt: skip
    if lab.template.health.action("overrun") in ("ignore", "log"):
        facts.append((usage.used == usage.window_time,
                      "with the overrun policy letting it run, it used every instruction of its windows "
                      "(the pending timer upcall gave the spinning kernel no way out either)"))  # fmt: skip
    facts += policy_facts(lab, run)
    return facts


def judge_crash(lab: Lab, run: Run) -> list[Fact]:
    faults = run.attacker_events("kernel_fault")
    guard = KERNEL_STACK_TOP - KERNEL_STACK_SIZE - 8
    if not faults:
        return [(False, "its kernel did not crash")]
    first = faults[0].args
    facts: list[Fact] = [
        (
            (first["kind"], first["address"]) == ("memory_violation", guard),
            f"its kernel overflowed its stack: {len(faults)} kernel faults, the first "
            f"{first['kind']} at address {first['address']:#x} (the guard page below the stack)",
        )
    ]
    facts += policy_facts(lab, run)
    info = run.machine.info(run.pid)
    facts.append((info.state != "ready" or info.restarts > 0,
                  f"ring 0 state at the end: {info.state}, {info.restarts} restarts"))  # fmt: skip
    return facts


# -- the catalogue ---------------------------------------------------------------------------------
def _kernel(name: str) -> str:
    return f"partitions/adversarial/{name}.asm"


CLASSES: list[AttackClass] = [
    AttackClass("map_own_page_table_writable", "Writable mapping of its own page tables",
                _kernel("map_own_pagetable"),
                AttackerSpec("adversarial/map_own_pagetable", params=own_table_params), judge_map_own_tables),
    AttackClass("map_foreign_frame", "Mapping another partition's frames (and free RAM)", _kernel("map_foreign"),
                AttackerSpec("adversarial/map_foreign", params=foreign_params), judge_map_foreign),
    AttackClass("map_spk_frame", "Mapping ring 0's own frames", _kernel("map_foreign"),
                AttackerSpec("adversarial/map_foreign", params=ring0_params), judge_map_foreign),
    AttackClass("hypercall_pointer_ranges", "Hypercall pointers into foreign or wrapping ranges",
                _kernel("bad_pointers"), AttackerSpec("adversarial/bad_pointers", params=pointer_params),
                judge_pointers),
    AttackClass("cpl3_hypercall_and_privileged", "Hypercall and privileged instructions from ring 3",
                f"{_kernel('cpl3_host')} + apps/adversarial/cpl3_attempts.asm",
                AttackerSpec("adversarial/cpl3_host", apps=("adversarial/cpl3_attempts",)), judge_cpl3),
    AttackClass("cpl2_privileged_instructions", "Privileged instructions in a guest kernel (CPL 2)",
                _kernel("cpl2_privileged"),
                AttackerSpec("adversarial/cpl2_privileged", health="warm", frames=len(CPL2_ATTEMPTS) + 2),
                judge_cpl2),
    AttackClass("malformed_arguments", "Malformed hypercall arguments", _kernel("malformed"),
                AttackerSpec("adversarial/malformed"), judge_malformed),
    AttackClass("huge_counts", "Huge counts and exhausted resources", _kernel("huge_counts"),
                AttackerSpec("adversarial/huge_counts"), judge_huge),
    AttackClass("channel_abuse", "Channel and port abuse", _kernel("channel_abuse"),
                AttackerSpec("adversarial/channel_abuse", loop_channel=True, params=port_params), judge_channels),
    AttackClass("double_fetch", "Double fetch of hypercall buffers", _kernel("double_fetch"),
                AttackerSpec("adversarial/double_fetch", loop_channel=True, instrument=True), judge_double_fetch),
    AttackClass("frame_double_free_use_after_free", "Frame double free and use after free", _kernel("frame_uaf"),
                AttackerSpec("adversarial/frame_uaf"), judge_uaf),
    AttackClass("time_budget_overrun", "Time-budget overrun", _kernel("spin"),
                AttackerSpec("adversarial/spin", health="template"), judge_overrun),
    AttackClass("guest_kernel_crash", "Crash of a guest kernel", _kernel("crash"),
                AttackerSpec("adversarial/crash", health="template", frames=4), judge_crash),
]  # fmt: skip
