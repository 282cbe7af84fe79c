"""C guests: the SDK, ELF images by segment, reproducible builds, symbols, the C reference kernel."""

from __future__ import annotations

import re
import shutil
import struct
import textwrap
from pathlib import Path

import pytest

from spgs.cbuild import BuildError, _compile, build_c, program_sources, sdk_root
from spgs.config import ConfigError
from spgs.elfimage import symbols_of
from spgs.system import System, load_and_plan
from spk import ImageError, LoadImage, Machine, Segment, check_app_image, load_image
from spk.abi import KERNEL_DATA_VADDR, KERNEL_IMAGE_VADDR, c_header
from tests.guests import Recorder, bundled, run_until_done

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def refkernel() -> bytes:
    return bundled("kernel", "refkernel")


def test_the_sdk_header_is_generated_from_spk_abi() -> None:
    committed = (ROOT / "spk_sdk" / "include" / "spk" / "abi.h").read_text()
    assert committed == c_header(), "spk_sdk/include/spk/abi.h drifted: `spk sdk-header > spk_sdk/include/spk/abi.h`"


def test_a_build_is_the_same_bytes_from_another_folder(tmp_path: Path) -> None:
    """Reproducible: neither the checkout's path nor the scratch folder reaches the ELF (no cache here)."""
    copy = tmp_path / "elsewhere" / "deep" / "refkernel.c"
    copy.parent.mkdir(parents=True)
    shutil.copy(ROOT / "partitions" / "refkernel.c", copy)
    first = _compile("kernel", "refkernel", program_sources(ROOT / "partitions" / "refkernel.c"))
    second = _compile("kernel", "refkernel", program_sources(copy))
    assert first == second
    assert str(tmp_path).encode() not in second and str(ROOT).encode() not in first
    assert b".note.gnu.build-id" not in first


def test_a_kernel_elf_is_loaded_by_segment_with_its_permissions(refkernel: bytes) -> None:
    image = load_image(refkernel)
    assert image.measured == refkernel and image.entry == KERNEL_IMAGE_VADDR
    perms = [(s.writable, s.executable) for s in image.segments]
    assert (False, True) in perms and (True, False) in perms and (True, True) not in perms
    m = Machine(8 << 20)
    pid = m.create_partition("k", refkernel, [], 64)
    space = m.partitions[pid].spaces[0]
    for seg in image.segments:
        for va, _page in seg.pages():
            leaf = space.lookup_leaf(va)
            assert leaf is not None and bool(leaf & 2) == seg.writable, hex(va)  # code never writable


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


PHDR = 64  # the SDK's linker script puts the program headers right after the ELF header


@pytest.mark.parametrize(
    ("patch", "rule"),
    [
        (lambda d: d[:40], "elf_malformed"),
        (lambda d: _patched(d, 4, "<B", 1), "elf_class"),
        (lambda d: _patched(d, 18, "<H", 3), "elf_machine"),
        (lambda d: _patched(d, 16, "<H", 3), "elf_type"),
        (lambda d: _patched(_patched(_patched(d, PHDR, "<I", 0), PHDR + 56, "<I", 0), PHDR + 112, "<I", 0),
         "elf_no_segment"),
        (lambda d: _patched(d, PHDR + 32, "<Q", 1 << 40), "elf_segment_file_size"),
        (lambda d: _patched(d, PHDR + 16, "<Q", 0x1000), "elf_segment_region"),
        (lambda d: _patched(d, PHDR + 4, "<I", 7), "elf_writable_code"),
        (lambda d: _patched(d, 24, "<Q", KERNEL_IMAGE_VADDR + 0x7_0000), "elf_entry"),
        (lambda d: _patched(d, PHDR + 56 + 16, "<Q", KERNEL_IMAGE_VADDR + 0x10), "elf_segment_overlap"),
        (lambda d: b"", "image_size"),
    ],
)  # fmt: skip
def test_each_way_a_kernel_image_is_wrong_has_its_rule(refkernel: bytes, patch: object, rule: str) -> None:
    assert callable(patch)
    with pytest.raises(ImageError) as caught:
        load_image(patch(refkernel))
    assert caught.value.rule == rule, caught.value
    with pytest.raises(ImageError):  # ring 0 refuses it too, and nothing is created
        Machine(8 << 20).create_partition("k", patch(refkernel), [], 64)


