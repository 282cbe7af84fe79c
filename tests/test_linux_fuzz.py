"""The linux campaign: hostile system calls from a static program in a Linux partition (fuzz/campaigns/linux.py).

A bounded seeded profile runs clean; the probe answers through its mailbox
from a real process (getpid is 1, a write of its scratch buffer to stdout
returns its length, a kernel-half pointer is EFAULT); a fork bomb is bounded
by the quota and the partition goes on; both oracles of the campaign report what they guard.
"""

from __future__ import annotations

import errno

import pytest

from fuzz.campaigns.linux import LinuxWorld, mailbox_va
from fuzz.replay import world_of
from fuzz.runner import run
from fuzz.world import Violation

#: Examples in `make test` (up to fuzz.runner.STEPS steps each).
PROFILE = 10


def linux_world() -> LinuxWorld:
    world = world_of("linux")
    assert isinstance(world, LinuxWorld)
    world.reset()
    return world


def test_the_campaign_runs_clean_on_the_spk() -> None:
    summary = run(["linux"], seed=0, examples=PROFILE)
    stats = summary.campaigns["linux"]
    assert summary.findings == []
    assert stats.examples == PROFILE
    assert stats.invariant_checks == stats.executions >= stats.examples


def test_the_probe_answers_from_a_real_process() -> None:
    world = linux_world()
    assert mailbox_va() % 4096 == 0
    kernel_half = 0xFFFF_8000_0000_0000
    results = world.perform(("syscalls", [
        [39, 0, [0] * 6],                      # getpid: the first process
        [1, 0b10, [1, 0, 0, 0, 0, 0]],         # write(1, scratch, 0)
        [1, 0, [1, kernel_half, 16, 0, 0, 0]],  # write(1, kernel memory, 16)
        [3, 0, [999, 0, 0, 0, 0, 0]],          # close(999)
    ]))  # fmt: skip
    assert results == [1, 0, -errno.EFAULT, -errno.EBADF]


def test_a_fork_bomb_is_bounded_and_the_probe_goes_on() -> None:
    world = linux_world()
    world.perform(("syscalls", [[57, 0, [0] * 6]] * 8))
    assert world.perform(("syscalls", [[39, 0, [0] * 6]])) == [1]


def test_a_faulted_linux_kernel_breaks_linux_kernel_alive() -> None:
    """The oracle reads the partition's state: a Linux kernel stopped by a fault is a finding."""
    world = linux_world()
    partition = world.machine.partitions[world.pid]
    partition.state = type(partition.state)("faulted")
    with pytest.raises(Violation) as info:
        world.check()
    assert info.value.invariant == "linux_kernel_alive"


def test_a_result_outside_the_errno_range_is_a_finding() -> None:
    """What the probe prints for such a result reaches the oracle: here the process writes the line itself,
    from the arguments of the batch's second record (the mailbox is its own memory)."""
    world = linux_world()
    text = b"probe: bad return nr=0 ret=-5000\n".ljust(48, b" ")
    words = [int.from_bytes(text[i : i + 8], "little") for i in range(0, 48, 8)]
    second_args = mailbox_va() + 32 + 56 + 8  # header, one record, its number and flags
    with pytest.raises(Violation) as info:
        world.perform(("syscalls", [[1, 0, [2, second_args, 33, 0, 0, 0]], [39, 0, words]]))
    assert info.value.invariant == "linux_errno_range"
