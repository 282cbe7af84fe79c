"""The fullvirt campaign (fuzz/campaigns/fullvirt.py): fvfuzz as a full partition beside paravirtual ones.

A bounded seeded profile runs clean under both MMUs the SPK has; each oracle
of the campaign reports what it guards, shown by breaking the thing it
guards (a victim's byte, the memory map ring 0 reports, the tripwire, the
seed the second run gets, the guest's log).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import fuzz.campaigns.fullvirt as fullvirt
import spk._fv_cpu as fv_cpu
from fuzz.campaigns.fullvirt import BEYOND, FATAL, GATE, UNSAFE, FullVirtWorld, GuestRun, explained
from fuzz.replay import world_of
from fuzz.runner import run
from fuzz.world import Violation
from spk import Machine

#: Examples in `make test` (up to fuzz.runner.STEPS steps each; a boot runs the guest to its end in a few steps).
PROFILE = 3
#: A seed whose guest calls through its call gate from ring 0 at its sixth operation (bit 60 set).
GATE_SEED = GATE | 6


@pytest.fixture
def world() -> Iterator[FullVirtWorld]:
    made = world_of("fullvirt")
    assert isinstance(made, FullVirtWorld)
    made.reset()
    yield made


def only(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Check just the oracles a test is about (each test shows one oracle reporting what it guards)."""
    monkeypatch.setattr(FullVirtWorld, "invariants", lambda self: [getattr(self, name) for name in names])


def test_the_campaign_runs_clean_on_the_spk() -> None:
    summary = run(["fullvirt"], seed=0, examples=PROFILE)
    stats = summary.campaigns["fullvirt"]
    assert summary.findings == [], summary.findings
    assert stats.examples == PROFILE
    assert stats.invariant_checks >= stats.executions >= stats.examples


@pytest.mark.parametrize("mode", ["nested"])
def test_a_guest_runs_to_its_end_and_twice_the_same(world: FullVirtWorld, mode: str) -> None:
    world.perform(("boot", 0x42, mode))
    assert world.perform(("run", 40)) == "exited"
    run_ = world.runs[-1]
    assert run_.end == "exit" and run_.console.startswith(b"fvfuzz: seed 0000000000000042 (8 bytes)")
    assert world.perform(("determinism",)) == "same"
    assert world.checks > run_.windows  # every window was checked


def guest(seed: int, log: str, partial: str = "") -> GuestRun:
    return GuestRun(1, seed, "nested", bytearray(log.encode()), partial.encode())


@pytest.mark.parametrize(
    ("seed", "partial", "kind", "ok"),
    [
        (GATE, "012 callgate ", "cpl0_tripwire", True),
        (GATE, "012 sysretq ", "cpl0_tripwire", True),  # to the ring-3 stub that calls through the gate
        (0, "012 callgate ", "cpl0_tripwire", False),  # the gate is not drawn without bit 60
        (GATE, "012 movseg ", "cpl0_tripwire", False),
        (BEYOND, "012 ptmap ", "machine_check", True),
        (0, "012 ptmap ", "machine_check", False),
        (BEYOND, "012 wrmsr ", "machine_check", False),
        (UNSAFE, "012 wrcr4 ! ", "unsupported", True),
        (UNSAFE, "012 wrcr4 ", "unsupported", False),
        (FATAL, "end fatal-triple", "triple_fault", True),
        (0, "012 int ", "triple_fault", False),
    ],
)
def test_only_the_guest_s_last_operation_explains_its_end(seed: int, partial: str, kind: str, ok: bool) -> None:
    assert explained(guest(seed, "fvfuzz: seed ...\n011 in 80/1: 0 -> ok ff\n", partial), kind) is ok


def test_the_kernel_s_report_after_its_fatal_ending_is_explained() -> None:
    log = (
        "011 in 80/1: 0 -> ok ff\nend fatal-ring0-jump\n"
        "fvfuzz: exception 14 (error 0x10, cr2 0x5000000) outside an operation: stopping\n"
    )
    assert explained(guest(FATAL, log), "kernel_panic")
    assert not explained(guest(0, log), "kernel_panic")


def test_a_victim_byte_changed_is_a_finding(world: FullVirtWorld) -> None:
    world.perform(("boot", 1, "nested"))
    victim = world.victims[0]
    mfn = world.machine.frames.owned(victim)[3]
    world.machine.ram.view[mfn * 4096 + 100] ^= 0xFF
    with pytest.raises(Violation) as info:
        world.check()
    assert info.value.invariant == "pv_memory"


