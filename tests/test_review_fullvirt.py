"""``spk review`` of full-virtualization partitions: trapped operations, devices, serial cables, memory map.

The facts are read from a machine built directly (ring 0's public API, the
way tests/test_fullvirt.py builds one): the reference kernel pcref run to its
end beside partitions/fvecho, whose COM2 and COM3 are serial cables to two
channels, and a paravirtual partition. Every number the review shows is
compared with what ring 0 reports through another path (``full_state``, the
frame table, ``info``), and the static trap list with
``spk.full_trapped_operations()``.

Then a whole review of examples/mixed.toml (full and paravirtual partitions,
channels through serial cables; the adversarial suite stubbed), and the
full-partition attacks (the bundled pc_hostile kernel, its attack picked by
its stdin) against the same description, contained, with the template's MMU,
and reported not contained when ring 0's CR3 check is taken out.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

import spk
from spgs.cbuild import build_c, program_sources
from spgs.config import load
from spk import InternalError, Machine
from spk.abi import PAGE_SIZE
from spk_review.adversarial import AttackResult, full_class_ids, run_suite
from spk_review.adversarial_full import FULL_CLASSES
from spk_review.findings import Facts, check_all
from spk_review.fullvirt import NOT_LISTED, UARTS, full_partition_facts, full_pids, trapped_operations
from spk_review.memory import memory_map
from spk_review.model import Report
from spk_review.render import SECTIONS, render_html
from spk_review.report import build_report
from spk_review.summary import summary as review_summary
from spk_tools.qemu import pcref_elf
from tests.guests import Recorder, bundled

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "docs" / "review.schema.json"
PC_FRAMES = 1040  # 4 MiB the kernels identity-map, and ring 0's boot tables
WINDOW = 2_000_000
#: the machine, the pid of each partition by name, the channels' names by id
Built = tuple[Machine, dict[str, int], dict[int, str]]


@pytest.fixture(scope="module")
def machine() -> Built:
    """pcref (nested MMU), fvecho (shadow MMU; COM2 <- "requests", COM3 -> "answers") and a PV partition, run to
    their ends."""
    m = Machine(32 << 20, on_event=Recorder())
    pids = {
        "pcref": m.create_full_partition("pcref", pcref_elf(), PC_FRAMES),
        "fvecho": m.create_full_partition(
            "fvecho", build_c("pc", "fvecho", program_sources(ROOT / "partitions" / "fvecho")), PC_FRAMES,
            mmu="shadow",
        ),
        "p": m.create_partition("p", bundled("kernel", "refkernel"), [("hello", bundled("app", "hello"))], 256),
    }
    requests, answers = m.create_channel("queuing", 64, depth=2), m.create_channel("queuing", 64, depth=4)
    m.attach_serial(pids["fvecho"], 0x2F8, requests, "destination")
    m.attach_serial(pids["fvecho"], 0x3E8, answers, "source")
    m.attach_relay(requests, "source")
    m.attach_relay(answers, "destination")
    lines = [b"hello\n", b"quit\n"]
    while m.now < 400_000_000 and any(m.info(pid).state in ("ready", "blocked") for pid in pids.values()):
        del lines[: m.relay_put(requests, [(line, m.now) for line in lines[:1]])]
        for pid in pids.values():
            m.run(pid, m.now + WINDOW)
            m.advance(m.now + WINDOW)
        m.relay_take(answers)
    assert [m.info(pid).state for pid in pids.values()] == ["exited"] * 3
    return m, pids, {requests: "requests", answers: "answers"}


def test_trapped_operations_are_the_static_list_with_the_runs_counts(machine: Built) -> None:
    m, pids, names = machine
    facts = full_partition_facts(m, pids["pcref"], names)
    counts = m.full_state(pids["pcref"])["traps"]
    assert isinstance(counts, dict)
    rows = {t.operation: t for t in facts.trapped}
    table = spk.full_trapped_operations()
    # every operation the vCPU traps is listed, with how ring 0 gets it, even when the guest never did it
    for op, how in table.items():
        if op != "exception_N":
            assert rows[op].how == how and rows[op].count == counts.get(op, 0), op
    # and every counter ring 0 reported is shown with its count; exceptions by vector, under the list's exception_N
    for op, count in counts.items():
        assert rows[op].count == count
        if op.startswith("exception_"):
            assert rows[op].how == table["exception_N"]
    assert NOT_LISTED not in {t.how for t in facts.trapped}
    # what docs/fullvirt.md says pcref does was trapped; what it never does was not
    done = ("lgdt", "lidt", "ltr", "lldt", "mov_cr", "mov_seg", "iretq", "sysretq", "syscall", "rdmsr", "wrmsr",
            "cpuid", "pushf", "hlt", "invlpg", "irq", "port_in", "port_out", "page_fault", "exception_13")  # fmt: skip
    for op in done:
        assert rows[op].count > 0, op
    assert rows["swapgs"].count == rows["clts"].count == 0
    assert (facts.name, facts.mmu, facts.state) == ("pcref", "nested", "exited")
    assert facts.virtual_registers["cr0"] == 0x80010033


def test_a_counter_the_static_list_lacks_is_shown_and_marked() -> None:
    rows = {t.operation: t for t in trapped_operations({"hlt": 3, "brand_new_trap": 2})}
    assert (rows["hlt"].count, rows["brand_new_trap"].count, rows["brand_new_trap"].how) == (3, 2, NOT_LISTED)
    assert rows["exception_N"].count == 0  # no exception happened: the list's row stays


def test_devices_and_serial_cables_are_what_went_through_them(machine: Built) -> None:
    m, pids, names = machine
    facts = full_partition_facts(m, pids["fvecho"], names, {("COM2", "destination"): "rx"})
    devices = {(d.device, d.ports[0]): d for d in facts.devices}
    com1, com2, com3 = (devices[("uart16550", base)] for base in (0x3F8, 0x2F8, 0x3E8))
    assert com1.ports == list(range(0x3F8, 0x400)) and com1.irq == 4 and com1.activity["role"] == "console"
    assert (com2.irq, com2.activity["role"], com3.activity["role"]) == (3, "serial link", "serial link")
    assert com2.activity["received"] == len(b"hello\nquit\n")  # the bytes the channel fed its receive line
    assert com3.activity["messages_sent"] == 1  # "1: HELLO\n"
    assert devices[("pic8259 pair", 0x20)].ports == [0x20, 0x21, 0xA0, 0xA1]
    assert devices[("pit8253", 0x40)].ports == [0x40, 0x41, 0x42, 0x43] and devices[("pit8253", 0x40)].irq == 0
    assert devices[("isa-debug-exit", 0xF4)].activity["status"] == 0
    cables = [(c.uart, c.port_base, c.port, c.channel, c.direction, c.messages, c.dropped) for c in facts.serial_cables]
    assert cables == [
        ("COM2", 0x2F8, "rx", "requests", "destination", None, 0),  # the configured name, when ring 1 gives it
        ("COM3", 0x3E8, "com@0x3e8", "answers", "source", 1, 0),  # else ring 0's
    ]
    assert full_partition_facts(m, pids["pcref"]).serial_cables == []  # no cable: nobody reaches pcref
    assert UARTS[0x2F8] == "COM2"


def test_memory_map_is_the_engines_and_the_invariant_check_proves_it(machine: Built) -> None:
    m, pids, _names = machine
    memory = memory_map(m)
    assert memory.invariants is None
    by_name = {p.name: p for p in memory.partitions}
    assert by_name["p"].virtualization == "para" and by_name["p"].full is None and by_name["p"].mappings
    assert full_pids(m) == [pids["pcref"], pids["fvecho"]]
    quota = PC_FRAMES * PAGE_SIZE
    for name, mmu in (("pcref", "nested"), ("fvecho", "shadow")):
        p = by_name[name]
        full = p.full
        assert full is not None and p.virtualization == "full"
        assert (p.spaces, p.mappings) == (0, [])  # no address space of ring 0's: its page tables are its own
        owned = m.frames.owned(pids[name])
        assert (full.quota_first_frame, full.quota_frames) == (owned[0], len(owned)) == (owned[0], PC_FRAMES)
        assert [(q.first_mfn, q.frames) for q in p.physical] == [(owned[0], PC_FRAMES)]  # one contiguous run
        assert full.mmu == mmu and full.proven is not None
        assert f"owns exactly frames {owned[0]:#x}..{owned[-1]:#x}" in full.proven
        assert full.regions[0].engine_physical == 0 and full.regions[0].size == quota
        if mmu == "nested":  # the quota and nothing else
            assert len(full.regions) == 1 and full.mmu_counts["cr3_loads"] > 0
            assert f"maps exactly [0x0, {quota:#x}) guest memory (quota) and nothing else" in full.proven
        else:  # the quota, and ring 0's shadow pool above it (not RAM of the machine: no frame of the table)
            pool = full.regions[1]
            assert len(full.regions) == 2 and pool.engine_physical >= quota and "shadow pool" in pool.what
            assert pool.size == full.mmu_stats["pool_frames"] * PAGE_SIZE and full.mmu_stats["tables"] > 0
            assert f"[{pool.engine_physical:#x}, {pool.engine_physical + pool.size:#x})" in full.proven
    # nothing of a full partition is reachable by another partition: the one shared region is ring 0's GDT in p
    assert [(r.owner, [x.partition for x in r.mapped_by]) for r in memory.shared] == [("ring 0", ["p"])]


def test_a_broken_invariant_proves_nothing(machine: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    m, _pids, _names = machine

    def broken(pids: object = None) -> None:
        raise InternalError("pcref: its engine maps [(0, 1)], not only its memory")

    monkeypatch.setattr(m, "check_invariants", broken)
    memory = memory_map(m)
    assert memory.invariants is not None
    assert all(p.full.proven is None for p in memory.partitions if p.full is not None)


# -- a whole review of a description with full partitions -------------------------------------------------------------
MIXED = ROOT / "examples" / "mixed.toml"  # pcref (full, nested), fvecho (full, shadow) between sender and printer


def _no_attacks(config_path: Path, *, seed: int | None = None) -> list[Any]:
    return []  # the full attacks are tested on their own below


@pytest.fixture(scope="module")
def mixed() -> Report:
    return build_report(MIXED, max_ticks=20_000_000, suite=_no_attacks)


def test_review_of_a_mixed_system_covers_its_full_partitions(mixed: Report) -> None:
    parts = {p.name: p for p in mixed.system.partitions}
    assert (parts["pcref"].virtualization, parts["pcref"].mmu) == ("full", "nested")
    fvecho = parts["fvecho"]
    assert (fvecho.virtualization, fvecho.mmu, fvecho.status) == ("full", "shadow", "exited (0)")
    assert (parts["sender"].virtualization, parts["sender"].mmu) == ("para", None)
    # a full partition's ports are serial cables: their UART, never "opened"
    assert [(q.name, q.channel, q.serial, q.opened) for q in parts["fvecho"].ports] == [
        ("rx", "to-fvecho", "COM2", None), ("tx", "from-fvecho", "COM3", None)]  # fmt: skip
    assert [(q.serial, q.opened) for q in parts["sender"].ports] == [(None, True)]
    # the cables are edges of the flow graph like any channel, the UART named
    edges = {e.channel: e for e in mixed.flow.edges}
    into, out = edges["to-fvecho"], edges["from-fvecho"]
    assert (into.source, into.destination, into.destination_serial, into.source_serial, into.sent) == (
        "sender", "fvecho", "COM2", None, 4)  # fmt: skip
    assert (out.source, out.source_serial, out.destination, out.sent) == ("fvecho", "COM3", "printer", 3)
    # full partitions make no hypercall: no row lists them; attestation covers them like any partition
    for row in mixed.tcb.hypercalls:
        assert not {"pcref", "fvecho"} & {c.split(".")[0] for c in row.callers}, row.name
    quoted = {a.name: a for a in mixed.attestation.partitions}
    assert all(quoted[n].verified and quoted[n].expected for n in ("pcref", "fvecho"))
    # trapped operations, devices and cables of each full partition, in the order of the description
    full = {f.name: f for f in mixed.fullvirt}
    assert list(full) == ["pcref", "fvecho"]
    cables = [(c.uart, c.port, c.channel, c.direction, c.messages) for c in full["fvecho"].serial_cables]
    assert cables == [("COM2", "rx", "to-fvecho", "destination", None), ("COM3", "tx", "from-fvecho", "source", 3)]
    assert {t.operation for t in full["pcref"].trapped} >= set(spk.full_trapped_operations()) - {"exception_N"}
    assert next(t for t in full["pcref"].trapped if t.operation == "lgdt").count == 1
    memory = {p.name: p for p in mixed.memory.partitions}
    assert memory["fvecho"].full is not None and len(memory["fvecho"].full.regions) == 2  # quota + shadow pool
    assert memory["pcref"].full is not None and memory["pcref"].full.proven is not None
    assert mixed.memory.invariants is None and mixed.verdict.passed
    jsonschema.validate(json.loads(mixed.model_dump_json()), json.loads(SCHEMA.read_text()))
    lines = review_summary_lines(mixed)
    assert any(line.startswith("  full virtualization: fvecho (shadow): ") and "2 serial cable(s)" in line
               for line in lines), lines  # fmt: skip


def test_html_shows_the_full_partitions(mixed: Report) -> None:
    page = render_html(mixed)
    section = page[page.index('<section id="fullvirt">') :]
    section = section[: section.index("</section>")]
    assert '<h3>pcref (pid 1, <code>mmu = "nested"</code>, ready)</h3>' in section
    assert '<code>lgdt</code></td><td class="num">1</td>' in section
    assert '<code>swapgs</code></td><td class="num"><span class="muted">0</span>' in section
    assert "<code>0x3f8-0x3ff</code>" in section and "<code>0x20-0x21</code>, <code>0xa0-0xa1</code>" in section
    assert "<td>COM3</td><td><code>0x3e8</code></td><td>tx</td><td>from-fvecho</td>" in section
    memory = page[page.index('<section id="memory">') : page.index('<section id="fullvirt">')]
    assert 'fvecho (pid 3, full virtualization, <code>mmu = "shadow"</code>)' in memory
    assert "shadow pool (ring 0)" in memory and "and nothing else" in memory
    flow = page[page.index('<section id="flow">') :]
    assert "<td>sender.out</td><td>fvecho.rx (serial COM2)</td>" in flow
    assert "to-fvecho · queuing · 64 B ×4 · serial COM2" in flow  # the edge's label in the graph
    assert [sid for sid, _ in SECTIONS].index("fullvirt") == [sid for sid, _ in SECTIONS].index("memory") + 1


def review_summary_lines(report: Report) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=200).print(review_summary(report, []))
    return out.getvalue().splitlines()


# -- the full-partition attacks of the adversarial suite ---------------------------------------------------------------
@pytest.fixture(scope="module")
def full_attacks() -> list[AttackResult]:
    return run_suite(MIXED, only=full_class_ids())


def test_full_attacks_run_beside_a_mixed_system_and_are_contained(full_attacks: list[AttackResult]) -> None:
    assert [r.attack_class for r in full_attacks] == full_class_ids()
    for r in full_attacks:
        evidence = "\n".join(r.evidence)
        assert r.contained, evidence
        assert r.attacker.startswith("partitions/pc_hostile/kernel.c (stdin ")
        assert (ROOT / r.attacker.split(" (")[0]).is_file()
        assert r.evidence[0].startswith("attacker placed as partition 'adversary'") and "of 'pcref'" in r.evidence[0]
        assert "the attacker is a full partition, mmu nested" in evidence
        assert "byte-identical to the baseline" in evidence and "each full partition's engine" in evidence
    ends = {r.attack_class: next(e for e in r.evidence if e.startswith(("ring 0 ended it", "it ended by")))
            for r in full_attacks}  # fmt: skip
    assert ends["full_call_gate_to_cpl0"].startswith("ring 0 ended it with the fault cpl0_tripwire")
    assert ends["full_memory_beyond_quota"].startswith("ring 0 ended it with the fault machine_check")
    assert ends["full_cr3_beyond_quota"].startswith("it ended by its own trap handler ('trap 13 error 0x0 cr2 0x0')")
    assert ends["full_triple_fault"].startswith("ring 0 ended it with the fault triple_fault")


def test_full_attacks_take_the_template_mmu_and_need_a_full_partition(tmp_path: Path) -> None:
    config = tmp_path / "shadow.toml"
    config.write_text('[system]\nmemory = "24MiB"\n\n[[partition]]\nname = "pc"\nimage = "pcref"\n'
                      'virtualization = "full"\nmmu = "shadow"\nmemory = "4112KiB"\nwindow = 200_000\n\n'
                      '[[partition]]\nname = "p"\nimage = "refkernel"\napps = ["hello"]\nmemory = "512KiB"\n'
                      'window = 20_000\n', encoding="utf-8")  # fmt: skip
    [result] = run_suite(config, only=["full_memory_beyond_quota"])
    # under shadow page tables the entry naming memory beyond the quota is the guest's own #PF (reserved bit)
    assert result.contained, result.evidence
    assert any(e.startswith("it ended by its own trap handler ('trap 14 error 0x9 cr2 0x800000')")
               for e in result.evidence)  # fmt: skip
    assert "the attacker is a full partition, mmu shadow" in "\n".join(result.evidence)
    assert run_suite(ROOT / "partitions.toml", only=["full_triple_fault"]) == []  # no full partition: not run
    with pytest.raises(ValueError, match="unknown attack classes: full_nonsense"):
        run_suite(config, only=["full_nonsense"])


def test_a_cr3_check_taken_out_of_ring_0_is_not_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    """The judge does not take the attacker's word: without the nested MMU's CR3 check the attack shows."""
    from spk import _fv_mmu

    def accept(self: _fv_mmu.NestedMmu, guest_cr3: int) -> int:
        self.cr3 = guest_cr3
        return guest_cr3

    monkeypatch.setattr(_fv_mmu.NestedMmu, "load_cr3", accept)
    [result] = run_suite(MIXED, only=["full_cr3_beyond_quota"])
    assert not result.contained
    failed = [e for e in result.evidence if e.startswith("NOT CONTAINED")]
    assert any(e.startswith("NOT CONTAINED: it ended by its own trap handler") for e in failed), result.evidence


def test_review_doc_lists_every_full_class() -> None:
    section = (ROOT / "docs" / "review.md").read_text().split("## Adversarial suite")[1]
    rows = re.findall(r"^\| `(full_\w+)` \| (\d) \|", section, re.MULTILINE)
    assert [(name, int(mode)) for name, mode in rows] == [(c.attack_class, c.mode) for c in FULL_CLASSES]


def test_a_cable_that_dropped_messages_is_a_low_finding(mixed: Report) -> None:
    fvecho = next(f for f in mixed.fullvirt if f.name == "fvecho")
    leaky = fvecho.serial_cables[1].model_copy(update={"dropped": 2})
    full = [fvecho.model_copy(update={"serial_cables": [fvecho.serial_cables[0], leaky]})]
    assert not [f for f in mixed.findings if f.rule == "serial_cable_dropped"]  # the real run dropped nothing
    facts = Facts(load(MIXED), mixed.system, mixed.memory, mixed.flow, mixed.attestation, mixed.adversarial, None,
                  full)  # fmt: skip
    [finding] = [f for f in check_all(facts) if f.rule == "serial_cable_dropped"]
    assert (finding.severity, finding.subject, finding.field) == ("low", "fvecho.tx", "partition.2.ports.1")
    assert finding.line is not None and "2 message(s) the guest wrote to COM3 were dropped" in finding.message
