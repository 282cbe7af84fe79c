"""The review's bounded fuzz run: every isolation campaign for a few seeded examples.

The campaigns attack the SPK build under review (ring 0 and its ABI), each
in its own small world, not the reviewed configuration's partitions: they
say whether the mechanisms this system relies on held under generated
attacks in this run. ``spk fuzz`` runs the long campaigns.
"""

from __future__ import annotations

from spk_review.model import FuzzCampaign, FuzzStats

#: Examples per campaign in a review (seconds of work; ``--fuzz-examples`` changes it).
DEFAULT_EXAMPLES = 3


def bounded_run(seed: int, examples: int = DEFAULT_EXAMPLES) -> FuzzStats:
    """Run every campaign for exactly ``examples`` seeded examples; their statistics for the report."""
    from fuzz.runner import run  # here: the campaigns load hypothesis, which only this needs

    summary = run(None, seed=seed, examples=examples)
    campaigns = [
        FuzzCampaign(
            name=name, examples=stats.examples, executions=stats.executions,
            execs_per_s=round(stats.execs_per_s, 1), invariant_checks=stats.invariant_checks,
            findings=len(stats.findings),
        )
        for name, stats in sorted(summary.campaigns.items())
    ]
    return FuzzStats(
        campaigns=campaigns, examples=sum(c.examples for c in campaigns),
        executions=sum(c.executions for c in campaigns), seconds=round(summary.seconds, 3), seed=seed,
    )  # fmt: skip
