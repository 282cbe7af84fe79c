"""Symbols of ELF guests: an address as ``function+0xoff (file.c:line)``.

Guests built by a normal toolchain carry their symbol table and DWARF line
table; ring 1 reads them with pyelftools to name the code a fault, a trace
event or the review points at. (Loading and checking an ELF is ring 0's:
:func:`spk.load_image`.)
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
from pathlib import PurePosixPath

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

ELF_MAGIC = b"\x7fELF"


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


class Symbols:
    """Function names and source lines of one ELF file, by address."""

    def __init__(self, data: bytes) -> None:
        elf = ELFFile(io.BytesIO(data))
        functions: list[tuple[int, int, str]] = []
        table = elf.get_section_by_name(".symtab")
        if isinstance(table, SymbolTableSection):
            for sym in table.iter_symbols():
                if sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"] and sym.name:
                    functions.append((sym["st_value"], sym["st_size"], sym.name))
        functions.sort()
        self._func_starts = [f[0] for f in functions]
        self._functions = functions
        rows: list[tuple[int, str, int]] = []
        if elf.has_dwarf_info():
            dwarf = elf.get_dwarf_info()
            for unit in dwarf.iter_CUs():
                program = dwarf.line_program_for_CU(unit)
                if program is None:
                    continue
                names = [PurePosixPath(entry.name.decode(errors="replace")).name for entry in program["file_entry"]]
                base = 1 if program.header["version"] < 5 else 0
                for entry in program.get_entries():
                    state = entry.state
                    if state is None:
                        continue
                    index = state.file - base
                    name = names[index] if 0 <= index < len(names) else "?"
                    rows.append((state.address, "" if state.end_sequence else name, state.line))
        rows.sort(key=lambda r: r[0])
        self._line_starts = [r[0] for r in rows]
        self._lines = rows

    def function(self, address: int) -> tuple[str, int] | None:
        """The function containing ``address`` and the offset into it, or None."""
        i = bisect.bisect_right(self._func_starts, address) - 1
        if i < 0:
            return None
        start, size, name = self._functions[i]
        if address >= start + max(size, 1):
            return None
        return name, address - start

    def line(self, address: int) -> tuple[str, int] | None:
        """The source file (its name) and line of ``address``, or None."""
        i = bisect.bisect_right(self._line_starts, address) - 1
        if i < 0:
            return None
        _start, name, line = self._lines[i]
        return (name, line) if name else None

    def describe(self, address: int) -> str | None:
        """``function+0xoff (file.c:line)``, as much of it as is known, or None."""
        func = self.function(address)
        if func is None:
            return None
        name, offset = func
        text = f"{name}+{offset:#x}"
        where = self.line(address)
        return f"{text} ({where[0]}:{where[1]})" if where else text


@functools.lru_cache(maxsize=64)
def _symbols_by_digest(_digest: str, data: bytes) -> Symbols | None:
    try:
        return Symbols(data)
    except (ELFError, ValueError, KeyError, OSError):
        return None


def symbols_of(data: bytes) -> Symbols | None:
    """The :class:`Symbols` of an ELF image (cached), or None for a flat or unreadable image."""
    if not is_elf(data):
        return None
    return _symbols_by_digest(hashlib.sha256(data).hexdigest(), data)
