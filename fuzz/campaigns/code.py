"""Random instruction bytes at CPL 2, in the agent's own data area.

The bytes run as the agent's kernel code: privileged instructions, stray
writes through any register, far jumps, software interrupts with any
vector, self-modifying code. Whatever happens must stay inside the agent:
a fault stops it (and the world restarts it), a loop ends with its window.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import rule

from fuzz.campaigns.base import CampaignMachine, register
from fuzz.world import AgentWorld

#: Instructions that aim at ring 0's mechanisms, mixed into random bytes.
PRIVILEGED = [
    bytes.fromhex(h)
    for h in ("0f22d8", "0f01d0", "0f30", "0f32", "f4", "fa", "e680", "ec", "0f0b", "cd82",
              "cd80", "cd03", "0f05", "0f34", "0f31", "0f01f9", "0fc7f0", "0f0138", "0f00d8", "0f20d8")
]  # fmt: skip
BLOBS = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.lists(st.one_of(st.sampled_from(PRIVILEGED), st.binary(min_size=1, max_size=8)), min_size=1, max_size=8).map(
        b"".join
    ),
)


@register("code", "random instruction bytes at CPL 2 in the agent", AgentWorld)
class CodeCampaign(CampaignMachine):
    @rule(blob=BLOBS)
    def run_code(self, blob: bytes) -> None:
        self.act("code", blob.hex())

    @rule()
    def victims_run(self) -> None:
        self.act("victims_run")
