"""The channels and lifecycle campaigns: clean on the SPK as it is, and each finds a ring-0 check switched off.

A finding test turns one check of ring 0 off with monkeypatch, runs a short
seeded campaign, and asserts what the issue asks of a campaign: the broken
check is found by the invariant meant for it, shrunk to a short replay file,
and the file shows it again; with the check back, the same file runs clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz import replay as replay_module
from fuzz.campaigns.channels import AGENT_PORTS, RECEIVE_BUFFER, SEND_BUFFER, ChannelWorld, data, peer_message
from fuzz.replay import load, replay, world_of
from fuzz.runner import run
from spk._channels import Channel, ChannelKind, Direction, Port
from spk._frames import FrameTable
from spk.abi import Status
from spk.errors import SpkError

KINDS = ("channels", "lifecycle")


@pytest.fixture(autouse=True)
def fresh_worlds() -> Iterator[None]:
    """No world built under one test's patch may serve another: the cache is dropped around each test."""
    for kind in KINDS:
        replay_module._WORLDS.pop(kind, None)
    yield
    for kind in KINDS:
        replay_module._WORLDS.pop(kind, None)


def found_and_shrunk(
    monkeypatch: pytest.MonkeyPatch, out: Path, campaign: str, seed: int, examples: int, invariant: str, steps: int
) -> None:
    """Under the patch: one finding of ``invariant`` in at most ``steps`` steps, its replay showing it
    again; with the patch undone, the same replay runs clean."""
    summary = run([campaign], seed=seed, examples=examples, out_dir=out)
    assert len(summary.findings) == 1, summary.to_json()
    finding = summary.findings[0]
    assert finding.invariant == invariant and finding.reproduced and finding.steps <= steps, finding
    assert finding.replay_file is not None
    recorded = load(Path(finding.replay_file))
    again = replay(recorded)
    assert again.violation is not None and again.violation.invariant == invariant, again.violation
    monkeypatch.undo()
    assert replay(recorded).clean


# -- clean runs -----------------------------------------------------------------------------
@pytest.mark.parametrize("campaign", KINDS)
def test_campaign_runs_clean(campaign: str) -> None:
    summary = run([campaign], seed=0, examples=15)
    stats = summary.campaigns[campaign]
    assert summary.findings == []
    assert stats.examples >= 15 and stats.executions > 0 and stats.invariant_checks == stats.executions


def test_traffic_reaches_the_peer_and_back_as_sent() -> None:
    """The model is not vacuous: messages cross both ways, byte for byte, and overflow is BUSY."""
    world = world_of("channels")
    assert isinstance(world, ChannelWorld)
    world.reset()
    out, echo, inbound = (AGENT_PORTS.index(p) for p in ("aq_out", "aq_echo", "aq_in"))
    for i in range(4):
        assert world.perform(("port_send", out, data(SEND_BUFFER), 3, f"6d{i:02x}21")) == 0
    assert world.perform(("port_send", out, data(SEND_BUFFER), 3, "ffffff")) == -int(Status.BUSY)
    assert world.perform(("port_send", echo, data(SEND_BUFFER), 3, "ffffff")) == -int(Status.DENIED)
    world.perform(("victims_run",))  # the peer drains in0 (checked against the model) and sends once
    assert world.model.peer_received[0] == 4 and world.model.peer_sent == [1, 1]
    assert world.perform(("port_receive", inbound, data(RECEIVE_BUFFER), 64)) == 16
    assert world.agent.read(RECEIVE_BUFFER, 16) == peer_message(0, 0)
    assert world.perform(("port_status", echo)) == 4  # the agent's own copy still waits
    assert world.resyncs == 0


# -- findings: channels ------------------------------------------------------------------------
def test_channels_finds_a_send_on_a_destination_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    checked = Channel.send

    def any_direction(self: Channel, port: Port, message: bytes, now: int) -> None:
        real, port.direction = port.direction, Direction.SOURCE
        try:
            checked(self, port, message, now)
        finally:
            port.direction = real

    monkeypatch.setattr(Channel, "send", any_direction)
    found_and_shrunk(monkeypatch, tmp_path, "channels", 1, 40, "channel_contents", 3)


def test_channels_finds_a_send_that_is_not_all_or_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    checked = Channel.send

    def partial(self: Channel, port: Port, message: bytes, now: int) -> None:
        """Queue the message where there is room, then say BUSY: the check's loophole."""
        if self.kind is ChannelKind.QUEUING and port.direction is Direction.SOURCE and message:
            room = [d for d in self.destinations if len(d.queue) < self.depth]
            if len(room) < len(self.destinations):
                for destination in room:
                    destination.queue.append(message)
                raise SpkError(Status.BUSY, "a destination queue is full")
        checked(self, port, message, now)

    monkeypatch.setattr(Channel, "send", partial)
    found_and_shrunk(monkeypatch, tmp_path, "channels", 0, 60, "channel_contents", 8)


# -- findings: lifecycle ------------------------------------------------------------------------
def test_lifecycle_finds_frames_freed_without_zeroing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    freeing = FrameTable.reclaim

    def unzeroed(self: FrameTable, owner: int) -> int:
        """reclaim as it is, with the zeroing of its frames skipped (and nothing else)."""
        vars(self.ram)["zero_frame"] = lambda mfn: None  # shadows the method for this call only
        try:
            return freeing(self, owner)
        finally:
            del vars(self.ram)["zero_frame"]

    monkeypatch.setattr(FrameTable, "reclaim", unzeroed)
    found_and_shrunk(monkeypatch, tmp_path, "lifecycle", 0, 40, "frame_hygiene", 3)


def test_lifecycle_finds_a_frame_kept_by_a_destroyed_partition(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    returned = FrameTable.reclaim

    def leaky(self: FrameTable, owner: int) -> int:
        """reclaim, then one frame handed straight back to the partition it was taken from."""
        count = returned(self, owner)
        self.grant(owner, 1)
        return count - 1

    monkeypatch.setattr(FrameTable, "reclaim", leaky)
    found_and_shrunk(monkeypatch, tmp_path, "lifecycle", 0, 40, "frame_conservation", 3)
