"""Build and load ring 0's native helper (``_clock.c``), reproducibly, with a cache.

The helper holds the engine's per-block hook (virtual time at block
granularity, see ``_clock.c``) and the fast mode's watchdog. It is compiled
once per machine with the system's gcc into a shared object cached under
``SPK_CACHE_DIR`` (or ``~/.cache/spk``), named by the SHA-256 of everything
that goes into it (the source, the flags, gcc's version line). So it works
from a clean clone (``make launch`` installs gcc), from an editable install
and from an installed package alike: the source ships as package data.

Reproducible: fixed flags, no build id, the source compiled from a scratch
folder under a fixed name with ``-ffile-prefix-map``: the same inputs give the
same bytes. gcc runs as a child process.

Ring 0 must not import ring 1, so this is its own small builder (the C
guests' builder, ``spgs.cbuild``, follows the same rules).

Errors: :class:`spk.errors.EngineError` (gcc missing, or it failed: its
messages are in the error).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from spk.errors import EngineError

SOURCE_NAME = "_clock.c"
CFLAGS = (
    "-std=gnu11", "-O2", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra",
    "-fno-ident", "-Wl,--build-id=none", "-Wl,-z,noexecstack",
)  # fmt: skip


def cache_dir() -> Path:
    """Where built helpers are kept (``SPK_CACHE_DIR`` or ``~/.cache/spk``)."""
    env = os.environ.get("SPK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "spk"


def source() -> bytes:
    """The helper's C source (package data of :mod:`spk`)."""
    return resources.files("spk").joinpath(SOURCE_NAME).read_bytes()


@functools.cache
def _gcc() -> tuple[str, str]:
    path = shutil.which(os.environ.get("SPK_CC", "gcc"))
    if path is None:
        raise EngineError("gcc not found: ring 0's native clock is built with gcc (make launch installs it)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    return path, version.splitlines()[0] if version else "unknown"


def build() -> Path:
    """The helper's shared object, built on first use and cached by content hash.

    Errors: EngineError when gcc is missing or fails.
    """
    text = source()
    path, version = _gcc()
    digest = hashlib.sha256(b"\0".join([text, version.encode(), " ".join(CFLAGS).encode()])).hexdigest()
    target = cache_dir() / f"spk-clock-{digest[:32]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spk-clock-") as tmp:
        root = Path(tmp)
        (root / SOURCE_NAME).write_bytes(text)
        out = root / "clock.so"
        proc = subprocess.run(
            [path, *CFLAGS, f"-ffile-prefix-map={root}=.", "-o", str(out), SOURCE_NAME],
            cwd=root, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise EngineError(f"building ring 0's native clock failed:\n{proc.stderr.strip()}")
        staged = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, staged)
        staged.replace(target)
    return target


@functools.cache
def library() -> ctypes.CDLL:
    """The loaded helper (built if needed). Errors: EngineError."""
    try:
        return ctypes.CDLL(str(build()))
    except OSError as exc:
        raise EngineError(f"cannot load ring 0's native clock: {exc}") from exc
