"""No-execute mappings, fast stores and translated code (spk._coherence).

A store through a no-execute mapping runs at engine speed and does not
drop the code translated from its frame. These guests write a function
through a writable no-execute alias of a frame and call it through an
executable alias, in every order ring 0 must handle: the call must always
run the code last written, as on hardware.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spk import Machine
from spk.abi import KERNEL_BASE, KERNEL_DATA_VADDR, PF_FETCH, PF_PRESENT, MapFlags, Vector
from spk.abi import Hypercall as H
from tests.guests import kernel, machine, results

EXEC_VA = KERNEL_BASE + 0x4000_0000  #: where the frame is called
DATA_VA = KERNEL_BASE + 0x4010_0000  #: where it is written, no-execute
NX_WRITE = int(MapFlags.WRITE | MapFlags.NO_EXEC)


def _function(value: int) -> int:
    """``mov eax, value; ret; nop; nop`` as one little-endian qword."""
    return int.from_bytes(bytes([0xB8]) + value.to_bytes(4, "little") + bytes([0xC3, 0x90, 0x90]), "little")


def _map(va: int, flags: int) -> list[str]:
    return ["mov rdi, 0", f"mov rsi, {va:#x}", "mov rdx, r12", f"mov r10, {flags}", f"mov rax, {int(H.MAP)}",
            "int 0x82", "add r15, rax"]  # fmt: skip


def _unmap(va: int) -> list[str]:
    return ["mov rdi, 0", f"mov rsi, {va:#x}", f"mov rax, {int(H.UNMAP)}", "int 0x82", "add r15, rax"]


def _write(value: int) -> list[str]:
    # A store beside the code first: a checked store drops only the code it
    # overlaps, and it is the one that may make the TLB entry fast.
    return [f"mov rcx, {DATA_VA:#x}", f"mov rax, {_function(value):#x}", "mov [rcx + 64], rax", "mov [rcx], rax"]


def _call(slot: int) -> list[str]:
    return [f"mov rcx, {EXEC_VA:#x}", "call rcx", f"mov [rbx + {8 * slot}], rax"]


#: Each scenario: its steps, in order; every call must return the value last written.
SCENARIOS: dict[str, list[str]] = {
    # The frame is written no-execute first, then becomes executable elsewhere.
    "no_exec_first": [
        *_map(DATA_VA, NX_WRITE), *_write(1), *_map(EXEC_VA, 0), *_call(0), *_write(2), *_call(1),
    ],
    # Executable first, then a writable no-execute alias.
    "exec_first": [
        *_map(EXEC_VA, 0), *_map(DATA_VA, NX_WRITE), *_write(1), *_call(0), *_write(2), *_call(1),
    ],
    # Translated, its executable mapping gone, written fast, then executable again.
    "stale_after_remap": [
        *_map(EXEC_VA, 0), *_map(DATA_VA, NX_WRITE), *_write(1), *_call(0), *_unmap(EXEC_VA), *_write(2),
        *_map(EXEC_VA, 0), *_call(1),
    ],
    # The classic writable and executable alias (no NX at all): checked stores, as before.
    "executable_alias": [
        *_map(EXEC_VA, 0), *_map(DATA_VA, int(MapFlags.WRITE)), *_write(1), *_call(0), *_write(2), *_call(1),
    ],
}  # fmt: skip


def _guest(steps: list[str]) -> bytes:
    lines = ["mov rbx, KERNEL_DATA_VADDR", "xor r15, r15", "mov rax, HC_FRAME_ALLOC", "int 0x82", "mov r12, rax",
             *steps, "mov [rbx + 16], r15", "mov rdi, 0", "mov rax, HC_EXIT", "int 0x82", "hang: jmp hang"]  # fmt: skip
    return kernel("\n".join(lines) + "\n")


def _run(steps: list[str], adjust: Callable[[Machine], None] | None = None) -> tuple[list[int], Machine]:
    m = machine()
    if adjust is not None:
        adjust(m)
    pid = m.create_partition("t", _guest(steps), [], 64)
    m.run(pid, 400_000)
    assert m.info(pid).state == "exited", (m.info(pid), m.fault_of(pid))
    if adjust is None:  # (a rule switched off is what the invariants would report)
        m.check_invariants()
    return results(m, pid, 3), m


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_call_runs_the_code_last_written(name: str) -> None:
    got, m = _run(SCENARIOS[name])
    assert got == [1, 2, 0], got  # the two calls, and every hypercall succeeded
    # The last two scenarios end with an executable and a no-execute alias of one writable frame: guarded.
    expected = 1 if name != "executable_alias" else 0
    assert m.frames.coherence.guarded == expected
    assert m.engine.stores_guarded == bool(expected)


def _without_guard(m: Machine) -> None:
    m.frames.coherence.attach(lambda _on: None, m.engine.drop_frame_code)


def _without_drop(m: Machine) -> None:
    m.frames.coherence.attach(m.engine.guard_stores, lambda _mfn: None)


def test_the_engine_runs_stale_code_after_a_fast_store() -> None:
    """The engine fact the guard exists for (unicorn 2.1.4): pinned so an upgrade that changes it shows.

    Without the guard, a store through the no-execute alias does not drop
    the code translated through the executable one, and the old function runs.
    """
    got, _ = _run(SCENARIOS["exec_first"], _without_guard)
    assert got[:2] == [1, 1]
    got, _ = _run(SCENARIOS["no_exec_first"], _without_guard)
    assert got[:2] == [1, 1]


def test_a_frame_executable_again_drops_what_fast_stores_left_stale() -> None:
    """Without the drop on a frame's first executable mapping, the remap scenario runs the old code."""
    got, _ = _run(SCENARIOS["stale_after_remap"], _without_drop)
    assert got[:2] == [1, 1]