def test_a_memory_map_naming_another_partition_s_frames_is_a_finding(
    world: FullVirtWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.perform(("boot", 1, "nested"))
    victim_frame = world.machine.frames.owned(world.victims[1])[0]
    original = Machine.full_state

    def leaky(self: Machine, pid: int) -> dict[str, Any]:
        state = dict(original(self, pid))
        state["memory"] = [dict(region, host_frame=victim_frame) for region in state["memory"]]  # type: ignore[attr-defined]
        return state

    monkeypatch.setattr(Machine, "full_state", leaky)
    with pytest.raises(Violation) as info:
        world.check()
    assert info.value.invariant == "fv_confinement"


def test_code_run_through_the_call_gate_is_a_finding(world: FullVirtWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ring 0 with its tripwire disarmed: the engine is put back at CPL 1 and the guest's DPL 0 target runs."""
    only(monkeypatch, "fv_no_cpl0", "fv_explained_end")
    world.perform(("boot", GATE_SEED, "nested"))
    assert world.perform(("run", 40)) == "faulted"  # the tripwire, at the call
    assert world.runs[-1].end == "fault cpl0_tripwire" and world.runs[-1].last_line() == "005 callgate "

    def disarmed(self: fv_cpu.FullVcpu) -> bool:
        self.w[fv_cpu.W_HFLAGS] = (int(self.w[fv_cpu.W_HFLAGS]) & ~fv_cpu.HF_CPL) | self.hflags_cpl[1]
        return True

    monkeypatch.setattr(fv_cpu.FullVcpu, "repair_null_ss", disarmed)
    world.reset()
    world.perform(("boot", GATE_SEED, "nested"))
    with pytest.raises(Violation) as info:
        world.perform(("run", 40))
    assert info.value.invariant == "fv_no_cpl0" and "005 callgate" in info.value.message


def test_a_second_run_that_differs_is_a_finding(world: FullVirtWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second world reads another seed than the first: the traces differ."""
    only(monkeypatch, "fv_explained_end")
    calls = iter(range(2))
    monkeypatch.setattr(fullvirt, "seed_bytes", lambda seed: fullvirt.struct.pack("<Q", seed + next(calls)))
    world.perform(("boot", 5, "nested"))
    world.perform(("run", 2))
    with pytest.raises(Violation) as info:
        world.perform(("determinism",))
    assert info.value.invariant == "determinism" and "console differs" in info.value.message


def test_a_guest_that_stops_writing_is_a_finding(world: FullVirtWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """No seed on its line: the guest polls COM1 for seconds of virtual time, silent (a livelock looks the same)."""
    only(monkeypatch, "fv_progress")
    monkeypatch.setattr(fullvirt, "STALL_WINDOWS", 3)
    monkeypatch.setattr(Machine, "serial_input", lambda self, pid, base, data: None)
    world.perform(("boot", 5, "nested"))
    with pytest.raises(Violation) as info:
        world.perform(("run", 10))
    assert info.value.invariant == "fv_progress"


def test_spk_replay_knows_the_fullvirt_world_in_a_fresh_process(tmp_path: Any) -> None:
    """``spk replay`` of a fullvirt finding, as a user runs it: every campaign's world is known.

    (The worlds register when their campaign modules load; a fresh ``spk replay``
    loaded none but the agent's and refused every other campaign's files.)
    """
    import subprocess
    import sys

    from fuzz.replay import Replay

    path = Replay("fullvirt", "fullvirt", [("run", 8)]).write(tmp_path / "clean.json")
    result = subprocess.run([sys.executable, "-m", "spk_tools", "replay", str(path)], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clean: 1 step, every invariant held" in result.stdout


def test_a_storm_faster_than_its_handler_is_the_documented_limit_and_nothing_else() -> None:
    """fv_progress explains exactly one stall: inside the storm, a periodic PIT faster than four exits."""
    from fuzz.campaigns.fullvirt import STORM_HANDLER_EXITS, storm_outruns_its_handler

    def state(period: int | None) -> dict[str, Any]:
        return {"exit_ticks": 1000, "devices": [{"device": "pit8253", "mode": 2, "period_ticks": period}]}

    storm, other = GuestRun(1, 0, "nested", partial=b"030 storm "), GuestRun(1, 0, "nested", partial=b"031 invlpg ")
    assert storm_outruns_its_handler(storm, state(1677))  # divisor 2: 1,677 ticks
    assert not storm_outruns_its_handler(storm, state(STORM_HANDLER_EXITS * 1000))
    assert not storm_outruns_its_handler(storm, state(None))  # one-shot or stopped: it would end
    assert not storm_outruns_its_handler(other, state(1677))


#: A seed whose operation 6 is an lretq to ring 3 through a compatibility-mode code segment (cs 0x1b,
#: L clear) at a supervisor page: the fetch faults (#PF 0x15, as QEMU shows) and the handler must run in
#: 64-bit mode. Found by the campaign (fv_progress): ring 0 used to leave the engine's segment-mode
#: flags of the 32-bit segment, so the 64-bit handler ran in compatibility mode and never recovered.
COMPAT_RING3_SEED = 0x282A06BA1A2D


@pytest.mark.parametrize("mmu", ["nested", "shadow"])
def test_a_fault_in_a_compatibility_mode_ring_3_lands_in_a_64_bit_handler(mmu: str) -> None:
    from fuzz.campaigns.fullvirt import COM1 as PORT
    from fuzz.campaigns.fullvirt import QUOTA_FRAMES, fvfuzz_elf, seed_bytes
    from tests.guests import Recorder

    recorder = Recorder()
    m = Machine(64 << 20, on_event=recorder)
    pid = m.create_full_partition("f", fvfuzz_elf(), QUOTA_FRAMES, mmu=mmu)
    m.serial_input(pid, PORT, seed_bytes(COMPAT_RING3_SEED))
    while m.now < 40_000_000 and m.state(pid) in ("ready", "blocked"):  # it ends in about 4 M ticks
        m.run(pid, m.now + 2_000_000)
        m.advance(m.now)
    lines = recorder.lines("f")
    assert "006 lretq rip 10119e cs 1b rsp 110fc0 ss 23 -> #14/15@10119e" in lines
    # `sti; hlt`: the shadow of sti covers the emulated hlt and ends with it; the timer wakes it (QEMU too)
    assert "015 hlt -> ok, woken yes" in lines
    assert (m.info(pid).state, m.info(pid).exit_code) == ("exited", 0), lines[-3:]
    assert lines[-1].startswith("fvfuzz: end, 32 ops, ")
