"""The fuzzing PC kernel (partitions/fvfuzz) on a real PC's boot path, QEMU, and the same seed under the SPK.

fvfuzz reads its seed from COM1's receive buffer; here QEMU's COM1 is its
standard input and output (``-serial stdio``), the seed the 8 bytes of that
input. With seed bits 60-63 clear (no call gate, no touching beyond its
memory, nothing a PC may not survive, no fatal ending) the kernel must run
every operation and reach its end marker on QEMU, and do the very same
operations, in the same order, under the SPK (its choices depend on the
PRNG only, never on a result).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from fuzz.campaigns.fullvirt import QUOTA_FRAMES, fvfuzz_elf, seed_bytes
from spk import Machine
from spk_tools.qemu import QEMU_MACHINE, qemu_path
from tests.guests import Recorder

#: A seed with bits 60-63 clear; 32 + bits 48-53 operations.
SEED = 0x0022_0000_0000_0007
OPERATION = re.compile(r"^(\d{3}) (\S+) ")


def boot_in_qemu(elf: bytes, stdin: bytes, timeout: float = 60) -> tuple[bytes, int]:
    """QEMU's serial output and the status the kernel wrote to port 0xF4 (-1: it never did)."""
    with tempfile.TemporaryDirectory(prefix="spk-fvfuzz-") as scratch:
        kernel = Path(scratch) / "fvfuzz.elf"
        kernel.write_bytes(elf)
        command = [qemu_path(), *QEMU_MACHINE, "-kernel", str(kernel), "-serial", "stdio"]
        proc = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout, check=False)
    status = proc.returncode >> 1 if proc.returncode % 2 == 1 and proc.stdout else -1
    return proc.stdout, status


def operations(log: bytes) -> list[str]:
    return [m.group(2) for line in log.decode(errors="replace").splitlines() if (m := OPERATION.match(line))]


@pytest.fixture(scope="module")
def qemu_log() -> bytes:
    log, status = boot_in_qemu(fvfuzz_elf(), seed_bytes(SEED))
    assert status == 0, log[-400:]
    return log


def test_it_runs_every_operation_to_its_end_marker_on_qemu(qemu_log: bytes) -> None:
    lines = qemu_log.decode().splitlines()
    count = 32 + (SEED >> 48 & 63)
    assert lines[0] == f"fvfuzz: seed {SEED:016x} (8 bytes), {count} ops"
    assert lines[-1].startswith(f"fvfuzz: end, {count} ops, ")
    numbered = [int(line[:3]) for line in lines if OPERATION.match(line)]
    assert numbered == list(range(count))  # every operation ended its line: none stopped the kernel
    kinds = set(operations(qemu_log))
    assert len(kinds) >= 20, kinds  # privileged instructions, page tables, ports, interrupts
    assert {"ptmap", "iretq", "wrmsr", "out"} <= kinds


def test_the_spk_does_the_same_operations_and_reaches_the_end(qemu_log: bytes) -> None:
    recorder = Recorder()
    machine = Machine(8 << 20, on_event=recorder)
    pid = machine.create_full_partition("fvfuzz", fvfuzz_elf(), QUOTA_FRAMES, mmu="nested")
    machine.serial_input(pid, 0x3F8, seed_bytes(SEED))
    while machine.info(pid).state in ("ready", "blocked") and machine.now < 2_000_000_000:
        end = machine.now + 5_000_000
        machine.run(pid, end)
        machine.advance(end)
    log = "".join(line + "\n" for line in recorder.lines("fvfuzz")).encode()
    assert (machine.info(pid).state, machine.info(pid).exit_code) == ("exited", 0), log[-400:]
    assert operations(log) == operations(qemu_log)
    assert log.splitlines()[0] == qemu_log.splitlines()[0]
