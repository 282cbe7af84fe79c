"""Assemble guest sources (keystone) in a child process, with a cache.

keystone can kill the process that calls it on some inputs (``.text``
followed by an instruction segfaults) and reports other errors only on
stderr. So sources are never assembled inside the process that runs the
SPK: a child Python process assembles a batch and answers in JSON. The
result is checked (present, plausible length) and cached by the SHA-256 of
source and base address, so a system boots without the child once built.

Every source gets the ABI's ``.equ`` lines prepended (``spk.abi``).

Errors: :class:`AssemblyError` naming the source and keystone's message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from spk import abi

_CHILD = r"""
import json, sys
import keystone
ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
out = []
for job in json.load(sys.stdin):
    try:
        enc, _count = ks.asm(job["source"], job["base"])
        out.append({"code": None if enc is None else bytes(enc).hex()})
    except keystone.KsError as exc:
        out.append({"error": str(exc)})
json.dump(out, sys.stdout)
"""


class AssemblyError(Exception):
    """A guest source did not assemble."""


# keystone 0.9.2 silently assembles ``[rbx + A + B]`` (two symbols) as
# ``[rbx]``, and truncates a 64-bit absolute operand to 32 bits. Both produce
# wrong code with no error, so the sources are checked before assembly.
_REGISTERS = re.compile(
    r"\b(r[a-d]x|r[sd]i|r[sb]p|r(?:8|9|1[0-5])[dwb]?|e[a-d]x|e[sd]i|rip)\b", re.IGNORECASE
)


def lint(name: str, text: str) -> None:
    """Refuse constructs keystone assembles wrongly without saying so.

    Errors: AssemblyError naming the source line.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        for match in re.finditer(r"\[([^\]]*)\]", code):
            inside = match.group(1)
            terms = [t.strip() for t in re.split(r"[-+*]", inside) if t.strip()]
            symbols = [t for t in terms if re.fullmatch(r"[A-Za-z_]\w*", t) and not _REGISTERS.fullmatch(t)]
            if len(symbols) > 1:
                raise AssemblyError(
                    f"{name}:{number}: more than one symbol in a memory operand "
                    f"({inside.strip()}): keystone drops them; use one .equ or a register"
                )


@dataclass(frozen=True)
class Source:
    name: str
    text: str
    base: int


def cache_dir() -> Path:
    """Where assembled images are kept (``SPK_CACHE_DIR`` or ``~/.cache/spk``)."""
    env = os.environ.get("SPK_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "spk"


def _key(src: Source) -> str:
    digest = hashlib.sha256(f"{src.base:#x}\0{abi.asm_equates()}\0{src.text}".encode())
    return digest.hexdigest()


def assemble(sources: list[Source]) -> list[bytes]:
    """Assemble each source at its base address; cached.

    Errors: AssemblyError (keystone refused, produced nothing, or the child
    process died).
    """
    for src in sources:
        lint(src.name, src.text)
    results: dict[int, bytes] = {}
    todo: list[tuple[int, Source]] = []
    directory = cache_dir()
    for i, src in enumerate(sources):
        cached = directory / f"{_key(src)}.bin"
        if cached.is_file():
            results[i] = cached.read_bytes()
        else:
            todo.append((i, src))
    if todo:
        jobs = [{"source": abi.asm_equates() + s.text, "base": s.base} for _, s in todo]
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps(jobs),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            names = ", ".join(s.name for _, s in todo)
            raise AssemblyError(f"assembler died (exit {proc.returncode}) on {names}: {proc.stderr.strip()[-400:]}")
        answers = json.loads(proc.stdout)
        directory.mkdir(parents=True, exist_ok=True)
        for (i, src), answer in zip(todo, answers, strict=True):
            if "error" in answer:
                raise AssemblyError(f"{src.name}: {answer['error']}")
            if not answer["code"]:
                raise AssemblyError(f"{src.name}: keystone produced no code ({proc.stderr.strip()[-200:]})")
            code = bytes.fromhex(answer["code"])
            if len(code) < 2:
                raise AssemblyError(f"{src.name}: implausible image of {len(code)} bytes")
            tmp = directory / f"{_key(src)}.{os.getpid()}.tmp"
            tmp.write_bytes(code)
            tmp.replace(directory / f"{_key(src)}.bin")
            results[i] = code
    return [results[i] for i in range(len(sources))]
