"""Ring 0's native paths against its Python handlers, action by action.

Ring 0 answers some hypercalls in its native interrupt hook (YIELD, and MAP
and UNMAP when every rule holds: ``spk/_clock.c``), and leaves the rest to
the Python handlers, which name every error. A machine whose hypercalls are
traced never uses the native paths (the trace must see every call). So this
world is an agent world with a twin whose hypercalls are traced; every
action runs on both, and after each the two must agree: the action's result,
RAM (page tables included), the frame table, virtual time, and every
partition's state and counters. The rules are the hypercall campaign's and
the code campaign's, plus mappings aimed at the native path: pages that share
a table, in the boot space and in spaces the agent created, with the flags a
guest would give them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import rule

from fuzz.campaigns.base import ARGUMENT, register
from fuzz.campaigns.code import CodeCampaign
from fuzz.campaigns.hypercalls import FRAMES, SPACES, AgentCalls
from fuzz.world import AgentWorld, Violation
from spk.abi import KERNEL_BASE, PAGE_SIZE, Hypercall, MapFlags

#: Pages the targeted mappings name: four in one user page table, two in one kernel-half table.
PAGES = [0x40_0000 + i * PAGE_SIZE for i in range(4)] + [KERNEL_BASE + 0x800_0000 + i * PAGE_SIZE for i in range(2)]
PAGE_RUNS = st.lists(st.sampled_from(PAGES), min_size=1, max_size=4)


class NativeWorld(AgentWorld):
    """An agent world (native paths armed) and its twin with hypercalls traced (Python handlers only)."""

    kind = "native"

    def __init__(self) -> None:
        self.twin = AgentWorld(trace_hypercalls=True)  # first: sealing this world resets it too
        self._answers: tuple[Any, Any] | None = None
        super().__init__()

    def on_reset(self) -> None:
        super().on_reset()
        self.twin.reset(count=False)
        self._answers = None

    # -- actions: each on both machines ---------------------------------------------------
    def do_hypercall(self, number: int, *args: int) -> int | None:
        mine = super().do_hypercall(number, *args)
        self._answers = (mine, self.twin.do_hypercall(number, *args))
        return mine

    def do_code(self, blob_hex: str) -> str | None:
        mine = super().do_code(blob_hex)
        self._answers = (mine, self.twin.do_code(blob_hex))
        return mine

    def do_victims_run(self) -> None:
        super().do_victims_run()
        self.twin.do_victims_run()
        self._answers = None

    # -- invariants -----------------------------------------------------------------------
    def invariants(self) -> list[Any]:
        return [*super().invariants(), self.native_agrees]

    def native_agrees(self) -> None:
        """The action's answer and the whole machine state equal the traced twin's."""
        if self._answers is not None and self._answers[0] != self._answers[1]:
            native, handlers = self._answers
            raise Violation("native_agrees", f"the answer was {native!r}, ring 0's handlers gave {handlers!r}")
        mine, theirs = self.machine, self.twin.machine
        if mine.now != theirs.now:
            raise Violation("native_agrees", f"virtual time {mine.now}, the handlers' run {theirs.now}")
        if mine.frames.state() != theirs.frames.state():
            entries = [(*e, n) for e, n in zip(mine.frames.values(), mine.frames.no_exec, strict=True)]
            twins = [(*e, n) for e, n in zip(theirs.frames.values(), theirs.frames.no_exec, strict=True)]
            mfn = next(m for m, (a, b) in enumerate(zip(entries, twins, strict=True)) if a != b)
            raise Violation("native_agrees", f"frame {mfn:#x}: {entries[mfn]} against {twins[mfn]} "
                                             "(owner, type, maps, writable, no-execute marks)")  # fmt: skip
        guards = (mine.frames.coherence.guarded, mine.engine.stores_guarded)
        if guards != (theirs.frames.coherence.guarded, theirs.engine.stores_guarded):
            raise Violation("native_agrees", f"store guard {guards} against the handlers' "
                                             f"{(theirs.frames.coherence.guarded, theirs.engine.stores_guarded)}")
        if mine.ram.view != theirs.ram.view:
            words, twin_words = mine.ram.words, theirs.ram.words
            word = next(i for i in range(len(words)) if words[i] != twin_words[i])
            raise Violation("native_agrees", f"RAM at {word * 8:#x}: {words[word]:#x} against {twin_words[word]:#x}")
        for pid, p in mine.partitions.items():
            q = theirs.partitions[pid]
            if (p.state, p.counters) != (q.state, q.counters):
                raise Violation("native_agrees", f"partition {p.name}: {p.state.value} {p.counters} against "
                                                 f"{q.state.value} {q.counters}")  # fmt: skip


@register("native", "ring 0's native MAP, UNMAP and YIELD against its Python handlers, state by state", NativeWorld)
class NativeCampaign(AgentCalls, CodeCampaign):
    """The shared agent rules and random CPL 2 code, and mappings aimed at the native path."""

    def _map(self, space: int, frame: int, vas: list[int], write: bool, no_exec: bool) -> None:
        flags = int(write) | (int(MapFlags.NO_EXEC) if no_exec else 0)
        for va in vas:
            self.act("hypercall", Hypercall.MAP, space, va, frame, (2 if va < KERNEL_BASE else 0) | flags)

    @rule(frame=FRAMES, vas=PAGE_RUNS, write=st.booleans(), no_exec=st.booleans())
    def map_boot_pages(self, frame: int, vas: list[int], write: bool, no_exec: bool) -> None:
        """Mappings a guest would make (the flags each half takes), several into one table: after the
        first, which makes the table through ring 0's handler, the rest reach the native path (a frame
        mapped no-execute anywhere stays with the handler: spk._coherence)."""
        self._map(0, frame, vas, write, no_exec)

    @rule(space=SPACES, frame=FRAMES, vas=PAGE_RUNS, write=st.booleans(), no_exec=st.booleans())
    def map_pages(self, space: int, frame: int, vas: list[int], write: bool, no_exec: bool) -> None:
        self._map(space, frame, vas, write, no_exec)

    @rule(space=st.just(0) | SPACES, vas=PAGE_RUNS)
    def unmap_pages(self, space: int, vas: list[int]) -> None:
        for va in vas:
            self.act("hypercall", Hypercall.UNMAP, space, va)

    @rule(space=st.just(0) | SPACES | ARGUMENT, frame=FRAMES | ARGUMENT, va=st.sampled_from(PAGES) | ARGUMENT,
          flags=ARGUMENT)  # fmt: skip
    def map_hostile(self, space: int, frame: int, va: int, flags: int) -> None:
        """Any words: each rule the native path checks, broken one or more at a time."""
        self.act("hypercall", Hypercall.MAP, space, va, frame, flags)

    @rule(space=st.just(0) | SPACES | ARGUMENT, va=st.sampled_from(PAGES) | ARGUMENT)
    def unmap_hostile(self, space: int, va: int) -> None:
        self.act("hypercall", Hypercall.UNMAP, space, va)

    @rule(space=st.just(0) | SPACES)
    def switch_space(self, space: int) -> None:
        self.act("hypercall", Hypercall.ASPACE_SWITCH, space)
