"""Build C guests (kernels and apps) with the system's gcc, reproducibly, with a cache.

A C guest is one ``.c`` file or a folder of ``.c`` and ``.S`` files. It is
compiled freestanding against the SDK (``spk_sdk``: the ABI headers
generated from :mod:`spk.abi`, the libc subset, start-up code) and linked by
the SDK's linker script for its kind: a kernel in the kernel image region, an
app at ``APP_IMAGE_VADDR``. A third kind, ``pc``, is a bare PC kernel for full
virtualization (partitions/pcref, partitions/fvecho): it links the libc
subset and the SDK's PC library (``spk_sdk/pc/``: start-up code with the
multiboot header and 32- and 64-bit entries, trap stubs, UART, GDT/IDT/TSS,
PIC, PIT, page tables; its sources include ``"pc.h"``), is linked at physical
1 MiB by ``ld/pc.ld.S`` and includes no hypercall header. The result is an
ELF64 executable with its symbols and DWARF line table (faults and traces are
reported by function and line, and gdb reads it).

Reproducible: the same sources give the same bytes on any machine with the
same gcc. Sources are copied into a scratch folder under fixed relative names
and compiled from there with ``-ffile-prefix-map``, no build id and fixed
flags, so neither the checkout's path nor the scratch folder's reaches the
ELF; measured-boot golden values stay stable. Built images are cached by the
SHA-256 of every input (sources, SDK, flags, gcc's version).

gcc runs in a child process, like the assembler: nothing a source does can
reach the process that runs the SPK.

Errors: :class:`BuildError` (gcc missing, a compile or link error with
gcc's own ``file:line`` messages, an empty folder).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from spgs.assembler import cache_dir

#: Flags every C guest is compiled with. Why each: freestanding code with the
#: SDK's headers and gcc's own (stdint.h, stdarg.h) only; position-independent
#: code, because the kernel half is not within 2 GiB of any fixed model's
#: reach; no red zone and general registers only, because the kernels save
#: and restore only general registers; function sections so the linker drops
#: what a guest does not use; no loop-to-memset rewriting inside the libc.
CFLAGS = (
    "-std=gnu11", "-O2", "-g", "-ffreestanding", "-nostdinc", "-fpie", "-fno-plt", "-fno-stack-protector",
    "-mno-red-zone", "-mgeneral-regs-only", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
    "-ffunction-sections", "-fdata-sections", "-fno-common", "-fno-ident", "-fno-tree-loop-distribute-patterns",
    "-Wall", "-Wextra",
)  # fmt: skip
LDFLAGS = (
    "-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none", "-Wl,-z,max-page-size=4096", "-Wl,--gc-sections",
    "-Wl,-z,noexecstack", "-Wl,-z,norelro", "-Wl,--no-warn-rwx-segments",
)  # fmt: skip

#: SDK sources each kind links, besides the program's own.
_SDK_SOURCES = {
    "kernel": ("crt/kernel_start.S", "crt/kernel_entries.S", "lib/string.c", "lib/format.c", "lib/kconsole.c",
               "lib/loader.c"),
    "app": ("crt/app_start.S", "lib/string.c", "lib/format.c", "lib/app_io.c"),
    "pc": ("lib/string.c", "lib/format.c", "pc/boot.S", "pc/cpu.c", "pc/uart.c", "pc/pic.c", "pc/pit.c",
           "pc/paging.c"),
}  # fmt: skip
#: Include folders of each kind besides ``spk_sdk/include`` (a bare PC kernel's ``#include "pc.h"``).
_INCLUDES = {"kernel": (), "app": (), "pc": ("-Ispk_sdk/pc",)}
#: Where each kind is linked (the SDK's one linker script takes the bounds as macros).
_LINK_REGION = {
    "kernel": ("SPK_KERNEL_IMAGE_VADDR", "(SPK_KERNEL_IMAGE_VADDR + SPK_KERNEL_IMAGE_MAX)"),
    "app": ("SPK_APP_IMAGE_VADDR", "0x7FF000"),  # the reference kernel's stack page
    "pc": ("0x100000", "0x400000"),  # physical: from 1 MiB, within the 4 MiB a PC kernel identity-maps
}
#: The SDK linker script of each kind (spk_sdk/ld/).
_LINK_SCRIPT = {"kernel": "guest.ld.S", "app": "guest.ld.S", "pc": "pc.ld.S"}
_SOURCE_SUFFIXES = (".c", ".S", ".h")


class BuildError(Exception):
    """A C guest could not be built; the message carries gcc's own diagnostics."""


def sdk_root() -> Traversable:
    """The SDK's files (headers, libc subset, start-up code, linker scripts)."""
    return resources.files("spk_sdk")


