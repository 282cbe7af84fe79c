"""Fuzz worlds: a machine booted once, reset from a snapshot for every example.

A world is what a campaign attacks: one :class:`spk.Machine` with an agent
partition that performs the campaign's actions for real, and victim
partitions that must not notice. It is booted once per process; every
example starts from the same :class:`spk.Snapshot` (RAM, frames,
partitions, channels, virtual time), so an example costs one restore
instead of a boot, and the same actions always give the same results.

An action is a plain tuple (``("hypercall", 6, 1, 0x40_0000, 157, 3)``),
JSON-ready, so that a finding is a list of actions a replay file carries.
:meth:`World.perform` is the only way an action runs: it executes it, then
checks every isolation invariant; a broken one raises :class:`Violation`.
The invariants, after every action:

* ``frame_accounting``: every mapping is of a frame its space's partition
  owns, no page table is writable-mapped, and the frame table's counts match
  a recount from the page tables (``Machine.check_invariants``);
* ``memory_confinement``: every frame whose bytes changed since the
  snapshot belongs (then or now) to a partition allowed to write it: the
  agent, a partition a lifecycle action recreated, a channel's receiver;
  so victims' memory, ring 0's frames and free RAM are byte for byte as
  they were;
* ``victims_running``: every victim is in the state the actions gave it;
* ``closed_statuses``: a hypercall returns a value or one of the ABI's
  statuses, an unknown number NOT_SUPPORTED;
* ``budget``: no run went past the end of its window;
* ``no_host_exception``: nothing raised out of the SPK, and no action
  ended in an ``internal_error`` fault (a Python exception inside ring 0).
  An exception of the campaign's own code is a ``campaign_error`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from fuzz.agent import WINDOW, Agent, Outcome, image
from spk import EventSink, Machine, Snapshot, SpkError
from spk.abi import Hypercall, Status

Action = tuple[Any, ...]
#: A frame-table entry as the tuple a snapshot keeps (read in C, not attribute by attribute).
STATUSES = frozenset(-int(s) for s in Status if s is not Status.OK)
KNOWN_CALLS = frozenset(int(h) for h in Hypercall)
#: RAM of a fuzz machine by default: enough for its partitions, small because every
#: reset copies it and every check compares it (a world may ask for more).
RAM_BYTES = 2 << 20
#: Owner of free RAM in the frame table.
FREE_OWNER = 0
VICTIM_IMAGE = "bench_yield"
VICTIM_QUOTA = 64
#: Instructions a victim gets per turn (it yields at once: its loop has no stores).
VICTIM_WINDOW = 2_000


def raised_in_ring0(exc: BaseException) -> bool:
    """Was ``exc`` raised inside the SPK (or its engine), not by the campaign's own code?

    The innermost frame tells: an exception out of ring 0 is a finding
    (``no_host_exception``); one out of the harness (a malformed action, a
    bug of the fuzzer) is a ``campaign_error``.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", "")) if tb is not None else ""
    return module.split(".")[0] in ("spk", "unicorn")


class Violation(AssertionError):
    """An isolation invariant is broken: a finding."""

    def __init__(self, invariant: str, message: str) -> None:
        super().__init__(f"{invariant}: {message}")
        self.invariant = invariant
        self.message = message


