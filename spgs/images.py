"""Resolve the images a configuration names and build them.

An image is named either by a bundled name (``refkernel`` for
``partitions/refkernel.asm``, ``hello`` for ``apps/hello.asm``) or by a path
relative to the configuration file: ``.asm`` is assembled (see
:mod:`spgs.assembler`), ``.bin`` is loaded as it is.

Errors: :class:`ImageNotFound`, :class:`spgs.assembler.AssemblyError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from spgs.assembler import Source, assemble
from spk.abi import APP_IMAGE_VADDR, KERNEL_IMAGE_VADDR


class ImageNotFound(Exception):
    """No bundled image and no file by that name."""


@dataclass(frozen=True)
class ImageRef:
    name: str
    kind: str  #: "kernel" or "app"
    origin: str  #: where it came from, for messages


def bundled(kind: str) -> list[str]:
    """Names of the bundled kernels or apps."""
    package = "partitions" if kind == "kernel" else "apps"
    return sorted(p.name[:-4] for p in resources.files(package).iterdir() if p.name.endswith(".asm"))


_INCLUDE = re.compile(r'^\s*\.include\s+"([A-Za-z0-9_]+)"\s*(?:#.*)?$', re.MULTILINE)


def expand_includes(text: str, package: str, base_dir: Path | None = None, depth: int = 0) -> str:
    """Replace ``.include "name"`` lines with ``name.inc`` (keystone has no includes).

    Includes come from the source's own folder (a path) or package (a
    bundled name). Errors: ImageNotFound for a missing include, or includes
    nested more than 4 deep.
    """
    if depth > 4:
        raise ImageNotFound("includes nested more than 4 deep")

    def load(match: re.Match[str]) -> str:
        name = f"{match.group(1)}.inc"
        if base_dir is not None and (base_dir / name).is_file():
            body = (base_dir / name).read_text()
        else:
            resource = resources.files(package) / name
            if not resource.is_file():
                raise ImageNotFound(f"include {name!r} not found")
            body = resource.read_text()
        return f"# --- {name} ---\n{expand_includes(body, package, base_dir, depth + 1)}# --- end {name} ---"

    return _INCLUDE.sub(load, text)


def _read(name: str, kind: str, base_dir: Path) -> tuple[str, str | bytes]:
    package = "partitions" if kind == "kernel" else "apps"
    if name.endswith((".asm", ".bin")):
        path = (base_dir / name).resolve()
        if not path.is_file():
            raise ImageNotFound(f"{kind} image file {name!r} not found (relative to {base_dir.name or '.'})")
        if name.endswith(".bin"):
            return str(path), path.read_bytes()
        return str(path), expand_includes(path.read_text(), package, path.parent)
    resource = resources.files(package) / f"{name}.asm"
    if not resource.is_file():
        known = ", ".join(bundled(kind))
        raise ImageNotFound(f"no bundled {kind} named {name!r} (bundled: {known})")
    return f"{package}/{name}.asm", expand_includes(resource.read_text(), package)


def build(requests: list[tuple[str, str]], base_dir: Path) -> dict[tuple[str, str], bytes]:
    """Build every (kind, name) asked for; one assembler run for all sources.

    Errors: ImageNotFound, AssemblyError.
    """
    out: dict[tuple[str, str], bytes] = {}
    sources: list[tuple[tuple[str, str], Source]] = []
    for kind, name in dict.fromkeys(requests):
        origin, content = _read(name, kind, base_dir)
        if isinstance(content, bytes):
            out[(kind, name)] = content
        else:
            base = KERNEL_IMAGE_VADDR if kind == "kernel" else APP_IMAGE_VADDR
            sources.append(((kind, name), Source(origin, content, base)))
    for (key, _src), code in zip(sources, assemble([s for _, s in sources]), strict=True):
        out[key] = code
    return out
