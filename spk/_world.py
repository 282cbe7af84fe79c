"""The world switch and run loop of paravirtual partitions on the shared vCPU.

:class:`PvWorldSwitch` puts one paravirtualized partition on the machine's
vCPU (its saved context restored, the TLB kept when its CR3 is the one
loaded, the native system-call bounce armed), runs the engine up to a
virtual-time bound in as many engine runs as its stops need (timer
upcalls, pending traps, code flushes, a debugger's stop), and takes it off
again. It holds what only exists while a partition runs or between its
runs: the partition on the vCPU, the CR3 the TLB describes, where the
current engine run started in virtual time, why the engine stopped, a
listener's error, and where a run cut by the debugger resumes.

The trap paths (:class:`spk._pv_traps.PvTraps`) read and write the first
two (:class:`spk._pv_traps.RunState`); the hypercall handlers reach the
services here (stop, time, timer, app entry) through the machine, which
binds them as its own attributes, so a hypercall costs no added call.

Virtual time itself (``Machine.now``) is the machine's: every kind of
partition advances it. Errors: a listener's exception, re-raised by
:meth:`PvWorldSwitch.run` once the partition is off the vCPU.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spk._frames import DATA_CODE
from spk._partition import NATIVE_SPACE_SLOTS, Partition, SpaceTable, State
from spk._trace import EventSink, MachineEvent
from spk.abi import HYPERCALL_VECTOR, KERNEL_BASE, KERNEL_END, USER_BASE, USER_END, EntryKind, Event, Hypercall

if TYPE_CHECKING:
    from spk._cpu import Templates
    from spk._engine import Engine
    from spk._guestmem import GuestMemory
    from spk._machine import Machine
    from spk._pv_traps import PvTraps


@dataclass(frozen=True)
class RunOutcome:
    """Why :meth:`spk.Machine.run` returned."""

    pid: int
    reason: str  #: window_end, yield, blocked, exit, fault, not_runnable
    executed: int  #: virtual time this call took (ticks: instruction bytes retired, or its whole budget)
    end_time: int  #: virtual time when it returned

    def __init__(self, pid: int, reason: str, executed: int, end_time: int) -> None:
        # One per window: filling the instance's dict directly is about twice as
        # fast as the generated frozen __init__ (one object.__setattr__ per field).
        self.__dict__.update(pid=pid, reason=reason, executed=executed, end_time=end_time)


class PvWorldSwitch:
    """Runs paravirtual partitions on one machine's vCPU, one window at a time.

    ``machine`` is the composition it serves: its virtual time
    (``machine.now``), its kernel-fault report and its
    :meth:`~spk.Machine.kernel_entry_changed` (which arms the native
    bounce). Built once the CPU is brought up (the live registers exist
    only then).
    """

    def __init__(
        self,
        machine: Machine,
        engine: Engine,
        templates: Templates,
        traps: PvTraps,
        mem: GuestMemory,
        on_event: EventSink,
    ) -> None:
        self._m = machine
        self.engine = engine
        self._templates = templates
        self._traps = traps
        self._mem = mem
        self._on_event = on_event
        #: the partition on the vCPU (None between runs)
        self.current: Partition | None = None
        #: the CR3 whose translations the engine's TLB holds (-1: none known)
        self.loaded_cr3 = -1
        #: virtual time at the start of the current engine run
        self.run_start = 0
        #: why the engine was stopped inside the current engine run (None: it was not)
        self.stop_reason: str | None = None
        #: a listener's exception inside a run, re-raised by :meth:`run`
        self.listener_error: Exception | None = None
        #: (pid, end of the engine run a debug stop cut): where the next run of pid resumes
        self.debug_resume: tuple[int, int] | None = None
        #: while a vCPU of another kind runs (a full partition's own engine): its clock and its stop
        self.other_vcpu: tuple[Callable[[], int], Callable[[], None]] | None = None
        # Traps read and write the live registers in place: no engine call.
        self.regs = engine.live_registers()
        self.live = self.regs.words
        # RFLAGS is the one register read on a bounce: the engine keeps the
        # arithmetic flags lazily, so it must compute them (one C call).
        self.read_rflags = engine.reader("rflags")
        self.write_rflags = engine.writer("rflags")
        # A window's entry and exit are one native call each, and its YIELD is
        # answered in C unless hypercalls are traced (the trace must see every call).
        engine.configure_windows(HYPERCALL_VECTOR, int(Hypercall.YIELD), None if traps.tracing else self.native_yield)
        # So are MAP and UNMAP on their success path (ring 0's own steps, in
        # C: the frame table's arrays and each partition's CR3s by handle).
        frames = machine.frames
        engine.configure_page_tables(
            (int(Hypercall.MAP), int(Hypercall.UNMAP)),
            frames.addresses(),
            len(frames.types),
            DATA_CODE,
            (USER_BASE, USER_END, KERNEL_BASE, KERNEL_END),
            NATIVE_SPACE_SLOTS,
        )
        #: the native MAP and UNMAP are armed (never with a hypercall trace: it must see every call)
        self._native_page_tables = not traps.tracing

    def run(self, p: Partition, until: int) -> RunOutcome:
        """Run ``p`` until virtual time ``until`` at the latest (see :meth:`spk.Machine.run`).

        Errors: a listener's exception, raised once ``p`` is saved and off the vCPU.
        """
        m = self._m
        pid = p.pid
        start = m.now
        if p.state not in (State.READY, State.BLOCKED) or until <= start:
            return RunOutcome(pid, "not_runnable", 0, start)
        engine, regs, traps, mem = self.engine, self.regs, self._traps, self._mem
        resume_end = None
        if self.debug_resume is not None and self.debug_resume[0] == pid:
            resume_end, self.debug_resume = self.debug_resume[1], None
        self._load(p)
        if resume_end is None:
            p.counters.windows += 1
        reason = "window_end"
        while True:
            if p.state is State.BLOCKED:
                if p.timer_deadline and p.timer_deadline <= until:
                    m.now = max(m.now, p.timer_deadline)
                    p.timer_deadline = 0
                    p.state = State.READY
                    engine.write("rax", int(Event.TIMER))
                else:
                    reason = "blocked"
                    break
            now = m.now
            if p.timer_deadline and p.timer_deadline <= now:
                p.timer_deadline = 0
                p.timer_pending = True
            if p.timer_pending and resume_end is None:
                traps.deliver_timer(p)
            if p.pending_traps and resume_end is None:
                traps.deliver_pending_trap(p)
            if p.state is State.FAULTED:  # a delivery found no entry or no kernel stack
                reason = "fault"
                break
            budget = until - now
            if budget <= 0:
                break
            if p.timer_deadline:
                budget = min(budget, p.timer_deadline - now)
            # A pending upcall or trap waits for CPL 3: the engine stops before
            # the first instruction the vCPU executes there (exact, no polling).
            wait_user = bool(p.timer_pending or p.pending_traps) and regs.cpl != 3
            if resume_end is not None:  # the engine run a debug stop cut goes on, nothing in between
                budget, resume_end = min(resume_end, until) - now, None
            self.stop_reason = None
            traps.pending = None
            self.run_start = now
            # Stopping the engine leaves an exception "in flight" (measured:
            # hypercalls do not, stops do): clear it before every run.
            regs.clear_exception_state()
            if mem.code_dirty:  # ring 0 rewrote guest memory: drop translations of it
                engine.flush_code()
                mem.code_dirty = False
            result = engine.run(self.live[regs.rip_slot], budget, until_user=wait_user)
            m.now += result.elapsed
            p.counters.instructions += result.elapsed
            if traps.pending is not None:
                traps.resolve_pending_trap(p)
            if result.engine_error and self.stop_reason is None:
                m.kernel_fault(p, "internal_error", 0, 0, 0, f"engine: {result.engine_error}")
            stop = self.stop_reason
            if stop is not None and stop in ("yield", "exit", "fault"):
                reason = stop
                break
            if stop == "debug" and self.debug_resume is not None:
                reason = "debug_stop"
                break
            if self.listener_error is not None:
                reason = "host_error"
                break
        if reason == "window_end" and p.state is State.READY:
            p.counters.preemptions += 1
        # One native call: save (not after a fault), disarm, count the native bounces.
        p.counters.syscalls += engine.leave_window(p.context, save=p.state is not State.FAULTED)
        p.counters.hypercalls += engine.take_page_table_calls()
        self.current = None
        error, self.listener_error = self.listener_error, None
        if error is not None:
            raise error
        return RunOutcome(pid, reason, m.now - start, m.now)

    def _load(self, p: Partition) -> None:
        # The TLB holds the translations of loaded_cr3 only while no table
        # changed (every change sets it to -1): a partition that runs again
        # keeps them. One native call (spk_window_enter) restores the context,
        # clears the exception state, flushes when the CR3 differs, and arms
        # the native bounce (the same entry and stack as the machine's
        # kernel_entry_changed, which re-arms it inside a run) and yield.
        cr3 = p.context.cr3
        flush = cr3 != self.loaded_cr3
        entry = p.entries.get(EntryKind.SYSCALL, 0)
        # MAP and UNMAP natively, unless traced or the partition's frame numbers are not the machine's (migrated).
        native = self._native_page_tables and p.guest_frames is None
        spaces = p.spaces.native_address if native and isinstance(p.spaces, SpaceTable) else 0
        self.engine.enter_window(
            p.context, flush_tlb=flush, entry=entry, stack=p.kernel_stack, spaces=spaces, owner=p.pid
        )
        if flush:
            self.loaded_cr3 = cr3
        self.current = p

    def native_yield(self) -> None:
        """The engine answered a YIELD hypercall in C (:meth:`spk._engine.Engine.configure_windows`).

        What the trap path and ``hc_yield`` would have done besides rax = 0
        and the stop (done natively): count the hypercall, end the window as
        a yield. Armed only inside this loop's windows and without a
        hypercall trace.
        """
        p = self.current
        if p is not None:
            p.counters.hypercalls += 1
            self.stop_reason = "yield"

    def sync_counters(self, p: Partition) -> None:
        """Add the native bounces and page-table hypercalls since the last call to the running ``p``'s counters."""
        if p is self.current:
            p.counters.syscalls += self.engine.take_bounces()
            p.counters.hypercalls += self.engine.take_page_table_calls()

    def partition_gone(self, p: Partition) -> None:
        """``p`` was destroyed or rebuilt: forget it on the vCPU and every translation."""
        if self.current is p:
            self.engine.arm_bounce(0, 0)
            self.engine.disarm_page_tables()
            self.current = None
        self.loaded_cr3 = -1
        self.engine.flush_tlb()
        self.engine.flush_code()

    def drop_caches(self) -> None:
        """Forget every engine cache (translated code, TLB, loaded CR3) and pending trap state."""
        self.loaded_cr3 = -1
        self._mem.code_dirty = False
        self._traps.pending = None
        self.stop_reason = None
        self.engine.flush_tlb()
        self.engine.flush_code()

    # -- services of the trap paths and hypercall handlers (bound by the machine) --
    def request_stop(self, reason: str) -> None:
        """Stop the vCPU after the current instruction; :meth:`run` acts on ``reason``."""
        self.stop_reason = reason
        self.engine.stop()

    def time_now(self) -> int:
        """Virtual time now, inside a run as between runs."""
        return self.run_start + self.engine.executed()

    def set_timer(self, p: Partition, deadline: int) -> None:
        """Arm (or, with 0, cancel) the running ``p``'s one-shot timer: the engine run ends by then."""
        p.timer_pending = False
        p.timer_deadline = deadline
        if not deadline:
            return
        now = self.time_now()
        if deadline <= now:
            p.timer_deadline = 0
            p.timer_pending = True
            self.engine.set_remaining(min(self.engine.remaining(), 1))
        else:
            self.engine.set_remaining(min(self.engine.remaining(), deadline - now))

    def cr3_changed(self) -> None:
        """Page tables or CR3 changed: cached translations must go."""
        self.engine.flush_tlb()
        self.loaded_cr3 = -1

    def page_unmapped(self, va: int) -> None:
        """One leaf PTE went away: the engine drops that page's translations (the loaded space may map it)."""
        self.engine.flush_page(va)

    def enter_app(self, p: Partition, gprs: Sequence[int], rip: int, rflags: int, cr3: int) -> None:
        """Load an app's registers at CPL 3 (the IRET hypercall's invoke step)."""
        regs = self.regs
        regs.load_privilege(self._templates.cpl3)
        self.live[0:16] = memoryview(struct.pack("<16Q", *gprs)).cast("Q")
        regs.rip = rip
        regs.cr3 = cr3
        self.write_rflags(rflags)
        if cr3 != self.loaded_cr3:
            self.engine.flush_tlb()
            self.loaded_cr3 = cr3
        if p.timer_pending:
            self._traps.deliver_timer(p)

    def debug_may_stop(self, pid: int) -> bool:
        """Inside a code hook: is ``pid`` on the CPU, with no other stop under way?"""
        p = self.current
        return p is not None and p.pid == pid and self.stop_reason is None and self._traps.pending is None

    def debug_stop_before(self) -> int:
        """Inside a code hook: stop before this instruction; returns the stop's virtual time."""
        self.engine.stop_before()  # the instruction here is not counted: time is settled before it
        time = self.time_now()
        pid = self.current.pid if self.current is not None else -1
        self.debug_resume = (pid, time + self.engine.remaining())
        self.stop_reason = "debug"
        return time

    def emit(self, p: Partition, event: str, args: dict[str, object], result: object = None) -> None:
        """Report an event to ring 1's listener, stamped with virtual time.

        The listener is host code: if it raises (a closed pipe, a full disk),
        that is not the guest's doing. Inside a run the vCPU is stopped after
        the current instruction and :meth:`run` raises the error to its
        caller, with the partition's state saved intact; between runs it
        reaches the caller at once.
        """
        other = self.other_vcpu
        running = self.current is not None or other is not None
        if running and event != "created":
            time = other[0]() if other is not None else self.time_now()
        else:
            time = self._m.now
        try:
            self._on_event(MachineEvent(time, p.name, event, args, result))
        except Exception as exc:
            if not running:
                raise  # not inside a run: the caller gets it straight away
            if self.listener_error is None:
                self.listener_error = exc  # re-raised by run(), outside the engine
            if other is not None:
                other[1]()
            else:
                self.engine.stop()
