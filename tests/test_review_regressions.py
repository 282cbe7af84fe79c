"""Regressions from the ring-0 security review: each test pins one fixed finding."""

from __future__ import annotations

import pytest

from spk.abi import Hypercall as H
from spk.abi import Status, Vector
from tests.guests import Recorder, app, bundled, kernel, machine, program, results, run_until_done


def _app_fault(source: str) -> dict[str, int]:
    rec = Recorder()
    m = machine(rec)
    pid = m.create_partition("p", bundled("kernel", "refkernel"), [("a", app(source + "l: jmp l\n"))], 256)
    run_until_done(m, [pid], limit=300_000)
    return rec.of("app_fault")[0].args


def test_prefixed_syscall_is_refused_not_a_kernel_entry_offset() -> None:
    """66 66 0f 05 would have entered the kernel at entry + 2 (an app-chosen offset)."""
    fault = _app_fault("mov rax, 3\n.byte 0x66, 0x66, 0x0f, 0x05\n")
    assert fault["vector"] == Vector.UD


@pytest.mark.parametrize(("insn", "vector"), [("rdtsc", Vector.GP), ("rdtscp", Vector.UD), ("rdrand rax", Vector.UD)])
def test_host_clock_and_entropy_are_closed_to_apps(insn: str, vector: int) -> None:
    """The host's clock (CR4.TSD; the CPU model has no RDTSCP) and entropy (no RDRAND) would break
    determinism and open a timing channel between partitions."""
    assert _app_fault(f"{insn}\n")["vector"] == vector


def test_rdtsc_in_a_guest_kernel_is_a_privileged_instruction() -> None:
    m = machine()
    pid = m.create_partition("k", kernel("rdtsc\nl: jmp l\n"), [], 64)
    m.run(pid, 10_000)
    fault = m.info(pid).fault
    assert fault is not None and (fault.kind, fault.vector) == ("privileged_instruction", Vector.GP)


def test_a_fault_found_while_delivering_a_timer_stops_the_partition() -> None:
    """No timer entry registered: the upcall cannot be delivered; the kernel must not run on."""
    source = """
        mov rax, HC_TIME_NOW
        int 0x82
        add rax, 50
        mov rdi, rax
        mov rax, HC_TIMER_SET
        int 0x82
        mov rax, HC_SET_KERNEL_STACK
        mov rdi, KERNEL_STACK_TOP
        int 0x82
        mov rax, HC_ASPACE_CREATE
        int 0x82
        mov r12, rax
        mov rbx, START_INFO_VADDR
        mov rdx, [rbx + SI_MODULES]
        mov rdi, r12
        mov rsi, APP_IMAGE_VADDR
        mov r10, MAP_USER
        mov rax, HC_MAP
        int 0x82
        mov rbx, KERNEL_DATA_VADDR
        mov qword ptr [rbx + 16*8], APP_IMAGE_VADDR
        mov qword ptr [rbx + 17*8], 0x202
        mov rdi, r12
        mov rsi, rbx
        mov rax, HC_IRET
        int 0x82
    """
    m = machine()
    pid = m.create_partition("k", kernel(source), [("spin", app("l: jmp l\n"))], 64)
    outcome = m.run(pid, 100_000)
    assert outcome.reason == "fault" and outcome.executed < 1_000
    assert m.info(pid).fault.kind == "unexpected_trap"  # type: ignore[union-attr]


def test_measurement_log_is_bounded() -> None:
    from spk.abi import KERNEL_IMAGE_VADDR

    loop = f"""
        mov r12, 1100
    again:
        mov rdi, {KERNEL_IMAGE_VADDR:#x}
        mov rsi, 8
        mov rdx, {KERNEL_IMAGE_VADDR:#x}
        mov r10, 1
        mov rax, HC_MEASURE
        int 0x82
        dec r12
        jnz again
        mov rbx, KERNEL_DATA_VADDR
        mov [rbx], rax
        mov rdi, 0
        mov rax, HC_EXIT
        int 0x82
    """
    m = machine()
    pid = m.create_partition("k", kernel(loop), [], 64)
    m.run(pid, 500_000)
    assert results(m, pid, 1) == [-Status.NO_MEMORY]
    assert len(m.measurements(pid)[1]) == 1024


def test_one_console_write_cannot_flood_the_host() -> None:
    from spk.abi import KERNEL_DATA_VADDR

    calls = [(H.CONSOLE_WRITE, (KERNEL_DATA_VADDR, 4096))]
    prologue = "mov rdi, KERNEL_DATA_VADDR\nmov rcx, 4096\nmov al, 10\nrep stosb\n"
    rec = Recorder()
    m = machine(rec)
    pid = m.create_partition("k", kernel(program(calls, prologue)), [], 64)
    m.run(pid, 100_000)
    lines = rec.lines("k")
    assert len(lines) == 65 and lines[-1] == "[spk: 4032 more lines of this write dropped]"


