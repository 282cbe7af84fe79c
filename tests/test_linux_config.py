"""A Linux partition in ``partitions.toml``: its fields, their rules, and the modules packed from them.

One negative test per rule (``test_<rule>_rejected``; tests/test_rules.py
holds every rule of ``spgs.rules.RULES`` to it, these included), each
asserting the file, the line, the field and the rule. Then the packing
itself (spgs/rootfs.py): deterministic bytes, the ustar layout the kernel
reads, the cmdline encoding, and what ``spk validate`` says.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spgs.config import load
from spgs.rootfs import MAX_CMDLINE, RootfsError, cmdline, members, pack, resolve
from spgs.system import plan
from spk_tools.cli import app
from tests.test_config import check, line_of, only_problem, problems_of, write

ROOT = Path(__file__).resolve().parent.parent
#: The kernel is the reference one where only ring 1's checks matter: those run before any kernel does.
BASE = """
[[partition]]
name = "sh"
image = "refkernel"
memory = "4MiB"
"""


def linux(tmp_path: Path, extra: str, rootfs: bool = True) -> Path:
    """A description with one Linux partition whose rootfs folder holds ``bin/prog``."""
    if rootfs:
        (tmp_path / "root" / "bin").mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / "bin" / "prog").write_bytes(b"\x7fELF not really")
    return write(tmp_path, BASE + ('rootfs = "root"\n' if rootfs else "") + extra)


def plan_problem(path: Path) -> tuple[str, int | None, str, str]:
    """The one problem planning ``path`` reports (``spk validate`` and ``spk launch`` plan)."""
    from spgs.config import ConfigError

    with pytest.raises(ConfigError) as info:
        plan(load(path))
    assert len(info.value.problems) == 1, info.value.problems
    p = info.value.problems[0]
    return p.file, p.line, p.field, p.rule


# --- field rules -----------------------------------------------------------------------------------


def test_linux_command_path_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["bin/prog"]\n')
    check(only_problem(path), path, line_of(path, "command"), "partition.0.command", "linux_command_path")


def test_linux_empty_arg_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/prog", ""]\n')
    check(only_problem(path), path, line_of(path, "command"), "partition.0.command", "linux_empty_arg")


def test_linux_nul_byte_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/prog", "a\\u0000b"]\n')
    check(only_problem(path), path, line_of(path, "command"), "partition.0.command", "linux_nul_byte")


def test_linux_env_syntax_rejected(tmp_path: Path) -> None:
    for bad in ("NOVALUE", "=x", "1A=2", "A B=c"):
        path = linux(tmp_path, f'command = ["/bin/prog"]\nenv = ["OK=1", "{bad}"]\n')
        check(only_problem(path), path, line_of(path, "env"), "partition.0.env", "linux_env_syntax")


def test_linux_file_path_rejected(tmp_path: Path) -> None:
    for bad in ("bin/x", "/", "/a/../b", "/a//b", "/./a"):
        path = linux(tmp_path, f'command = ["/bin/prog"]\nfiles = {{ "{bad}" = "host" }}\n')
        check(only_problem(path), path, line_of(path, "files"), "partition.0.files", "linux_file_path")


def test_linux_stdin_size_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, f'command = ["/bin/prog"]\nstdin = "{"x" * ((64 << 10) + 1)}"\n')
    check(only_problem(path), path, line_of(path, "stdin"), "partition.0.stdin", "linux_stdin_size")


def test_linux_fields_have_their_toml_types(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = "/bin/prog"\nenv = "A=1"\nstdin = 3\n')
    assert {(p.field, p.rule) for p in problems_of(path)} == {
        ("partition.0.command", "list_type"), ("partition.0.env", "list_type"), ("partition.0.stdin", "string_type"),
    }  # fmt: skip


# --- cross-field rules -------------------------------------------------------------------------------


def test_linux_command_required_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, 'env = ["A=1"]\n')
    check(only_problem(path), path, line_of(path, "rootfs"), "partition.0.rootfs", "linux_command_required")
    path = write(tmp_path, '[[partition]]\nname = "sh"\nimage = "linux"\n')
    check(only_problem(path), path, line_of(path, "image"), "partition.0.image", "linux_command_required")


def test_linux_apps_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/prog"]\napps = ["hello"]\n')
    check(only_problem(path), path, line_of(path, "apps"), "partition.0.apps", "linux_apps")


def test_unknown_rootfs_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'rootfs = "nowhere"\ncommand = ["/bin/prog"]\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, "rootfs"), "partition.0.rootfs", "unknown_rootfs")
    assert "'nowhere' not found" in problem.message
    (tmp_path / "plain.txt").write_text("not a tar\n")
    path = write(tmp_path, BASE + 'rootfs = "plain.txt"\ncommand = ["/bin/prog"]\n')
    check(only_problem(path), path, line_of(path, "rootfs"), "partition.0.rootfs", "unknown_rootfs")


def test_linux_file_missing_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/prog"]\nfiles = { "/bin/tool" = "no-such-file" }\n')
    problem = only_problem(path)
    check(problem, path, line_of(path, "files"), "partition.0.files./bin/tool", "linux_file_missing")
    assert "no-such-file" in problem.message
    path = linux(tmp_path, 'command = ["/bin/prog"]\nfiles = { "/bin/tool" = "root" }\n')  # a folder
    check(only_problem(path), path, line_of(path, "files"), "partition.0.files./bin/tool", "linux_file_missing")


# --- planning: what only packing finds --------------------------------------------------------------


def test_linux_command_missing_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/other"]\n')
    assert plan_problem(path) == (str(path), line_of(path, "command"), "partition.0.command", "linux_command_missing")


def test_rootfs_member_type_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/prog"]\n')
    os.mkfifo(tmp_path / "root" / "fifo")
    assert plan_problem(path) == (str(path), line_of(path, "rootfs"), "partition.0.rootfs", "rootfs_member_type")


def _tar(path: Path, entries: list[tuple[str, bytes | None]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def test_rootfs_path_rejected(tmp_path: Path) -> None:
    _tar(tmp_path / "evil.tar", [("bin/prog", b"x"), ("../escape", b"y")])
    path = write(tmp_path, BASE + 'rootfs = "evil.tar"\ncommand = ["/bin/prog"]\n')
    assert plan_problem(path) == (str(path), line_of(path, "rootfs"), "partition.0.rootfs", "rootfs_path")


def test_rootfs_archive_rejected(tmp_path: Path) -> None:
    _tar(tmp_path / "cut.tar", [("bin/prog", b"x" * 4000)])
    data = (tmp_path / "cut.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:1024])  # a header and part of the file: tarfile still knows it is a tar
    path = write(tmp_path, BASE + 'rootfs = "cut.tar"\ncommand = ["/bin/prog"]\n')
    assert plan_problem(path) == (str(path), line_of(path, "rootfs"), "partition.0.rootfs", "rootfs_archive")


def test_rootfs_conflict_rejected(tmp_path: Path) -> None:
    host = tmp_path / "host.bin"
    host.write_bytes(b"x")
    path = linux(tmp_path, 'command = ["/bin/prog"]\nfiles = { "/bin" = "host.bin" }\n')
    assert plan_problem(path) == (str(path), line_of(path, "files"), "partition.0.files./bin", "rootfs_conflict")


def test_rootfs_name_length_rejected(tmp_path: Path) -> None:
    deep = tmp_path / "root" / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    (deep / ("f" * 30)).write_text("x")
    path = linux(tmp_path, 'command = ["/bin/prog"]\n')
    assert plan_problem(path) == (str(path), line_of(path, "rootfs"), "partition.0.rootfs", "rootfs_name_length")


def test_rootfs_size_rejected(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/prog"]\n')
    (tmp_path / "root" / "big").write_bytes(os.urandom(1024) * (16 * 1024 + 1))
    assert plan_problem(path) == (str(path), line_of(path, "rootfs"), "partition.0.rootfs", "rootfs_size")


def test_linux_cmdline_size_rejected(tmp_path: Path) -> None:
    args = ", ".join(['"' + "a" * 1000 + '"'] * 140)
    path = linux(tmp_path, f'command = ["/bin/prog", {args}]\n')
    assert plan_problem(path) == (str(path), line_of(path, "command"), "partition.0.command", "linux_cmdline_size")


def test_quota_below_boot_size_counts_the_rootfs(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/prog"]\n')
    (tmp_path / "root" / "big").write_bytes(os.urandom(5 << 20))
    assert plan_problem(path) == (str(path), line_of(path, "memory"), "partition.0.memory", "quota_below_boot_size")


# --- the modules ---------------------------------------------------------------------------------------


def test_modules_are_rootfs_cmdline_stdin_in_order(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/prog", "-c", "x y"]\nenv = ["A=1", "B=two=2"]\nstdin = "in\\n"\n')
    (p,) = plan(load(path))
    assert [name for name, _ in p.apps] == ["rootfs", "cmdline", "stdin"]
    assert p.apps[1][1] == b"/bin/prog\0/bin/prog\0-c\0x y\0\0A=1\0B=two=2\0\0"
    assert p.apps[2][1] == b"in\n"
    (p,) = plan(load(linux(tmp_path, 'command = ["/bin/prog"]\n')))
    assert [name for name, _ in p.apps] == ["rootfs", "cmdline"]
    assert p.apps[1][1] == b"/bin/prog\0/bin/prog\0\0\0"


def test_rootfs_is_deterministic_ustar(tmp_path: Path) -> None:
    """Sorted, parents first, mtime/uid/gid 0, no owner names, modes kept; the same bytes whatever the host did."""
    root = tmp_path / "root"
    (root / "b" / "c").mkdir(parents=True)
    (root / "b" / "c" / "f").write_text("deep")
    (root / "a").write_text("top")
    (root / "a").chmod(0o4751)
    (root / "link").symlink_to("a")
    host = tmp_path / "tool"
    host.write_bytes(b"tool")
    host.chmod(0o755)
    first = pack(root, {"/usr/bin/tool": host})
    os.utime(root / "a", (1, 1))  # times and the order of creation do not matter
    assert pack(root, {"/usr/bin/tool": host}) == first
    assert len(first) % 512 == 0 and first[257:263] == b"ustar\0"
    found = members(first)
    assert list(found) == ["a", "b", "b/c", "b/c/f", "link", "tmp", "usr", "usr/bin", "usr/bin/tool"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in found.values()} == {(0, 0, 0, "", "")}
    assert found["a"].mode == 0o4751 and found["usr/bin/tool"].mode == 0o755
    assert found["tmp"].isdir() and found["tmp"].mode == 0o1777 and found["usr"].mode == 0o755
    assert found["link"].issym() and found["link"].linkname == "a"
    assert resolve(first, "/link") is not None and resolve(first, "/b") is None
    # An archive packed again is the same archive: what spk sign signs is what boots.
    (tmp_path / "packed.tar").write_bytes(first)
    assert pack(tmp_path / "packed.tar", {}) == first


def test_tar_rootfs_names_are_normalised(tmp_path: Path) -> None:
    _tar(tmp_path / "r.tar", [("./", None), ("./etc/", None), ("./etc/x", b"1"), ("/abs/y", b"2")])
    assert list(members(pack(tmp_path / "r.tar", {}))) == ["abs", "abs/y", "etc", "etc/x", "tmp"]


def test_long_names_use_the_ustar_prefix(tmp_path: Path) -> None:
    deep = tmp_path / "root" / ("d" * 90) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "file").write_text("x")
    packed = pack(tmp_path / "root", {})
    assert f"{'d' * 90}/{'e' * 60}/file" in members(packed)


def test_cmdline_limit() -> None:
    assert len(cmdline(["/a" * 10], [])) < MAX_CMDLINE
    with pytest.raises(RootfsError) as info:
        cmdline(["/p", "x" * MAX_CMDLINE], [])
    assert info.value.rule == "linux_cmdline_size"


def test_example_rootfs_digest_is_stable() -> None:
    """The example's packed rootfs (busybox from the host over it) measures the same on every launch."""
    (p,) = [q for q in plan(load(ROOT / "examples" / "busybox.toml")) if q.name == "shell"]
    rootfs = dict(p.apps)["rootfs"]
    assert hashlib.sha256(rootfs).digest() == hashlib.sha256(pack(ROOT / "examples/busybox/rootfs", {
        "/bin/busybox": Path("/bin/busybox")})).digest()  # fmt: skip
    assert "bin/busybox" in members(rootfs) and "etc/motd" in members(rootfs)


