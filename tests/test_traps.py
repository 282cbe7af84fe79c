"""Trap paths not covered by the scenarios: #UD, syscall at CPL 2, contained host errors."""

from __future__ import annotations

import pytest

from spk.abi import Vector
from tests.guests import Recorder, app, bundled, kernel, machine, refsystem, run_until_done


def test_ud2_in_app_is_reflected_as_ud() -> None:
    rec = Recorder()
    m, pid = refsystem(["bad_ud2", "hello"], rec)
    run_until_done(m, [pid])
    assert [e.args["vector"] for e in rec.of("app_fault")] == [Vector.UD]
    assert not any("SUCCEEDED" in line for line in rec.lines("p"))
    assert m.info(pid).exit_code == 0


@pytest.mark.parametrize(
    ("source", "kind", "vector"),
    [
        ("ud2\n", "illegal_instruction", Vector.UD),
        ("syscall\n", "illegal_instruction", Vector.UD),
        ("hlt\n", "privileged_instruction", Vector.GP),
        ("mov cr3, rax\n", "privileged_instruction", Vector.GP),
        ("out 0x80, al\n", "privileged_instruction", Vector.GP),
        ("mov rax, 0\ndiv rax\n", "unexpected_trap", Vector.DE),
        ("mov rax, 0x400000\nmov rax, [rax]\n", "memory_violation", Vector.PF),
        ("int 0x80\n", "unexpected_trap", 0x80),
    ],
)
def test_guest_kernel_faults_are_reported_with_kind_and_vector(source: str, kind: str, vector: int) -> None:
    rec = Recorder()
    m = machine(rec)
    pid = m.create_partition("k", kernel(source + "l: jmp l\n"), [], 64)
    outcome = m.run(pid, 10_000)
    assert outcome.reason == "fault"
    fault = m.info(pid).fault
    assert fault is not None and (fault.kind, fault.vector) == (kind, vector)


def test_host_exception_in_a_handler_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    from spk import _hypercalls
    from spk.abi import Hypercall

    spec = _hypercalls.TABLE[Hypercall.VERSION]

    def broken(m: object, p: object, regs: object, args: tuple[int, ...]) -> object:
        if p.name == "bad":  # type: ignore[attr-defined]
            raise RuntimeError("injected")
        return spec.handler(m, p, regs, args)  # type: ignore[arg-type]

    monkeypatch.setitem(_hypercalls.TABLE, int(Hypercall.VERSION), spec.__class__(
        spec.number, broken, spec.args, spec.returns, spec.errors, spec.summary,
    ))  # fmt: skip
    rec = Recorder()
    m = machine(rec)
    bad = m.create_partition("bad", kernel("mov rax, HC_VERSION\nint 0x82\nl: jmp l\n"), [], 64)
    good = m.create_partition("good", bundled("kernel", "refkernel"), [("hello", bundled("app", "hello"))], 256)
    run_until_done(m, [bad, good])
    fault = m.info(bad).fault
    assert fault is not None and fault.kind == "internal_error" and "injected" in fault.detail
    assert m.info(good).exit_code == 0


@pytest.mark.parametrize(("instruction", "vector", "error"), [
    ("int 0x0e", Vector.GP, (0x0E << 3) | 2),  # a software #PF: refused gate
    ("int 0x0d", Vector.GP, (0x0D << 3) | 2),
    ("int 0x20", Vector.GP, (0x20 << 3) | 2),
    ("int3", Vector.BP, 0),  # int3 is an app's own trap
])  # fmt: skip
def test_software_interrupts_from_cpl3(instruction: str, vector: int, error: int) -> None:
    from tests.guests import app

    rec = Recorder()
    m = machine(rec)
    mods = [("a", app(f"{instruction}\nl: jmp l\n"))]
    pid = m.create_partition("p", bundled("kernel", "refkernel"), mods, 256)
    run_until_done(m, [pid])
    fault = rec.of("app_fault")[0].args
    assert (fault["vector"], fault["error"]) == (vector, error)


def test_host_listener_error_is_not_charged_to_the_guest() -> None:
    """A listener that fails (say, a closed pipe) stops the run, not the partition."""

    class Failing(Recorder):
        def __call__(self, event: object) -> None:
            super().__call__(event)  # type: ignore[arg-type]
            if getattr(event, "event", "") == "console":
                raise BrokenPipeError("reader went away")

    rec = Failing()
    m = machine(rec)
    pid = m.create_partition("p", bundled("kernel", "refkernel"), [("hello", bundled("app", "hello"))], 256)
    with pytest.raises(BrokenPipeError):
        m.run(pid, 100_000)
    assert m.info(pid).state == "ready" and m.info(pid).fault is None
    m2 = machine(Recorder())
    del m2


@pytest.mark.parametrize("yields", [0, 1, 2, 5])
def test_kernel_fault_is_reported_whatever_ran_before(yields: int) -> None:
    """The engine's "exception in flight" must not survive a window or a hypercall:
    without clearing it, a fault after two windows was escalated, then swallowed."""
    source = "mov eax, HC_YIELD\nint 0x82\n" * yields + "mov eax, HC_VERSION\nint 0x82\n" * 3
    source += "xor eax, eax\nmov qword ptr [rax], 1\nl: jmp l\n"
    m = machine()
    pid = m.create_partition("k", kernel(source), [], 64)
    for _ in range(yields + 1):
        end = m.now + 5_000
        m.run(pid, end)
        m.advance(end)
    fault = m.info(pid).fault
    assert fault is not None and (fault.kind, fault.vector) == ("memory_violation", 14)


@pytest.mark.parametrize(("flags", "name"), [(0x100, "TF"), (0x4000, "NT"), (0x4000 | 0x400 | 0x40000, "NT DF AC")])
def test_an_apps_rflags_never_reach_its_kernel(flags: int, name: str) -> None:
    """The kernel is entered with RFLAGS = 0x2: an app's TF single-stepped it into #DB
    and its NT broke the kernel's iretq before ring 0 loaded RFLAGS on entry."""
    source = f"pushfq\nor qword ptr [rsp], {flags:#x}\npopfq\nmov rax, 3\nint 0x80\nl: jmp l\n"
    rec = Recorder()
    m = machine(rec)
    pid = m.create_partition("p", bundled("kernel", "refkernel"), [("flags", app(source))], 256)
    run_until_done(m, [pid], limit=400_000)
    assert m.info(pid).fault is None, f"{name}: {m.info(pid).fault}"
    assert m.info(pid).state != "faulted"
