"""The exit status of ``spk launch``: did every partition end as its configuration intended?

CI gates on a launch by its status (docs/cli.md):

* 0: every partition booted and ended as intended: running, blocked,
  paused, exited, declared and not started, or halted by a decision of the
  configuration (its health table, its restart limit included, or a system
  partition's management request);
* 1 (:data:`EXIT_NOT_AS_INTENDED`): a partition was refused by secure boot
  (so none booted at all is one too), or ended faulted with no health
  action taken; with ``strict``, also any partition that ended halted;
* 2: a usage or configuration error (nothing ran);
* 130: interrupted (Ctrl-C), after the summary so far.
"""

from __future__ import annotations

from spgs.system import SystemReport
from spk import MachineEvent

EXIT_OK = 0
EXIT_NOT_AS_INTENDED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class HaltCauses:
    """An event sink remembering why each partition was last halted, to say so in the verdict."""

    def __init__(self) -> None:
        self.causes: dict[str, str] = {}

    def __call__(self, event: MachineEvent) -> None:
        args = event.args
        if event.event == "health_action" and args["action"] == "halt":
            self.causes[event.partition] = f"halted by its health monitor after {args['event']}: {args['detail']}"
        elif event.event == "management" and args["op"] == "halt" and args["outcome"] == "done":
            self.causes[event.partition] = f"halted by {args['requester']}"
        elif event.event in ("restarted", "created"):
            self.causes.pop(event.partition, None)


def problems(report: SystemReport, causes: HaltCauses, *, strict: bool = False) -> list[str]:
    """Why the run did not end as intended, one line per partition; empty when it did.

    ``strict`` makes any halted partition a problem, whoever halted it.
    """
    found = [f"{refused.name}: refused by secure boot" for refused in report.refused]
    for info in report.partitions:
        if info.state == "faulted":
            kind = info.fault.kind if info.fault is not None else "a fault"
            found.append(f"{info.name}: faulted ({kind}) and no health action was taken")
        elif info.state == "stopped" and strict:
            found.append(f"{info.name}: {causes.causes.get(info.name, 'halted')} (an error with --strict)")
    if not report.partitions:
        found.append("no partition booted")
    return found