class World:
    """A machine booted once and reset from its snapshot; subclasses add partitions and actions.

    Counters (for the campaign statistics): ``executions`` (actions
    performed), ``checks`` (invariant checks), ``examples`` (resets).
    """

    #: Registered worlds by name (a replay file names its world).
    KINDS: ClassVar[dict[str, type[World]]] = {}
    kind: ClassVar[str] = ""
    ram_bytes: ClassVar[int] = RAM_BYTES

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            World.KINDS[cls.kind] = cls

    def __init__(self, *, on_event: EventSink | None = None, trace_hypercalls: bool = False) -> None:
        self.machine = Machine(self.ram_bytes, on_event=on_event, trace_hypercalls=trace_hypercalls)
        self.victims: list[int] = []
        self.log: list[Action] = []
        #: When a list, every example's actions are kept in it at the next reset (benchmarks).
        self.history: list[list[Action]] | None = None
        self.executions = self.checks = self.examples = 0
        self._snapshot: Snapshot | None = None
        self._owners: list[int] = []
        self._guards: dict[frozenset[int], tuple[list[int], list[tuple[int, int]], list[tuple[Any, ...]]]] = {}
        self._expected_state: dict[int, str] = {}
        self._writers: set[int] = set()
        self._results: list[tuple[int, int]] = []
        self._budget_broken: str | None = None

    # -- set-up -------------------------------------------------------------------
    def add_victims(self, count: int) -> None:
        """Idle partitions (they yield at once, forever) whose memory must never change."""
        for i in range(count):
            pid = self.machine.create_partition(f"victim{i}", image(VICTIM_IMAGE), [], VICTIM_QUOTA)
            self.victims.append(pid)
        self.run_victims()

    def seal(self) -> None:
        """Take the snapshot every example starts from (end of a subclass's set-up)."""
        try:  # the oracles compare with this state: it must be whole (a full recount)
            self.machine.check_invariants()
        except Exception as exc:
            raise Violation("frame_accounting", f"at the snapshot: {exc}") from exc
        self._snapshot = self.machine.snapshot()
        self._owners = [entry[0] for entry in self._snapshot.frames]
        self.reset(count=False)

    @property
    def snapshot(self) -> Snapshot:
        assert self._snapshot is not None, "seal() ends a world's set-up"
        return self._snapshot

    def reset(self, *, count: bool = True) -> None:
        """Back to the snapshot, for a new example."""
        self.machine.restore(self.snapshot)
        if self.history is not None and self.log:
            self.history.append(self.log)
        self.log = []
        self._expected_state = {pid: "ready" for pid in self.victims}
        self._writers = set(self.writers())
        self._results.clear()
        self._budget_broken = None
        self.on_reset()
        if count:
            self.examples += 1

    def on_reset(self) -> None:
        """Subclasses drop their caches here."""

    def writers(self) -> set[int]:
        """Partitions whose own frames may change in any example (the agents)."""
        return set()

    # -- running --------------------------------------------------------------------
    def run_victims(self) -> None:
        for pid in self.victims:
            if self.machine.state(pid) == "ready":
                self.run_partition(pid, VICTIM_WINDOW)

    def run_partition(self, pid: int, window: int) -> None:
        """One window for ``pid``; records a budget overrun for the ``budget`` invariant."""
        end = self.machine.now + window
        outcome = self.machine.run(pid, end)
        if outcome.end_time > end or outcome.executed > window:
            self._budget_broken = f"partition {pid} ran to {outcome.end_time} in a window ending at {end}"
        self.machine.advance(end)

    def note_result(self, number: int, result: int | None) -> None:
        """A hypercall result for the ``closed_statuses`` invariant."""
        if result is not None:
            self._results.append((number, result))

    def allow_writes(self, pid: int) -> None:
        """From now on in this example, ``pid``'s frames may change (it was recreated, or received)."""
        self._writers.add(pid)

    def settle(self, outcome: Outcome, agent: Agent | None = None) -> None:
        """After an agent's action: no internal error, no overrun; a stopped agent is restarted (it is ours).

        Errors: :class:`Violation` (``no_host_exception``) for an internal error.
        """
        assert agent is not None, "which agent acted"
        if outcome.fault == "internal_error":
            raise Violation("no_host_exception", f"ring 0 raised inside {agent.name}'s action: {outcome}")
        if outcome.executed > WINDOW:
            self._budget_broken = f"{agent.name} ran {outcome.executed} instructions in a {WINDOW} window"
        if not agent.healthy() or outcome.reason == "window_end":
            agent.reset()

    def agent_hypercall(self, agent: Agent, number: int, args: tuple[int, ...]) -> Outcome:
        """``agent`` makes one hypercall; its result is noted for the invariants and the agent settled."""
        outcome = agent.hypercall(number, args)
        self.note_result(number, outcome.result)
        self.settle(outcome, agent)
        return outcome

    def agent_code(self, agent: Agent, blob_hex: str) -> Outcome:
        """``agent`` calls the instruction bytes ``blob_hex`` at CPL 2; then it is settled."""
        outcome = agent.code(bytes.fromhex(blob_hex))
        self.settle(outcome, agent)
        return outcome

    def expect_state(self, pid: int, state: str) -> None:
        """A lifecycle action moved a victim to ``state`` (ready, paused, stopped...)."""
        self._expected_state[pid] = state

    # -- the one way an action runs -----------------------------------------------------
    def perform(self, action: Action) -> Any:
        """Run ``action``, then check every invariant. Errors: :class:`Violation`."""
        self.log.append(action)
        handler: Callable[..., Any] | None = getattr(self, f"do_{action[0]}", None)
        if handler is None:
            raise ValueError(f"{self.kind}: no action {action[0]!r}")
        try:
            result = handler(*action[1:])
        except Violation:
            raise
        except SpkError as exc:  # a mechanism refusing a ring-1 action is an answer, not a finding
            result = -int(exc.status)
        except Exception as exc:
            invariant = "no_host_exception" if raised_in_ring0(exc) else "campaign_error"
            raise Violation(invariant, f"{type(exc).__name__}: {exc} (action {action!r})") from exc
        self.executions += 1
        self.check()
        return result

    def check(self) -> None:
        """Every invariant, in order. Errors: :class:`Violation` for the first broken one."""
        self.checks += 1
        for invariant in self.invariants():
            invariant()

    def invariants(self) -> list[Callable[[], None]]:
        return [self.frame_accounting, self.memory_confinement, self.victims_running, self.closed_statuses,
                self.budget]  # fmt: skip

    # -- invariants ---------------------------------------------------------------------
    def frame_accounting(self) -> None:
        """Writers' mappings recounted from their tables; everyone else's frame entries as at the snapshot.

        A frame is mapped only by its owner, so a writer's recount is exact
        for its frames; the others acted not at all, so their entries (and,
        by ``memory_confinement``, their page tables) must be unchanged: that
        is the full recount, done at :meth:`seal`, still holding. The one
        change allowed is free RAM handed to a writer (a partition created in
        this example). And every partition holds exactly its quota, so no
        frame moved from one partition to another.
        """
        try:
            self.machine.check_invariants(self._writers)
        except Exception as exc:
            raise Violation("frame_accounting", str(exc)) from exc
        frames = self.machine.frames
        for pid, partition in self.machine.partitions.items():
            if len(frames.owned(pid)) != partition.quota:
                raise Violation(
                    "frame_accounting",
                    f"partition {pid} holds {len(frames.owned(pid))} frames, its quota is {partition.quota}",
                )
        before = self.snapshot.frames
        guarded = self._guarded_frames()
        now = frames.values_of(guarded)
        if now == self._guarded_before():
            return
        for mfn, entry in zip(guarded, now, strict=True):
            if entry != before[mfn] and not self._handed_over(mfn):
                owner, kind, maps, writable = before[mfn]
                raise Violation(
                    "frame_accounting",
                    f"frame {mfn:#x} of partition {owner} changed in the frame table: "
                    f"{(owner, kind.value, maps, writable)} -> {(entry[0], entry[1].value, entry[2], entry[3])}",
                )

    def memory_confinement(self) -> None:
        """Frames no writer owned at the snapshot are byte for byte as they were (unless they were free
        RAM a writer has been given since)."""
        for mfn in self.machine.changed_frames(self.snapshot, self._guarded_runs()):
            if not self._handed_over(mfn):
                raise Violation(
                    "memory_confinement",
                    f"frame {mfn:#x} (owner {self._owners[mfn]} at the snapshot, "
                    f"{self.machine.frames.entries[mfn].owner} now) changed",
                )

    def _handed_over(self, mfn: int) -> bool:
        """Was ``mfn`` free RAM at the snapshot, and is it a writer's now (a legitimate grant)?
        A frame moving from one partition to another never is."""
        return self._owners[mfn] == FREE_OWNER and self.machine.frames.entries[mfn].owner in self._writers

    def _guarded_frames(self) -> list[int]:
        return self._guard()[0]

    def _guarded_runs(self) -> list[tuple[int, int]]:
        return self._guard()[1]

    def _guarded_before(self) -> list[tuple[Any, ...]]:
        return self._guard()[2]

    def _guard(self) -> tuple[list[int], list[tuple[int, int]], list[tuple[Any, ...]]]:
        """Frames no writer owned at the snapshot, as a list and as (first, count) runs, and their
        frame-table entries at the snapshot (cached per writer set)."""
        key = frozenset(self._writers)
        if key not in self._guards:
            frames = [mfn for mfn, owner in enumerate(self._owners) if owner not in key]
            runs: list[tuple[int, int]] = []
            for mfn in frames:
                if runs and runs[-1][0] + runs[-1][1] == mfn:
                    runs[-1] = (runs[-1][0], runs[-1][1] + 1)
                else:
                    runs.append((mfn, 1))
            self._guards[key] = (frames, runs, [self.snapshot.frames[mfn] for mfn in frames])
        return self._guards[key]

    def victims_running(self) -> None:
        for pid, expected in self._expected_state.items():
            state = self.machine.state(pid) if pid in self.machine.partitions else "destroyed"
            if state != expected:
                raise Violation("victims_running", f"partition {pid} is {state}, expected {expected}")

    def closed_statuses(self) -> None:
        results, self._results = self._results, []
        for number, result in results:
            if result < 0 and result not in STATUSES:
                raise Violation("closed_statuses", f"hypercall {number} returned {result}")
            if number not in KNOWN_CALLS and result != -Status.NOT_SUPPORTED:
                raise Violation("closed_statuses", f"unknown hypercall {number} returned {result}")

    def budget(self) -> None:
        if self._budget_broken is not None:
            raise Violation("budget", self._budget_broken)


class AgentWorld(World):
    """An agent at CPL 2 and two idle victims: the hypercall and code campaigns' target."""

    kind = "agent"
    ram_bytes = 5 << 18  # 1.25 MiB: ring 0's frames, the agent's 96, two victims' 64

    def __init__(self, victims: int = 2, *, trace_hypercalls: bool = False) -> None:
        super().__init__(trace_hypercalls=trace_hypercalls)
        self.add_victims(victims)
        self.agent = Agent(self.machine)
        self.run_partition(self.agent.pid, WINDOW)  # boot: it parks in its idle loop
        self.seal()

    def writers(self) -> set[int]:
        return {self.agent.pid}

    def on_reset(self) -> None:
        self.agent.forget_layout()

    def settle(self, outcome: Outcome, agent: Agent | None = None) -> None:
        """After the agent's action (see :meth:`World.settle`)."""
        super().settle(outcome, agent or self.agent)

    # -- actions ----------------------------------------------------------------------
    def do_hypercall(self, number: int, *args: int) -> int | None:
        return self.agent_hypercall(self.agent, number, args).result

    def do_code(self, blob_hex: str) -> str | None:
        return self.agent_code(self.agent, blob_hex).fault

    def do_victims_run(self) -> None:
        self.run_victims()
