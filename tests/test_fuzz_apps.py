"""The apps campaign: a CPL 3 fuzz app under the reference kernel (fuzz/campaigns/apps.py).

A bounded seeded profile runs clean; the app's actions answer as
docs/guest.md says, through both gates; a ring-0 gate check switched off (an
app's ``int 0x82`` run as a hypercall) is found and shrunk to a short replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fuzz.app_agent
import fuzz.replay
from fuzz.app_agent import CODE_VA, MAILBOX_VA
from fuzz.campaigns.apps import AppWorld
from fuzz.replay import load, replay, world_of
from fuzz.runner import run
from fuzz.world import Violation
from spgs.cbuild import build_c
from spk._pv_traps import PvTraps
from spk.abi import HYPERCALL_VECTOR, KERNEL_DATA_VADDR, Hypercall

#: Examples in `make test` (up to fuzz.runner.STEPS steps each, a few seconds).
PROFILE = 30


def test_the_campaign_runs_clean_on_the_spk() -> None:
    summary = run(["apps"], seed=0, examples=PROFILE)
    stats = summary.campaigns["apps"]
    assert summary.findings == []
    assert stats.examples >= PROFILE
    assert stats.invariant_checks == stats.executions >= stats.examples
    world = world_of("apps")
    assert isinstance(world, AppWorld) and world.apps.restarts > 0  # apps were killed and the partition came back


@pytest.fixture
def world() -> AppWorld:
    chosen = world_of("apps")
    assert isinstance(chosen, AppWorld)
    chosen.reset()
    return chosen


HC_EXIT = int(Hypercall.EXIT)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (("syscall", 0, 0x202, 3, 0, 0, 0), 1),  # getpid through int 0x80
        (("syscall", 1, 0xED7, 3, 0, 0, 0), 1),  # through syscall, every arithmetic flag and DF set
        (("syscall", 0, 0x202, 0, MAILBOX_VA, 16, 0), 16),  # write of its own bytes
        (("syscall", 1, 0x202, 0, KERNEL_DATA_VADDR, 16, 0), -1),  # the kernel's: refused
        (("syscall", 0, 0x202, 0, 2**64 - 8, 16, 0), -1),  # wraps past 2^64
        (("syscall", 0, 0x202, 2, 0, 0, 0), 0),  # yield
        (("syscall", 1, 0x202, 4, 3_000, 0, 0), 0),  # sleep, woken inside its window
        (("syscall", 0, 0x202, 77, 0, 0, 0), -1),  # unknown
        (("syscall", 0, 0x202, 1, 0, 0, 0), "exited (restarted)"),
        (("syscall", 0, 0x202, 4, 2**64 - 1, 0, 0), "asleep (restarted)"),
        (("code", "90"), "done"),
        (("code", "0f22d8"), "killed (restarted)"),  # mov cr3, rax at CPL 3
        (("code", "ebfe"), "runaway (restarted)"),
        (("int82", HC_EXIT, 0, 0, 0, 0, 0), "killed (restarted)"),
    ],
)
def test_an_action_answers_as_the_guest_abi_says(world: AppWorld, action: tuple[Any, ...], expected: object) -> None:
    assert world.perform(action) == expected
    assert world.perform(("syscall", 0, 0x202, 3, 0, 0, 0)) == 1  # the app is there for the next action


def test_int_0x82_from_cpl_3_reaches_the_kernel_as_gp(world: AppWorld) -> None:
    world.perform(("int82", int(Hypercall.VERSION), 0, 0, 0, 0, 0))
    assert (world.apps.name, 13, (HYPERCALL_VECTOR << 3) | 2, CODE_VA) in world.observer.app_faults
    assert world.observer.user_hypercalls == []


@pytest.fixture
def fresh_worlds() -> Iterator[None]:
    """Worlds built for this test only: a patch of the trap path binds at machine creation."""
    saved = dict(fuzz.replay._WORLDS)
    fuzz.replay._WORLDS.clear()
    yield
    fuzz.replay._WORLDS.clear()
    fuzz.replay._WORLDS.update(saved)


@pytest.fixture
def user_hypercalls(monkeypatch: pytest.MonkeyPatch, fresh_worlds: None) -> Iterator[None]:
    """The hypercall gate without its CPL check: an app's ``int 0x82`` runs as a hypercall."""
    original = PvTraps.on_interrupt

    def on_interrupt(self: PvTraps, vector: int) -> None:
        partition = self._m._current
        if partition is not None and vector == HYPERCALL_VECTOR and self._regs.cpl == 3:
            self._hypercall(partition, self._live)
            return
        original(self, vector)

    monkeypatch.setattr(PvTraps, "on_interrupt", on_interrupt)
    yield


