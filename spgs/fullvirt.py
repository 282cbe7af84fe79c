"""Ring 1's side of a full partition: its kernel checked before boot, its COM1 input, its serial cables.

A full partition (``virtualization = "full"``, docs/fullvirt.md) runs an
unmodified PC kernel. Ring 0 creates it (``Machine.create_full_partition``)
and checks the ELF again; ring 1 checks it first so that ``spk validate``
refuses what ``spk launch`` would, with a file, a line and a rule. The rest
is wiring from the description: the bytes of ``stdin``/``stdin_file`` for
COM1's receive buffer, and the I/O base of the UART each port names.

Errors: none raised; :func:`kernel_problem` returns the problem it finds.
"""

from __future__ import annotations

import io
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from spgs.config import SERIAL_PORTS, PartitionConfig
from spgs.rules import FULL_BOOT_TABLE_PAGES
from spk.abi import PAGE_SIZE

#: COM1's I/O base: the console, and where ``stdin`` arrives.
COM1 = 0x3F8


def kernel_problem(elf: bytes, quota: int) -> tuple[str, str] | None:
    """Why ``elf`` cannot boot as a full partition's kernel in ``quota`` bytes: (rule, message), or None.

    Rules: ``full_kernel_elf`` (not an ELF64 x86-64 executable with a
    loadable segment) and ``full_quota_below_image`` (a segment, placed at
    its physical address, reaches into ring 0's boot page tables at the top
    of the quota, or past it).
    """
    try:
        parsed = ELFFile(io.BytesIO(elf))
        header = parsed.header
        segments = [s for s in parsed.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_memsz"]]
    except (ELFError, ValueError, KeyError, OSError) as exc:
        return "full_kernel_elf", f"not an ELF file a PC kernel is built as ({exc})"
    if parsed.elfclass != 64 or header["e_machine"] != "EM_X86_64" or header["e_type"] != "ET_EXEC":
        found = f"ELF{parsed.elfclass} {header['e_machine']} {header['e_type']}"
        return "full_kernel_elf", f"{found}: a full partition's kernel is an ELF64 x86-64 executable (ET_EXEC)"
    if not segments:
        return "full_kernel_elf", "no loadable segment"
    end = -(-max(s["p_paddr"] + s["p_memsz"] for s in segments) // PAGE_SIZE) * PAGE_SIZE  # whole pages
    usable = quota - FULL_BOOT_TABLE_PAGES * PAGE_SIZE
    if end > usable:
        return (
            "full_quota_below_image",
            f"its segments end at physical {end:#x}, above the {usable >> 10} KiB of the quota left below "
            f"ring 0's {FULL_BOOT_TABLE_PAGES} boot page tables",
        )
    return None


def stdin_of(p: PartitionConfig, base_dir: Path) -> bytes | None:
    """What COM1's receive buffer holds at boot: ``stdin`` (UTF-8) or the bytes of ``stdin_file``, or None.

    The rules checked the file (``stdin_file_missing``); reading it may
    still fail if it changed since: OSError.
    """
    if p.stdin is not None:
        return p.stdin.encode()
    if p.stdin_file is not None:
        return (base_dir / p.stdin_file).read_bytes()
    return None


def serial_base(name: str) -> int:
    """The I/O base of a UART a port names (``com2`` -> 0x2F8). Errors: KeyError for another name."""
    return SERIAL_PORTS[name]
