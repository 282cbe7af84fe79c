"""Paravirtual partition lifecycle: declare, build, destroy and restart partitions.

:class:`PvLifecycle` turns a kernel image and its modules into a partition
that can run: it grants the quota, loads and maps the image, data area,
boot stack and start-info page into a fresh boot space, places the
modules, builds the boot context and measures the kernel. It tears a
partition down (every mapping before any table, every table before any
frame) and rebuilds one on its own quota for the health monitor's
restarts. It owns the partition ids: the next free one, and those
declared but not started (``declared``, shared with the machine).

Errors: :class:`spk.errors.ImageError` (a bad image, name or module list,
a quota too small to boot, an undeclared id) and
:class:`spk.errors.OutOfMemory` (no room for the quota) from
:meth:`PvLifecycle.create`; :class:`KeyError` for an unknown partition id.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from spk import abi
from spk._frames import FrameTable, FrameType, GuestFrames, PhysicalMemory, guest_frame
from spk._image import LoadImage, load_image
from spk._paging import AddressSpace, KernelHalf, Walker
from spk._partition import Module, Partition
from spk._reports import Emit
from spk.abi import (
    KERNEL_DATA_SIZE,
    KERNEL_DATA_VADDR,
    KERNEL_STACK_SIZE,
    KERNEL_STACK_TOP,
    PAGE_SHIFT,
    PAGE_SIZE,
    START_INFO_VADDR,
    Register,
)
from spk.errors import ImageError, SpkError

if TYPE_CHECKING:
    from spk._cpu import SpkMemory, Templates
    from spk._engine import Engine
    from spk._world import PvWorldSwitch

_RSP, _RDI = 4, 7
#: Page-table frames of a fresh boot space: PML4, the shared kernel PDPT, and
#: the PD/PT pairs below KERNEL_BASE (image and data, start info, stack).
_BOOT_TABLES = 8


def pages(length: int) -> int:
    """Pages ``length`` bytes take (at least one)."""
    return max(1, -(-length // PAGE_SIZE))


def check_name(name: str) -> None:
    """Errors: ImageError when ``name`` is not 1..SI_NAME_LEN-1 bytes of UTF-8 (every partition's rule)."""
    encoded = name.encode()
    if not encoded or len(encoded) >= abi.SI_NAME_LEN:
        raise ImageError(f"partition name {name!r} must be 1..{abi.SI_NAME_LEN - 1} bytes")


def frames_to_boot(kernel: int | bytes | LoadImage, module_sizes: Sequence[int]) -> int:
    """Frames a partition needs before its kernel runs (see :meth:`spk.Machine.frames_to_boot`).

    Errors: ImageError for an image :func:`spk.load_image` refuses.
    """
    image_pages = pages(kernel) if isinstance(kernel, int) else load_image(kernel).pages
    total = image_pages + KERNEL_DATA_SIZE // PAGE_SIZE + KERNEL_STACK_SIZE // PAGE_SIZE + 1
    total += sum(pages(size) for size in module_sizes)
    return total + _BOOT_TABLES


class PvLifecycle:
    """Creates, destroys and restarts the paravirtual partitions of one machine.

    ``partitions`` and ``declared`` are the machine's own tables (the same
    objects, changed in place); the world switch is told when a partition
    it may hold leaves; ``emit`` reports created/destroyed/restarted.
    """

    def __init__(
        self,
        *,
        frames: FrameTable,
        ram: PhysicalMemory,
        engine: Engine,
        walker: Walker,
        spk: SpkMemory,
        templates: Templates,
        world: PvWorldSwitch,
        partitions: dict[int, Partition],
        declared: dict[int, str],
        emit: Emit,
    ) -> None:
        self._frames = frames
        self._ram = ram
        self._engine = engine
        self._walker = walker
        self._spk_pdpt = spk.spk_pdpt
        self._templates = templates
        self._world = world
        self._partitions = partitions
        self._declared = declared
        self._emit = emit
        #: the id the next undeclared partition gets
        self.next_pid = 1

    def declare(self, name: str) -> int:
        """Reserve a partition id for a partition that is not started yet."""
        pid = self.next_pid
        self.next_pid += 1
        self._declared[pid] = name
        return pid

    def claim_id(self, name: str, pid: int | None) -> int:
        """The id a new partition ``name`` gets: the next one, or ``pid`` declared under that name.

        Errors: ImageError when ``pid`` is not declared under ``name``.
        """
        if pid is None:
            pid = self.next_pid
            self.next_pid += 1
        elif self._declared.get(pid) != name:
            raise ImageError(f"{name}: partition {pid} is not declared under that name")
        return pid

    def create(
        self,
        name: str,
        kernel_image: bytes | LoadImage,
        modules: Sequence[tuple[str, bytes]],
        quota_frames: int,
        *,
        frame_hint: int,
        exact_placement: bool,
        kernel_name: str,
        config_digest: bytes | None,
        pid: int | None,
        may_manage: bool,
    ) -> int:
        """Create a partition (see :meth:`spk.Machine.create_partition`); returns its id.

        Errors: ImageError, OutOfMemory (nothing is left granted then).
        """
        check_name(name)
        try:
            image = load_image(kernel_image)
        except ImageError as exc:
            raise ImageError(f"{name}: {exc}", exc.rule) from None
        if len(modules) > abi.SI_MAX_MODULES:
            raise ImageError(f"{name}: {len(modules)} modules (max {abi.SI_MAX_MODULES})")
        needed = frames_to_boot(image, [len(b) for _, b in modules])
        if quota_frames < needed:
            raise ImageError(f"{name}: quota of {quota_frames} frames < {needed} needed to boot")
        pid = self.claim_id(name, pid)
        self._frames.grant(pid, quota_frames, frame_hint, exact=exact_placement)
        try:
            partition = self._build(pid, name, image, modules, quota_frames)
        except SpkError:
            self._frames.reclaim(pid)
            raise
        self._declared.pop(pid, None)
        partition.may_manage = may_manage
        self._partitions[pid] = partition
        if config_digest is not None:
            partition.measurements.extend(Register.CONFIG, config_digest, "config", "system description")
        kernel_digest = hashlib.sha256(image.measured).digest()
        partition.measurements.extend(Register.KERNEL, kernel_digest, "kernel_image", kernel_name)
        self._emit(partition, "created", {"quota": quota_frames, "modules": [m for m, _ in modules]})
        return pid

    def _build(
        self,
        pid: int,
        name: str,
        image: LoadImage,
        modules: Sequence[tuple[str, bytes]],
        quota: int,
        guest_frames: GuestFrames | None = None,
    ) -> Partition:
        kernel = KernelHalf(pid, self._frames)
        space = self._address_space(pid, kernel)
        for segment in image.segments:
            for va, page in segment.pages():
                self._load_pages(space, va, page, write=segment.writable, execute=segment.executable)
        # Data and stack are never executable: stores to them run at engine speed (spk._coherence).
        self._load_pages(space, KERNEL_DATA_VADDR, bytes(KERNEL_DATA_SIZE), write=True, execute=False)
        stack_base = KERNEL_STACK_TOP - KERNEL_STACK_SIZE
        self._load_pages(space, stack_base, bytes(KERNEL_STACK_SIZE), write=True, execute=False)
        loaded: list[Module] = []
        for mod_name, blob in modules:
            count = pages(len(blob))
            first = self._frames.pool_take(pid, FrameType.DATA, contiguous=count)
            self._ram.write(first << PAGE_SHIFT, blob)
            loaded.append(Module(mod_name, guest_frame(guest_frames, first), count, len(blob)))
        info = self._start_info(pid, name, quota, loaded)
        self._load_pages(space, START_INFO_VADDR, info, write=False, execute=False)
        context = self._engine.new_context()
        context.copy_from(self._templates.cpl2)
        context.load_gprs([0] * 16)
        context.set_gpr(_RSP, KERNEL_STACK_TOP)
        context.set_gpr(_RDI, START_INFO_VADDR)
        context.rip = image.entry
        context.cr3 = space.cr3
        self._engine.flush_code()
        return Partition(
            pid=pid, name=name, quota=quota, kernel=kernel, spaces={0: space},
            context=context, modules=loaded, image=image, guest_frames=guest_frames,
        )  # fmt: skip

    def _start_info(self, pid: int, name: str, quota: int, modules: list[Module]) -> bytes:
        info = bytearray(PAGE_SIZE)
        struct.pack_into(
            "<6Q", info, 0, abi.START_INFO_MAGIC, abi.ABI_VERSION, pid, len(modules),
            quota, self._frames.pool_free_count(pid) - 1,
        )  # fmt: skip
        info[abi.SI_NAME : abi.SI_NAME + len(name.encode())] = name.encode()
        for i, mod in enumerate(modules):
            base = abi.SI_MODULES + i * abi.SI_MODULE_SIZE
            struct.pack_into("<3Q", info, base, mod.first_mfn, mod.pages, mod.size)
            encoded = mod.name.encode()[: abi.SI_NAME_LEN - 1]
            info[base + abi.SIM_NAME : base + abi.SIM_NAME + len(encoded)] = encoded
        return bytes(info)

    def _load_pages(self, space: AddressSpace, va: int, data: bytes, *, write: bool, execute: bool) -> None:
        for offset in range(0, len(data), PAGE_SIZE):
            mfn = self._frames.pool_take(space.owner, FrameType.DATA)
            self._ram.write(mfn << PAGE_SHIFT, data[offset : offset + PAGE_SIZE])
            space.map(va + offset, mfn, write, False, execute)

    def new_space(self, p: Partition) -> AddressSpace:
        """A fresh address space of ``p`` (used by ASPACE_CREATE)."""
        return self._address_space(p.pid, p.kernel)

    def _address_space(self, pid: int, kernel: KernelHalf) -> AddressSpace:
        """A new space of partition ``pid``, wired to the world's TLB flushes (all of it, or one page)."""
        world = self._world
        return AddressSpace(pid, self._frames, kernel, self._spk_pdpt, world.cr3_changed, world.page_unmapped)

    def destroy(self, pid: int, event: str) -> int:
        """Tear partition ``pid`` down (see :meth:`spk.Machine.destroy_partition`); returns the frames freed."""
        p = self._partitions[pid]
        for port in p.ports.values():  # its queues must not fill up and block the senders
            if port in port.channel.destinations:
                port.channel.destinations.remove(port)
        for space in p.spaces.values():
            for va, _leaf in list(space.leaves()):
                space.unmap(va)
        p.spaces.clear()
        p.context.free()
        del self._partitions[pid]
        self._world.partition_gone(p)
        self._emit(p, event, {})
        self._declared[pid] = p.name  # it may be started again
        return self._frames.reclaim(pid)

    def reset(
        self,
        pid: int,
        kernel_image: bytes | LoadImage,
        modules: Sequence[tuple[str, bytes]],
        *,
        warm: bool,
        kernel_name: str,
        config_digest: bytes | None,
    ) -> None:
        """Restart partition ``pid`` on its own quota (see :meth:`spk.Machine.reset_partition`).

        Errors: ImageError (a bad image: the partition is left as it was).
        """
        image = load_image(kernel_image)
        old = self._partitions[pid]
        data = self._read_kernel_data(old) if warm else None
        for space in old.spaces.values():
            for va, _leaf in list(space.leaves()):
                space.unmap(va)
        self._frames.reset_pool(pid)
        self._world.cr3_changed()
        self._engine.flush_code()
        new = self._build(pid, old.name, image, modules, old.quota, old.guest_frames)
        old.context.free()  # only now: had the build failed, the old state would still be whole
        new.ports, new.may_manage = old.ports, old.may_manage
        new.counters, new.restarts = old.counters, old.restarts + 1
        for port in new.ports.values():
            port.queue.clear()
        if warm and data is not None:
            new.measurements = old.measurements
            for va, content in data:
                page = self._walker.translate(new.spaces[0].cr3, va)
                if page is not None:
                    self._ram.write(page.paddr, content)
        else:
            if config_digest is not None:
                new.measurements.extend(Register.CONFIG, config_digest, "config", "system description")
            new.measurements.extend(
                Register.KERNEL, hashlib.sha256(image.measured).digest(), "kernel_image", kernel_name
            )
        self._partitions[pid] = new
        self._emit(new, "restarted", {"warm": warm, "restarts": new.restarts})

    def _read_kernel_data(self, p: Partition) -> list[tuple[int, bytes]]:
        """The kernel's mutable pages, by address: its data area and, for a
        segmented image, its writable, non-executable segments (kept by a
        warm restart; a flat image is code and data in one, and is not)."""
        addresses = [KERNEL_DATA_VADDR + offset for offset in range(0, KERNEL_DATA_SIZE, PAGE_SIZE)]
        if p.image is not None:
            for seg in p.image.segments:
                if seg.writable and not seg.executable:
                    addresses += range(seg.first_page, seg.end_page, PAGE_SIZE)
        out = []
        for va in addresses:
            tr = self._walker.translate(p.spaces[0].cr3, va)
            out.append((va, self._ram.read(tr.paddr, PAGE_SIZE) if tr is not None else bytes(PAGE_SIZE)))
        return out