def test_validate_names_the_linux_problem(tmp_path: Path) -> None:
    path = linux(tmp_path, 'command = ["/bin/other"]\n')
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:{line_of(path, 'command')}: partition.0.command: sh: no file '/bin/other'" in result.output
    assert "[linux_command_missing]" in result.output


# --- secure boot: the rootfs is signed as the archive that boots ---------------------------------------


def test_signed_rootfs_verifies_and_a_folder_is_refused(tmp_path: Path) -> None:
    from spgs.signing import sign_system
    from spgs.system import load_and_plan
    from spgs.trust import keygen

    private, _public = keygen(tmp_path / "keys", "vendor")
    path = linux(tmp_path, 'command = ["/bin/prog"]\nenv = ["A=1"]\nstdin = "x"\n')
    signed = sign_system(path, private, tmp_path / "signed")
    _config, (p,) = load_and_plan(signed.config)
    assert [(v.code, Path(v.path).name) for v in p.verdicts] == [("ok", "refkernel.bin"), ("ok", "rootfs.bin")]
    assert [name for name, _ in p.apps] == ["rootfs", "cmdline", "stdin"]
    assert (tmp_path / "signed" / "images" / "sh" / "app" / "rootfs.bin").read_bytes() == dict(p.apps)["rootfs"]
    golden = (tmp_path / "signed" / "golden.json").read_text()
    assert all(f'"description":"{name}"' in golden for name in ("rootfs", "cmdline", "stdin"))
    # The same description with its rootfs as a folder: secure boot says why it will not boot.
    _config, (p,) = load_and_plan(path, secure_boot="enforce")
    assert p.verdicts[-1].code == "unsigned" and "a folder, packed at launch" in p.verdicts[-1].reason
    # A signed archive changed after signing is tampered.
    archive = tmp_path / "signed" / "images" / "sh" / "app" / "rootfs.bin"
    archive.write_bytes(archive.read_bytes()[:-512] + b"\1" + bytes(511))
    _config, (p,) = load_and_plan(signed.config)
    assert p.verdicts[-1].code == "tampered"


