"""Helpers to boot small test systems straight on the SPK's public API."""

from __future__ import annotations

from pathlib import Path

from spgs.assembler import Source, assemble
from spgs.images import build
from spk import Machine, MachineEvent
from spk.abi import APP_IMAGE_VADDR, KERNEL_IMAGE_VADDR


def kernel(text: str) -> bytes:
    """Assemble a test guest kernel from source text."""
    return assemble([Source("test-kernel", text, KERNEL_IMAGE_VADDR)])[0]


def app(text: str) -> bytes:
    return assemble([Source("test-app", text, APP_IMAGE_VADDR)])[0]


def bundled(kind: str, name: str) -> bytes:
    return build([(kind, name)], Path.cwd())[(kind, name)]


class Recorder:
    """Collects machine events; ``lines(name)`` gives a partition's console."""

    def __init__(self) -> None:
        self.events: list[MachineEvent] = []

    def __call__(self, event: MachineEvent) -> None:
        self.events.append(event)

    def lines(self, partition: str) -> list[str]:
        return [e.args["text"] for e in self.events if e.partition == partition and e.event == "console"]

    def of(self, kind: str) -> list[MachineEvent]:
        return [e for e in self.events if e.event == kind]


def machine(recorder: Recorder | None = None, ram: int = 16 << 20, trace: bool = False) -> Machine:
    return Machine(ram, on_event=recorder, trace_hypercalls=trace)


def refsystem(apps: list[str], recorder: Recorder, quota: int = 256, name: str = "p") -> tuple[Machine, int]:
    """A machine with one reference-kernel partition running bundled apps."""
    m = machine(recorder)
    mods = [(a, bundled("app", a)) for a in apps]
    pid = m.create_partition(name, bundled("kernel", "refkernel"), mods, quota)
    return m, pid


def run_until_done(m: Machine, pids: list[int], window: int = 20_000, limit: int = 2_000_000) -> None:
    while m.now < limit and any(m.info(p).state in ("ready", "blocked") for p in pids):
        for pid in pids:
            end = m.now + window
            m.run(pid, end)
            m.advance(end)


def program(calls: list[tuple[int, tuple[int, ...]]], prologue: str = "") -> str:
    """A test kernel that makes each hypercall in turn, storing every rax in
    its data area (slot i at KERNEL_DATA_VADDR + 8*i), then exits with 0."""
    regs = ("rdi", "rsi", "rdx", "r10", "r8")
    lines = [prologue, "mov rbx, KERNEL_DATA_VADDR"]
    for i, (number, args) in enumerate(calls):
        for reg, value in zip(regs, args, strict=False):
            lines.append(f"mov {reg}, {value:#x}")
        lines += [f"mov rax, {number}", "int 0x82", f"mov [rbx + {8 * i:#x}], rax"]
    lines += ["mov rdi, 0", "mov rax, HC_EXIT", "int 0x82", "hang: jmp hang"]
    return "\n".join(lines) + "\n"


def results(m: Machine, pid: int, count: int) -> list[int]:
    """Signed results a :func:`program` kernel stored."""
    from spk.abi import KERNEL_DATA_VADDR

    space = m.partitions[pid].spaces[0]
    out = []
    for i in range(count):
        tr = m.walker.translate(space.cr3, KERNEL_DATA_VADDR + 8 * i)
        assert tr is not None
        value = m.ram.read_u64(tr.paddr)
        out.append(value - (1 << 64) if value >> 63 else value)
    return out
