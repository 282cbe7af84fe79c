"""Each hypercall's contract, driven by real CPL 2 test kernels (negative spec)."""

from __future__ import annotations

from spk.abi import (
    ABI_VERSION,
    KERNEL_BASE,
    USER_END,
    EntryKind,
    MapFlags,
    Status,
)
from spk.abi import (
    Hypercall as H,
)
from tests.guests import kernel, machine, program, results

USER = int(MapFlags.USER)
RW_USER = int(MapFlags.USER | MapFlags.WRITE)


def run_program(calls: list[tuple[int, tuple[int, ...]]], quota: int = 64) -> tuple[list[int], object]:
    m = machine()
    pid = m.create_partition("t", kernel(program(calls)), [], quota)
    m.run(pid, 200_000)
    assert m.info(pid).state == "exited", m.info(pid)
    m.check_invariants()
    return results(m, pid, len(calls)), m


def test_version() -> None:
    assert run_program([(H.VERSION, ())])[0] == [ABI_VERSION]


def test_unknown_number_is_not_supported() -> None:
    assert run_program([(999, ()), (1 << 63, ())])[0] == [-Status.NOT_SUPPORTED] * 2


def test_console_write_too_long_is_invalid() -> None:
    assert run_program([(H.CONSOLE_WRITE, (KERNEL_BASE, 4097))])[0] == [-Status.INVALID_ARGUMENT]


def test_console_write_unmapped_or_wrapping_is_bad_address() -> None:
    calls = [
        (H.CONSOLE_WRITE, (0x1000, 8)),  # nothing mapped in the user half
        (H.CONSOLE_WRITE, ((1 << 64) - 4, 8)),  # wraps past 2^64
        (H.CONSOLE_WRITE, (USER_END - 4, 8)),  # crosses into non-canonical space
    ]
    assert run_program(calls)[0] == [-Status.BAD_ADDRESS] * 3


def test_set_entry_rules() -> None:
    calls = [
        (H.SET_ENTRY, (7, KERNEL_BASE)),  # unknown kind
        (H.SET_ENTRY, (EntryKind.SYSCALL, 0x400000)),  # user-half entry
        (H.SET_ENTRY, (EntryKind.TRAP, KERNEL_BASE + 0x10)),
    ]
    assert run_program(calls)[0] == [-Status.INVALID_ARGUMENT, -Status.BAD_ADDRESS, 0]


def test_kernel_stack_must_be_in_kernel_half() -> None:
    calls = [(H.SET_KERNEL_STACK, (0x800000,)), (H.SET_KERNEL_STACK, (KERNEL_BASE + 0x1003,))]
    assert run_program(calls)[0] == [-Status.BAD_ADDRESS, -Status.BAD_ADDRESS]


def test_aspace_lifecycle() -> None:
    calls = [
        (H.ASPACE_CREATE, ()),  # -> 1
        (H.ASPACE_DESTROY, (0,)),  # boot space: denied
        (H.ASPACE_DESTROY, (9,)),  # no such handle
        (H.ASPACE_SWITCH, (1,)),
        (H.ASPACE_DESTROY, (1,)),  # current: busy
        (H.ASPACE_SWITCH, (0,)),
        (H.ASPACE_DESTROY, (1,)),
        (H.ASPACE_SWITCH, (1,)),  # gone
    ]
    assert run_program(calls)[0] == [
        1, -Status.DENIED, -Status.BAD_HANDLE, 0, -Status.BUSY, 0, 0, -Status.BAD_HANDLE,
    ]  # fmt: skip


