"""A bounded, seeded run of the isolation campaign (the long one belongs to `make fuzz`)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from fuzz.isolation import IsolationMachine

#: `make test` runs a small seeded profile; `make fuzz` sets SPK_FUZZ_EXAMPLES higher.
EXAMPLES = int(os.environ.get("SPK_FUZZ_EXAMPLES", "12"))

Campaign = IsolationMachine.TestCase
Campaign.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=25, deadline=None, derandomize=EXAMPLES <= 12, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)  # fmt: skip


class TestIsolationCampaign(Campaign):  # type: ignore[misc, valid-type]
    """Random hypercall programs and CPL 2 code from a real agent; invariants after every step."""