def test_propagated_events_wait_once_per_kind() -> None:
    m = machine()
    pid = m.create_partition("k", kernel("l: jmp l\n"), [], 64)
    for _ in range(1000):
        m.propagate(pid, "overrun")
    m.propagate(pid, "guest_error")
    assert len(m.partitions[pid].pending_traps) == 2


def test_sse_state_survives_syscalls_and_preemption() -> None:
    """A world switch loads only the privilege state: an app's xmm registers are its own."""
    source = """
        mov rax, 0x1122334455667788
        movq xmm0, rax
        mov r12, 3000
    again:
        mov rax, 3
        int 0x80
        dec r12
        jnz again
        movq rbx, xmm0
        mov rax, 0x1122334455667788
        cmp rbx, rax
        jne bad
        mov rdi, 0
        mov rax, 1
        int 0x80
    bad:
        mov rdi, 1
        mov rax, 1
        int 0x80
    """
    rec = Recorder()
    m = machine(rec)
    pid = m.create_partition("p", bundled("kernel", "refkernel"), [("sse", app(source))], 256)
    run_until_done(m, [pid], limit=2_000_000)
    assert "refkernel: app 1 exited (0)" in rec.lines("p")
    assert m.info(pid).counters.timer_upcalls > 0  # preempted on the way, too


def test_sysenter_is_refused() -> None:
    assert _app_fault("sysenter\n")["vector"] == Vector.UD


def test_no_stale_code_runs_from_a_freed_and_reused_frame() -> None:
    """Ring 0 zeroes a freed frame behind the engine's back: its translated code must go."""
    k1 = 0xFFFF_8000_4000_0000
    source = f"""
        mov rbx, KERNEL_DATA_VADDR
        mov rax, HC_FRAME_ALLOC
        int 0x82
        mov r12, rax
        mov rdi, 0
        mov rsi, {k1:#x}
        mov rdx, r12
        mov r10, MAP_WRITE
        mov rax, HC_MAP
        int 0x82
        mov rcx, {k1:#x}
        mov dword ptr [rcx], 0x000041b8
        mov byte ptr [rcx+4], 0
        mov byte ptr [rcx+5], 0xc3
        call rcx
        mov [rbx], rax
        mov rdi, 0
        mov rsi, {k1:#x}
        mov rax, HC_UNMAP
        int 0x82
        mov rdi, r12
        mov rax, HC_FRAME_FREE
        int 0x82
        mov rax, HC_FRAME_ALLOC
        int 0x82
        mov rdx, rax
        mov rdi, 0
        mov rsi, {k1:#x}
        mov r10, MAP_WRITE
        mov rax, HC_MAP
        int 0x82
        mov rcx, {k1:#x}
        mov rax, 0x99
        call rcx
        mov [rbx + 8], rax
        mov rdi, 0
        mov rax, HC_EXIT
        int 0x82
    """
    m = machine()
    pid = m.create_partition("k", kernel(source), [], 64)
    m.run(pid, 100_000)
    # The frame is zero now: 00 00 is `add [rax], al`, which faults on 0x99.
    # Stale code would have returned 0x41 and the kernel exited normally.
    fault = m.info(pid).fault
    assert fault is not None and (fault.kind, fault.rip, fault.address) == ("memory_violation", k1, 0x99)


def test_code_received_over_a_channel_replaces_translated_code() -> None:
    """PORT_RECEIVE writes into guest memory behind the engine: code translated
    from that buffer before must not run again. (The buffer is a page of the
    flat image, writable and executable: the data area is no-execute.)"""
    receiver = """
        lea rbx, [rip + buf]
        mov byte ptr [rbx], 0xb8          # mov eax, 0x41 ; ret
        mov dword ptr [rbx + 1], 0x41
        mov byte ptr [rbx + 5], 0xc3
        call rbx
        mov r14, rax
        lea rdi, [rip + name]
        mov rsi, 2
        mov rax, HC_PORT_OPEN
        int 0x82
        mov rdi, rax
        lea rsi, [rip + buf]
        mov rdx, 8
        mov rax, HC_PORT_RECEIVE
        int 0x82
        lea rbx, [rip + buf]
        call rbx
        mov rbx, KERNEL_DATA_VADDR
        mov [rbx], r14
        mov [rbx + 8], rax
        mov rdi, 0
        mov rax, HC_EXIT
        int 0x82
    name: .ascii "in"
    .align 4096
    buf: .space 4096
    """
    m = machine()
    pid = m.create_partition("k", kernel(receiver), [], 64)
    cid = m.create_channel("sampling", 8)
    other = m.create_partition("src", kernel("l: jmp l\n"), [], 64)
    m.attach_port(other, "out", cid, "source")
    m.attach_port(pid, "in", cid, "destination")
    m.channels[cid].send(m.partitions[other].ports["out"], bytes([0xB8, 0x99, 0, 0, 0, 0xC3, 0x90, 0x90]), 0)
    m.run(pid, 100_000)
    assert results(m, pid, 2) == [0x41, 0x99]
