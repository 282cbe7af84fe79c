"""The adversarial suite (spk_review.adversarial): every attack contained, and a removed check detected."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from spgs.images import ImageNotFound, build
from spk import abi
from spk._paging import AddressSpace
from spk.abi import Hypercall
from spk_review.adversarial import AttackResult, class_ids, run_suite
from spk_review.adversarial_attacks import ARGUMENTS, CLASSES
from spk_review.adversarial_lab import LAYOUT

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ["partitions.toml", "examples/producer_consumer.toml"]
#: A word each class's evidence must contain: what makes it specific to the attack.
SPECIFIC = {
    "map_own_page_table_writable": "page_table): MAP ring-3 writable -> DENIED",
    "map_foreign_frame": "(alpha, data): MAP ring-3 writable -> DENIED",
    "map_spk_frame": "(ring 0, spk): MAP ring-3 writable -> DENIED",
    "hypercall_pointer_ranges": "range wrapping past 2^64: CONSOLE_WRITE(0xfffffffffffffff0, 0x20) -> BAD_ADDRESS",
    "cpl3_hypercall_and_privileged": "int 0x82 asking for HC_EXIT: trapped to its kernel, vector 13 error 0x412",
    "cpl2_privileged_instructions": "kernel fault privileged_instruction (vector 13)",
    "malformed_arguments": "HC_EXIT with bit 32 set (not truncated to EXIT): hypercall 0x10000000c() -> NOT_SUPPORTED",
    "huge_counts": "FRAME_ALLOC until refused",
    "channel_abuse": "PORT_SEND 3 into a queue of depth 2: PORT_SEND(0x0",
    "double_fetch": "the receiver got b'ORIGINAL-MESSAGE'",
    "frame_double_free_use_after_free": "FRAME_FREE A again (double free): FRAME_FREE(",
    "time_budget_overrun": "preempted by ring 0",
    "guest_kernel_crash": "memory_violation at address 0xffff8000001fbff8",
}
_SUITES: dict[str, list[AttackResult]] = {}


def suite(config: str) -> list[AttackResult]:
    """The whole suite on a configuration, run once per test process."""
    if config not in _SUITES:
        _SUITES[config] = run_suite(ROOT / config)
    return _SUITES[config]


@pytest.mark.parametrize("config", CONFIGS)
def test_every_attack_is_contained(config: str) -> None:
    results = suite(config)
    assert [r.attack_class for r in results] == class_ids()
    breaches = {r.attack_class: [e for e in r.evidence if e.startswith("NOT CONTAINED")] for r in results}
    assert {name: lines for name, lines in breaches.items() if lines} == {}
    assert all(r.contained for r in results)


@pytest.mark.parametrize("config", CONFIGS)
def test_evidence_is_concrete(config: str) -> None:
    for result in suite(config):
        evidence = "\n".join(result.evidence)
        assert len(result.evidence) >= 8, result.attack_class
        assert result.evidence[0].startswith("attacker placed as partition 'adversary'")
        assert "invariants held after each of" in evidence
        assert "byte-identical to the baseline" in evidence
        assert "identical to the baseline, at the same virtual times" in evidence
        if config == "partitions.toml" or result.attack_class != "map_foreign_frame":
            assert SPECIFIC[result.attack_class] in evidence, (result.attack_class, evidence)


def test_every_attacker_source_exists() -> None:
    for attack in CLASSES:
        for path in attack.attacker.split(" + "):
            assert (ROOT / path).is_file(), path


def _without_ownership_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch the map path's ownership check off: the frame's owner is taken for the caller's."""
    original = AddressSpace.check_map

    def check_map(self: AddressSpace, va: int, mfn: int, write: bool, user: bool) -> None:
        owner = self.owner
        if self.frames.valid(mfn):
            self.owner = self.frames[mfn].owner
        try:
            original(self, va, mfn, write, user)
        finally:
            self.owner = owner

    monkeypatch.setattr(AddressSpace, "check_map", check_map)


def test_a_removed_ownership_check_is_reported_not_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_ownership_check(monkeypatch)
    results = {
        r.attack_class: r for r in run_suite(ROOT / "partitions.toml", only={"map_foreign_frame", "map_spk_frame"})
    }
    foreign = results["map_foreign_frame"]
    assert not foreign.contained
    breaches = [e for e in foreign.evidence if e.startswith("NOT CONTAINED")]
    assert any("(alpha, data): MAP ring-3 writable -> 0" in e for e in breaches), breaches
    assert any("write through a granted mapping" in e for e in breaches)
    assert any("invariants broke" in e and "maps foreign frame" in e for e in breaches)
    assert any("memory differs from the baseline" in e and "alpha" in e for e in breaches)
    # ring 0's frames are still refused by their type: that check is still there
    assert results["map_spk_frame"].contained


