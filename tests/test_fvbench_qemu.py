"""The benchmark's unmodified PC kernel (partitions/fvbench) on the outside reference, QEMU.

The same ELF the bench runs as a full partition boots on QEMU's multiboot
loader, runs every operation of the quick profile and computes what the
paravirtual guest computes under the SPK: the guests do the same work.
"""

from __future__ import annotations

import pytest

from spk_tools.bench_fullvirt import OPS, PROFILES, Transcript, compute_hash, fv_image, operations, run_pv
from spk_tools.qemu import QemuRun, boot

QUICK = PROFILES["quick"]


@pytest.fixture(scope="module")
def qemu_run() -> QemuRun:
    return boot(fv_image(QUICK), timeout=120)


def test_fvbench_runs_every_operation_on_qemu(qemu_run: QemuRun) -> None:
    assert qemu_run.status == 0, qemu_run.serial.decode(errors="replace")
    lines = qemu_run.serial.decode().splitlines()
    assert lines[0] == f"fvbench: unmodified PC kernel, {len(OPS) + 1} operations"
    spans = operations([(0, line) for line in lines])
    assert [(s.op, s.n) for s in spans] == [*((op, QUICK[op]) for op in OPS), ("marker", 0)]
    assert lines[-1] == f"fvbench: done, {QUICK['page_fault']} page faults served"


def test_qemu_and_the_paravirtual_guest_print_the_same_run(qemu_run: QemuRun) -> None:
    """The same operations and the same compute result, but for each kernel's first and last line."""
    lines = qemu_run.serial.decode().splitlines()
    pv = run_pv(QUICK)
    assert compute_hash(Transcript([(0, line) for line in lines])) == compute_hash(pv)
    assert lines[1:-1] == pv.text()[1:-1]
