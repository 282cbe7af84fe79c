"""The unmodified PC reference kernel (partitions/pcref) on the outside reference, QEMU.

Its serial output in QEMU is compared byte for byte with tests/golden/pcref.serial:
the transcript the same ELF must also produce under spk launch (full virtualization).
Re-record after a deliberate change of the kernel with
``SPK_GOLDEN_UPDATE=1 .venv/bin/pytest tests/test_pcref_qemu.py``.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from spgs.cbuild import _compile, program_sources
from spk_tools.qemu import QemuError, QemuRun, boot, pcref_elf

ROOT = Path(__file__).parents[1]
GOLDEN = ROOT / "tests" / "golden" / "pcref.serial"
MB_MAGIC = 0x1BADB002


def symbols_of(elf: bytes) -> dict[str, int]:
    table = ELFFile(io.BytesIO(elf)).get_section_by_name(".symtab")
    assert isinstance(table, SymbolTableSection)
    return {sym.name: sym["st_value"] for sym in table.iter_symbols() if sym.name}


@pytest.fixture(scope="module")
def elf() -> bytes:
    return pcref_elf()


@pytest.fixture(scope="module")
def qemu_run(elf: bytes) -> QemuRun:
    return boot(elf, timeout=60)


def test_qemu_output_matches_the_golden_transcript(qemu_run: QemuRun) -> None:
    if os.environ.get("SPK_GOLDEN_UPDATE"):
        GOLDEN.write_bytes(qemu_run.serial)
    assert qemu_run.status == 0, qemu_run.serial.decode(errors="replace")
    assert qemu_run.serial.decode() == GOLDEN.read_text()


def test_the_transcript_shows_timer_driven_scheduling_and_the_holes(qemu_run: QemuRun) -> None:
    """What the golden must contain, so that a re-recording cannot quietly lose it."""
    lines = qemu_run.serial.decode().splitlines()
    slices = [line for line in lines if line.startswith("app ")]
    # round robin on timer ticks, B ended by its page fault in slice 3, A alone after
    assert [line[4] + line.split()[3] for line in slices] == ["A1", "B1", "A2", "B2", "A3", "A4"]
    assert all(line.endswith("(cs 0x2b ss 0x23 iopl 0 if 1)") for line in slices)  # ring 3, as pushf shows it
    assert "cs 0x8, ss 0x10: ring 0" in lines
    assert "sgdt: limit 0x3f, base my gdt" in lines and "sidt: limit 0xfff, base my idt" in lines
    assert "popf: IF after cli 0, after popf(IF=1) 1, after popf(IF=0) 0; IOPL 0" in lines
    assert any("app B: page fault at 0x100000, error 0x5" in line for line in lines)
    assert any("general protection (error 0x0) on cli: skipped" in line for line in lines)


def test_two_boots_give_the_same_bytes(elf: bytes, qemu_run: QemuRun) -> None:
    assert boot(elf, timeout=60) == qemu_run


def test_the_multiboot_header_describes_the_elf(elf: bytes) -> None:
    """QEMU's loader trusts the a.out-kludge fields: they must match the ELF's segments and symbols."""
    offset = next(o for o in range(0, 8192, 4) if struct.unpack_from("<I", elf, o)[0] == MB_MAGIC)
    magic, flags, checksum, header, load, load_end, bss_end, entry32 = struct.unpack_from("<8I", elf, offset)
    assert (magic + flags + checksum) & 0xFFFFFFFF == 0 and flags & 0x10000
    symbols = symbols_of(elf)
    assert entry32 == symbols["_start32"] and load == 0x100000
    assert struct.unpack_from("<Q", elf, 24)[0] == symbols["_start64"]  # e_entry: the 64-bit entry
    # the file from the header back to load_addr mirrors memory: every PT_LOAD at the same delta
    delta = offset - (header - load)
    phoff, phentsize, phnum = struct.unpack_from("<Q", elf, 32)[0], *struct.unpack_from("<HH", elf, 54)
    loads = [struct.unpack_from("<IIQQQQQQ", elf, phoff + i * phentsize) for i in range(phnum)]
    ends = []
    for p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align in loads:
        if p_type == 1:
            assert p_offset - (p_vaddr - load) == delta
            ends.append((p_vaddr + p_filesz, p_vaddr + p_memsz))
    assert load_end == max(e for e, _ in ends) and bss_end >= max(m for _, m in ends)


def test_the_pc_kernel_build_is_reproducible_and_shares_only_the_libc(tmp_path: Path, elf: bytes) -> None:
    copy = tmp_path / "elsewhere" / "pcref"
    shutil.copytree(ROOT / "partitions" / "pcref", copy)
    assert _compile("pc", "pcref", program_sources(copy)) == elf
    symbols = symbols_of(elf)
    assert "vsnprintf" in symbols and "memset" in symbols  # the SDK's libc subset
    assert not any(name.startswith("spk_") for name in symbols)  # no hypercall wrapper, no SDK entry


def test_a_kernel_that_never_reaches_the_exit_port_is_an_error(elf: bytes) -> None:
    """An int3 before the kernel's own IDT: a triple fault resets the PC, which -no-reboot turns into exit 0."""
    address = symbols_of(elf)["kernel_main"]
    text = next(
        seg
        for seg in ELFFile(io.BytesIO(elf)).iter_segments()
        if seg["p_vaddr"] <= address < seg["p_vaddr"] + seg["p_filesz"]
    )
    broken = bytearray(elf)
    broken[address - text["p_vaddr"] + text["p_offset"]] = 0xCC
    with pytest.raises(QemuError, match="without a write to port 0xf4"):
        boot(bytes(broken), timeout=60)


def _spk_console(config: Path, partition: str, *extra: str) -> bytes:
    """What ``spk launch`` prints as ``partition``'s console, run as a user runs it, prefixes taken off."""
    import subprocess

    from tests.test_cli import SPK, _subprocess_env

    done = subprocess.run([str(SPK), "launch", str(config), *extra], capture_output=True, text=True,
                          cwd=ROOT, env=_subprocess_env(), timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    prefix = f"[{partition}] "
    return "".join(line[len(prefix) :] + "\n" for line in done.stdout.splitlines() if line.startswith(prefix)).encode()


@pytest.mark.parametrize("mmu", ["nested", "shadow"])
def test_spk_launch_prints_what_qemu_prints_byte_for_byte(qemu_run: QemuRun, tmp_path: Path, mmu: str) -> None:
    """The differential test: the same ELF, QEMU (outside reference) against `spk launch` (full virtualization).

    Both transcripts include the timer-driven scheduling of the two apps and
    every hole of x86 the SPK must close; the comparison is of QEMU's own
    run, not the golden file.
    """
    config = (ROOT / "examples" / "pcref.toml").read_text().replace('mmu = "nested"', f'mmu = "{mmu}"')
    assert f'mmu = "{mmu}"' in config
    path = tmp_path / "pcref.toml"
    path.write_text(config)
    assert _spk_console(path, "pcref") == qemu_run.serial
