"""Isolation: what one ring or partition must never do to another."""

from __future__ import annotations

from spk.abi import PF_PRESENT, PF_USER, PF_WRITE, MapFlags, Status, Vector
from spk.abi import Hypercall as H
from tests.guests import Recorder, bundled, kernel, machine, program, refsystem, results, run_until_done


def test_app_cannot_read_its_kernel_nor_make_it_print_kernel_memory() -> None:
    rec = Recorder()
    m, pid = refsystem(["bad_read_kernel"], rec)
    run_until_done(m, [pid])
    fault = rec.of("app_fault")[0].args
    assert fault["vector"] == Vector.PF and fault["error"] == PF_PRESENT | PF_USER
    assert not any("LEAKED" in line or "SUCCEEDED" in line for line in rec.lines("p"))


def test_app_cannot_write_its_code_page() -> None:
    rec = Recorder()
    m, pid = refsystem(["bad_write_code"], rec)
    run_until_done(m, [pid])
    fault = rec.of("app_fault")[0].args
    assert fault["error"] == PF_PRESENT | PF_WRITE | PF_USER


def test_cpl3_hypercall_is_refused_as_gp() -> None:
    rec = Recorder()
    m, pid = refsystem(["bad_hypercall", "hello"], rec)
    run_until_done(m, [pid])
    fault = rec.of("app_fault")[0].args
    assert fault["vector"] == Vector.GP and fault["error"] == (0x82 << 3) | 2
    assert m.info(pid).counters.hypercalls > 0  # the kernel's, not the app's
    assert "hello from ring 3" in rec.lines("p")
    assert m.info(pid).exit_code == 0


def test_privileged_instructions_and_port_io_refused_at_cpl3() -> None:
    rec = Recorder()
    m, pid = refsystem(["bad_hlt", "bad_mov_cr3", "bad_out"], rec)
    run_until_done(m, [pid])
    assert [e.args["vector"] for e in rec.of("app_fault")] == [Vector.GP] * 3


def test_kernel_cannot_map_a_frame_it_does_not_own() -> None:
    m = machine()
    victim = m.create_partition("victim", kernel("l: jmp l\n"), [], 64)
    foreign = m.partitions[victim].spaces[0].pml4 + 5  # a frame of the victim
    assert m.frames[foreign].owner == victim
    spk_frame = m._spk.spk_pdpt
    flags = int(MapFlags.USER | MapFlags.WRITE)
    calls = [(H.MAP, (0, 0x400000, foreign, flags)), (H.MAP, (0, 0x400000, spk_frame, int(MapFlags.USER)))]
    attacker = m.create_partition("attacker", kernel(program(calls)), [], 64)
    m.run(attacker, 100_000)
    assert results(m, attacker, 2) == [-Status.DENIED, -Status.DENIED]
    m.check_invariants()


def test_kernel_cannot_map_its_own_page_table() -> None:
    m = machine()
    probe = m.create_partition("probe", kernel("l: jmp l\n"), [], 64)
    table = m.partitions[probe].spaces[0].pml4
    m.destroy_partition(probe)
    # The next partition gets the same frames back: its PML4 is the same frame.
    calls = [
        (H.MAP, (0, 0x400000, table, int(MapFlags.USER | MapFlags.WRITE))),
        (H.MAP, (0, 0x400000, table, int(MapFlags.USER))),
    ]
    pid = m.create_partition("t", kernel(program(calls)), [], 64)
    assert m.partitions[pid].spaces[0].pml4 == table
    m.run(pid, 100_000)
    # Writable never (Xen's rule); read-only neither, so a table can always be freed.
    assert results(m, pid, 2) == [-Status.DENIED, -Status.DENIED]
    m.check_invariants()


def test_forever_looping_partition_does_not_delay_others() -> None:
    """The other partition's windows and results are the same with or without a spinner."""

    def other_windows(spinner: str) -> list[tuple[int, int, int]]:
        m = machine(Recorder())
        spin = m.create_partition("spin", kernel(spinner), [], 64)
        other = m.create_partition("other", bundled("kernel", "refkernel"), [("hello", bundled("app", "hello"))], 256)
        seen = []
        for _ in range(6):
            for pid in (spin, other):
                start = m.now
                outcome = m.run(pid, start + 10_000)
                if pid == other:
                    seen.append((start, outcome.executed, m.info(other).counters.hypercalls))
                else:
                    assert outcome.end_time <= start + 10_000
                m.advance(start + 10_000)
        return seen

    spinning = other_windows("l: jmp l\n")
    idle = other_windows("mov rax, HC_YIELD\nint 0x82\nl: jmp l\n")
    assert spinning == idle


def test_kernel_fault_stops_only_that_partition() -> None:
    rec = Recorder()
    m = machine(rec)
    bad = m.create_partition("bad", kernel("mov rax, 0\nmov [rax], rax\n"), [], 64)
    good = m.create_partition("good", bundled("kernel", "refkernel"), [("hello", bundled("app", "hello"))], 256)
    run_until_done(m, [bad, good])
    assert m.info(bad).state == "faulted" and m.info(bad).fault.kind == "memory_violation"
    assert m.info(good).state == "exited" and m.info(good).exit_code == 0


def test_frames_zeroed_between_partitions() -> None:
    m = machine()
    pid = m.create_partition("a", kernel("l: jmp l\n"), [], 64)
    from spk._frames import FrameType

    frames = [i for i, f in enumerate(m.frames.entries) if f.owner == pid and f.type is FrameType.POOL]
    assert frames
    for mfn in frames:
        m.ram.write(mfn << 12, b"\xaa" * 16)
    m.destroy_partition(pid)
    assert all(m.ram.read(mfn << 12, 16) == bytes(16) for mfn in frames)


def test_destroy_returns_every_frame() -> None:
    m = machine()
    free_before = sum(1 for f in m.frames.entries if f.owner == 0)
    calls = [(H.ASPACE_CREATE, ()), (H.FRAME_ALLOC, ()), (H.FRAME_ALLOC, ())]
    pid = m.create_partition("t", kernel(program(calls)), [], 64)
    m.run(pid, 100_000)
    assert m.destroy_partition(pid) == 64
    assert sum(1 for f in m.frames.entries if f.owner == 0) == free_before
    m.check_invariants()
