"""docs/linux.md stays true: its table of system calls is the kernel's, number for number.

The kernel's dispatch table (``table[]`` in partitions/linux/syscall.c) and
its names (partitions/linux/sysnames.c, from Linux's unistd_64.h) against
every "`name` (number)" of the docs' "Supported system calls" section.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "partitions" / "linux"


def kernel_calls() -> dict[str, int]:
    """Name -> number of every system call the kernel's table has a handler for."""
    source = (KERNEL / "syscall.c").read_text()
    table = re.search(r"static const sys_fn table\[NR_SYSCALLS\] = \{(.*?)\};", source, re.DOTALL)
    assert table is not None, "the dispatch table moved: update this test"
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]\s*=\s*sys_\w+", table.group(1))}
    names = {int(n): name for n, name in re.findall(r'\[(\d+)\] = "(\w+)"', (KERNEL / "sysnames.c").read_text())}
    return {names[n]: n for n in numbers}


def documented_calls() -> dict[str, int]:
    doc = (ROOT / "docs" / "linux.md").read_text()
    section = doc.split("## Supported system calls", 1)[1].split("\n## ", 1)[0]
    pairs = re.findall(r"`(\w+)` \((\d+)\)", section)
    assert len(pairs) == len(dict(pairs)), "a call is listed twice"
    return {name: int(n) for name, n in pairs}


def test_the_docs_list_exactly_the_kernels_system_calls() -> None:
    kernel, docs = kernel_calls(), documented_calls()
    assert len(kernel) > 100
    assert sorted(set(kernel) - set(docs)) == [], "calls the kernel handles, missing from docs/linux.md"
    assert sorted(set(docs) - set(kernel)) == [], "calls docs/linux.md lists, without a handler"
    assert docs == kernel
    assert f"a handler for {len(kernel)} system calls" in (ROOT / "docs" / "linux.md").read_text()
