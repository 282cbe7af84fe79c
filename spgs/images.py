"""Resolve the images a configuration names and build them.

An image is named either by a bundled name (``refkernel`` for
``partitions/refkernel.asm``, ``hello`` for ``apps/hello.asm``) or by a path
relative to the configuration file: ``.asm`` is assembled (see
:mod:`spgs.assembler`), ``.bin`` is loaded as it is.

Errors: :class:`ImageNotFound`, :class:`spgs.assembler.AssemblyError`.
"""

from __future__ import annotations

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


def _read(name: str, kind: str, base_dir: Path) -> tuple[str, str | bytes]:
    package = "partitions" if kind == "kernel" else "apps"
    if name.endswith((".asm", ".bin")):
        path = (base_dir / name).resolve()
        if not path.is_file():
            raise ImageNotFound(f"{kind} image file {name!r} not found (relative to {base_dir.name or '.'})")
        return str(path), path.read_bytes() if name.endswith(".bin") else path.read_text()
    resource = resources.files(package) / f"{name}.asm"
    if not resource.is_file():
        known = ", ".join(bundled(kind))
        raise ImageNotFound(f"no bundled {kind} named {name!r} (bundled: {known})")
    return f"{package}/{name}.asm", resource.read_text()


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
