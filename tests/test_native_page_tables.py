"""Ring 0's native MAP and UNMAP (``_clock.c``'s pv_map/pv_unmap) against ring 0's handlers.

The native path does a MAP or UNMAP only when every rule holds, with the
handler's own steps; anything else goes to the handler. A machine with a
hypercall trace never uses it (the trace must see every call), so the same
program of hypercalls from a real CPL 2 agent on a traced machine and on an
untraced one must give the same results, the same RAM (page tables
included), the same frame table and the same counters.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.world import AgentWorld
from spk._frames import FrameType
from spk._paging import AddressSpace
from spk.abi import KERNEL_BASE, PAGE_SIZE, USER_END, Hypercall, Status

USER_VA = 0x40_0000
KERNEL_VA = KERNEL_BASE + 0x800_0000
#: Addresses a program names: pages that share a table, a page of another table, the edges
#: of both halves, and addresses each rule refuses (unaligned, non-canonical, between the halves).
#: The pages most calls name come twice: a program should mostly succeed, and map into tables it made.
PAGES = [USER_VA, USER_VA + PAGE_SIZE, USER_VA + 2 * PAGE_SIZE, KERNEL_VA, KERNEL_VA + PAGE_SIZE]
ADDRESSES = PAGES * 2 + [
    USER_VA + 0x20_0000,
    USER_END - PAGE_SIZE,
    USER_END,
    0,
    USER_VA + 1,
    1 << 63,
    KERNEL_BASE - PAGE_SIZE,
]
#: AUTO: the flags a guest would give the address (user and writable in the user half, writable in the kernel's).
AUTO = -1
FLAGS = [AUTO] * 6 + [0, 1, 2, 3, 4, 5, 6, 7, 8, 1 << 63]
#: Every program starts with frames to map and a second space.
PRELUDE = [("alloc", 0, 0, 0, 0)] * 3 + [("space", 0, 0, 0, 0)]

#: One step: (call, which handle, which frame, which address, which flags), each an index into what the
#: program has (the handles it created, the frames it allocated) or a frame it may not map.
STEP = st.tuples(
    st.sampled_from(["alloc", "space"] + ["map"] * 6 + ["unmap"] * 3 + ["free", "destroy"]),
    st.integers(0, 2),
    st.integers(0, 6),  # a frame of the program's (0-3), a victim's, one of its own page tables, one beyond RAM
    st.sampled_from(ADDRESSES),
    st.sampled_from(FLAGS),
)


@functools.cache
def worlds() -> tuple[AgentWorld, AgentWorld]:
    """A traced world (every call by the handlers) and an untraced one (the native path armed)."""
    return AgentWorld(trace_hypercalls=True), AgentWorld(trace_hypercalls=False)


def call(world: AgentWorld, number: Hypercall, *args: int) -> int | None:
    return world.do_hypercall(int(number), *args)


def run(world: AgentWorld, program: list[tuple[str, int, int, int, int]]) -> list[Any]:
    """The program on ``world`` from its snapshot: every call's result."""
    world.reset()
    handles: list[int] = [0]
    frames: list[int] = []
    results: list[Any] = []
    victim, agent = world.victims[0], world.agent.pid
    foreign = next(
        m for m, (owner, kind, *_) in enumerate(world.snapshot.frames) if (owner, kind) == (victim, FrameType.DATA)
    )
    own_table = next(
        m for m, (owner, kind, *_) in enumerate(world.snapshot.frames) if (owner, kind) == (agent, FrameType.PAGE_TABLE)
    )
    for name, h, f, va, flags in PRELUDE + program:
        handle = handles[h % len(handles)]
        frame = (frames[f % len(frames)] if frames else 0) if f < 4 else (foreign, own_table, 1 << 40)[f - 4]
        result: object
        if name == "alloc":
            result = call(world, Hypercall.FRAME_ALLOC)
            if result is not None and result > 0:
                frames.append(result)
        elif name == "space":
            result = call(world, Hypercall.ASPACE_CREATE)
            if result is not None and result > 0:
                handles.append(result)
        elif name == "map":
            flags = (3 if va < KERNEL_BASE else 1) if flags == AUTO else flags
            status = call(world, Hypercall.MAP, handle, va, frame, flags)
            space = world.machine.partitions[world.agent.pid].spaces.get(handle)
            result = (status, space.lookup_leaf(va)) if status == 0 and space else status  # the entry it wrote, too
        elif name == "unmap":
            result = call(world, Hypercall.UNMAP, handle, va)
        elif name == "free":
            result = call(world, Hypercall.FRAME_FREE, frame)
        else:
            result = call(world, Hypercall.ASPACE_DESTROY, handle)
        results.append((name, result))
    return results


