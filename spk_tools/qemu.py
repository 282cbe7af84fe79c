"""Boot a bare PC kernel in QEMU: the outside reference for full virtualization.

The reference kernel of full virtualization (``partitions/pcref``) is an
unmodified x86-64 kernel for plain PC hardware. The same ELF boots in
Debian's ``qemu-system-x86_64`` through its multiboot loader (``-kernel``)
and, later, in an SPK partition through its 64-bit entry; its serial output
must be the same byte for byte. This module builds the kernel and runs it
in QEMU (TCG, no display, no reboot), with the UART at 0x3F8 written to a
file and QEMU's ``isa-debug-exit`` device at port 0xF4 ending the run: QEMU
exits with status ``(value << 1) | 1`` for a byte ``value`` written there.

The run is bounded by a wall-clock timeout (a kernel that hangs must not
hang the test suite); the output itself does not depend on the host's speed
(the kernel is written so, docs/fullvirt.md).

Errors: :class:`QemuError` (QEMU not installed, did not start, timed out,
or ended without writing to the exit port), ``spgs.cbuild.BuildError``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from spgs.cbuild import build_c, program_sources

QEMU = "qemu-system-x86_64"
#: The port of QEMU's isa-debug-exit device, which the kernel writes its status to.
DEBUG_EXIT_PORT = 0xF4
#: The QEMU machine: a plain PC (i440FX), a fixed CPU model (CPUID is part of
#: the output), 32 MiB, no default devices but the ones named.
QEMU_MACHINE = (
    "-machine", "pc", "-cpu", "qemu64", "-m", "32", "-nodefaults", "-display", "none", "-no-reboot",
    "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x01",
)  # fmt: skip


class QemuError(Exception):
    """QEMU could not run the kernel to its end; the message says why."""


@dataclass(frozen=True)
class QemuRun:
    """A finished run: what the kernel wrote to its UART and the status it wrote to port 0xF4."""

    serial: bytes
    status: int
    trace: str = ""  # QEMU's trace log, when events were asked for


def pcref_elf() -> bytes:
    """The reference PC kernel (partitions/pcref), built by the C guest toolchain (cached).

    Errors: BuildError.
    """
    folder = Path(str(resources.files("partitions") / "pcref"))
    return build_c("pc", "pcref", program_sources(folder))


def qemu_path() -> str:
    """Where QEMU is.

    Errors: QemuError when it is not installed (``make test`` installs
    Debian's qemu-system-x86).
    """
    path = shutil.which(QEMU)
    if path is None:
        raise QemuError(f"{QEMU} not found: make test installs Debian's qemu-system-x86")
    return path


def boot(elf: bytes, timeout: float = 60.0, trace: tuple[str, ...] = ()) -> QemuRun:
    """Boot ``elf`` with QEMU's multiboot loader and run it until it writes to port 0xF4.

    ``trace`` names QEMU trace events (patterns such as ``serial_*``,
    ``pic_ioport_*``) whose log the result carries: device accesses as QEMU
    saw them, to compare the SPK's device models with.

    Errors: QemuError when QEMU is missing, fails, runs past ``timeout``
    seconds of wall-clock time, or exits without the kernel writing its
    status (a triple fault reboots, which -no-reboot turns into an exit 0).
    QEMU's own start-up errors exit with 1, as a kernel writing status 0
    does: a run with no serial output at all counts as such an error.
    """
    qemu = qemu_path()
    with tempfile.TemporaryDirectory(prefix="spk-qemu-") as scratch:
        kernel, serial, log = Path(scratch) / "kernel.elf", Path(scratch) / "serial.out", Path(scratch) / "trace.log"
        kernel.write_bytes(elf)
        command = [qemu, *QEMU_MACHINE, "-kernel", str(kernel), "-serial", f"file:{serial}"]
        for event in trace:
            command += ["-trace", event]
        if trace:
            command += ["-D", str(log)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise QemuError(f"QEMU did not finish within {timeout:g} s") from exc
        output = serial.read_bytes() if serial.is_file() else b""
        events = log.read_text(errors="replace") if log.is_file() else ""
    # 0: reset or shut down; negative: killed; 1 with no output: QEMU's own start-up error
    # (which shares its status with a kernel writing 0)
    if proc.returncode < 0 or proc.returncode % 2 == 0 or (proc.returncode == 1 and not output):
        raise QemuError(
            f"QEMU exited with status {proc.returncode} without a write to port {DEBUG_EXIT_PORT:#x}: "
            f"{proc.stderr.strip() or 'no message'}; serial so far: {output[-200:]!r}"
        )
    return QemuRun(serial=output, status=proc.returncode >> 1, trace=events)
