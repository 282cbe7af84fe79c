"""Live migration: a partition moved between two machines goes on bit-identically.

Every test compares a migrated partition with a twin that never moved (same
configuration, same windows), and checks that nothing else on either host
noticed, that frame ownership holds on both, that its measurements travel,
and that its channels keep every message in order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nacl.signing import VerifyKey

from spgs.config import load
from spgs.migration import (
    ChannelRelay,
    MigrationSink,
    MigrationSource,
    checkpoint,
    measure,
    migrate,
    restore_checkpoint,
)
from spgs.system import System, plan
from spgs.trust import verify_quote
from spk import Machine, MachineEvent, MigrationError, PartitionExport
from tests.guests import kernel, results

CONFIG = """
[system]
name = "host"
memory = "{memory}"
seed = {seed}
max_ticks = 10_000_000

[[partition]]
name = "alpha"
image = "refkernel"
role = "system"
apps = ["hello", "counter"]
memory = "1MiB"
window = 20_000

[[partition]]
name = "mover"
image = "refkernel"
apps = ["counter", "sleeper", "hello"]
boot = {boot}
memory = "1MiB"
window = 3_000

[[partition]]
name = "beta"
image = "refkernel"
apps = ["sleeper", "hello"]
memory = "1MiB"
window = 20_000
"""


class Host:
    """One host: a System booted from CONFIG, its events recorded."""

    def __init__(self, tmp: Path, tag: str, *, boot: bool, seed: int, memory: str = "16MiB", key: int = 0) -> None:
        path = tmp / f"{tag}.toml"
        path.write_text(CONFIG.format(boot=str(boot).lower(), seed=seed, memory=memory))
        config = load(path)
        self.events: list[MachineEvent] = []
        seed_key = bytes([key]) * 32 if key else None
        self.system = System(config, plan(config), self.events.append, trace_hypercalls=True,
                             attestation_key=seed_key)  # fmt: skip
        self.machine = self.system.machine

    def run_to(self, ticks: int) -> None:
        """Run whole major frames up to ``ticks``; the clock keeps going when nothing is left to run."""
        self.system.run(ticks)
        self.machine.advance(ticks)

    def trace(self, name: str, since: int = 0) -> list[tuple[object, ...]]:
        skip = ("migrated_in", "migrated_out")
        return [(e.time, e.event, e.args, e.result) for e in self.events
                if e.partition == name and e.time >= since and e.event not in skip]  # fmt: skip


def _pair(tmp_path: Path) -> tuple[Host, Host, Host, Host]:
    """Source, destination (mover declared, other seed and RAM: other frames), and their never-migrated twins."""
    source = Host(tmp_path, "source", boot=True, seed=3, key=1)
    dest = Host(tmp_path, "dest", boot=False, seed=11, memory="24MiB", key=2)
    twin = Host(tmp_path, "twin", boot=True, seed=3, key=1)
    dest_twin = Host(tmp_path, "dest_twin", boot=False, seed=11, memory="24MiB", key=2)
    return source, dest, twin, dest_twin


def test_stop_and_copy_goes_on_bit_identically_and_nobody_else_notices(tmp_path: Path) -> None:
    source, dest, twin, dest_twin = _pair(tmp_path)
    frame = source.system.major_frame
    cut = 3 * frame
    for host in (source, dest, twin, dest_twin):
        host.run_to(cut)
    assert source.machine.info(source.system.pids["mover"]).state in ("ready", "blocked")

    done = migrate(source.machine, dest.machine, "mover", pid=dest.system.pids["mover"], key=b"fleet key")
    assert done.stats.rounds == 0 and done.stats.final_bytes == done.stats.bytes > 0
    mover = dest.machine.partitions[done.pid]
    assert mover.guest_frames is not None
    assert any(g != m for g, m in mover.guest_frames.to_machine.items()), "the test must relocate its frames"
    for host in (source, dest):
        host.machine.check_invariants()

    end = 40 * frame
    for host in (source, dest, twin, dest_twin):
        host.run_to(end)
    moved, stayed = dest.trace("mover", cut), twin.trace("mover", cut)
    assert moved == stayed
    assert any(e[1] == "console" for e in moved) and any(e[1] == "hypercall" for e in moved)
    assert vars(dest.machine.info(done.pid).counters) == vars(twin.machine.info(twin.system.pids["mover"]).counters)
    # The others, on both hosts, ran as if nothing had happened.
    for name in ("alpha", "beta"):
        assert source.trace(name) == twin.trace(name)
        assert dest.trace(name) == dest_twin.trace(name)
    assert source.trace("mover")[-1][0] < cut  # it left: nothing after the cut on the source
    assert [e.event for e in source.events if e.event == "migrated_out"] == ["migrated_out"]
    for host in (source, dest):
        host.machine.check_invariants()


def test_a_quote_after_migration_verifies_with_the_destinations_key(tmp_path: Path) -> None:
    source, dest, _twin, _dest_twin = _pair(tmp_path)
    source.run_to(2 * source.system.major_frame)
    dest.run_to(2 * source.system.major_frame)
    registers_before, log_before = source.machine.measurements(source.system.pids["mover"])
    done = migrate(source.machine, dest.machine, "mover", pid=dest.system.pids["mover"])
    nonce = b"fresh nonce"
    quote = dest.machine.quote(done.pid, nonce)
    dest_key = VerifyKey(dest.machine.attestation_public_key or b"")
    assert verify_quote(quote, platform_key=dest_key, nonce=nonce, partition="mover") == []
    source_key = VerifyKey(source.machine.attestation_public_key or b"")
    assert verify_quote(quote, platform_key=source_key, nonce=nonce, partition="mover") != []
    registers, log = dest.machine.measurements(done.pid)
    assert log[: len(log_before)] == log_before
    assert [e.type for e in log[len(log_before) :]] == ["migrated"]
    assert registers[0] != registers_before[0] and registers[1:] == registers_before[1:]


def test_precopy_under_write_load_has_a_short_downtime() -> None:
    metrics = measure(quick=True)
    assert metrics["migration_rounds"] >= 1
    assert metrics["migration_bytes"] > 1 << 20  # every frame once, and the rest
    assert metrics["migration_downtime_ratio"] < 0.05
    assert metrics["migration_downtime_ticks"] < metrics["migration_full_copy_ticks"] / 20


N = 30
PRODUCER = f"""
    lea rdi, [rip + name]
    mov rsi, 3
    mov rax, HC_PORT_OPEN
    int 0x82
    mov r12, rax
    mov rbx, 1
