"""Differential test of the Linux personality: the same programs, natively and in a partition.

Debian's busybox-static (``/bin/busybox``, installed by ``make test``) runs
shell pipelines of its applets on the example rootfs (examples/busybox/rootfs)
twice: natively on the host, in a temporary copy of the rootfs as the
current directory, and unchanged in a Linux partition where that rootfs is
``/`` (and the current directory). Paths in the commands are relative, so
they name the same files on both sides; ``tmp/`` is the copy's folder natively
and the kernel's in-memory /tmp in the partition. Standard output must agree
byte for byte, and so must the exit status. The gcc-built static program
(fuzz/campaigns/linux_probe.c, glibc ``-static``) is compared the same way.

Nothing is stripped from the partition's console but the one summary line
the kernel prints when a call returned ENOSYS (docs/linux.md); the calls it
names are checked to be ones the programs can do without.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from fuzz.campaigns.linux_probe import probe
from spgs.linux_run import LinuxRun, linux_modules, run_linux

ROOT = Path(__file__).resolve().parent.parent
ROOTFS = ROOT / "examples" / "busybox" / "rootfs"
BUSYBOX = Path("/bin/busybox")
ENV = ["PATH=/bin", "HOME=/", "LC_ALL=C"]

#: Each case: (name, shell command). Every case prints something and ends its output with a newline.
CASES = [
    ("wc", "echo hi | wc -c"),
    ("sha256", "seq 1 1000 | sha256sum"),
    ("ls", "ls etc; ls -1 usr/share"),
    ("cat", "cat etc/motd etc/hostname"),
    ("sort-uniq", "sort usr/share/fruits | uniq -c"),
    ("head-tail", "head -n 3 usr/share/fruits; tail -n 2 usr/share/fruits"),
    ("tr", "echo 'Hello, World' | tr a-z A-Z; echo abc | tr -d b"),
    ("grep", "grep -n an usr/share/fruits; grep -c apple usr/share/fruits; grep -q nothing etc/motd; echo $?"),
    ("sed", "sed -e 's/a/A/g' -e '2d' etc/motd"),
    ("arithmetic", "expr 6 '*' 7; echo $((1 << 10)) $((17 % 5)) $((-3 + 2))"),
    ("printf", "printf '%05d|%-4s|%x|%s\\n' 42 ab 255 'two words'"),
    ("tmp", "echo data > tmp/f; echo more >> tmp/f; cat tmp/f; wc -c < tmp/f; rm tmp/f; test -e tmp/f || echo gone"),
    ("test", "test -f etc/motd && echo f; test -d etc && echo d; [ 3 -lt 5 ] && echo lt; [ -d etc/motd ] || echo no"),
    ("status", "false; echo $?; (exit 7); echo $?; sh -c 'exit 4'; echo $?"),
    ("for", "for i in 1 2 3; do echo \"n$i\"; done; i=0; while [ $i -lt 3 ]; do i=$((i+1)); done; echo $i"),
    ("subshell", "(cd etc && ls | wc -l); echo \"$(echo nested $(echo deeper))\"; x=outer; (x=inner); echo $x"),
    ("cut-awk", "cut -d: -f1,3 etc/passwd; seq 1 100 | awk '{ s += $1 } END { print s }'"),
    ("gzip-tar", "echo compress me | gzip -c | gunzip -c; tar -cf tmp/a.tar etc/motd etc/hostname; tar -tf tmp/a.tar"),
    ("find-od", "find etc usr -type f | sort; echo abc | od -c; basename /a/b/c.txt .txt; dirname /a/b/c.txt"),
    ("rev-tac", "echo hello | rev; seq 5 | tac | paste -s -d,"),
    ("xargs-md5", "seq 3 | xargs echo; md5sum etc/hostname; cat etc/motd | sha1sum; nosuchtool 2>&1; echo $?"),
]
#: Exit status of the whole combined script (its last command).
LAST_STATUS = 3


def _script() -> str:
    parts = [f"echo '== {name}'; {command}; echo \"== status $?\"" for name, command in CASES]
    return "\n".join([*parts, f"exit {LAST_STATUS}"]) + "\n"


def _native(argv: list[str], cwd: Path, stdin: bytes = b"") -> tuple[bytes, int]:
    """Run ``argv`` on the host in ``cwd`` (a rootfs copy) with the partition's environment; stdout and status.

    PATH is the copy's ``bin``, which holds busybox alone, as the rootfs does:
    a command that is no applet is not found on either side (busybox runs its
    applets through /proc/self/exe, whatever PATH says).
    """
    env = dict(var.split("=", 1) for var in ENV)
    env["PATH"] = str(cwd / "bin")
    proc = subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, check=False, timeout=60)
    assert proc.stderr == b"", f"the native run wrote to stderr (the partition's console merges it): {proc.stderr!r}"
    return proc.stdout, proc.returncode


def _copy_rootfs(tmp_path: Path) -> Path:
    """The rootfs as the partition sees it: the example's files, bin/busybox, an empty tmp."""
    copy = tmp_path / "root"
    shutil.copytree(ROOTFS, copy, symlinks=True)
    (copy / "tmp").mkdir()
    (copy / "bin").mkdir()
    shutil.copy2(BUSYBOX, copy / "bin" / "busybox")
    return copy