def state(world: AgentWorld) -> tuple[object, ...]:
    m = world.machine
    counters = {pid: p.counters.hypercalls for pid, p in m.partitions.items()}
    coherence = (m.frames.coherence.guarded, m.engine.stores_guarded)
    return bytes(m.ram.view), m.frames.state(), coherence, counters


@settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(STEP, min_size=4, max_size=40))
def test_native_and_handler_paths_agree(program: list[tuple[str, int, int, int, int]]) -> None:
    traced, native = worlds()
    assert run(traced, program) == run(native, program)
    assert state(traced) == state(native)
    native.machine.check_invariants()


def every_call(world: AgentWorld) -> list[Any]:
    """Every MAP of every listed address, frame kind and flags, each from a free slot and followed
    by its UNMAP (and a second UNMAP: nothing there), in the boot space and a second one; then each
    page mapped twice (busy). The tables of both halves exist first, so these calls reach the
    native path."""
    program: list[tuple[str, int, int, int, int]] = [("map", 0, 0, USER_VA, AUTO), ("map", 0, 0, KERNEL_VA, AUTO)]
    program += [("unmap", 0, 0, USER_VA, 0), ("unmap", 0, 0, KERNEL_VA, 0)]
    program += [("map", 1, 0, USER_VA, AUTO), ("unmap", 1, 0, USER_VA, 0)]
    addresses, flag_values = sorted(set(ADDRESSES)), sorted(set(FLAGS))
    for h in (0, 1):
        for va in addresses:
            for f in range(7):
                for flags in flag_values:
                    program += [("map", h, f, va, flags), ("unmap", h, 0, va, 0), ("unmap", h, 0, va, 0)]
            program += [("map", h, 0, va, AUTO), ("map", h, 1, va, AUTO), ("unmap", h, 0, va, 0)]
    return run(world, program)


def test_every_map_and_unmap_case_agrees_with_the_handlers() -> None:
    traced, native = worlds()
    assert every_call(traced) == every_call(native)
    assert state(traced) == state(native)
    native.machine.check_invariants()


def test_the_native_path_answers_a_map_into_existing_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the first MAP (which allocates the tables) reaches the handler; the rest are native."""
    _traced, world = worlds()
    world.reset()
    handled: list[int] = []
    original = AddressSpace.map

    def counted(self: AddressSpace, va: int, mfn: int, write: bool, user: bool, execute: bool = True) -> None:
        handled.append(va)
        original(self, va, mfn, write, user, execute)

    monkeypatch.setattr(AddressSpace, "map", counted)
    frame = call(world, Hypercall.FRAME_ALLOC)
    assert frame is not None and frame > 0
    agent = world.machine.partitions[world.agent.pid]
    before = agent.counters.hypercalls
    for _ in range(3):
        assert call(world, Hypercall.MAP, 0, USER_VA, frame, 3) == 0
        assert call(world, Hypercall.UNMAP, 0, USER_VA) == 0
    assert handled == [USER_VA]
    assert agent.counters.hypercalls == before + 2 * 6  # each call, and the agent's YIELD after it
    # Errors still come from the handler, typed: a busy slot, then nothing to unmap.
    assert call(world, Hypercall.MAP, 0, USER_VA, frame, 3) == 0
    assert call(world, Hypercall.MAP, 0, USER_VA, frame, 3) == -Status.BUSY
    assert call(world, Hypercall.UNMAP, 0, USER_VA) == 0
    assert call(world, Hypercall.UNMAP, 0, USER_VA) == -Status.NOT_FOUND
    world.machine.check_invariants()


def test_a_native_unmap_takes_the_page_out_of_the_engine_tlb() -> None:
    """A page the agent read through its TLB faults once a native UNMAP took it away."""
    _traced, world = worlds()
    world.reset()
    frame = call(world, Hypercall.FRAME_ALLOC)
    assert frame is not None and frame > 0
    read_page = bytes.fromhex("48a1") + USER_VA.to_bytes(8, "little")  # movabs rax, [USER_VA]
    assert call(world, Hypercall.MAP, 0, USER_VA, frame, 3) == 0
    assert call(world, Hypercall.UNMAP, 0, USER_VA) == 0  # the tables exist now: the next calls are native
    assert call(world, Hypercall.MAP, 0, USER_VA, frame, 3) == 0
    assert world.do_code(read_page.hex()) is None
    assert call(world, Hypercall.UNMAP, 0, USER_VA) == 0
    assert world.do_code(read_page.hex()) == "memory_violation"