def test_a_hypercall_gate_open_to_cpl_3_is_found_and_shrunk_to_a_short_replay(
    user_hypercalls: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    summary = run(["apps"], seed=0, examples=100, out_dir=tmp_path)
    [finding] = summary.findings
    assert finding.invariant == "user_hypercall", finding
    assert finding.reproduced and finding.steps <= 2
    recorded = load(Path(str(finding.replay_file)))
    assert recorded.actions[-1][0] in ("int82", "code")
    again = replay(recorded)
    assert again.violation is not None and again.violation.invariant == "user_hypercall"

    monkeypatch.undo()  # the real gate: the same program runs clean
    fuzz.replay._WORLDS.clear()
    assert replay(recorded).clean


@pytest.fixture
def guest(monkeypatch: pytest.MonkeyPatch, fresh_worlds: None) -> Callable[[str, str], AppWorld]:
    """An app world whose reference kernel has ``old`` replaced by ``new`` in its source."""

    def build(old: str, new: str) -> AppWorld:
        source = (Path(__file__).parents[1] / "partitions" / "refkernel.c").read_text()
        assert source.count(old) == 1
        kernel = build_c("kernel", "refkernel-changed", [("refkernel.c", source.replace(old, new).encode())])
        built = fuzz.app_agent.image  # the app stays as it is; only the kernel changes

        def image(name: str, kind: str = "kernel") -> bytes:
            return kernel if kind == "kernel" else built(name, kind)

        monkeypatch.setattr(fuzz.app_agent, "image", image)
        changed = world_of("apps")
        assert isinstance(changed, AppWorld)
        changed.reset()
        return changed

    return build


def test_a_kernel_that_writes_kernel_memory_for_an_app_breaks_app_confinement(
    guest: Callable[[str, str], AppWorld],
) -> None:
    world = guest(" || buf + len > SPK_USER_END", "")
    with pytest.raises(Violation) as caught:
        world.perform(("syscall", 0, 0x202, 0, KERNEL_DATA_VADDR, 16, 0))
    assert caught.value.invariant == "app_confinement" and "may not read" in caught.value.message


def test_a_kernel_that_loses_a_register_breaks_guest_kernel(guest: Callable[[str, str], AppWorld]) -> None:
    world = guest("        f->rax = a->pid;\n", "        f->rax = a->pid;\n        f->rcx = 0;\n")
    assert world.perform(("syscall", 1, 0x202, 3, 0, 0, 0)) == 1  # syscall clobbers rcx anyway
    with pytest.raises(Violation) as caught:
        world.perform(("syscall", 0, 0x202, 3, 0, 0, 0))
    assert caught.value.invariant == "guest_kernel" and "rcx" in caught.value.message


def test_a_write_into_the_bystander_breaks_app_confinement(world: AppWorld) -> None:
    layout = world.apps.layout()
    assert layout is not None
    world.check()
    world.machine.ram.write(layout.bystander_stack + 8, b"\x01")
    with pytest.raises(Violation, match="app_confinement: the bystander's stack page"):
        world.check()