def test_unmapping_an_alias_lowers_the_guard() -> None:
    steps = [*SCENARIOS["exec_first"], *_unmap(DATA_VA)]
    got, m = _run(steps)
    assert got == [1, 2, 0]
    assert m.frames.coherence.guarded == 0 and not m.engine.stores_guarded


def test_a_fetch_from_a_no_execute_page_is_a_fetch_fault() -> None:
    """MAP_NO_EXEC, and the data area ring 0 maps no-execute: a call there faults as a fetch."""
    for target in (DATA_VA, KERNEL_DATA_VADDR):
        steps = [*_map(DATA_VA, NX_WRITE), f"mov rcx, {target:#x}", "call rcx"]
        m = machine()
        pid = m.create_partition("t", _guest(steps), [], 64)
        m.run(pid, 400_000)
        fault = m.fault_of(pid)
        assert fault is not None and fault.vector == Vector.PF, fault
        assert fault.rip == fault.address == target
        assert fault.kind == "memory_violation" and fault.detail.endswith(f"error {PF_PRESENT | PF_FETCH:#x}"), fault


def test_a_snapshot_restores_the_guard() -> None:
    m = machine()
    pid = m.create_partition("t", _guest(SCENARIOS["exec_first"]), [], 64)
    m.run(pid, 400_000)
    assert m.engine.stores_guarded
    snap = m.snapshot()
    m.destroy_partition(pid)
    assert m.frames.coherence.guarded == 0 and not m.engine.stores_guarded
    m.restore(snap)
    assert m.frames.coherence.guarded == 1 and m.engine.stores_guarded
    m.check_invariants()


#: One step of a random program over one frame: map or unmap either alias, write the next function, call.
#: (Writes and calls come twice as often: a stale translation shows only after a call, a write and a call.)
STEPS = st.lists(
    st.sampled_from(["map_exec", "unmap_exec", "map_data", "unmap_data"] + ["write", "call"] * 2),
    min_size=8,
    max_size=30,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(STEPS)
def test_any_order_of_aliases_writes_and_calls_runs_the_code_last_written(steps: list[str]) -> None:
    """A model of the guest: every call through the executable alias returns the value written last.

    Only the steps the model allows are emitted (a write needs the data
    alias, a call the executable one and something written), so every
    hypercall must succeed; the guard's count is checked against the
    frame's final aliases.
    """
    exec_mapped = data_mapped = False
    written = 0
    lines: list[str] = []
    expected: list[int] = []
    for step in steps:
        if step == "map_exec" and not exec_mapped:
            lines += _map(EXEC_VA, 0)
            exec_mapped = True
        elif step == "unmap_exec" and exec_mapped:
            lines += _unmap(EXEC_VA)
            exec_mapped = False
        elif step == "map_data" and not data_mapped:
            lines += _map(DATA_VA, NX_WRITE)
            data_mapped = True
        elif step == "unmap_data" and data_mapped:
            lines += _unmap(DATA_VA)
            data_mapped = False
        elif step == "write" and data_mapped:
            written += 1
            lines += _write(written)
        elif step == "call" and exec_mapped and written:
            lines += [f"mov rcx, {EXEC_VA:#x}", "call rcx", f"mov [rbx + {24 + 8 * len(expected)}], rax"]
            expected.append(written)
    got, m = _run(lines)
    assert got[2] == 0  # every hypercall succeeded
    assert results(m, m.partition_table()[0][0], 3 + len(expected))[3:] == expected
    assert m.frames.coherence.guarded == (1 if exec_mapped and data_mapped else 0)
