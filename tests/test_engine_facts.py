"""Engine facts the SPK relies on (unicorn 2.1.4): an upgrade that changes one fails here."""

from __future__ import annotations

from spk._engine import SYSCALL_INSN_LEN, context_layout
from spk.abi import Vector
from tests.guests import Recorder, app, bundled, machine


def test_context_layout_is_located() -> None:
    layout = context_layout()
    # 16 GPRs then RIP, as unicorn-notes.md measured (rax 40 bytes in).
    assert layout.gpr0 * 8 == 40
    assert layout.rip == layout.gpr0 + 16


def test_cpl_slot_found_at_bring_up() -> None:
    m = machine()
    assert m._templates.cpl2.cpl == 2
    assert m._templates.cpl3.cpl == 3


#: bench_compute's loop: add rax, 1 (4 bytes); dec rcx (3); jnz (2)
_LOOP = (4, 3, 2)


def _boundary(budget: int) -> tuple[int, int]:
    """(ticks at the last instruction boundary <= budget, adds executed by then) for bench_compute."""
    ticks = adds = i = 0
    while ticks + _LOOP[i % 3] <= budget:
        ticks += _LOOP[i % 3]
        adds += i % 3 == 0
        i += 1
    return ticks, adds


def test_budget_ends_at_the_last_instruction_boundary() -> None:
    """A run retires instructions up to the last boundary within its budget; the rest passes idle."""
    code = bundled("kernel", "bench_compute")
    for budget in (1, 2, 3, 4, 5, 1000, 1004, 12345, 100_001):
        m = machine()
        pid = m.create_partition("c", code, [], 64)
        outcome = m.run(pid, budget)
        ticks, adds = _boundary(budget)
        assert (outcome.executed, m.now) == (budget, budget)
        assert m.info(pid).counters.instructions == budget  # the partition is charged its whole window
        assert m.engine.read("rax") == adds and ticks <= budget


def test_cut_windows_are_repeatable_and_never_overrun() -> None:
    """The same cut of windows gives the same retired instructions, none past a window's end."""
    code = bundled("kernel", "bench_compute")
    results = []
    for _ in range(2):
        m = machine()
        pid = m.create_partition("c", code, [], 64)
        for end in range(7, 50_000, 997):
            m.run(pid, end)
            assert m.now == end
        results.append((m.info(pid).counters.instructions, m.engine.read("rax")))
    assert results[0] == results[1]
    # the partition is charged every window whole; each of the 51 windows leaves less
    # than one instruction (4 bytes here) idle
    last = max(range(7, 50_000, 997))
    assert results[0][0] == last and last - 51 * 4 < 9 * results[0][1] <= last


def test_syscall_hook_adds_instruction_length() -> None:
    # The engine re-adds the syscall length after its hook; the SPK compensates.
    assert SYSCALL_INSN_LEN == 2
    rec = Recorder()
    from tests.guests import refsystem, run_until_done

    m, pid = refsystem(["counter"], rec)  # counter uses `syscall`
    run_until_done(m, [pid])
    assert rec.lines("p")[1:6] == [f"counter: {i}" for i in range(1, 6)]


def test_several_faults_in_a_row_each_report_their_vector() -> None:
    # The escalation quirk: without a context restore a 2nd #GP becomes #DF.
    rec = Recorder()
    from tests.guests import refsystem, run_until_done

    apps = ["bad_hlt", "bad_mov_cr3", "bad_out", "bad_hypercall", "bad_divzero", "bad_read_kernel", "bad_hlt"]
    m, pid = refsystem(apps, rec, quota=512)
    run_until_done(m, [pid])
    vectors = [e.args["vector"] for e in rec.of("app_fault")]
    assert vectors == [Vector.GP, Vector.GP, Vector.GP, Vector.GP, Vector.DE, Vector.PF, Vector.GP]


def test_keystone_two_symbol_operand_is_refused() -> None:
    import pytest

    from spgs.assembler import AssemblyError

    with pytest.raises(AssemblyError, match="more than one symbol"):
        app("mov rax, [rbx + SI_MODULES + SIM_PAGES]")


def test_live_cpu_state_is_located_for_many_engines_in_one_process() -> None:
    machines = [machine() for _ in range(24)]  # stale marker copies must not confuse it
    for i, m in enumerate(machines):
        m.engine.write("rbx", 0x1234_0000 + i)
        assert m.engine.live[3] == 0x1234_0000 + i
        m.engine.live[3] = 0x4321_0000 + i
        assert m.engine.read("rbx") == 0x4321_0000 + i


def test_software_interrupt_flag_is_located() -> None:
    m = machine()
    assert m.engine.layout.int_word > 0


def test_include_expands_and_a_missing_include_is_a_clean_error(tmp_path: object) -> None:
    from pathlib import Path

    import pytest

    from spgs.images import ImageNotFound, expand_includes

    base = Path(str(tmp_path))
    (base / "one.inc").write_text('nop\n.include "two"\n')
    (base / "two.inc").write_text("int3\n")
    text = expand_includes('.include "one"  # both\nhlt\n', "apps", base)
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["nop", "int3", "hlt"]
    with pytest.raises(ImageNotFound, match=r"'nothere\.inc' not found"):
        expand_includes('.include "nothere"\n', "apps", base)


def test_engine_memory_snapshots_hide_guest_writes_from_the_host_mapping() -> None:
    """Why SPK snapshots RAM itself: with UC_CTL_CONTEXT_MEMORY, a guest store after a
    context save goes to a copy-on-write page the host's mmap never sees, while ring 0
    reads and writes guest RAM through that mmap (copy_in, page tables, the fuzzer)."""
    import ctypes
    import mmap

    import unicorn
    from unicorn import x86_const

    ram = mmap.mmap(-1, 1 << 20)
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map_ptr(0, 1 << 20, unicorn.UC_PROT_ALL, ctypes.addressof(ctypes.c_char.from_buffer(ram)))
    store = bytes.fromhex("48c70425002000002a000000")  # mov qword [0x2000], 42
    ram[0x1000 : 0x1000 + len(store)] = store
    uc.ctl(unicorn.UC_CTL_CONTEXT_MODE, unicorn.UC_CTL_IO_WRITE,
           unicorn.UC_CTL_CONTEXT_CPU | unicorn.UC_CTL_CONTEXT_MEMORY)  # fmt: skip
    uc.context_save()
    uc.emu_start(0x1000, 0x1000 + len(store))
    assert int.from_bytes(uc.mem_read(0x2000, 8), "little") == 42  # the engine sees its store
    assert ram[0x2000:0x2008] == bytes(8)  # the host mapping does not
    assert uc.reg_read(x86_const.UC_X86_REG_RIP) == 0x1000 + len(store)