send:
    mov rcx, KERNEL_DATA_VADDR
    mov [rcx], rbx
    mov rdi, r12
    mov rsi, KERNEL_DATA_VADDR
    mov rdx, 8
    mov rax, HC_PORT_SEND
    int 0x82
    test rax, rax
    jnz full
    inc rbx
    cmp rbx, {N + 1}
    je done
    test rbx, 3
    jnz send
full:
    mov rax, HC_YIELD
    int 0x82
    jmp send
done:
    mov rdi, 0
    mov rax, HC_EXIT
    int 0x82
name: .ascii "out"
"""
CONSUMER = f"""
    lea rdi, [rip + name]
    mov rsi, 2
    mov rax, HC_PORT_OPEN
    int 0x82
    mov r12, rax
    mov rbx, 1
    mov r13, KERNEL_DATA_VADDR + 0x100
receive:
    mov rdi, r12
    mov rsi, KERNEL_DATA_VADDR
    mov rdx, 8
    mov rax, HC_PORT_RECEIVE
    int 0x82
    cmp rax, 8
    jne idle
    mov rcx, KERNEL_DATA_VADDR
    mov rax, [rcx]
    mov [r13], rax
    add r13, 8
    cmp rax, rbx
    jne wrong
    inc rbx
    cmp rbx, {N + 1}
    je done
idle:
    mov rax, HC_YIELD
    int 0x82
    jmp receive
wrong:
    mov rdi, 1
    mov rax, HC_EXIT
    int 0x82
done:
    mov rdi, 0
    mov rax, HC_EXIT
    int 0x82
