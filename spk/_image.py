"""Kernel images as ring 0 loads them: segments at addresses, an entry point.

A guest kernel comes as a flat binary or as an ELF64 executable built by a
normal toolchain. A flat image is one segment: its bytes at
``KERNEL_IMAGE_VADDR``, writable and executable, entered at its first byte,
as every assembly kernel has always been loaded. An ELF image is read with
pyelftools: its PT_LOAD segments at their addresses with their permissions
(code never writable), bss zeroed, its entry point honoured.

Ring 0 checks every segment against the one region a guest kernel may
occupy, because a wrong segment would map frames over the start-info page
or the stack. Each way an image can be wrong is a named rule (the
``rule`` of :class:`spk.errors.ImageError`), so ring 1 can check a
configuration's images with the same code before anything runs.

Errors: :class:`spk.errors.ImageError` from :func:`load_image` and
:func:`check_app_image`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

from spk.abi import KERNEL_IMAGE_MAX, KERNEL_IMAGE_VADDR, PAGE_SIZE, USER_BASE, USER_END
from spk.errors import ImageError

_PAGE_MASK = PAGE_SIZE - 1
ELF_MAGIC = b"\x7fELF"
#: Where each kind of image may put its segments.
REGIONS = {
    "kernel": (KERNEL_IMAGE_VADDR, KERNEL_IMAGE_VADDR + KERNEL_IMAGE_MAX),
    "app": (USER_BASE, USER_END),
}


@dataclass(frozen=True)
class Segment:
    """One loadable segment: ``data`` at ``vaddr``, zero-filled up to ``memsz`` bytes."""

    vaddr: int
    data: bytes
    memsz: int
    writable: bool
    executable: bool

    @property
    def first_page(self) -> int:
        return self.vaddr & ~_PAGE_MASK

    @property
    def end_page(self) -> int:
        """One past the last page the segment touches."""
        return (self.vaddr + self.memsz + _PAGE_MASK) & ~_PAGE_MASK

    def pages(self) -> Iterator[tuple[int, bytes]]:
        """Each page the segment touches with its bytes (file data, then zeros)."""
        offset_in_page = self.vaddr & _PAGE_MASK
        image = bytes(offset_in_page) + self.data + bytes(self.memsz - len(self.data))
        for offset in range(0, self.end_page - self.first_page, PAGE_SIZE):
            page = image[offset : offset + PAGE_SIZE]
            yield self.first_page + offset, page + bytes(PAGE_SIZE - len(page))


@dataclass(frozen=True)
class LoadImage:
    """A guest kernel laid out by segments, its entry point and the bytes to measure.

    ``measured`` is what measured boot hashes into the KERNEL register: the
    file the image came from (an ELF file, symbols included), so a verifier
    compares it with the file it signed.
    """

    segments: tuple[Segment, ...]
    entry: int
    measured: bytes

    @property
    def pages(self) -> int:
        return sum((s.end_page - s.first_page) // PAGE_SIZE for s in self.segments)


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def _read_elf(data: bytes, kind: str) -> LoadImage:
    """Read and check an ELF executable of ``kind``; its segments as ring 0 would map them."""
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 64 or not elf.little_endian:
            raise ImageError(f"ELF{elf.elfclass} {'LSB' if elf.little_endian else 'MSB'}: only 64-bit "
                             "little-endian ELF images run here", "elf_class")  # fmt: skip
        if elf["e_machine"] != "EM_X86_64":
            raise ImageError(f"machine {elf['e_machine']}: only x86-64 (EM_X86_64) runs here", "elf_machine")
        if elf["e_type"] != "ET_EXEC":
            raise ImageError(f"{elf['e_type']}: only a statically linked executable (ET_EXEC) loads (link with "
                             "-static -no-pie and the SDK's linker script)", "elf_type")  # fmt: skip
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_memsz"] > 0]
        entry = elf["e_entry"]
        headers = [(s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_memsz"], s["p_flags"]) for s in loads]
    except (ELFError, ValueError, KeyError, OSError, AssertionError) as exc:  # truncated or inconsistent headers
        raise ImageError(f"not a readable ELF file: {exc}", "elf_malformed") from None
    if not headers:
        raise ImageError("no loadable (PT_LOAD) segment", "elf_no_segment")
    low, high = REGIONS[kind]
    segments: list[Segment] = []
    for vaddr, offset, filesz, memsz, flags in headers:
        where = f"segment at {vaddr:#x} (+{memsz:#x})"
        if filesz > memsz or offset + filesz > len(data):
            raise ImageError(f"{where}: {filesz:#x} file bytes at offset {offset:#x} in {memsz:#x} bytes of memory, "
                             f"file of {len(data):#x} bytes", "elf_segment_file_size")  # fmt: skip
        if not low <= vaddr or vaddr + memsz > high:
            raise ImageError(f"{where} outside the {kind} region {low:#x}..{high:#x}", "elf_segment_region")
        if kind == "app" and (vaddr & _PAGE_MASK) != (offset & _PAGE_MASK):
            raise ImageError(f"{where}: address and file offset {offset:#x} differ within a page "
                             "(its kernel maps file pages directly)", "elf_segment_alignment")  # fmt: skip
        if flags & P_FLAGS.PF_W and flags & P_FLAGS.PF_X:
            raise ImageError(f"{where} is writable and executable: code is never writable", "elf_writable_code")
        segments.append(Segment(vaddr, data[offset : offset + filesz], memsz, bool(flags & P_FLAGS.PF_W),
                                bool(flags & P_FLAGS.PF_X)))  # fmt: skip
    image = LoadImage(tuple(segments), entry, data)
    _check_layout(image)
    return image


def _check_layout(image: LoadImage) -> None:
    taken: list[tuple[int, int]] = []
    for seg in image.segments:
        for first, stop in taken:
            if seg.first_page < stop and first < seg.end_page:
                raise ImageError(f"segment at {seg.vaddr:#x} shares a page with the segment at {first:#x}",
                                 "elf_segment_overlap")  # fmt: skip
        taken.append((seg.first_page, seg.end_page))
    if not any(s.executable and s.vaddr <= image.entry < s.vaddr + s.memsz for s in image.segments):
        raise ImageError(f"entry point {image.entry:#x} outside every executable segment", "elf_entry")


def load_image(image: bytes | LoadImage) -> LoadImage:
    """The :class:`LoadImage` of a kernel image: an ELF file, a flat binary, or segments already laid out.

    Rules (ImageError.rule): image_size (a flat image empty or larger than
    KERNEL_IMAGE_MAX); for ELF: elf_malformed, elf_class, elf_machine,
    elf_type, elf_no_segment, elf_segment_file_size, elf_segment_region
    (outside [KERNEL_IMAGE_VADDR, +KERNEL_IMAGE_MAX)), elf_writable_code,
    elf_segment_overlap (two segments on one page: a page has one set of
    permissions), elf_entry (outside every executable segment). A given
    LoadImage is checked against the region, overlap and entry rules.

    Errors: ImageError.
    """
    if isinstance(image, bytes | bytearray):
        data = bytes(image)
        if is_elf(data):
            return _read_elf(data, "kernel")
        if not data or len(data) > KERNEL_IMAGE_MAX:
            raise ImageError(f"flat kernel image of {len(data)} bytes (1..{KERNEL_IMAGE_MAX})", "image_size")
        return LoadImage((Segment(KERNEL_IMAGE_VADDR, data, len(data), True, True),), KERNEL_IMAGE_VADDR, data)
    end = KERNEL_IMAGE_VADDR + KERNEL_IMAGE_MAX
    if not image.segments:
        raise ImageError("kernel image has no loadable segment", "elf_no_segment")
    for seg in image.segments:
        if seg.memsz <= 0 or len(seg.data) > seg.memsz:
            raise ImageError(f"segment at {seg.vaddr:#x}: {len(seg.data)} bytes in {seg.memsz} bytes of memory",
                             "elf_segment_file_size")  # fmt: skip
        if not seg.vaddr >= KERNEL_IMAGE_VADDR or seg.vaddr + seg.memsz > end:
            raise ImageError(f"segment at {seg.vaddr:#x} outside the kernel image region", "elf_segment_region")
    _check_layout(image)
    return image


def check_app_image(data: bytes) -> None:
    """Check an app module: an ELF one against the user half (its kernel maps it), a flat one for size.

    Ring 0 loads a module as bytes and maps it nowhere; the check serves
    ring 1, which refuses a configuration whose apps no kernel could load.
    Rules: image_size (empty), and the ELF rules of :func:`load_image` with
    the user half as the region, plus elf_segment_alignment.

    Errors: ImageError.
    """
    if not data:
        raise ImageError("empty app image", "image_size")
    if is_elf(data):
        _read_elf(data, "app")