def test_map_rules_on_own_frame() -> None:
    # slot 0 gets a frame; later calls use it through a register trick:
    # the program stores rax, so frame numbers are reloaded from the data area.
    prologue = "\n".join([
        "mov rax, HC_FRAME_ALLOC", "int 0x82", "mov r12, rax",
    ])  # fmt: skip
    text = program([], prologue)
    # Build the sequence by hand to use r12 (the frame) as the mfn argument.
    body = [
        ("rdi=0", "rsi=0x400001", "rdx=r12", "r10=USER", H.MAP),  # unaligned
        ("rdi=0", "rsi=0x400000", "rdx=r12", "r10=0x10", H.MAP),  # reserved flag
        ("rdi=0", "rsi=0x400000", "rdx=r12", "r10=0", H.MAP),  # supervisor in user half
        ("rdi=0", "rsi=KERNEL_BASE", "rdx=r12", "r10=USER", H.MAP),  # user in kernel half
        ("rdi=5", "rsi=0x400000", "rdx=r12", "r10=USER", H.MAP),  # bad handle
        ("rdi=0", "rsi=0x400000", "rdx=r12", "r10=RW", H.MAP),  # ok
        ("rdi=0", "rsi=0x400000", "rdx=r12", "r10=RW", H.MAP),  # busy
        ("rdi=0", "rsi=0x401000", "rdx=0xffffffffff", "r10=RW", H.MAP),  # no such frame
        ("rdi=r12", "rsi=0", "rdx=0", "r10=0", H.FRAME_FREE),  # still mapped: busy
        ("rdi=0", "rsi=0x400000", "rdx=0", "r10=0", H.UNMAP),
        ("rdi=0", "rsi=0x400000", "rdx=0", "r10=0", H.UNMAP),  # not found
        ("rdi=r12", "rsi=0", "rdx=0", "r10=0", H.FRAME_FREE),
        ("rdi=r12", "rsi=0", "rdx=0", "r10=0", H.FRAME_FREE),  # no longer a data frame
    ]
    subst = {"USER": USER, "RW": RW_USER}
    lines = [prologue, "mov rbx, KERNEL_DATA_VADDR"]
    for i, (*assigns, number) in enumerate(body):
        for assign in assigns:
            reg, value = assign.split("=")
            lines.append(f"mov {reg}, {subst.get(value, value)}")
        lines += [f"mov rax, {int(number)}", "int 0x82", f"mov [rbx + {8 * i:#x}], rax"]
    lines += ["mov rdi, 0", "mov rax, HC_EXIT", "int 0x82", "hang: jmp hang"]
    assert text  # the helper builds too
    m = machine()
    pid = m.create_partition("t", kernel("\n".join(lines) + "\n"), [], 64)
    m.run(pid, 200_000)
    got = results(m, pid, len(body))
    assert got == [
        -Status.INVALID_ARGUMENT, -Status.INVALID_ARGUMENT, -Status.INVALID_ARGUMENT,
        -Status.INVALID_ARGUMENT, -Status.BAD_HANDLE, 0, -Status.BUSY, -Status.INVALID_ARGUMENT,
        -Status.BUSY, 0, -Status.NOT_FOUND, 0, -Status.DENIED,
    ]  # fmt: skip
    m.check_invariants()


def test_unmap_drops_the_engine_translation_of_the_page() -> None:
    """A page read through a mapping, unmapped, then mapped to another frame reads the new frame.

    UNMAP drops only that page from the engine's TLB (as invlpg): had it
    dropped nothing, the second read would still see the first frame's value.
    """
    va = KERNEL_BASE + 0x4000_0000
    lines = [
        "mov rbx, KERNEL_DATA_VADDR",
        "mov rax, HC_FRAME_ALLOC", "int 0x82", "mov r12, rax",
        "mov rax, HC_FRAME_ALLOC", "int 0x82", "mov r13, rax",
        "mov rdi, 0", f"mov rsi, {va:#x}", "mov rdx, r12", f"mov r10, {int(MapFlags.WRITE)}",
        f"mov rax, {int(H.MAP)}", "int 0x82", "mov [rbx], rax",
        f"mov rcx, {va:#x}", "mov rax, 0x1111", "mov [rcx], rax", "mov rax, [rcx]", "mov [rbx + 8], rax",
        "mov rdi, 0", f"mov rsi, {va:#x}", f"mov rax, {int(H.UNMAP)}", "int 0x82", "mov [rbx + 16], rax",
        "mov rdi, 0", f"mov rsi, {va:#x}", "mov rdx, r13", f"mov r10, {int(MapFlags.WRITE)}",
        f"mov rax, {int(H.MAP)}", "int 0x82", "mov [rbx + 24], rax",
        f"mov rcx, {va:#x}", "mov rax, [rcx]", "mov [rbx + 32], rax",
        "mov rdi, 0", "mov rax, HC_EXIT", "int 0x82", "hang: jmp hang",
    ]  # fmt: skip
    m = machine()
    pid = m.create_partition("t", kernel("\n".join(lines) + "\n"), [], 64)
    m.run(pid, 200_000)
    assert m.info(pid).state == "exited", m.info(pid)
    assert results(m, pid, 5) == [0, 0x1111, 0, 0, 0]
    m.check_invariants()