def test_a_segmented_image_is_checked_by_ring_0_too() -> None:
    seg = Segment(KERNEL_IMAGE_VADDR, b"\xeb\xfe", 2, False, True)
    with pytest.raises(ImageError) as caught:
        load_image(LoadImage((seg, Segment(KERNEL_IMAGE_VADDR + 8, b"", 8, True, False)), seg.vaddr, b""))
    assert caught.value.rule == "elf_segment_overlap"
    with pytest.raises(ImageError) as caught:
        load_image(LoadImage((Segment(KERNEL_DATA_VADDR + 0x8_0000, b"\xeb\xfe", 2, False, True),), 0, b""))
    assert caught.value.rule == "elf_segment_region"


def test_an_app_elf_is_checked_against_the_user_half(refkernel: bytes) -> None:
    check_app_image(bundled("app", "hello"))
    with pytest.raises(ImageError) as caught:
        check_app_image(refkernel)  # a kernel's segments are not in the user half
    assert caught.value.rule == "elf_segment_region"
    hello = bundled("app", "hello")
    with pytest.raises(ImageError) as caught:
        check_app_image(_patched(hello, PHDR + 8, "<Q", 0x1008))  # file offset no longer page-congruent
    assert caught.value.rule == "elf_segment_alignment"


def test_a_config_naming_a_bad_elf_is_refused_with_file_line_field_and_rule(tmp_path: Path, refkernel: bytes) -> None:
    (tmp_path / "bad.elf").write_bytes(_patched(refkernel, PHDR + 4, "<I", 7))
    config = tmp_path / "s.toml"
    config.write_text('[system]\nmemory = "8MiB"\n\n[[partition]]\nname = "a"\nimage = "bad.elf"\n')
    with pytest.raises(ConfigError) as caught:
        load_and_plan(config)
    [problem] = caught.value.problems
    assert (problem.line, problem.field, problem.rule) == (6, "partition.0.image", "elf_writable_code")


def test_a_c_program_that_does_not_compile_names_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "broken.c").write_text("int main(void) {\n    return missing;\n}\n")
    with pytest.raises(BuildError) as caught:
        build_c("app", "broken", program_sources(tmp_path / "broken.c"))
    assert "broken/broken.c:2" in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match=r"needs at least one \.c file"):
        program_sources(tmp_path / "empty")


def test_symbols_name_function_and_line(refkernel: bytes) -> None:
    symbols = symbols_of(refkernel)
    assert symbols is not None
    entry = symbols.describe(KERNEL_IMAGE_VADDR)
    assert entry is not None and entry.startswith("_start+0x0 (kernel_start.S:")
    assert symbols_of(b"\xeb\xfe") is None


def test_app_data_and_bss_are_private_copies_and_rules_are_kept_by_the_guest_loader() -> None:
    """The SDK loader maps code from the module, copies .data, zeroes .bss, per app."""
    rec = Recorder()
    app = build_c("app", "data", [("data.c", textwrap.dedent("""
        #include "spk/app.h"
        static long counter = 41;
        static char zeros[5000];
        int main(void) {
            counter++;
            long sum = 0;
            for (unsigned i = 0; i < sizeof zeros; i++) sum += zeros[i];
            zeros[0] = 1;
            printf("data: counter %ld, bss sum %ld\\n", counter, sum);
            return 0;
        }
    """).encode())])  # fmt: skip
    m = Machine(16 << 20, on_event=rec)
    pid = m.create_partition("p", bundled("kernel", "refkernel"), [("one", app), ("two", app)], 256)
    run_until_done(m, [pid])
    assert rec.lines("p").count("data: counter 42, bss sum 0") == 2  # two apps, one module, private data each
    assert m.info(pid).exit_code == 0
    m.check_invariants()


