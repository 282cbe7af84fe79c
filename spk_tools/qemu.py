"""Boot a bare PC kernel in QEMU: the outside reference for full virtualization.

The reference kernel of full virtualization (``partitions/pcref``) is an
unmodified x86-64 kernel for plain PC hardware. The same ELF boots in
Debian's ``qemu-system-x86_64`` through its multiboot loader (``-kernel``)
and, later, in an SPK partition through its 64-bit entry; its serial output
must be the same byte for byte. This module builds the kernel and runs it
in QEMU (TCG, no display, no reboot), with the UART at 0x3F8 written to a
file and QEMU's ``isa-debug-exit`` device at port 0xF4 ending the run: QEMU
exits with status ``(value << 1) | 1`` for a byte ``value`` written there.

More serial ports (COM2 at 0x2F8, COM3 at 0x3E8, COM4 at 0x2E8, as QEMU
numbers its ``-serial`` options) can be given input bytes and their output
collected: :func:`boot`'s ``inputs`` and ``ports`` (partitions/fvecho reads
COM2 and answers on COM3). Each such port is QEMU's ``pipe`` backend on two
plain files, ``NAME.in`` (read, then end of file) and ``NAME.out``; or, with
:func:`converse`, the input is a named pipe fed one line at a time, each
once the kernel has answered the one before (a conversation over a cable).

The run is bounded by a wall-clock timeout (a kernel that hangs must not
hang the test suite); the output itself does not depend on the host's speed
(the kernel is written so, docs/fullvirt.md).

Errors: :class:`QemuError` (QEMU not installed, did not start, timed out,
or ended without writing to the exit port), ``spgs.cbuild.BuildError``.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    #: What the kernel wrote to each further UART, COM2 = index 1 (empty without ``ports``).
    ports: tuple[bytes, ...] = field(default=())


def pc_kernel_elf(name: str) -> bytes:
    """A bare PC kernel of ``partitions/<name>/`` (kind ``pc``), built by the C guest toolchain (cached).

    Errors: BuildError.
    """
    folder = Path(str(resources.files("partitions") / name))
    return build_c("pc", name, program_sources(folder))


def pcref_elf() -> bytes:
    """The reference PC kernel (partitions/pcref), built by the C guest toolchain (cached).

    Errors: BuildError.
    """
    return pc_kernel_elf("pcref")


def qemu_path() -> str:
    """Where QEMU is.

    Errors: QemuError when it is not installed (``make test`` installs
    Debian's qemu-system-x86).
    """
    path = shutil.which(QEMU)
    if path is None:
        raise QemuError(f"{QEMU} not found: make test installs Debian's qemu-system-x86")
    return path


def boot(
    elf: bytes,
    timeout: float = 60.0,
    trace: tuple[str, ...] = (),
    *,
    ports: int = 1,
    inputs: Mapping[int, bytes] | None = None,
) -> QemuRun:
    """Boot ``elf`` with QEMU's multiboot loader and run it until it writes to port 0xF4.

    ``trace`` names QEMU trace events (patterns such as ``serial_*``,
    ``pic_ioport_*``) whose log the result carries: device accesses as QEMU
    saw them, to compare the SPK's device models with.

    ``ports`` is how many UARTs the PC has (1-4: COM1 only, up to COM4);
    ``inputs`` maps a COM index (1 = COM2, 2 = COM3, 3 = COM4) to the bytes
    its receiver gets (QEMU feeds them as the UART's FIFO accepts them). The
    output of COM2.. is the result's ``ports``. ValueError for a ``ports``
    outside 1-4 or an input on a port that is not there.

    Errors: QemuError when QEMU is missing, fails, runs past ``timeout``
    seconds of wall-clock time, or exits without the kernel writing its
    status (a triple fault reboots, which -no-reboot turns into an exit 0).
    QEMU's own start-up errors exit with 1, as a kernel writing status 0
    does: a run with no serial output at all counts as such an error.
    """
    qemu = qemu_path()
    with tempfile.TemporaryDirectory(prefix="spk-qemu-") as scratch:
        command = _command(qemu, Path(scratch), elf, trace, ports, inputs or {})
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise QemuError(f"QEMU did not finish within {timeout:g} s") from exc
        return _result(Path(scratch), proc.returncode, proc.stderr, ports)


def converse(
    elf: bytes,
    lines: Sequence[bytes],
    timeout: float = 60.0,
    trace: tuple[str, ...] = (),
    *,
    ports: int = 3,
    port_in: int = 1,
    port_out: int = 2,
) -> QemuRun:
    """Boot ``elf`` and talk to it over a serial line, one line at a time, as a partition on a cable would.

    Each of ``lines`` is written to COM ``port_in`` (1 = COM2) through a
    named pipe once the kernel has answered the one before on COM
    ``port_out`` (one newline-ended answer per line); after the last line
    (which needs no answer) the run goes on until the kernel writes to port
    0xF4. Unlike :func:`boot`'s ``inputs``, the bytes then reach a kernel
    that is idle, waiting for them (an interrupt-driven receiver is woken
    by its interrupt). The result is :func:`boot`'s.

    Errors: QemuError (as :func:`boot`; also when the kernel does not
    answer within ``timeout`` seconds in all), ValueError (bad ports).
    """
    if not (1 <= port_in < ports and 1 <= port_out < ports):
        raise ValueError(f"COM indexes {port_in} and {port_out} must be from 1 to {ports - 1}")
    qemu = qemu_path()
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="spk-qemu-") as scratch:
        command = _command(qemu, Path(scratch), elf, trace, ports, {})
        pipe, answers = Path(scratch) / f"com{port_in + 1}.in", Path(scratch) / f"com{port_out + 1}.out"
        pipe.unlink()
        os.mkfifo(pipe)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            writer = _open_writer(pipe, proc, deadline)
            try:
                for sent, line in enumerate(lines, start=1):
                    _send(writer, line, proc, deadline)
                    if sent < len(lines):
                        while _read(answers).count(b"\n") < sent and proc.poll() is None:
                            _pause(proc, deadline)
                _, stderr = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            finally:
                os.close(writer)
        except subprocess.TimeoutExpired as exc:
            raise QemuError(f"QEMU did not finish within {timeout:g} s") from exc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return _result(Path(scratch), proc.returncode, stderr, ports)


def _open_writer(pipe: Path, proc: subprocess.Popen[str], deadline: float) -> int:
    """The named pipe's write end (non-blocking), once QEMU holds it open (opening fails until then)."""
    while True:
        try:
            return os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        if proc.poll() is not None:
            raise QemuError(f"QEMU ended (status {proc.returncode}) before it opened the serial line")
        _pause(proc, deadline)


def _send(fd: int, data: bytes, proc: subprocess.Popen[str], deadline: float) -> None:
    """Write ``data`` to the pipe as QEMU drains it; nothing more once QEMU has ended."""
    while data and proc.poll() is None:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            _pause(proc, deadline)
        except BrokenPipeError:
            return


def _pause(proc: subprocess.Popen[str], deadline: float) -> None:
    if proc.poll() is not None:
        return  # QEMU ended: what it left is the result
    if time.monotonic() > deadline:
        raise subprocess.TimeoutExpired(QEMU, 0)
    time.sleep(0.005)


def _command(
    qemu: str, scratch: Path, elf: bytes, trace: tuple[str, ...], ports: int, inputs: Mapping[int, bytes]
) -> list[str]:
    kernel = scratch / "kernel.elf"
    kernel.write_bytes(elf)
    command = [qemu, *QEMU_MACHINE, "-kernel", str(kernel), "-serial", f"file:{scratch / 'serial.out'}"]
    command += _more_ports(scratch, ports, inputs)
    for event in trace:
        command += ["-trace", event]
    if trace:
        command += ["-D", str(scratch / "trace.log")]
    return command


def _result(scratch: Path, returncode: int, stderr: str, ports: int) -> QemuRun:
    output = _read(scratch / "serial.out")
    log = scratch / "trace.log"
    events = log.read_text(errors="replace") if log.is_file() else ""
    more = tuple(_read(scratch / f"com{i + 1}.out") for i in range(1, ports))
    # 0: reset or shut down; negative: killed; 1 with no output: QEMU's own start-up error
    # (which shares its status with a kernel writing 0)
    if returncode < 0 or returncode % 2 == 0 or (returncode == 1 and not output):
        raise QemuError(
            f"QEMU exited with status {returncode} without a write to port {DEBUG_EXIT_PORT:#x}: "
            f"{stderr.strip() or 'no message'}; serial so far: {output[-200:]!r}"
        )
    return QemuRun(serial=output, status=returncode >> 1, trace=events, ports=more)


def _more_ports(scratch: Path, ports: int, inputs: Mapping[int, bytes]) -> list[str]:
    if not 1 <= ports <= 4:
        raise ValueError(f"a PC has 1 to 4 COM ports, not {ports}")
    if any(not 1 <= index < ports for index in inputs):
        raise ValueError(f"inputs for COM ports {sorted(inputs)} (index 1 = COM2) but only {ports} port(s)")
    options = []
    for index in range(1, ports):
        name = scratch / f"com{index + 1}"
        Path(f"{name}.in").write_bytes(inputs.get(index, b""))
        Path(f"{name}.out").write_bytes(b"")
        options += ["-serial", f"pipe:{name}"]
    return options


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""
