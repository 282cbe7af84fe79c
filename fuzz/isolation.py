"""Isolation campaign: random hypercall programs from a real CPL 2 agent.

A hypothesis state machine whose rules are guest actions, issued for real by
the fuzz agent (:mod:`fuzz.agent`) while victim partitions run their own
windows, and whose invariants are the isolation properties, checked after
every step:

* every mapping is owned by the partition that maps it, and the frame
  table's counts match a recount from the page tables
  (``Machine.check_invariants``), so no frame is both a page table and
  writable;
* the victims' frames are byte for byte what they were (nothing reached
  them), and the victims are still running;
* every hypercall answered with a value or a status of the closed set,
  and no host exception escaped into an ``internal_error`` fault.

Arguments mix well-formed values drawn from what the agent holds (its
frames, its address-space handles) with hostile ones: other partitions'
frames, ring 0's frames, reserved bits, ranges that cross the user/kernel
boundary or wrap past 2^64, huge counts.
"""

from __future__ import annotations

import hashlib

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from fuzz.agent import Agent, image
from spk import Machine
from spk.abi import KERNEL_BASE, KERNEL_END, PAGE_SIZE, USER_END, Hypercall, Status

STATUSES = {-int(s) for s in Status if s is not Status.OK}
VICTIMS = 2
U64 = st.integers(min_value=0, max_value=2**64 - 1)
EDGES = st.sampled_from([0, 1, PAGE_SIZE - 1, USER_END - PAGE_SIZE, USER_END, KERNEL_BASE - PAGE_SIZE, KERNEL_BASE,
                         KERNEL_END - PAGE_SIZE, KERNEL_END, 2**63, 2**64 - PAGE_SIZE, 2**64 - 1])  # fmt: skip
#: Hypercalls the agent may issue freely (EXIT and BLOCK end or stall it; IRET
#: leaves for CPL 3 with no app to come back from: each has its own rule).
FREE_CALLS = [h for h in Hypercall if h not in (Hypercall.EXIT, Hypercall.BLOCK, Hypercall.IRET)]


def frames_digest(machine: Machine, pid: int) -> str:
    """SHA-256 over every frame a partition owns, in frame order."""
    digest = hashlib.sha256()
    for mfn, frame in enumerate(machine.frames.entries):
        if frame.owner == pid:
            digest.update(machine.ram.frame_bytes(mfn))
    return digest.hexdigest()


class IsolationMachine(RuleBasedStateMachine):
    """One machine: the agent plus idle victims whose memory must never change."""

    frames = Bundle("frames")
    spaces = Bundle("spaces")

    def __init__(self) -> None:
        super().__init__()
        self.machine = Machine(24 << 20)
        self.victims = [self.machine.create_partition(f"victim{i}", image("bench_yield"), [], 64)
                        for i in range(VICTIMS)]  # fmt: skip
        self.agent = Agent(self.machine)
        for pid in self.victims:  # let them boot and park in their yield loop
            end = self.machine.now + 2_000
            self.machine.run(pid, end)
            self.machine.advance(end)
        self.victim_digests = {pid: frames_digest(self.machine, pid) for pid in self.victims}
        self.foreign = [mfn for mfn, f in enumerate(self.machine.frames.entries) if f.owner not in (0, self.agent.pid)]
        self.results: list[int] = []

    # -- helpers --------------------------------------------------------------
    def _call(self, number: int, *args: int) -> int | None:
        outcome = self.agent.hypercall(number, args)
        assert outcome.fault != "internal_error", f"host exception in hypercall {number}: {outcome}"
        if outcome.result is None:
            self.agent.reset()  # it exited, blocked or faulted: start it over
            return None
        self.results.append(outcome.result)
        return outcome.result

    # -- rules ------------------------------------------------------------------
    @rule(target=frames)
    def alloc(self) -> int:
        result = self._call(Hypercall.FRAME_ALLOC)
        return result if result is not None and result > 0 else 0

    @rule(target=spaces)
    def create_space(self) -> int:
        result = self._call(Hypercall.ASPACE_CREATE)
        return result if result is not None and result > 0 else 0

    @rule(space=spaces, frame=frames, va=st.one_of(EDGES, U64, st.integers(1, 2**20).map(lambda n: n * PAGE_SIZE)),
          flags=st.one_of(st.integers(0, 3), U64))  # fmt: skip
    def map(self, space: int, frame: int, va: int, flags: int) -> None:
        self._call(Hypercall.MAP, space, va, frame, flags)

    @rule(space=spaces, frame=st.data(), write=st.booleans())
    def map_foreign(self, space: int, frame: st.DataObject, write: bool) -> None:
        """Map a frame of another partition or of ring 0: must be refused."""
        mfn = frame.draw(st.sampled_from(self.foreign))
        result = self._call(Hypercall.MAP, space, 0x40_0000, mfn, 3 if write else 2)
        assert result is None or result in (-Status.DENIED, -Status.BUSY, -Status.BAD_HANDLE), result

    @rule(space=spaces, va=st.one_of(EDGES, U64))
    def unmap(self, space: int, va: int) -> None:
        self._call(Hypercall.UNMAP, space, va)

    @rule(frame=consumes(frames))
    def free(self, frame: int) -> None:
        self._call(Hypercall.FRAME_FREE, frame)

    @rule(space=consumes(spaces))
    def destroy_space(self, space: int) -> None:
        self._call(Hypercall.ASPACE_DESTROY, space)

    @rule(space=spaces)
    def switch_space(self, space: int) -> None:
        self._call(Hypercall.ASPACE_SWITCH, space)

    @rule(number=st.sampled_from(FREE_CALLS), args=st.lists(st.one_of(EDGES, U64, st.integers(0, 64)), max_size=5))
    def any_hypercall(self, number: int, args: list[int]) -> None:
        self._call(number, *args)

    @rule(number=U64)
    def unknown_hypercall(self, number: int) -> None:
        result = self._call(number)
        if number not in {int(h) for h in Hypercall}:
            assert result in (None, -Status.NOT_SUPPORTED), result

    @rule(space=spaces, frame_ptr=st.one_of(EDGES, U64))
    def iret(self, space: int, frame_ptr: int) -> None:
        """Enter CPL 3 with an arbitrary frame; the agent has no trap entry, so any
        app-level event ends it (a kernel fault its reset cleans up)."""
        self._call(Hypercall.IRET, space, frame_ptr)
        if not self.agent.healthy():
            self.agent.reset()

    @rule(blob=st.binary(min_size=1, max_size=64))
    def random_code(self, blob: bytes) -> None:
        """Random instruction bytes at CPL 2 in the agent's own data area."""
        outcome = self.agent.code(blob)
        assert outcome.fault != "internal_error", outcome
        if not self.agent.healthy() or outcome.reason == "window_end":
            self.agent.reset()

    @rule()
    def victims_run(self) -> None:
        for pid in self.victims:
            end = self.machine.now + 2_000
            self.machine.run(pid, end)
            self.machine.advance(end)

    # -- invariants ---------------------------------------------------------------
    @invariant()
    def tables_and_counts_agree(self) -> None:
        self.machine.check_invariants()

    @invariant()
    def victims_untouched(self) -> None:
        for pid in self.victims:
            assert self.machine.info(pid).state == "ready", self.machine.info(pid)
            assert frames_digest(self.machine, pid) == self.victim_digests[pid], f"victim {pid} memory changed"

    @invariant()
    def results_are_values_or_statuses(self) -> None:
        for result in self.results:
            assert result >= 0 or result in STATUSES, result
        self.results.clear()