def test_port_io_let_through_is_reported_not_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    from spk._pv_traps import PvTraps

    monkeypatch.setattr(PvTraps, "on_port_io", lambda self, port, is_write, rip: None)
    results = run_suite(ROOT / "partitions.toml", only={"cpl3_hypercall_and_privileged"})
    assert not results[0].contained
    breaches = [e for e in results[0].evidence if e.startswith("NOT CONTAINED")]
    assert any(e.startswith("NOT CONTAINED: in al, dx: no trap") for e in breaches), breaches
    assert any("misdeed survived" in e for e in breaches)


def test_seed_moves_partitions_not_the_verdict() -> None:
    results = run_suite(ROOT / "partitions.toml", seed=11, only={"malformed_arguments"})
    assert [r.contained for r in results] == [True]


def test_unknown_class_is_refused() -> None:
    with pytest.raises(ValueError, match="no_such_attack"):
        run_suite(ROOT / "partitions.toml", only={"no_such_attack"})


# -- the attackers' sources and the host agree with the ABI -----------------------------------------
def test_attack_include_constants_match_the_abi() -> None:
    assert LAYOUT["ADV_USER_BASE"] == abi.USER_BASE
    assert LAYOUT["ADV_KERNEL_END"] == abi.KERNEL_END
    assert LAYOUT["ADV_GDT_VADDR"] == abi.GDT_VADDR
    assert LAYOUT["ADV_KERNEL_STACK_SIZE"] == abi.KERNEL_STACK_SIZE
    assert LAYOUT["D_LOG"] + 64 * (LAYOUT["LOG_MAX"] + 1) <= LAYOUT["D_TAIL"] < abi.KERNEL_DATA_SIZE


def _argument_lines() -> Iterator[tuple[str, int]]:
    text = (ROOT / "docs" / "abi.md").read_text()
    for name, line in re.findall(r"^### \d+ (\w+)\n(?:.*\n)*?- Arguments: (.*)$", text, re.MULTILINE):
        yield name, len(re.findall(r"`\w+` \(\w+\)", line))


def test_argument_counts_match_the_abi_doc() -> None:
    documented = dict(_argument_lines())
    assert set(documented) == {h.name for h in Hypercall}
    assert {h.name: ARGUMENTS.get(h, 0) for h in Hypercall} == documented


# -- images in subfolders of the bundled packages ----------------------------------------------------
def test_bundled_images_are_found_in_subfolders_with_their_includes() -> None:
    images = build([("kernel", "adversarial/crash"), ("app", "adversarial/cpl3_attempts")], ROOT)
    assert len(images[("kernel", "adversarial/crash")]) > 100  # attack.inc and console.inc expanded
    assert images[("app", "adversarial/cpl3_attempts")][:2] == b"\x9c\x41"  # pushfq; pop r14


@pytest.mark.parametrize("name", ["../apps/hello", "adversarial/../refkernel", "adversarial/", "/refkernel"])
def test_bundled_names_stay_inside_the_package(name: str) -> None:
    with pytest.raises(ImageNotFound):
        build([("kernel", name)], ROOT)


def test_review_doc_lists_every_class() -> None:
    text = (ROOT / "docs" / "review.md").read_text()
    section = text[text.index("## Adversarial suite") :]
    rows = re.findall(r"^\| `(\w+)` \| `([\w/.]+)`", section, re.MULTILINE)
    assert [name for name, _ in rows] == class_ids()
    for (name, source), attack in zip(rows, CLASSES, strict=True):
        assert attack.attack_class == name and source in attack.attacker


def test_the_double_fetch_instrument_sees_ring_0_s_reads() -> None:
    """The copy-once check counts real reads: the hypercalls' buffers pass through the instrument."""
    import re

    result = next(r for r in suite(CONFIGS[0]) if r.attack_class == "double_fetch")
    counts = [int(m.group(1)) for e in result.evidence if (m := re.search(r"read guest memory (\d+) times", e))]
    assert counts and counts[0] > 0, result.evidence