def _in_partition(command: list[str], stdin: bytes | None = None, files: dict[str, Path] | None = None) -> LinuxRun:
    modules = linux_modules(ROOTFS, files or {"/bin/busybox": BUSYBOX}, command, ENV, stdin)
    return run_linux(modules)


def _assert_same(run: LinuxRun, native_out: bytes, native_status: int) -> None:
    assert native_out.endswith(b"\n"), "the console keeps whole lines: a case must end its output with a newline"
    assert run.state == "exited", f"the partition ended {run.state} (fault: {run.fault}); output so far:\n{run.output}"
    assert run.output == native_out.decode()
    assert run.exit_code == native_status


def test_busybox_cases_match_native(tmp_path: Path) -> None:
    """Every case, in one shell of each side: each case's section, then the whole output and exit status."""
    script = _script()
    native_out, native_status = _native([str(BUSYBOX), "sh", "-c", script], _copy_rootfs(tmp_path))
    run = _in_partition(["/bin/busybox", "sh", "-c", script])
    assert native_status == LAST_STATUS

    def section(text: str, name: str) -> str:
        start = text.find(f"== {name}\n")
        if start < 0:
            return "(never started)"
        end = text.find("== status", start)
        return text[start : text.find("\n", end) + 1]

    differ = {name: (section(run.output, name), section(native_out.decode(), name)) for name, _ in CASES}
    differ = {name: sides for name, sides in differ.items() if sides[0] != sides[1]}
    assert not differ, "cases that differ (partition, native):\n" + "\n".join(f"{n}: {s!r}" for n, s in differ.items())
    _assert_same(run, native_out, native_status)


def test_issue_pipeline_matches_native(tmp_path: Path) -> None:
    """The issue's own command, ``ls /etc`` included: natively in a chroot of the rootfs copy (CI runs as root)."""
    command = "echo hi | wc -c; seq 1 1000 | sha256sum; ls /etc"
    root = _copy_rootfs(tmp_path)
    if os.geteuid() == 0:
        (root / "proc" / "self").mkdir(parents=True)  # busybox runs applets through /proc/self/exe
        (root / "proc" / "self" / "exe").symlink_to("/bin/busybox")
        native = _native([str(BUSYBOX), "chroot", str(root), "/bin/busybox", "sh", "-c", command], root)
    else:  # unprivileged: the same listing by a path relative to the copy
        native = _native([str(BUSYBOX), "sh", "-c", command.replace("/etc", "etc")], root)
    _assert_same(_in_partition(["/bin/busybox", "sh", "-c", command]), *native)


def test_stdin_reaches_the_pipeline(tmp_path: Path) -> None:
    """The ``stdin`` module is fd 0 of the first process, inherited down a pipeline, then EOF."""
    command = "read first; echo \"first: $first\"; tr a-z A-Z | sort; echo done"
    data = b"one line\nzebra\nmango\nkiwi\n"
    native = _native([str(BUSYBOX), "sh", "-c", command], _copy_rootfs(tmp_path), data)
    _assert_same(_in_partition(["/bin/busybox", "sh", "-c", command], stdin=data), *native)


def test_static_glibc_program_matches_native(tmp_path: Path) -> None:
    """The gcc-built static program: stdio, malloc, files in /tmp, pipe, fork, wait4, execve; exit status 3."""
    program = tmp_path / "probe"
    program.write_bytes(probe())
    program.chmod(0o755)
    root = _copy_rootfs(tmp_path)
    native = _native([str(program), "selftest", "tmp"], root)
    run = _in_partition(["/bin/probe", "selftest", "tmp"], files={"/bin/probe": program})
    assert native[1] == 3
    _assert_same(run, *native)
