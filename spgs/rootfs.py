"""The boot modules of a Linux partition: its root file system, command line and stdin.

A partition running the ``linux`` personality (docs/linux.md) gets three
modules, in this order, named as the kernel looks them up:

* ``rootfs``: a POSIX ustar archive, the read-only root file system. It is
  packed here from a folder or a tar archive (``rootfs``) with host files
  laid over it (``files``), deterministically: entries sorted by path,
  parents before children, names relative without ``./``, mtime 0, uid and
  gid 0, no user or group names, permission bits kept. The same inputs give
  the same bytes, so the measurement the kernel records at boot (event
  ``rootfs`` in the APPS register) is reproducible and can be a golden value.
* ``cmdline``: ``PATH\\0ARGV0\\0...\\0\\0ENV0\\0...\\0\\0``: the executable's
  absolute path inside the rootfs, its argv, an empty string, its envp, an
  empty string.
* ``stdin`` (only when ``stdin`` is set): bytes served on fd 0, then EOF.

Errors: :class:`RootfsError`, naming the rule broken and, for the partition's
field, where (``rootfs`` or ``files.PATH``).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath

from nacl.signing import VerifyKey

from spgs.config import LoadedConfig, PartitionConfig, Problem
from spgs.trust import Slot, Verdict, sha256, verify_image
from spk.abi import MEASURE_MAX

#: Largest packed root file system: what one MEASURE hypercall hashes (16 MiB).
MAX_ROOTFS = MEASURE_MAX
#: Largest ``cmdline`` module (argv and envp together), as Linux's ARG_MAX of 128 KiB.
MAX_CMDLINE = 128 << 10
#: Permission bits kept from the source (set-id and sticky bits included).
_MODE_BITS = 0o7777
#: Module names, as the kernel finds them (spk start info).
MODULE_NAMES = ("rootfs", "cmdline", "stdin")


class RootfsError(Exception):
    """The root file system or the command line cannot be packed.

    ``rule`` names the rule broken, ``field`` the partition's field at fault
    (``rootfs``, ``files.PATH``, ``command``, ``env``, ``stdin``).
    """

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


@dataclass(frozen=True)
class _Entry:
    kind: str  #: "file", "dir" or "symlink"
    mode: int
    data: bytes = b""
    target: str = ""  #: a symlink's target, as written


def normalise(path: str, field: str) -> str:
    """A path inside the rootfs as the archive names it: relative, no ``.``, no ``./``.

    Errors: RootfsError ``rootfs_path`` for an empty path, the root itself,
    a ``..`` component or a NUL byte.
    """
    if "\0" in path:
        raise RootfsError(field, "rootfs_path", f"{path!r}: a path has no NUL byte")
    parts = [part for part in PurePosixPath(path).parts if part not in ("/", ".")]
    if ".." in parts:
        raise RootfsError(field, "rootfs_path", f"{path!r}: '..' would leave the root file system")
    if not parts:
        raise RootfsError(field, "rootfs_path", f"{path!r}: names the root itself, not a file in it")
    return "/".join(parts)


def _from_folder(folder: Path) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    for root, dirs, files in os.walk(folder):  # never follows a symlink to a folder
        dirs.sort()
        for name in [*dirs, *sorted(files)]:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries[rel] = _Entry("symlink", 0o777, target=os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[rel] = _Entry("dir", info.st_mode & _MODE_BITS)
            elif stat.S_ISREG(info.st_mode):
                entries[rel] = _Entry("file", info.st_mode & _MODE_BITS, path.read_bytes())
            else:
                raise RootfsError("rootfs", "rootfs_member_type",
                                  f"{rel}: only files, folders and symbolic links go into a rootfs")  # fmt: skip
    return entries


def _from_tar(archive: Path) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                if member.name in (".", "./", "/"):
                    continue
                rel = normalise(member.name, "rootfs")
                if member.isdir():
                    entries[rel] = _Entry("dir", member.mode & _MODE_BITS)
                elif member.issym():
                    entries[rel] = _Entry("symlink", 0o777, target=member.linkname)
                elif member.isfile():
                    content = tar.extractfile(member)
                    entries[rel] = _Entry("file", member.mode & _MODE_BITS, content.read() if content else b"")
                elif member.islnk():  # a hard link: a copy of its target (read only, so the same)
                    target = entries.get(normalise(member.linkname, "rootfs"))
                    if target is None or target.kind != "file":
                        why = f"{member.name}: hard link to {member.linkname!r}, not an earlier file"
                        raise RootfsError("rootfs", "rootfs_member_type", why)
                    entries[rel] = _Entry("file", member.mode & _MODE_BITS, target.data)
                else:
                    why = f"{member.name}: only files, folders and symbolic links go into a rootfs"
                    raise RootfsError("rootfs", "rootfs_member_type", why)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise RootfsError("rootfs", "rootfs_archive", f"{archive.name}: not a readable tar archive ({exc})") from None
    return entries


def rootfs_source_problem(rootfs: str, base_dir: Path) -> str | None:
    """Why ``rootfs`` (relative to the configuration's folder) is no folder or tar archive, or None."""
    path = base_dir / rootfs
    if path.is_dir():
        return None
    if not path.is_file():
        return f"{rootfs!r} not found (relative to {base_dir.name or '.'}): a folder or a .tar archive"
    if not tarfile.is_tarfile(path):
        return f"{rootfs!r} is neither a folder nor a tar archive"
    return None


def pack(rootfs: Path | None, files: dict[str, Path]) -> bytes:
    """The ``rootfs`` module: ``rootfs`` (folder or tar, or nothing) with ``files`` laid over it.

    ``files`` maps a path inside the rootfs (``/bin/busybox``) to a host
    file, read through symbolic links; its permission bits are kept. Folders
    a file needs are added (mode 0755), and so is ``tmp`` (mode 1777), the
    mount point of the kernel's writable in-memory /tmp.

    Errors: RootfsError: ``rootfs_archive`` (unreadable tar),
    ``rootfs_member_type`` (a device, a FIFO, a socket, a dangling hard
    link), ``rootfs_path`` (a name with ``..``), ``linux_file_missing`` (a
    host file that is not a readable regular file), ``rootfs_conflict`` (a
    file over a folder, or a folder where a file is), ``rootfs_name_length``
    (a name ustar cannot hold), ``rootfs_size`` (more than MAX_ROOTFS).
    """
    entries: dict[str, _Entry] = {}
    if rootfs is not None:
        entries = _from_folder(rootfs) if rootfs.is_dir() else _from_tar(rootfs)
    for inside, host in files.items():
        field = f"files.{inside}"
        rel = normalise(inside, field)
        try:
            info = host.stat()
            if not stat.S_ISREG(info.st_mode):
                raise RootfsError(field, "linux_file_missing", f"{host}: not a regular file")
            data = host.read_bytes()
        except OSError as exc:
            raise RootfsError(field, "linux_file_missing", f"{host}: {exc.strerror or exc}") from None
        if entries.get(rel, _Entry("file", 0)).kind == "dir":
            raise RootfsError(field, "rootfs_conflict", f"{inside!r} is a folder of the rootfs")
        entries[rel] = _Entry("file", info.st_mode & _MODE_BITS, data)
    entries.setdefault("tmp", _Entry("dir", 0o1777))
    for rel in list(entries):  # every parent folder, and none of them a file
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            found = entries.setdefault(parent, _Entry("dir", 0o755))
            if found.kind == "symlink":
                why = f"{rel}: its parent {parent!r} is a symbolic link (to {found.target!r}): name the real folder"
                raise RootfsError(_field(rel, files), "rootfs_conflict", why)
            if found.kind != "dir":
                raise RootfsError(_field(rel, files), "rootfs_conflict", f"{rel}: its parent {parent!r} is a file")
    return _write(entries)


def _field(rel: str, files: dict[str, Path]) -> str:
    """The partition's field an entry comes from: ``files.PATH`` for a laid-over file, else ``rootfs``."""
    return next((f"files.{inside}" for inside in files if inside.strip("/") == rel), "rootfs")


def _write(entries: dict[str, _Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in sorted(entries, key=lambda name: name.split("/")):
            entry = entries[rel]
            info = tarfile.TarInfo(rel)
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = entry.mode, 0, 0, 0, "", ""
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
            else:
                info.size = len(entry.data)
            try:
                tar.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
            except ValueError as exc:  # ustar: name 100 + prefix 155 bytes, link name 100 bytes
                raise RootfsError("rootfs", "rootfs_name_length", f"{rel}: {exc}") from None
    packed = out.getvalue()
    if len(packed) > MAX_ROOTFS:
        raise RootfsError("rootfs", "rootfs_size",
                          f"packed rootfs of {len(packed) >> 10} KiB > {MAX_ROOTFS >> 10} KiB")  # fmt: skip
    return packed


def members(archive: bytes) -> dict[str, tarfile.TarInfo]:
    """The entries of a packed rootfs by path (for checks and tests)."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: m for m in tar.getmembers()}


def cmdline(command: list[str], env: list[str]) -> bytes:
    """The ``cmdline`` module: the executable (``command[0]``), argv (``command``), envp (``env``).

    Errors: RootfsError ``linux_cmdline_size`` past MAX_CMDLINE bytes.
    """
    blob = command[0].encode() + b"\0"
    blob += b"".join(arg.encode() + b"\0" for arg in command) + b"\0"
    blob += b"".join(var.encode() + b"\0" for var in env) + b"\0"
    if len(blob) > MAX_CMDLINE:
        raise RootfsError("command", "linux_cmdline_size",
                          f"command and env take {len(blob)} bytes > {MAX_CMDLINE} bytes")  # fmt: skip
    return blob


def resolve(archive: bytes, path: str) -> tarfile.TarInfo | None:
    """The regular file ``path`` names in a packed rootfs, symbolic links followed at every step
    (40 at most, as Linux), inside the rootfs (``..`` stops at its root); None when there is none."""
    by_name = members(archive)
    pending = [part for part in path.split("/") if part]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            done = done[:-1]
            continue
        found = by_name.get("/".join([*done, part]))
        if found is None:
            return None
        if found.issym():
            links += 1
            if links > 40:
                return None
            if found.linkname.startswith("/"):
                done = []
            pending = [p for p in found.linkname.split("/") if p] + pending
            continue
        done.append(part)
    found = by_name.get("/".join(done))
    return found if found is not None and found.isfile() else None


def is_linux(p: PartitionConfig) -> bool:
    """Does the partition run a Linux program (it has a ``command``)?"""
    return bool(p.command)


def modules(p: PartitionConfig, base_dir: Path) -> list[tuple[str, bytes]]:
    """The boot modules of Linux partition ``p``: rootfs, cmdline and, when set, stdin.

    Errors: RootfsError (see :func:`pack` and :func:`cmdline`), and
    ``linux_command_missing`` when the rootfs holds no regular file at
    ``command[0]`` (symbolic links followed).
    """
    source = None if p.rootfs is None else base_dir / p.rootfs
    host = {inside: base_dir / path for inside, path in p.files.items()}
    archive = pack(source, host)
    if resolve(archive, p.command[0]) is None:
        why = f"{p.name}: no file {p.command[0]!r} in the rootfs (add it, or lay it over with files)"
        raise RootfsError("command", "linux_command_missing", why)
    out = [("rootfs", archive), ("cmdline", cmdline(p.command, p.env))]
    if p.stdin is not None:
        out.append(("stdin", p.stdin.encode()))
    return out


def partition_modules(config: LoadedConfig) -> tuple[dict[str, list[tuple[str, bytes]]], list[Problem]]:
    """The boot modules of every Linux partition (rootfs, cmdline, stdin), and why any cannot be made."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    problems = []
    for i, p in enumerate(config.description.partition):
        if not is_linux(p):
            continue
        try:
            out[p.name] = modules(p, config.path.parent)
        except RootfsError as exc:
            where = ("partition", str(i), *exc.field.split(".", 1))
            message = str(exc) if str(exc).startswith(f"{p.name}:") else f"{p.name}: {exc}"
            problems.append(Problem(str(config.path), config.lines.find(where), ".".join(where), exc.rule, message))
    return out, problems


def rootfs_verdict(
    p: PartitionConfig, base_dir: Path, packed: bytes, trusted: dict[str, VerifyKey], when: date
) -> Verdict:
    """Secure boot's verdict on a Linux partition's root file system.

    Signed means: ``rootfs`` is an archive with a manifest and a signature
    beside it (as ``spk sign`` writes them: ``images/PARTITION/app/rootfs.bin``),
    signed for the slot ``PARTITION/app/rootfs``, and the archive the kernel
    gets (packed from it) is exactly the signed one: ``spk sign`` signs the
    packed archive, and packing a packed archive changes nothing. A folder,
    or host ``files`` laid over the archive, is unsigned. The command line
    and stdin come from the description itself, measured into the CONFIG
    register (and as their own events by the kernel).
    """
    ref = p.rootfs or "(no rootfs)"
    if p.rootfs is None or (base_dir / p.rootfs).is_dir() or p.files:
        why = "host files laid over it at launch" if p.files else "a folder, packed at launch"
        if p.rootfs is None:
            why = "none given"
        return Verdict(ref, False, "unsigned", f"rootfs: {why}: not a signed archive")
    slot = Slot(p.name, "app", "rootfs")
    verdict = verify_image(base_dir / p.rootfs, trusted, when, slot=slot, min_security_version=p.min_security_version)
    if verdict.ok and verdict.digest != sha256(packed):
        return Verdict(ref, False, "tampered", "the archive is not in packed form (sign what spk sign packs)")
    return verdict
