"""The static Linux test program (``linux_probe.c``), built with the host's gcc and static glibc.

One program serves the Linux personality's three users: the differential
test (``selftest``: the same output natively and in a Linux partition),
``spk bench`` (``getpid N``) and the fuzz campaign (``script``: system calls
read from stdin). See the C file for the modes and the script format.

Errors: :class:`spgs.cbuild.BuildError` (gcc or libc6-dev missing).
"""

from __future__ import annotations

import functools
import struct
from importlib import resources
from pathlib import Path

from spgs.cbuild import linux_static_file

#: One script record: u32 number, u32 flags (bit i: argument i points into scratch), six u64 arguments.
RECORD = struct.Struct("<II6Q")
#: Longest script the probe reads (bytes).
MAX_SCRIPT = 64 * 1024


@functools.cache
def probe_file() -> Path:
    """The probe's static ELF executable, built once and cached on disk (mode 0755)."""
    source = resources.files("fuzz.campaigns").joinpath("linux_probe.c").read_bytes()
    return linux_static_file("linux_probe", source)


def probe() -> bytes:
    """The probe's bytes."""
    return probe_file().read_bytes()


def script(calls: list[tuple[int, int, tuple[int, ...]]]) -> bytes:
    """Encode ``(number, flags, args)`` calls as the probe's stdin."""
    mask = (1 << 64) - 1
    out = b"".join(
        RECORD.pack(number & 0xFFFF_FFFF, flags & 0x3F, *((tuple(a & mask for a in args) + (0,) * 6)[:6]))
        for number, flags, args in calls
    )
    return out[:MAX_SCRIPT]
