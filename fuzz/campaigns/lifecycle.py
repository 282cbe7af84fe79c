"""Lifecycle: ring-1 restarts, pauses, halts, destroys and re-creations amid hypercalls and channel traffic.

The world (:class:`LifecycleWorld`) is the channels world plus a partition
declared but not started (``spare``). Ring-1 actions target one of the
victims, the peer, the agent or the spare, as ``spgs.system`` carries out
management requests: restart (cold or warm ``reset_partition``), pause and
resume (``pause_partition``/``resume_partition``, the only pause ring 0 has),
halt (``stop_partition``), destroy (``destroy_partition``, which re-declares
the id) and create (``create_partition(pid=...)`` of a declared id, then its
ports again, as ring 1's ``_attach_ports``). An action on a partition in the
wrong state is ignored, as ring 1 ignores it. Between them, the agent makes
the hypercall campaign's calls and the channel campaign's traffic.

Each action tells the invariants what the policy did: the state to expect
(``expect_state``), whose frames may now change (``allow_writes``: a
restarted, destroyed or created partition), and what the channel model
loses (queues of a restarted or destroyed partition). Two invariants join
the channel world's:

* ``frame_conservation``: every frame is free, ring 0's, or a live
  partition's, with a type that fits its owner; a live partition owns
  exactly its quota; a destroyed or declared partition owns nothing; ring
  0's own frames are as many as at the snapshot;
* ``frame_hygiene``: every free frame and every unused quota frame is
  zero, since frames are zeroed whenever they change hands (ABI).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from itertools import chain, compress, pairwise, repeat
from operator import is_
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, consumes, rule

from fuzz.agent import image
from fuzz.campaigns.base import register
from fuzz.campaigns.channels import CHANNELS, PEER_IMAGE, ChannelCampaign, ChannelWorld
from fuzz.campaigns.hypercalls import HypercallCampaign
from fuzz.world import VICTIM_IMAGE, VICTIM_QUOTA, VICTIM_WINDOW, Violation
from spk import SpkError
from spk.abi import PAGE_SHIFT, PAGE_SIZE

#: Frame owners that are not partitions (the frame table's conventions).
NO_OWNER, RING0_OWNER = 0, -1
#: Types of frames no guest can reach: they must hold zeros (ABI: frames are zeroed whenever they change hands).
UNUSED_TYPES = frozenset({"free", "pool"})
ZERO_PAGE = bytes(PAGE_SIZE)
#: What ring-1 actions can aim at, by index (an action names its target by index: replays stay valid).
TARGETS = ("victim0", "victim1", "peer", "agent", "spare")


class LifecycleWorld(ChannelWorld):
    """The channels world with a declared, unstarted partition; ring-1 lifecycle actions."""

    kind = "lifecycle"
    ram_bytes = 3 << 19  # 1.5 MiB: the channels world's 303 frames and the spare's 64

    def __init__(self) -> None:
        self.spare = -1
        self._ring0_frames = 0
        self._nonzero: frozenset[int] = frozenset()
        self._paused_from: dict[int, str] = {}
        super().__init__()

    def seal(self) -> None:
        """Declare the spare (ring 1's ``boot = false``) before the snapshot; note what ring 0 owns then."""
        self.spare = self.machine.declare_partition("spare")
        super().seal()
        self._ring0_frames = self.machine.frames.owners.count(RING0_OWNER)
        ram = self.snapshot.ram
        self._nonzero = frozenset(
            mfn
            for mfn in range(len(self.snapshot.frames))
            if ram[mfn << PAGE_SHIFT : (mfn + 1) << PAGE_SHIFT] != ZERO_PAGE
        )

    def on_reset(self) -> None:
        super().on_reset()
        self._paused_from.clear()
        self.expect_state(self.agent.pid, "ready")
        self.expect_state(self.spare, "destroyed")  # declared, not started: no partition by that id

    def invariants(self) -> list[Callable[[], None]]:
        return [*super().invariants(), self.frame_conservation, self.frame_hygiene]

    # -- targets ---------------------------------------------------------------------
    def target(self, index: int) -> int:
        role = TARGETS[index % len(TARGETS)]
        return self.spare if role == "spare" else self.roles[role]

    def _image(self, pid: int) -> bytes:
        return image("fuzz_agent" if pid == self.agent.pid else PEER_IMAGE if pid == self.peer else VICTIM_IMAGE)

    def _alive(self, pid: int) -> bool:
        return pid in self.machine.partitions

    def _becomes(self, pid: int, state: str) -> None:
        """Ring 1 put ``pid`` in ``state`` for good (no pause of it is pending any more)."""
        self._paused_from.pop(pid, None)
        self.expect_state(pid, state)

    def run_victims(self) -> None:
        super().run_victims()
        if self._alive(self.spare) and self.machine.state(self.spare) == "ready":
            self.run_partition(self.spare, VICTIM_WINDOW)

    # -- ring-1 actions ------------------------------------------------------------------
    def do_restart(self, index: int, warm: bool) -> str:
        """Health monitor's cold or warm restart: everything reloaded on its own quota (warm: data area kept)."""
        pid = self.target(index)
        if not self._alive(pid):
            return "ignored: not running"
        self.machine.reset_partition(pid, self._image(pid), [], warm=bool(warm))
        self.allow_writes(pid)
        self._becomes(pid, "ready")
        self.partition_restarted(pid, warm=bool(warm))
        return "done"

    def do_pause(self, index: int) -> str:
        pid = self.target(index)
        if not self._alive(pid) or not self.machine.pause_partition(pid):
            return "ignored: not ready or blocked"
        self._paused_from[pid] = self._expected_state.get(pid, "ready")
        self.expect_state(pid, "paused")
        return "done"

    def do_resume(self, index: int) -> str:
        pid = self.target(index)
        if not self._alive(pid) or not self.machine.resume_partition(pid):
            return "ignored: not paused"
        self.expect_state(pid, self._paused_from.pop(pid, "ready"))
        return "done"

    def do_halt(self, index: int) -> str:
        pid = self.target(index)
        if not self._alive(pid):
            return "ignored: not running"
        self.machine.stop_partition(pid)
        self._becomes(pid, "stopped")
        return "done"

    def do_destroy(self, index: int) -> str:
        """Tear it down: frames back to free RAM (zeroed), its destinations leave their channels."""
        pid = self.target(index)
        if not self._alive(pid):
            return "ignored: not running"
        self.machine.destroy_partition(pid)
        self.allow_writes(pid)
        self._becomes(pid, "destroyed")
        for queues in self.model.queues.values():
            for key in [k for k in queues if k[0] == pid]:
                del queues[key]
        if pid == self.agent.pid:
            self.model.opened.clear()
        return "done"

    def do_create(self, index: int) -> str:
        """Start a declared id (the spare, or one destroyed before) on a fresh quota, with its ports."""
        pid = self.target(index)
        if self._alive(pid) or pid not in self.machine.declared:
            return "ignored: not declared"
        quota = self.agent.quota if pid == self.agent.pid else VICTIM_QUOTA
        try:
            self.machine.create_partition(self.machine.declared[pid], self._image(pid), [], quota, pid=pid)
        except SpkError as exc:  # every declared partition's quota fits in free RAM: a refusal is a finding
            free = self.machine.frames.owners.count(NO_OWNER)
            message = f"creating {pid} ({quota} frames, {free} free) failed: {exc}"
            raise Violation("frame_conservation", message) from exc
        if pid != self.spare:
            self.attach_ports(pid)
        self.allow_writes(pid)
        self._becomes(pid, "ready")
        for spec in CHANNELS:
            if spec.kind == "queuing":
                for role, port in spec.destinations:
                    if self.roles[role] == pid:
                        self.model.queues[spec.name][(pid, port)] = deque()
        self.partition_restarted(pid, warm=False)
        return "done"

    # -- invariants ---------------------------------------------------------------------------
    def frame_conservation(self) -> None:
        frames = self.machine.frames
        owners, types = list(frames.owners), frames.kinds()  # C passes: this runs after every action
        owned = Counter(owners)
        for kind, owner in ((self._type("free"), NO_OWNER), (self._type("spk"), RING0_OWNER)):
            holders = set(compress(owners, map(is_, types, repeat(kind))))
            if holders - {owner} or owned[owner] != types.count(kind):
                raise Violation("frame_conservation", f"{kind.value} frames are owned by {sorted(holders)}, "
                                                      f"{owned[owner]} frames by owner {owner}")  # fmt: skip
        live = self.machine.partitions
        for owner, count in owned.items():
            if owner not in (NO_OWNER, RING0_OWNER) and owner not in live:
                what = "declared" if owner in self.machine.declared else "unknown"
                raise Violation("frame_conservation", f"partition {owner} ({what}, not running) owns {count} frames")
        for pid, partition in live.items():
            if owned[pid] != partition.quota:
                raise Violation("frame_conservation", f"partition {pid} owns {owned[pid]} frames, quota "
                                                      f"{partition.quota}")  # fmt: skip
        if owned[RING0_OWNER] != self._ring0_frames:
            raise Violation("frame_conservation", f"ring 0 owns {owned[RING0_OWNER]} frames, "
                                                  f"{self._ring0_frames} at the snapshot")  # fmt: skip

    def frame_hygiene(self) -> None:
        """Free and unused quota frames are zero.

        Only those changed since the snapshot (compared in C, run by run) or
        not zero at the snapshot need reading: the others are still zero.
        """
        types = self.machine.frames.kinds()
        unused = (compress(range(len(types)), map(is_, types, repeat(self._type(n)))) for n in UNUSED_TYPES)
        frames = sorted(chain.from_iterable(unused))
        suspects = self._nonzero.intersection(frames).union(self.machine.changed_frames(self.snapshot, runs(frames)))
        ram = self.machine.ram
        for mfn in sorted(suspects):
            if ram.read(mfn << PAGE_SHIFT, PAGE_SIZE) != ZERO_PAGE:
                frame = self.machine.frames.entries[mfn]
                raise Violation("frame_hygiene", f"frame {mfn:#x} ({frame.type.value}, owner {frame.owner}) "
                                                 "is not zero")  # fmt: skip

    def _type(self, name: str) -> Any:
        """The frame table's type member called ``name`` (ring 0's enum is private: found from a frame)."""
        return type(self.machine.frames.entries[0].type)(name)


def runs(frames: list[int]) -> list[tuple[int, int]]:
    """Ascending frame numbers as (first, count) runs of consecutive frames."""
    bounds = [0, *(i for i in range(1, len(frames)) if frames[i] != frames[i - 1] + 1), len(frames)]
    return [(frames[start], end - start) for start, end in pairwise(bounds) if end > start]


TARGET = st.integers(0, len(TARGETS) - 1)
OPERATIONS = st.sampled_from(["restart", "pause", "resume", "halt", "destroy", "create"])


@register("lifecycle", "restart, pause/resume, halt, destroy/create amid hypercalls and channel traffic",
          LifecycleWorld)  # fmt: skip
class LifecycleCampaign(ChannelCampaign, HypercallCampaign):
    """The channel and hypercall campaigns' rules, and ring 1's lifecycle actions.

    Targets paused or destroyed go into bundles, so that resume and create
    mostly find something to do; ``any_lifecycle`` keeps every other order
    (resume what runs, create what exists...) in the mix.
    """

    paused = Bundle("paused")
    gone = Bundle("gone")

    @rule(index=TARGET, warm=st.booleans())
    def restart(self, index: int, warm: bool) -> None:
        self.act("restart", index, warm)

    @rule(target=paused, index=TARGET)
    def pause(self, index: int) -> int:
        self.act("pause", index)
        return index

    @rule(index=consumes(paused))
    def resume(self, index: int) -> None:
        self.act("resume", index)

    @rule(index=TARGET)
    def halt(self, index: int) -> None:
        self.act("halt", index)

    @rule(target=gone, index=TARGET)
    def destroy(self, index: int) -> int:
        self.act("destroy", index)
        return index

    @rule(index=st.one_of(consumes(gone), st.just(TARGETS.index("spare"))))
    def create(self, index: int) -> None:
        self.act("create", index)

    @rule(operation=OPERATIONS, index=TARGET, warm=st.booleans())
    def any_lifecycle(self, operation: str, index: int, warm: bool) -> None:
        if operation == "restart":
            self.act(operation, index, warm)
        else:
            self.act(operation, index)
