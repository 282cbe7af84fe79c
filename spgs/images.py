"""Resolve the images a configuration names and build them.

An image is named either by a bundled name (``refkernel`` for
``partitions/refkernel.c``, ``hello`` for ``apps/hello.c``, ``fuzz_agent``
for ``partitions/fuzz_agent.asm``, and ``adversarial/crash`` for a source in
a subfolder of the package, such as the attackers of the adversarial suite;
``linux`` for the folder of C sources ``partitions/linux/``)
or by a path relative to the configuration file: ``.c`` or a folder of C
sources is compiled (see :mod:`spgs.cbuild`), ``.asm`` is assembled (see
:mod:`spgs.assembler`), ``.elf`` and ``.bin`` are loaded as they are (an
ELF by its magic, whatever its name: a signed image is written as ``.bin``).

Errors: :class:`ImageNotFound`, :class:`spgs.assembler.AssemblyError`,
:class:`spgs.cbuild.BuildError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from spgs.assembler import Source, assemble
from spgs.cbuild import build_c, program_sources
from spk.abi import APP_IMAGE_VADDR, KERNEL_IMAGE_VADDR


class ImageNotFound(Exception):
    """No bundled image and no file by that name."""


@dataclass(frozen=True)
class ImageRef:
    name: str
    kind: str  #: "kernel", "pc" (a full partition's PC kernel) or "app"
    origin: str  #: where it came from, for messages


#: Source kinds of a bundled guest, by suffix, in the order a name is looked up.
_BUNDLED_SUFFIXES = (".c", ".asm")


def _package(kind: str) -> str:
    """The bundled package of a kind: kernels of both kinds (SPK ABI, bare PC) in ``partitions``, apps in ``apps``."""
    return "apps" if kind == "app" else "partitions"


def _is_c_folder(resource: Traversable) -> bool:
    """A folder of C sources (a guest built from several files, ``partitions/linux/``)."""
    return resource.is_dir() and any(p.name.endswith(".c") and p.is_file() for p in resource.iterdir())


def bundled(kind: str) -> list[str]:
    """Names of the bundled kernels or apps: the package's own sources and its folders of C sources."""
    entries = list(resources.files(_package(kind)).iterdir())
    names = {p.name.rsplit(".", 1)[0] for p in entries if p.name.endswith(_BUNDLED_SUFFIXES) and p.is_file()}
    names |= {p.name for p in entries if _is_c_folder(p)}
    return sorted(names)


#: A bundled name: folders and a file stem, never ``..`` (nothing outside the package).
_BUNDLED_NAME = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")


def bundled_source(kind: str, name: str) -> Traversable | None:
    """The bundled source of ``name`` (``refkernel``, ``adversarial/crash``, ``linux``), or None.

    A ``.c`` or ``.asm`` file, else a folder of C sources of that name.
    """
    if not _BUNDLED_NAME.fullmatch(name):
        return None
    for suffix in (*_BUNDLED_SUFFIXES, ""):
        resource = resources.files(_package(kind))
        for part in f"{name}{suffix}".split("/"):
            resource = resource / part
        if resource.is_file() if suffix else _is_c_folder(resource):
            return resource
    return None


#: The bundled packages: a subfolder of one shares its includes with the same subfolder of the other.
_SIBLING = {"partitions": "apps", "apps": "partitions"}
_INCLUDE = re.compile(r'^\s*\.include\s+"([A-Za-z0-9_]+)"\s*(?:#.*)?$', re.MULTILINE)


def expand_includes(text: str, package: str, base_dir: Path | None = None, depth: int = 0, *, folder: str = "") -> str:
    """Replace ``.include "name"`` lines with ``name.inc`` (keystone has no includes).

    Includes come from the source's own folder (a path), or for a bundled
    name in a subfolder from that ``folder`` of its package, then the same
    folder of the other bundled package (the adversarial kernels and apps
    share their list of privileged instructions), then the package itself
    (its ``console.inc``). Errors: ImageNotFound for a missing include, or
    includes nested more than 4 deep.
    """
    if depth > 4:
        raise ImageNotFound("includes nested more than 4 deep")
    root = resources.files(package)
    places: list[Traversable] = [] if base_dir is None else [base_dir]
    if folder:
        places += [resources.files(p) / folder for p in (package, _SIBLING[package])]
    places.append(root)

    def load(match: re.Match[str]) -> str:
        name = f"{match.group(1)}.inc"
        found = next((place / name for place in places if (place / name).is_file()), None)
        if found is None:
            raise ImageNotFound(f"include {name!r} not found")
        body = expand_includes(found.read_text(), package, base_dir, depth + 1, folder=folder)
        return f"# --- {name} ---\n{body}# --- end {name} ---"

    return _INCLUDE.sub(load, text)


def is_path(name: str) -> bool:
    """Whether an image name is a path (relative to the configuration) rather than a bundled name."""
    return name.endswith((".asm", ".bin", ".elf", ".c", "/"))


def _read(name: str, kind: str, base_dir: Path) -> tuple[str, str | bytes]:
    """Where ``name`` comes from and what it is: assembly text, or built bytes (flat or ELF).

    Kind ``pc`` is a full partition's kernel: C built as a bare PC kernel
    (:mod:`spgs.cbuild`), or an ELF file as it is; never assembly (the
    rules refuse it: ``full_image``).
    """
    package = _package(kind)
    if is_path(name):
        path = (base_dir / name).resolve()
        wanted = path.is_dir() if name.endswith("/") else path.is_file()
        if not wanted:
            what = "folder of C sources" if name.endswith("/") else "image file"
            raise ImageNotFound(f"{kind} {what} {name!r} not found (relative to {base_dir.name or '.'})")
        if name.endswith((".bin", ".elf")):
            return str(path), path.read_bytes()
        if name.endswith(("/", ".c")):
            return str(path), build_c(kind, path.stem if path.is_file() else path.name, program_sources(path))
        return str(path), expand_includes(path.read_text(), package, path.parent)
    resource = bundled_source(kind, name)
    if resource is None:
        known = ", ".join(bundled(kind))
        raise ImageNotFound(f"no bundled {kind} named {name!r} (bundled: {known})")
    if resource.name.endswith(".c") or resource.is_dir():
        shown = resource.name + ("/" if resource.is_dir() else "")
        return f"{package}/{shown}", build_c(kind, name, program_sources(Path(str(resource))))
    folder = name.rpartition("/")[0]
    return f"{package}/{name}.asm", expand_includes(resource.read_text(), package, folder=folder)


def build(requests: list[tuple[str, str]], base_dir: Path) -> dict[tuple[str, str], bytes]:
    """Build every (kind, name) asked for; one assembler run for all sources.

    ``kind`` is "kernel", "app" or "pc" (a full partition's kernel).
    Errors: ImageNotFound, AssemblyError, BuildError.
    """
    out: dict[tuple[str, str], bytes] = {}
    sources: list[tuple[tuple[str, str], Source]] = []
    for kind, name in dict.fromkeys(requests):
        origin, content = _read(name, kind, base_dir)
        if isinstance(content, bytes):
            out[(kind, name)] = content
        elif kind == "pc":  # the rules refuse it first (full_image): a PC kernel is not assembled for the SPK's ABI
            raise ImageNotFound(f"{origin}: a full partition's kernel is C or an ELF file, not assembly")
        else:
            base = KERNEL_IMAGE_VADDR if kind == "kernel" else APP_IMAGE_VADDR
            sources.append(((kind, name), Source(origin, content, base)))
    for (key, _src), code in zip(sources, assemble([s for _, s in sources]), strict=True):
        out[key] = code
    return out