def test_linux_is_a_bundled_kernel_folder() -> None:
    """`image = "linux"` names the folder of C sources partitions/linux/ (spgs/images.py)."""
    from spgs.images import bundled, bundled_source

    assert "linux" in bundled("kernel") and "refkernel" in bundled("kernel")
    assert "adversarial" not in bundled("kernel")  # a folder of assembly sources is no bundled guest
    found = bundled_source("kernel", "linux")
    assert found is not None and found.is_dir() and found.name == "linux"


def test_a_file_under_a_symlinked_folder_names_the_real_one(tmp_path: Path) -> None:
    """A merged-/usr rootfs (bin -> usr/bin): a host file laid over bin/ says to use the real folder."""
    (tmp_path / "root" / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "root" / "usr" / "bin" / "prog").write_text("x")
    (tmp_path / "root" / "bin").symlink_to("usr/bin")
    (tmp_path / "tool").write_text("t")
    path = write(tmp_path, BASE + 'rootfs = "root"\ncommand = ["/bin/prog"]\nfiles = { "/bin/tool" = "tool" }\n')
    assert plan_problem(path) == (str(path), line_of(path, "files"), "partition.0.files./bin/tool", "rootfs_conflict")
    path = write(tmp_path, BASE + 'rootfs = "root"\ncommand = ["/bin/prog"]\nfiles = { "/usr/bin/tool" = "tool" }\n')
    (p,) = plan(load(path))
    assert resolve(dict(p.apps)["rootfs"], "/bin/tool") is not None  # found through the link
