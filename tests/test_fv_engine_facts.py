"""Engine facts full virtualization relies on: each sensitive instruction at CPL 0..3 (tests/fv_probe.py).

The trap-and-emulate design in docs/fullvirt.md rests on this table: what faults (and so reaches ring 0),
what calls an instruction hook, and what runs natively and silently (the holes ring 0 must close otherwise).
An engine upgrade that changes a cell fails here.
"""

from __future__ import annotations

import pytest

from tests.fv_probe import PROBES, Probe, run_probe

#: instruction -> outcome at CPL 0, 1, 2, 3 (unicorn 2.1.4)
EXPECTED = {
    "cli": ("runs, IF=0", "#GP", "#GP", "#GP"),
    "sti": ("runs, IF=1", "#GP", "#GP", "#GP"),
    "popf clearing IF": ("runs, IF=0", "runs, IF=1", "runs, IF=1", "runs, IF=1"),
    "popf setting IF": ("runs, IF=1", "runs, IF=0", "runs, IF=0", "runs, IF=0"),
    "pushf": ("runs, IF=1", "runs, IF=1", "runs, IF=1", "runs, IF=1"),
    "cli, IOPL 3": ("runs, IF=0", "runs, IF=0", "runs, IF=0", "runs, IF=0"),
    "popf clearing IF, IOPL 3": ("runs, IF=0", "runs, IF=0", "runs, IF=0", "runs, IF=0"),
    "hlt": ("runs", "#GP", "#GP", "#GP"),
    "lgdt": ("runs", "#GP", "#GP", "#GP"),
    "lidt": ("runs", "#GP", "#GP", "#GP"),
    "ltr": ("runs", "#GP", "#GP", "#GP"),
    "lldt": ("runs", "#GP", "#GP", "#GP"),
    "sgdt": ("runs, base 0x1000", "runs, base 0x1000", "runs, base 0x1000", "runs, base 0x1000"),
    "sidt": ("runs, base 0x0", "runs, base 0x0", "runs, base 0x0", "runs, base 0x0"),
    "smsw": ("runs, 0x11", "runs, 0x11", "runs, 0x11", "runs, 0x11"),
    "str": ("runs, 0x0", "runs, 0x0", "runs, 0x0", "runs, 0x0"),
    "sldt": ("runs, 0x0", "runs, 0x0", "runs, 0x0", "runs, 0x0"),
    "mov from cs": ("runs, 0x8", "runs, 0x19", "runs, 0x2a", "runs, 0x3b"),
    "mov from ss": ("runs, 0x10", "runs, 0x21", "runs, 0x32", "runs, 0x43"),
    "mov ds, RPL 0 to a DPL 1 descriptor": ("runs", "runs", "#GP", "#GP"),
    "mov ss, RPL 0 to a DPL 1 descriptor": ("#GP", "#GP", "#GP", "#GP"),
    "mov to cr3": ("runs", "#GP", "#GP", "#GP"),
    "mov from cr0": ("runs", "#GP", "#GP", "#GP"),
    "mov to cr0": ("runs", "#GP", "#GP", "#GP"),
    "lmsw": ("runs", "#GP", "#GP", "#GP"),
    "clts": ("runs", "#GP", "#GP", "#GP"),
    "invlpg": ("runs", "#GP", "#GP", "#GP"),
    "wbinvd": ("runs", "#GP", "#GP", "#GP"),
    "mov to dr7": ("runs", "#GP", "#GP", "#GP"),
    "rdmsr": ("runs", "#GP", "#GP", "#GP"),
    "wrmsr": ("runs", "#GP", "#GP", "#GP"),
    "in": ("hook IN", "hook IN", "hook IN", "hook IN"),
    "out": ("hook OUT", "hook OUT", "hook OUT", "hook OUT"),
    "cpuid": ("hook CPUID", "hook CPUID", "hook CPUID", "hook CPUID"),
    "rdtsc": ("runs", "runs", "runs", "runs"),
    "syscall": ("hook SYSCALL", "hook SYSCALL", "hook SYSCALL", "hook SYSCALL"),
    "swapgs": ("runs", "#GP", "#GP", "#GP"),
    "int 0x80": ("int 0x80 (vector 128)", "int 0x80 (vector 128)", "int 0x80 (vector 128)", "int 0x80 (vector 128)"),
    "sysretq": ("runs, to CPL 3", "#GP", "#GP", "#GP"),
    "iretq to CPL 0": ("runs, to CPL 0", "#GP", "#GP", "#GP"),
    "iretq to CPL 3, IF=0 in frame": (
        "runs, to CPL 3, IF=0",
        "runs, to CPL 3, IF=1",
        "runs, to CPL 3, IF=1",
        "runs, to CPL 3, IF=1",
    ),
    "lretq to CPL 0": ("runs, to CPL 0", "#GP", "#GP", "#GP"),
}


def test_every_probe_is_pinned() -> None:
    assert [p.name for p in PROBES] == list(EXPECTED)


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.name)
def test_sensitive_instruction_at_each_cpl(probe: Probe) -> None:
    assert tuple(run_probe(probe, cpl).summary(probe) for cpl in range(4)) == EXPECTED[probe.name]
