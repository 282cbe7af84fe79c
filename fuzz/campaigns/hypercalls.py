"""Hypercall programs from a real CPL 2 agent, with hostile arguments.

Handles the agent obtained (frames from FRAME_ALLOC, spaces from
ASPACE_CREATE) live in bundles, so later calls use them the way a guest
would, mixed with hostile words: other partitions' and ring 0's frames,
reserved bits, ranges crossing the user/kernel boundary or wrapping past
2^64, huge counts, unknown numbers. Victims take windows in between.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, consumes, rule

from fuzz.campaigns.base import ARGUMENT, EDGES, U64, CampaignMachine, register
from fuzz.world import AgentWorld
from spk.abi import PAGE_SIZE, Hypercall

#: Hypercalls the agent may issue freely (EXIT and BLOCK end or stall it; IRET
#: leaves for CPL 3 with no app to come back from: each has its own rule).
FREE_CALLS = [h for h in Hypercall if h not in (Hypercall.EXIT, Hypercall.BLOCK, Hypercall.IRET)]
VIRTUAL = st.one_of(EDGES, U64, st.integers(1, 2**20).map(lambda n: n * PAGE_SIZE))


def handle(result: object) -> int:
    """A result worth keeping as a handle (0 when the call failed)."""
    return result if isinstance(result, int) and result > 0 else 0


#: The handles an agent obtained: frames from FRAME_ALLOC, spaces from ASPACE_CREATE.
FRAMES, SPACES = Bundle("frames"), Bundle("spaces")


class AgentCalls(CampaignMachine):
    """The rules every agent campaign shares: obtain handles, give them back, any hypercall, victims' windows."""

    frames, spaces = FRAMES, SPACES

    @rule(target=FRAMES)
    def alloc(self) -> int:
        return handle(self.act("hypercall", Hypercall.FRAME_ALLOC))

    @rule(target=SPACES)
    def create_space(self) -> int:
        return handle(self.act("hypercall", Hypercall.ASPACE_CREATE))

    @rule(frame=consumes(FRAMES))
    def free(self, frame: int) -> None:
        self.act("hypercall", Hypercall.FRAME_FREE, frame)

    @rule(space=consumes(SPACES))
    def destroy_space(self, space: int) -> None:
        self.act("hypercall", Hypercall.ASPACE_DESTROY, space)

    @rule(number=st.sampled_from(FREE_CALLS), args=st.lists(ARGUMENT, max_size=5))
    def any_hypercall(self, number: int, args: list[int]) -> None:
        self.act("hypercall", number, *args)

    @rule()
    def victims_run(self) -> None:
        self.act("victims_run")


@register("hypercalls", "hypercall programs with hostile arguments from a CPL 2 agent", AgentWorld)
class HypercallCampaign(AgentCalls):
    def foreign_frames(self) -> list[int]:
        """Frames of the victims and of ring 0 at the snapshot (never the agent's to map)."""
        agent = self.world.writers()
        return [mfn for mfn, (owner, *_rest) in enumerate(self.world.snapshot.frames) if owner not in agent | {0}]

    @rule(space=SPACES, frame=FRAMES, va=VIRTUAL, flags=st.one_of(st.integers(0, 7), U64))
    def map(self, space: int, frame: int, va: int, flags: int) -> None:
        self.act("hypercall", Hypercall.MAP, space, va, frame, flags)

    @rule(space=SPACES, data=st.data(), write=st.booleans())
    def map_foreign(self, space: int, data: st.DataObject, write: bool) -> None:
        """Map a frame of another partition or of ring 0 (the invariants judge the answer)."""
        mfn = data.draw(st.sampled_from(self.foreign_frames()))
        self.act("hypercall", Hypercall.MAP, space, 0x40_0000, mfn, 3 if write else 2)

    @rule(space=SPACES, va=VIRTUAL)
    def unmap(self, space: int, va: int) -> None:
        self.act("hypercall", Hypercall.UNMAP, space, va)

    @rule(space=SPACES)
    def switch_space(self, space: int) -> None:
        self.act("hypercall", Hypercall.ASPACE_SWITCH, space)

    @rule(number=U64)
    def unknown_hypercall(self, number: int) -> None:
        self.act("hypercall", number)

    @rule(space=SPACES, frame_ptr=st.one_of(EDGES, U64))
    def iret(self, space: int, frame_ptr: int) -> None:
        """Enter CPL 3 with an arbitrary frame (the agent restarts if that ends it)."""
        self.act("hypercall", Hypercall.IRET, space, frame_ptr)
