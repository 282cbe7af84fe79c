"""The public API of ring 0 is pinned: a change here is a deliberate ABI/API change."""

from __future__ import annotations

import pytest

import spk


def test_public_api_is_pinned() -> None:
    assert sorted(spk.__all__) == [
        "Counters", "DEBUG_REGISTERS", "DebugError", "DebugSession", "DebugStop", "DirtyLog", "EngineError",
        "EventSink", "ImageError", "InternalError", "KernelFault", "LoadImage", "Machine", "MachineEvent",
        "MigrationError", "OutOfMemory", "PartitionExport", "PartitionInfo", "RunOutcome", "Segment", "Snapshot",
        "SpkError", "TraceWriter", "abi", "bare_run", "bare_windows",
        "check_app_image", "full_trapped_operations", "load_image",
    ]  # fmt: skip


def test_full_trapped_operations_name_what_the_emulator_handles() -> None:
    ops = spk.full_trapped_operations()
    for name in ("hlt", "lgdt", "lidt", "ltr", "lldt", "mov_cr", "mov_seg", "rdmsr", "wrmsr", "invlpg",
                 "iretq", "retfq", "sysretq", "swapgs", "rdtsc", "cpuid", "pushf", "syscall", "irq"):  # fmt: skip
        assert ops.get(name), name


def test_every_hypercall_is_registered() -> None:
    from spk._hypercalls import TABLE
    from spk.abi import Hypercall

    assert sorted(TABLE) == sorted(int(h) for h in Hypercall)


def test_bench_quick_profile_reports_every_metric() -> None:
    from spk_tools.bench import run_benchmarks

    results = run_benchmarks(quick=True)
    for key in (
        "hypercall_roundtrip_us", "app_syscall_roundtrip_us", "partition_switch_us",
        "compute_ratio_vs_raw", "compute_ratio_vs_counted_raw", "raw_mips", "raw_counted_mips", "spk_mips",
        "boot_64_signed_s", "channel_roundtrip_us", "sched_cost_ratio_64_vs_1",
        "fuzz_world_execs_per_s", "fuzz_reset_us", "fuzz_hypothesis_execs_per_s",
        "compute_ratio_vs_raw_typical", "compute_ratio_vs_raw_fast", "spk_fast_mips",
        "raw_typical_rounds_per_s", "spk_typical_rounds_per_s", "rss_64_partitions_mib", "rss_per_partition_mib",
        "linux_syscall_us", "linux_pipeline_ms", "migration_downtime_ticks", "migration_bytes", "migration_rounds",
        "bare_window_us", "bare_switch_us", "bare_sched_ratio_64_vs_1", "bare_own_engine_window_us",
        "bare_own_engine_switch_us", "bare_own_engine_sched_ratio_64_vs_1", "bare_own_engine_mib",
    ):  # fmt: skip
        assert results[key] > 0, key
    # A time budget on a loaded machine may end before its first example (budgets are kept exactly):
    # the rate is reported, never asserted on.
    assert results["fuzz_execs_per_s"] >= 0
    # Qiling is an optional extra: its numbers, or a line saying why they are absent.
    assert "linux_syscall_speedup_vs_qiling" in results or "qiling" in results["qiling_note"]
    assert results["migration_downtime_ratio"] < 0.05


def test_bare_windows_run_each_partition_in_its_own_space() -> None:
    """The switch baseline checks its own windows (each partition's frame holds its number times its windows)."""
    for own_engines in (False, True):
        seconds, _mib = spk.bare_windows(3, 31, own_engines=own_engines)
        assert seconds > 0
    for partitions, windows in ((0, 10), (1, 0), (200, 10)):
        with pytest.raises(spk.EngineError, match=r"partitions|windows"):
            spk.bare_windows(partitions, windows, own_engines=False)


def test_bare_windows_fail_without_the_tlb_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TLB left stale between address spaces is caught, not timed.

    The translation cache flush in place of the TLB flush: the code is
    translated again, but through the stale TLB, from the last partition's
    frames.
    """
    import unicorn

    import spk._engine as engine

    monkeypatch.setattr(engine, "_CTL_TLB_FLUSH", unicorn.UC_CTL_TB_FLUSH | (unicorn.UC_CTL_IO_WRITE << 30))
    with pytest.raises(spk.EngineError, match="own address space"):
        spk.bare_windows(2, 20, own_engines=False)
