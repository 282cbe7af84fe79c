"""Translated code kept coherent with fast guest stores: no-execute mappings and the store guard.

Why this exists. unicorn 2.1.4 checks every guest store for self-modifying
code (its "notdirty" slow path: about 690 host instructions a store, most of
an app system call's cost) until it marks the TLB entry dirty, and it does
that only for an entry that is not executable and whose frame no memory hook
covers (``notdirty_write``). Ring 0 maps kernel data, stacks and pages a
guest asks for without execute (``PTE_NX``, with EFER.NXE) and bounds its
unmapped-access hook to the addresses outside RAM, so stores through those
mappings run at engine speed. A store through such a dirty entry does not
drop the code translated from its frame: the engine re-protects code only
by the virtual address it was translated at. So ring 0 keeps two rules per
frame, which together mean no translated code ever runs stale:

* **guard**: while a frame has a no-execute mapping, an executable mapping
  and a writable mapping at once (a guest may write code through one alias
  and run it through another), no store is fast anywhere: a hook covers all
  of RAM, and the TLB is flushed when it goes up (dirty entries die);
* **stale**: a frame that may have taken a fast store since its translated
  code was last dropped (it had a writable no-execute mapping while
  unguarded) has that code dropped when it gets its first executable
  mapping, before anything can run from it.

Both are conservative (a frame's writable mapping may be the executable
one); the price of a false guard is today's store speed, never a wrong
result. The guard is global, not per frame: per-frame hooks would make
every slow store scan a list a guest could grow.

``FrameTable.no_exec`` holds, per frame, twice its count of no-execute
mappings plus the stale bit. Ring 0's native MAP and UNMAP leave every
frame whose element is not zero to this module (``spk/_clock.c``).
Errors: :class:`spk.errors.InternalError` when counts go negative.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from spk.errors import InternalError

if TYPE_CHECKING:
    from spk._frames import FrameTable

#: the stale bit of ``FrameTable.no_exec`` (the rest counts no-execute mappings, twice over)
STALE = 1


def _ignore_guard(_on: bool) -> None:
    return None


def _ignore_drop(_mfn: int) -> None:
    return None


class CodeCoherence:
    """The mapping counts of every frame, and the two rules above, in one place.

    ``guard(on)`` raises or lowers the store guard (and flushes the TLB
    when raising it); ``drop_code(mfn)`` drops the code translated from one
    frame. Both are the engine's, wired by the machine once it exists
    (:meth:`attach`); before that no code is translated.
    """

    def __init__(self, frames: FrameTable) -> None:
        self._frames = frames
        self._guard: Callable[[bool], None] = _ignore_guard
        self._drop: Callable[[int], None] = _ignore_drop
        #: frames that have a no-execute, an executable and a writable mapping right now
        self.guarded = 0

    def attach(self, guard: Callable[[bool], None], drop_code: Callable[[int], None]) -> None:
        """Wire the engine's guard and per-frame code drop; raise the guard if a frame needs it."""
        self._guard, self._drop = guard, drop_code
        self.resync()

    def is_guarded(self, mfn: int) -> bool:
        f = self._frames
        no_exec = f.no_exec[mfn] >> 1
        return no_exec > 0 and f.map_counts[mfn] > no_exec and f.writable_counts[mfn] > 0

    def mapped(self, mfn: int, write: bool, execute: bool) -> None:
        """Count one new mapping of ``mfn`` (before any access through it can happen)."""
        f = self._frames
        was = self.is_guarded(mfn)
        marks = f.no_exec[mfn]
        if execute:
            if f.map_counts[mfn] == marks >> 1 and marks & STALE:  # its first executable mapping
                self._drop(mfn)
                marks &= ~STALE
        else:
            marks += 2
        f.no_exec[mfn] = marks
        f.map_counts[mfn] += 1
        if write:
            f.writable_counts[mfn] += 1
        self._settle(mfn, was)

    def unmapped(self, mfn: int, write: bool, execute: bool) -> None:
        """Count one mapping of ``mfn`` gone (its TLB entry is dropped by the caller)."""
        f = self._frames
        was = self.is_guarded(mfn)
        f.map_counts[mfn] -= 1
        if write:
            f.writable_counts[mfn] -= 1
        if not execute:
            f.no_exec[mfn] -= 2
        if f.map_counts[mfn] < 0 or f.writable_counts[mfn] < 0 or f.no_exec[mfn] < 0:
            raise InternalError(f"frame {mfn:#x} map counts went negative")
        self._settle(mfn, was)

    def set_counts(self, mfn: int, maps: int, writable: int, no_exec: int) -> None:
        """Give ``mfn`` counts recounted from page tables (an import); fast stores may have hit it."""
        f = self._frames
        was = self.is_guarded(mfn)
        f.map_counts[mfn], f.writable_counts[mfn] = maps, writable
        f.no_exec[mfn] = 2 * no_exec | STALE
        self._settle(mfn, was)

    def resync(self) -> None:
        """Recount the guarded frames from the arrays (after a snapshot's restore) and set the guard."""
        f = self._frames
        maps, writables, marks = f.map_counts, f.writable_counts, f.no_exec
        self.guarded = sum(1 for mfn, m in enumerate(marks) if m > 1 and maps[mfn] > m >> 1 and writables[mfn] > 0)
        self._guard(self.guarded > 0)

    def _settle(self, mfn: int, was: bool) -> None:
        now = self.is_guarded(mfn)
        if now != was:
            self.guarded += 1 if now else -1
            if self.guarded == (1 if now else 0):
                self._guard(now)
        f = self._frames
        marks = f.no_exec[mfn]
        if not now and marks > 1 and f.writable_counts[mfn] > 0:
            f.no_exec[mfn] = marks | STALE  # a fast store may reach it from now on