name: .ascii "in"
"""


@pytest.mark.parametrize("mover", ["consumer", "producer"])
def test_a_channel_keeps_every_message_in_order_across_hosts(mover: str) -> None:
    a, b = Machine(8 << 20), Machine(12 << 20)
    b.create_partition("resident", kernel("hang: jmp hang\n"), [], 32)
    cid = a.create_channel("queuing", 8, depth=3)
    pids = {"producer": a.create_partition("producer", kernel(PRODUCER), [], 32),
            "consumer": a.create_partition("consumer", kernel(CONSUMER), [], 32)}  # fmt: skip
    a.attach_port(pids["producer"], "out", cid, "source")
    a.attach_port(pids["consumer"], "in", cid, "destination")
    where = {"producer": a, "consumer": a}
    relays: list[ChannelRelay] = []

    def frame() -> None:
        for name in ("producer", "consumer"):
            host = where[name]
            end = host.now + 2_000
            host.run(pids[name], end)
            a.advance(end)
            b.advance(end)
            for relay in relays:
                relay.pump()

    for _ in range(3):
        frame()
    assert a.partitions[pids["consumer"]].ports["in"].queue, "messages must be in flight when it moves"
    done = migrate(a, b, mover, run_between=lambda ticks: None)
    relays += done.relays
    pids[mover], where[mover] = done.pid, b
    for _ in range(200):
        if all(where[n].state(pids[n]) == "exited" for n in pids):
            break
        frame()
    assert where["consumer"].info(pids["consumer"]).exit_code == 0
    assert where["producer"].info(pids["producer"]).exit_code == 0
    assert sum(r.moved for r in relays) > 0
    consumer_machine = where["consumer"]
    log = results_at(consumer_machine, pids["consumer"], 0x100, N)
    assert log == list(range(1, N + 1))
    a.check_invariants()
    b.check_invariants()


def results_at(m: Machine, pid: int, offset: int, count: int) -> list[int]:
    """``count`` u64 the guest wrote in its data area from ``offset``."""
    assert offset % 8 == 0
    return results(m, pid, offset // 8 + count)[offset // 8 :]


def test_a_checkpoint_restarts_the_partition_where_it_was(tmp_path: Path) -> None:
    source, dest, twin, _dest_twin = _pair(tmp_path)
    frame = source.system.major_frame
    for host in (source, dest, twin):
        host.run_to(2 * frame)
    saved = checkpoint(source.machine, "mover")
    source.run_to(4 * frame)  # the source dies here: what it did since the checkpoint is lost
    pid = restore_checkpoint(dest.machine, saved, pid=dest.system.pids["mover"])
    dest.run_to(30 * frame)
    twin.run_to(30 * frame)
    assert dest.trace("mover", 2 * frame) == twin.trace("mover", 2 * frame)
    assert vars(dest.machine.info(pid).counters) == vars(twin.machine.info(twin.system.pids["mover"]).counters)
    dest.machine.check_invariants()


def test_refused_payloads_change_nothing(tmp_path: Path) -> None:
    source, dest, _twin, _dest_twin = _pair(tmp_path)
    source.run_to(source.system.major_frame)
    dest.run_to(source.system.major_frame)
    pid = source.system.pids["mover"]
    good = source.machine.export_partition(pid)
    before = dest.machine.snapshot()
    # A forged table entry naming a frame of someone else's, a CPL 0 context, a bad MAC, a truncated payload.
    forged_state = dict(good.state or {}, cpl=0)
    cases = [PartitionExport(good.partition, forged_state, good.pages)]
    table = (good.state or {})["kernel"]["pdpt"]
    page = bytearray(good.pages[table])
    page[0:8] = ((5 << 12) | 3).to_bytes(8, "little")  # frame 5: ring 0's, not the partition's
    cases.append(PartitionExport(good.partition, good.state, {**good.pages, table: bytes(page)}))
    for bad in cases:
        with pytest.raises(MigrationError):
            dest.machine.import_partition(bad, pid=dest.system.pids["mover"])
        assert dest.machine.changed_frames(before) == []
        dest.machine.check_invariants()
    with pytest.raises(MigrationError, match="authenticated"):
        MigrationSink(dest.machine, key=b"fleet").accept(good.to_bytes() + bytes(32))
    with pytest.raises(MigrationError):
        PartitionExport.from_bytes(good.to_bytes()[:-10])
    assert dest.system.pids["mover"] in dest.machine.declared
    # A host whose clock is behind the partition's is refused too.
    late = Machine(16 << 20)
    with pytest.raises(MigrationError, match="behind"):
        late.import_partition(good)


def test_a_source_in_the_middle_of_precopy_can_give_up(tmp_path: Path) -> None:
    source, dest, twin, _dest_twin = _pair(tmp_path)
    frame = source.system.major_frame
    for host in (source, dest, twin):
        host.run_to(2 * frame)
    sender = MigrationSource(source.machine, "mover")
    MigrationSink(dest.machine).accept(sender.precopy())
    sender.abort()
    with pytest.raises(MigrationError, match="over"):
        sender.stop_and_copy()
    source.run_to(20 * frame)
    twin.run_to(20 * frame)
    assert source.trace("mover") == twin.trace("mover")


def test_system_registers_of_an_arriving_vcpu_are_ring_0s(tmp_path: Path) -> None:
    """CR0, CR4, GDTR... and IOPL come from ring 0's templates, never from the payload."""
    source, dest, _twin, _dest_twin = _pair(tmp_path)
    source.run_to(source.system.major_frame)
    dest.run_to(source.system.major_frame)
    m = source.machine
    pid = source.system.pids["mover"]
    context = m.partitions[pid].context
    honest_cr0, honest_cr4 = m.engine.context_read(context, ["cr0", "cr4"])
    m.engine.context_write(context, "cr0", honest_cr0 & ~(1 << 16))  # WP off: write through read-only pages
    m.engine.context_write(context, "cr4", honest_cr4 & ~(1 << 5))  # PAE off
    m.engine.context_write(context, "rflags", 0x3202 | 0x100)  # IOPL 3, TF
    forged = m.export_partition(pid)
    new = dest.machine.import_partition(forged, pid=dest.system.pids["mover"])
    arrived = dest.machine.partitions[new].context
    cr0, cr4, rflags, cr3 = dest.machine.engine.context_read(arrived, ["cr0", "cr4", "rflags", "cr3"])
    assert (cr0, cr4) == (honest_cr0, honest_cr4)
    assert rflags & 0x3100 == 0
    assert cr3 in {space.cr3 for space in dest.machine.partitions[new].spaces.values()}


