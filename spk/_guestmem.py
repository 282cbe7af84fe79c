"""Guest-memory access for ring 0: copy in and out through a guest's page tables.

Hypercall handlers and the trap paths read and write guest memory only
here, through the supervisor (or user) view of a CR3 as the page-table
walker resolves it. Writing guest memory may rewrite code the engine holds
translated, so :meth:`GuestMemory.code_changed` is here too: it drops those
translations at once when it can, or marks the cache dirty for the run
loop to flush before the vCPU runs again (:attr:`GuestMemory.code_dirty`).

Errors: :class:`spk.errors.SpkError` (BAD_ADDRESS) from :meth:`copy_in`
and :meth:`copy_out`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spk._engine import NATIVE_COPY_MAX
from spk.abi import Status
from spk.errors import SpkError

if TYPE_CHECKING:
    from spk._engine import Engine
    from spk._frames import PhysicalMemory
    from spk._machine import Machine
    from spk._paging import Walker


class GuestMemory:
    """Copies between ring 0 and guest virtual memory of one machine.

    It holds the machine only to ask whether a partition is on the vCPU
    (and to stop it for a full code flush); the walker, RAM and engine are
    bound once at construction.
    """

    def __init__(self, machine: Machine, walker: Walker, ram: PhysicalMemory, engine: Engine) -> None:
        self._machine = machine
        self._spans = walker.spans
        self._ram_read = ram.read
        self._ram_write = ram.write
        self._engine = engine
        self._native_in = engine.copy_in
        self._native_out = engine.copy_out
        #: ring 0 rewrote guest memory outside a run's reach: flush translated code before the next run
        self.code_dirty = False

    def copy_in(self, cr3: int, va: int, length: int) -> bytes:
        """Copy guest memory once (supervisor view of ``cr3``).

        Errors: SpkError(BAD_ADDRESS) when any byte is unmapped, the range
        wraps or leaves canonical space.
        """
        data = self.read(cr3, va, length, user=False)
        if data is None:
            raise SpkError(Status.BAD_ADDRESS, f"guest range {va:#x}+{length} is not readable")
        return data

    def read(self, cr3: int, va: int, length: int, *, user: bool) -> bytes | None:
        """Guest bytes through ``cr3`` (supervisor or user view), or None if any is unreadable."""
        if 0 < length <= NATIVE_COPY_MAX:  # one native call: walk, check, copy (spk_copy_in)
            return self._native_in(cr3, va, length, 4 if user else 0)
        pieces = self._spans(cr3, va, length, write=False, user=user)
        read = self._ram_read
        return None if pieces is None else b"".join(read(pa, n) for pa, n in pieces)

    def code_changed(self, va: int | None = None, length: int = 0) -> None:
        """Ring 0 rewrote guest memory the engine may hold translated code of.

        With a range (``copy_out`` into the current space, from a hypercall)
        the translations of its pages go at once, page by page: the
        engine calls the interrupt hook between blocks (no block is
        executing; the next one is looked up afresh), and it drops
        translations by physical page, so an alias of the page at another
        address loses them too. Without a range (a frame zeroed, maybe
        mapped nowhere, or a range outside a run, whose space may not be
        the loaded one) the whole cache goes, which cannot happen while the
        engine runs: the vCPU stops after the current instruction and the
        cache is cleaned before it runs again.
        """
        running = self._machine.running
        if va is not None and running:
            self._engine.drop_code_pages(va, length)
            return
        self.code_dirty = True
        if running:
            self._machine.request_stop("flush")
        else:
            self._engine.flush_code()
            self.code_dirty = False

    def copy_out(self, cr3: int, va: int, data: bytes) -> None:
        """Copy bytes into guest memory (supervisor view, writable pages only).

        Errors: SpkError(BAD_ADDRESS) when any byte is not writable; nothing
        is written then.
        """
        if 0 < len(data) <= NATIVE_COPY_MAX:
            # One native call: every page checked writable, then the copy, then
            # (inside a run) the drop of each written page's code (spk_copy_out).
            running = self._machine.running
            done = self._native_out(cr3, va, data, 0, drop_code=running)
            if done < 0:
                raise SpkError(Status.BAD_ADDRESS, f"guest range {va:#x}+{len(data)} is not writable")
            if not running:
                self.code_changed()  # no run: all code goes (inside one, spk_copy_out dropped it)
            return
        pieces = self._spans(cr3, va, len(data), write=True, user=False)
        if pieces is None:
            raise SpkError(Status.BAD_ADDRESS, f"guest range {va:#x}+{len(data)} is not writable")
        offset = 0
        write = self._ram_write
        for pa, n in pieces:
            write(pa, data[offset : offset + n])
            offset += n
        if data:
            self.code_changed(va, len(data))