def test_a_module_its_kernel_cannot_load_is_skipped_and_the_others_run() -> None:
    rec = Recorder()
    hello = bundled("app", "hello")
    broken = _patched(hello, 18, "<H", 3)  # not x86-64: the guest loader refuses it
    m = Machine(16 << 20, on_event=rec)
    pid = m.create_partition("p", bundled("kernel", "refkernel"), [("broken", broken), ("hello", hello)], 256)
    run_until_done(m, [pid])
    lines = rec.lines("p")
    assert "refkernel: loading broken failed: not an x86-64 ELF64 executable (-1)" in lines
    assert "hello from ring 3" in lines and m.info(pid).exit_code == 0


def test_a_fault_in_a_c_kernel_is_reported_by_function_and_line(tmp_path: Path) -> None:
    (tmp_path / "crash").mkdir()
    (tmp_path / "crash" / "crash.c").write_text(textwrap.dedent("""
        #include "spk/kernel.h"
        __attribute__((noinline)) static void fall(volatile uint64_t *p) {
            *p = 1;
        }
        long kmain(const struct spk_start_info *si) {
            (void)si;
            fall(0);
            return 0;
        }
    """))  # fmt: skip
    config = tmp_path / "s.toml"
    config.write_text('[system]\nmemory = "8MiB"\nmax_ticks = 50_000\n\n[[partition]]\nname = "a"\nimage = "crash/"\n'
                      '[partition.health]\nmemory_violation = "halt"\n')  # fmt: skip
    loaded, plans = load_and_plan(config)
    rec = Recorder()
    System(loaded, plans, rec).run(50_000)
    [fault] = rec.of("kernel_fault")
    assert str(fault.args["where"]).startswith("fall") and "(crash.c:4)" in str(fault.args["where"])


def test_a_warm_restart_keeps_the_kernels_writable_segments(refkernel: bytes) -> None:
    m = Machine(8 << 20)
    pid = m.create_partition("k", refkernel, [], 64)
    data = next(s for s in load_image(refkernel).segments if s.writable)
    page = m.walker.translate(m.partitions[pid].spaces[0].cr3, data.vaddr)
    assert page is not None
    m.ram.write(page.paddr, b"kept")
    m.reset_partition(pid, refkernel, [], warm=True)
    page = m.walker.translate(m.partitions[pid].spaces[0].cr3, data.vaddr)
    assert page is not None and m.ram.read(page.paddr, 4) == b"kept"
    m.reset_partition(pid, refkernel, [])
    page = m.walker.translate(m.partitions[pid].spaces[0].cr3, data.vaddr)
    assert page is not None and m.ram.read(page.paddr, 4) == bytes(4)


def test_no_guest_helper_is_repeated_across_guests() -> None:
    """Every C guest shares the SDK's libc and loader: no guest defines a function the SDK provides."""
    sdk_sources = [p for p in (ROOT / "spk_sdk" / "lib").glob("*.c")]
    definition = re.compile(r"^[A-Za-z_][\w \t\*]*?\b(\w+)\s*\([^;{]*\)\s*\{", re.MULTILINE)
    provided = {name for p in sdk_sources for name in definition.findall(p.read_text())}
    assert {"memcpy", "vsnprintf", "kprintf", "printf", "spk_app_load"} <= provided
    guests = [*(ROOT / "partitions").glob("*.c"), *(ROOT / "apps").glob("*.c"), *(ROOT / "examples").rglob("*.c")]
    assert guests and (sdk_root() / "lib" / "string.c").is_file()
    for source in guests:
        again = provided & set(definition.findall(source.read_text())) - {"main", "kmain"}
        assert not again, f"{source.name} defines {sorted(again)}: use the SDK's"