def test_frame_alloc_until_quota_exhausted() -> None:
    calls = [(H.FRAME_ALLOC, ())] * 64
    got, _ = run_program(calls, quota=64)
    assert all(r > 0 for r in got[:10])
    assert got[-1] == -Status.NO_MEMORY
    assert len(set(r for r in got if r > 0)) == sum(1 for r in got if r > 0)


def test_time_now_counts_instruction_bytes() -> None:
    got, _ = run_program([(H.TIME_NOW, ()), (H.TIME_NOW, ())])
    # between the two int 0x82: mov [rbx], rax (3 bytes); mov rax, 14 (7); int 0x82 (2): 12 ticks
    assert got[1] - got[0] == 3 + 7 + 2


def test_hypercall_from_cpl2_never_raises_on_host() -> None:
    # Garbage arguments for every hypercall number: typed errors, no exception.
    calls = [(n, (0xFFFF_FFFF_FFFF_FFFF,) * 5) for n in range(0, 17) if n not in (H.EXIT, H.BLOCK, H.YIELD, H.IRET)]
    got, m = run_program(calls)
    assert all(isinstance(r, int) for r in got)
    assert not [e for e in m.partitions.values() if e.fault is not None]


def test_measure_rules_and_register() -> None:
    from spk.abi import KERNEL_IMAGE_VADDR, MEASURE_MAX, MEASURE_NAME_MAX

    calls = [
        (H.MEASURE, (KERNEL_IMAGE_VADDR, 16, KERNEL_IMAGE_VADDR, 4)),
        (H.MEASURE, (KERNEL_IMAGE_VADDR, MEASURE_MAX + 1, KERNEL_IMAGE_VADDR, 4)),
        (H.MEASURE, (KERNEL_IMAGE_VADDR, 16, KERNEL_IMAGE_VADDR, MEASURE_NAME_MAX + 1)),
        (H.MEASURE, (0x1000, 16, KERNEL_IMAGE_VADDR, 4)),
    ]
    got, m = run_program(calls)
    assert got == [0, -Status.INVALID_ARGUMENT, -Status.INVALID_ARGUMENT, -Status.BAD_ADDRESS]
    _registers, events = m.measurements(1)  # type: ignore[attr-defined]
    assert [e.type for e in events] == ["kernel_image", "app"]


def test_attest_without_platform_key_is_not_supported() -> None:
    from spk.abi import KERNEL_DATA_VADDR

    got, _ = run_program([(H.ATTEST, (KERNEL_DATA_VADDR, 8, KERNEL_DATA_VADDR + 0x1000, 0x3000))])
    assert got == [-Status.NOT_SUPPORTED]


def test_attest_writes_a_verifiable_quote() -> None:
    import json

    from nacl.signing import SigningKey

    from spgs.trust import verify_quote
    from spk import Machine
    from spk.abi import KERNEL_DATA_VADDR

    seed = bytes(range(32))
    nonce_at, out_at = KERNEL_DATA_VADDR + 0x800, KERNEL_DATA_VADDR + 0x1000
    calls = [
        (H.ATTEST, (nonce_at, 4, out_at, 16)),  # buffer too small
        (H.ATTEST, (nonce_at, 65, out_at, 0x3000)),  # nonce too long
        (H.ATTEST, (nonce_at, 4, 0x1000, 0x3000)),  # unwritable output
        (H.ATTEST, (nonce_at, 4, out_at, 0x3000)),
    ]
    prologue = f"mov rax, {nonce_at:#x}\nmov dword ptr [rax], 0x65636e6f\n"  # b"once"
    m = Machine(16 << 20, attestation_key=seed)
    pid = m.create_partition("t", kernel(program(calls, prologue)), [], 64)
    m.run(pid, 200_000)
    got = results(m, pid, 4)
    assert got[:3] == [-Status.NO_MEMORY, -Status.INVALID_ARGUMENT, -Status.BAD_ADDRESS]
    length = got[3]
    assert length > 0
    space = m.partitions[pid].spaces[0]
    quote = b"".join(
        m.ram.read(pa, n) for pa, n in m.walker.spans(space.cr3, out_at, length, write=False, user=False) or []
    )
    key = SigningKey(seed).verify_key
    assert verify_quote(quote, platform_key=key, nonce=b"once", partition="t") == []
    assert json.loads(quote)["statement"]["partition"] == "t"
