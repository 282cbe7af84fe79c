"""spk bench's paravirtual-against-full-virtualization figures (spk_tools/bench_fullvirt.py).

The guests run their quick profile; every figure must be there and
positive. No speed is asserted: what the figures say goes in the bench's
output and docs/fullvirt.md, not in a test.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from spk_tools.bench_fullvirt import (
    OPS,
    PROFILES,
    BenchGuestError,
    Transcript,
    compute_hash,
    fv_image,
    measure,
    operations,
    per_op_us,
    pv_images,
    report,
)

QUICK = PROFILES["quick"]


def _function_bytes(elf: bytes, name: str) -> bytes:
    parsed = ELFFile(io.BytesIO(elf))
    table = parsed.get_section_by_name(".symtab")
    assert isinstance(table, SymbolTableSection)
    symbol = table.get_symbol_by_name(name)
    assert symbol, f"no symbol {name}"
    address, size = symbol[0]["st_value"], symbol[0]["st_size"]
    for section in parsed.iter_sections():
        start = section["sh_addr"]
        if section["sh_type"] == "SHT_PROGBITS" and start <= address < start + section["sh_size"]:
            offset = address - start
            return section.data()[offset : offset + size]
    raise AssertionError(f"{name} is in no section")


def test_both_guests_run_the_same_compute_code() -> None:
    """One source (bench_ops.h), the same flags: the compute loop is the same machine code in both guests."""
    _kernel, app = pv_images(QUICK)
    pv, full = _function_bytes(app, "bench_work"), _function_bytes(fv_image(QUICK), "bench_work")
    assert len(pv) > 100 and pv == full


def test_per_op_us_subtracts_the_marker_and_divides_by_n() -> None:
    counts = dict.fromkeys(OPS, 10)
    lines, now = [], 0
    for k, op in enumerate(OPS):
        lines += [(now, f"bench {op} 10"), (now + 2_000 + 1_000 * (k + 1), f"bench {op} done")]
        now += 100_000
    lines += [(now, "bench marker 0"), (now + 2_000, "bench marker done")]
    got = per_op_us(Transcript(lines), counts)
    assert got == {op: (k + 1) / 10 for k, op in enumerate(OPS)}  # (k + 1) us over 10 runs
    with pytest.raises(BenchGuestError, match="not"):
        per_op_us(Transcript(lines[:-1]), counts)  # the marker never ended
    with pytest.raises(BenchGuestError, match="not"):
        per_op_us(Transcript(lines), {**counts, "timer": 11})  # another N than the profile's
    with pytest.raises(BenchGuestError, match="without its first line"):
        operations([(0, "bench syscall done")])


@pytest.fixture(scope="module")
def measured() -> tuple[dict[str, Any], dict[str, Transcript]]:
    return measure(QUICK)


def _check_mode(prefix: str, measured: tuple[dict[str, Any], dict[str, Transcript]]) -> None:
    """Mode ``prefix`` ran every operation, printed what the paravirtual guest printed and has every key."""
    results, transcripts = measured
    assert f"{prefix}_note" not in results, results[f"{prefix}_note"]  # its guest did not finish
    transcript = transcripts[prefix]
    # the same lines as the paravirtual guest, but for each kernel's first and last (its name)
    assert transcript.text()[1:-1] == transcripts["pv"].text()[1:-1]
    assert results[f"{prefix}_compute_hash"] == results["pv_compute_hash"] == compute_hash(transcripts["pv"])
    # every line stamped on both clocks, in order
    assert len(transcript.wall) == len(transcript.lines) and transcript.wall == sorted(transcript.wall)
    assert [stamp for stamp, _line in transcript.lines] == sorted(stamp for stamp, _line in transcript.lines)
    for op in OPS:
        assert results[f"{prefix}_{op}_us"] > 0 and results[f"{prefix}_{op}_wall_us"] > 0, (prefix, op)
        if prefix != "pv":
            assert results[f"{prefix}_vs_pv_{op}"] > 0, (prefix, op)
    if prefix != "pv":
        assert results[f"{prefix}_compute_speed_vs_pv"] > 0


def test_the_paravirtual_guest_reports_every_key(measured: tuple[dict[str, Any], dict[str, Transcript]]) -> None:
    _check_mode("pv", measured)


def test_the_nested_full_partition_reports_every_key(
    measured: tuple[dict[str, Any], dict[str, Transcript]],
) -> None:
    _check_mode("full_nested", measured)


def test_the_shadow_full_partition_reports_every_key(
    measured: tuple[dict[str, Any], dict[str, Transcript]],
) -> None:
    _check_mode("full_shadow", measured)


def test_report_refuses_different_results() -> None:
    with pytest.raises(BenchGuestError, match="different results"):
        report({}, {"pv": "0x1", "full_shadow": "0x2"})


def test_the_folders_own_profile_is_the_quick_one() -> None:
    """The guests' folders build as they are with bench_profile.h: the same counts as the quick profile."""
    from importlib import resources

    text = (resources.files("partitions") / "fvbench" / "bench_profile.h").read_text()
    defined = dict(line.split()[1:3] for line in text.splitlines() if line.startswith("#define"))
    assert defined == {f"BENCH_N_{op.upper()}": str(n) for op, n in QUICK.items()}