def _sdk_files(node: Traversable | None = None, prefix: str = "") -> list[tuple[str, bytes]]:
    node = node or sdk_root()
    out: list[tuple[str, bytes]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir() and child.name != "__pycache__":
            out += _sdk_files(child, f"{prefix}{child.name}/")
        elif child.is_file() and child.name.endswith((*_SOURCE_SUFFIXES, ".ld.S")):
            out.append((f"{prefix}{child.name}", child.read_bytes()))
    return out


@functools.cache
def gcc() -> tuple[str, str]:
    """gcc's path and its version line.

    Errors: BuildError when gcc is not installed (``make launch`` installs
    Debian's gcc).
    """
    path = shutil.which(os.environ.get("SPK_CC", "gcc"))
    if path is None:
        raise BuildError("gcc not found: C guests are built with the system's gcc (make launch installs it)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    return path, version.splitlines()[0] if version else "unknown"


def program_sources(origin: Path) -> list[tuple[str, bytes]]:
    """The sources of a C guest: one ``.c`` file, or a folder's ``.c``, ``.S`` and ``.h`` files (not below).

    Errors: BuildError for a folder with no ``.c`` file.
    """
    if origin.is_file():
        # A single file may include headers of its own folder (apps/attempt.h).
        siblings = [p for p in origin.parent.iterdir() if p.suffix == ".h" and p.is_file()]
        return [(origin.name, origin.read_bytes())] + [(p.name, p.read_bytes()) for p in sorted(siblings)]
    files = sorted(p for p in origin.iterdir() if p.is_file() and p.name.endswith(_SOURCE_SUFFIXES))
    if not any(p.suffix == ".c" for p in files):
        raise BuildError(f"{origin.name}/: a C guest folder needs at least one .c file")
    return [(p.name, p.read_bytes()) for p in files]


def _key(kind: str, name: str, sources: Iterable[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for part in (kind, name, gcc()[1], " ".join(CFLAGS), " ".join(LDFLAGS)):
        digest.update(part.encode() + b"\0")
    for rel, content in [*sources, *_sdk_files()]:
        digest.update(rel.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def build_c(kind: str, name: str, sources: list[tuple[str, bytes]]) -> bytes:
    """Compile and link one C guest of ``kind`` ("kernel", "app" or "pc"); its ELF bytes. Cached.

    ``name`` names the program in diagnostics and in its debug information
    (its sources appear as ``name/file.c``).

    Errors: BuildError with gcc's messages.
    """
    key = _key(kind, name, sources)
    cached = cache_dir() / f"{key}.elf"
    if cached.is_file():
        return cached.read_bytes()
    elf = _compile(kind, name, sources)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(elf)
    tmp.replace(cached)
    return elf


def _compile(kind: str, name: str, sources: list[tuple[str, bytes]]) -> bytes:
    path, _version = gcc()
    safe = "".join(c if c.isalnum() or c in "_-." else "_" for c in name) or "guest"
    with tempfile.TemporaryDirectory(prefix="spk-cc-") as scratch:
        root = Path(scratch)
        for rel, content in _sdk_files():
            (root / "spk_sdk" / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "spk_sdk" / rel).write_bytes(content)
        (root / safe).mkdir()
        for rel, content in sources:
            (root / safe / rel).write_bytes(content)
        gcc_include = subprocess.run(
            [path, "-print-file-name=include"], capture_output=True, text=True, check=False
        ).stdout.strip()
        common = [
            *CFLAGS, f"-ffile-prefix-map={root}=.", "-isystem", gcc_include, "-Ispk_sdk/include",
            *_INCLUDES[kind], "-include", "spk/visibility.h", f"-I{safe}",
        ]  # fmt: skip
        script = subprocess.run(
            [path, "-E", "-P", "-x", "assembler-with-cpp", "-Ispk_sdk/include",
             f"-DSPK_LINK_BASE={_LINK_REGION[kind][0]}", f"-DSPK_LINK_END={_LINK_REGION[kind][1]}",
             f"spk_sdk/ld/{_LINK_SCRIPT[kind]}"],
            cwd=root, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if script.returncode != 0:
            raise BuildError(f"{name}: linker script: {script.stderr.strip()}")
        (root / "guest.ld").write_text(script.stdout)
        units = [f"{safe}/{rel}" for rel, _ in sources if rel.endswith((".c", ".S"))]
        units += [f"spk_sdk/{rel}" for rel in _SDK_SOURCES[kind]]
        # One object per unit under a name of its own: gcc's temporary object
        # names (random) would otherwise land in the symbol table.
        objects = []
        for unit in units:
            obj = f"{unit.rsplit('.', 1)[0]}.o"
            objects.append(obj)
            _run(name, [path, *common, "-c", unit, "-o", obj], root)
        _run(name, [path, *common, *LDFLAGS, "-Wl,-T,guest.ld", "-o", "guest.elf", *objects], root)
        return (root / "guest.elf").read_bytes()


def _run(name: str, command: list[str], cwd: Path) -> None:
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"{name}: gcc failed:\n{proc.stderr.strip()}")


#: Flags of a hosted static Linux program (the Linux personality's test programs, docs/linux.md).
LINUX_FLAGS = ("-std=gnu11", "-O2", "-static", "-Wall", "-Wl,--build-id=none", "-fno-ident")


def build_linux_static(name: str, source: bytes) -> bytes:
    """The bytes of :func:`linux_static_file`."""
    return linux_static_file(name, source).read_bytes()


def linux_static_file(name: str, source: bytes) -> Path:
    """Compile one C file into a static Linux x86-64 executable (glibc ``-static``); the cached file (mode 0755).

    Unlike a guest, this is an ordinary hosted program: it runs natively on
    the host and unchanged in a Linux partition, which is what the
    differential test compares. Reproducible as guests are (fixed scratch
    names, no build id). Errors: BuildError (gcc or the static libc missing:
    ``make test`` installs Debian's libc6-dev).
    """
    path, version = gcc()
    digest = hashlib.sha256(b"\0".join([b"linux-static", name.encode(), version.encode(),
                                        " ".join(LINUX_FLAGS).encode(), source])).hexdigest()  # fmt: skip
    cached = cache_dir() / f"{digest}.linux"
    if cached.is_file():
        return cached
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "program"
    with tempfile.TemporaryDirectory(prefix="spk-cc-") as scratch:
        root = Path(scratch)
        (root / f"{safe}.c").write_bytes(source)
        _run(name, [path, *LINUX_FLAGS, f"-ffile-prefix-map={root}=.", f"{safe}.c", "-o", safe], root)
        program = (root / safe).read_bytes()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(program)
    tmp.chmod(0o755)
    tmp.replace(cached)
    return cached