def test_a_partition_moves_there_and_back_and_still_goes_on_identically(tmp_path: Path) -> None:
    """The second move exports a partition whose frames are already translated (tables included)."""
    source, dest, twin, _dest_twin = _pair(tmp_path)
    frame = source.system.major_frame
    hosts = (source, dest, twin)
    for host in hosts:
        host.run_to(2 * frame)
    there = migrate(source.machine, dest.machine, "mover", pid=dest.system.pids["mover"],
                    run_between=lambda ticks: None)  # fmt: skip
    for host in hosts:
        host.run_to(4 * frame)
    back = migrate(dest.machine, source.machine, "mover", pid=source.system.pids["mover"],
                   run_between=lambda ticks: None)  # fmt: skip
    assert back.pid == source.system.pids["mover"] and there.pid == dest.system.pids["mover"]
    for host in hosts:
        host.run_to(40 * frame)
    merged = sorted(source.trace("mover", 0) + dest.trace("mover", 0), key=lambda e: e[0])
    assert merged == twin.trace("mover", 0)
    log = source.machine.measurements(back.pid)[1]
    assert [e.type for e in log].count("migrated") == 2
    for host in (source, dest):
        host.machine.check_invariants()


def test_a_migrated_partition_restarts_cold_on_its_new_host(tmp_path: Path) -> None:
    """A restart reloads its modules into its quota and names them by its own frame numbers."""
    source, dest, _twin, _dest_twin = _pair(tmp_path)
    frame = source.system.major_frame
    for host in (source, dest):
        host.run_to(2 * frame)
    done = migrate(source.machine, dest.machine, "mover", pid=dest.system.pids["mover"])
    mover = next(p for p in dest.system.plans if p.name == "mover")
    dest.machine.reset_partition(done.pid, mover.kernel, mover.apps, kernel_name=mover.kernel_label)
    since = dest.machine.now
    dest.run_to(40 * frame)
    lines = [e[2]["text"] for e in dest.trace("mover", since) if e[1] == "console"]
    assert lines[0] == "refkernel: booting 3 apps" and lines[-1] == "refkernel: all apps done"
    assert "refkernel: app 1 exited (0)" in lines and dest.machine.info(done.pid).state == "exited"
    dest.machine.check_invariants()


def test_the_same_partition_state_exports_to_the_same_bytes_on_two_machines(tmp_path: Path) -> None:
    """Found by the fleet tests: spk-migration/1 sent the engine's saved structure (host pointers),
    so identical runs gave payloads a byte or two apart once compressed. The vCPU now travels by
    named registers: two separately built machines (another one alive between them, so the host
    heap differs) export byte-identical payloads, and an import of one exports the same state again."""
    first = Host(tmp_path, "first", boot=True, seed=3, key=1)
    first.run_to(2 * first.system.major_frame)
    spacer = Machine(4 << 20)  # moves every later host allocation
    second = Host(tmp_path, "second", boot=True, seed=3, key=1)
    second.run_to(2 * second.system.major_frame)
    a = first.machine.export_partition(first.system.pids["mover"])
    b = second.machine.export_partition(second.system.pids["mover"])
    assert a.to_bytes() == b.to_bytes()
    state = a.state or {}
    assert "context" not in state and state["cpu"]["rip"] != 0
    assert set(state["cpu"]) >= {"rax", "r15", "rip", "rflags", "fs_base", "mxcsr", "fpsw", "fp7", "xmm15"}
    # Import there and back: the registers are what was sent, whatever the template held.
    dest = Host(tmp_path, "dest", boot=False, seed=11, memory="24MiB", key=2)
    dest.run_to(2 * first.system.major_frame)
    new = dest.machine.import_partition(a, pid=dest.system.pids["mover"])
    assert (dest.machine.export_partition(new).state or {})["cpu"] == state["cpu"]
    del spacer
