"""docs/abi.md against the code: hypercalls, errors, status codes, constants.

The document is the guest-visible ABI; ``spk.abi`` and
``spk._hypercalls.TABLE`` are what the SPK does. These tests fail when one
changes without the other: a hypercall added, renumbered or given a new
error without its section being updated, a status code or an ABI constant
changed, an argument added.

The document's conventions (stated at its top):

* one ``### N NAME`` heading per hypercall, in number order, inside the
  ``## Hypercalls`` section;
* in each section, list items ``- Arguments:``, ``- Result:``, ``- Errors:``;
  ``Errors:`` is ``none`` or followed by a table whose first column is a
  status name;
* in any table whose first cell is a backticked ABI constant and whose second
  cell is a number, the number is the constant's value.

The checkers return a list of problems so that they can also be run against
deliberately broken documents (the last tests), proving they catch drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from spk import _hypercalls as hypercalls
from spk import _machine as machine
from spk import abi
from spk.abi import Hypercall, Status

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "abi.md"
ARG_REGISTERS = ("rdi", "rsi", "rdx", "r10", "r8")

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_HC_HEADING = re.compile(r"^(\d+) ([A-Z][A-Z0-9_]*)$")
_ITEM = re.compile(r"^- (Arguments|Result|Errors):\s*(.*?)\s*$")
_ARG = re.compile(r"`([A-Za-z_]\w*)` \(([a-z0-9]+)\)")
_NAME_CELL = re.compile(r"^`([A-Z][A-Z0-9_]*)`$")


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    level: int
    title: str
    lines: tuple[str, ...]  # body lines up to the next heading of any level


def sections(text: str) -> list[Section]:
    """Split markdown into sections at every heading (fenced code ignored)."""
    out: list[Section] = []
    level, title = 0, ""
    body: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            out.append(Section(level, title, tuple(body)))
            level, title, body = len(match.group(1)), match.group(2), []
        else:
            body.append(line)
    out.append(Section(level, title, tuple(body)))
    return out


def split_row(line: str) -> list[str]:
    """Cells of a markdown table row (``\\|`` is a literal bar)."""
    inner = line.strip()
    inner = inner.removeprefix("|").removesuffix("|")
    cells = re.split(r"(?<!\\)\|", inner)
    return [c.strip().replace("\\|", "|") for c in cells]


def tables(lines: tuple[str, ...] | list[str]) -> list[list[list[str]]]:
    """Every table in ``lines``: a list of rows (header first, separator dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*lines, ""]:
        if line.strip().startswith("|"):
            row = split_row(line)
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in row if c):
                current.append(row)
        elif current:
            found.append(current)
            current = []
    return found


def table_after(lines: tuple[str, ...], index: int) -> list[list[str]] | None:
    """The table starting after ``lines[index]`` (blank lines skipped), or None."""
    i = index + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    rows: list[str] = []
    while i < len(lines) and lines[i].strip().startswith("|"):
        rows.append(lines[i])
        i += 1
    found = tables(rows)
    return found[0] if found else None


def parse_int(cell: str) -> int | None:
    text = cell.strip().strip("`").replace("_", "")
    if re.fullmatch(r"-?0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return None


@dataclass(frozen=True)
class DocHypercall:
    number: int
    name: str
    args: tuple[tuple[str, str], ...] | None  # None: no Arguments item
    has_result: bool
    errors: tuple[str, ...] | None  # None: no (parseable) Errors item
    problems: tuple[str, ...]


def hypercall_sections(text: str) -> tuple[list[DocHypercall], list[str]]:
    """The ``### N NAME`` sections, and structural problems found on the way."""
    problems: list[str] = []
    found: list[DocHypercall] = []
    in_hypercalls = False
    for sec in sections(text):
        if sec.level <= 2:
            in_hypercalls = sec.level == 2 and sec.title == "Hypercalls"
            continue
        match = _HC_HEADING.match(sec.title) if sec.level == 3 else None
        if not in_hypercalls:
            if match:
                problems.append(f"hypercall heading '### {sec.title}' outside '## Hypercalls'")
            continue
        if sec.level != 3:
            continue
        if not match:
            problems.append(f"heading '### {sec.title}' in '## Hypercalls' is not of the form '### N NAME'")
            continue
        found.append(_parse_hypercall(int(match.group(1)), match.group(2), sec.lines))
    if not found:
        problems.append("no '### N NAME' hypercall section under '## Hypercalls'")
    return found, problems


def _parse_hypercall(number: int, name: str, lines: tuple[str, ...]) -> DocHypercall:
    where = f"### {number} {name}"
    problems: list[str] = []
    items: dict[str, list[tuple[int, str]]] = {}
    for i, line in enumerate(lines):
        match = _ITEM.match(line)
        if match:
            items.setdefault(match.group(1), []).append((i, match.group(2)))
    for key in ("Arguments", "Result", "Errors"):
        if len(items.get(key, [])) > 1:
            problems.append(f"{where}: more than one '- {key}:' item")

    args: tuple[tuple[str, str], ...] | None = None
    if "Arguments" in items:
        value = items["Arguments"][0][1]
        pairs = tuple(_ARG.findall(value))
        if not pairs and not re.fullmatch(r"none\.?", value):
            problems.append(f"{where}: Arguments item is neither 'none' nor `name` (register) pairs: {value!r}")
        args = pairs

    errors: tuple[str, ...] | None = None
    if "Errors" in items:
        index, value = items["Errors"][0]
        if re.fullmatch(r"none\.?", value):
            errors = ()
        elif value:
            problems.append(f"{where}: Errors item must be 'none' or empty and followed by a table: {value!r}")
        else:
            table = table_after(lines, index)
            if table is None or len(table) < 2:
                problems.append(f"{where}: 'Errors:' is not followed by a table with at least one row")
            else:
                names = []
                for row in table[1:]:
                    cell = _NAME_CELL.match(row[0])
                    if cell is None:
                        problems.append(f"{where}: errors table row does not start with a `STATUS`: {row[0]!r}")
                    else:
                        names.append(cell.group(1))
                errors = tuple(names)
    return DocHypercall(number, name, args, "Result" in items, errors, tuple(problems))


def status_table(text: str) -> list[list[str]] | None:
    for sec in sections(text):
        if sec.level == 2 and sec.title == "Status codes":
            found = tables(sec.lines)
            return found[0] if found else None
    return None


def iret_frame_table(text: str) -> list[list[str]] | None:
    for sec in sections(text):
        if sec.level == 2 and sec.title == "IRET frame":
            found = tables(sec.lines)
            return found[0] if found else None
    return None


# ---------------------------------------------------------------------------
# Checks (each returns a list of problems; empty means the doc agrees)
# ---------------------------------------------------------------------------
def check_hypercalls(text: str, table: dict[int, hypercalls.HypercallSpec]) -> list[str]:
    """Headings <-> TABLE (no missing, no extra, in order), arguments, errors."""
    documented, problems = hypercall_sections(text)
    numbers = [h.number for h in documented]
    if numbers != sorted(numbers):
        problems.append(f"hypercall sections are not in number order: {numbers}")
    seen: set[int] = set()
    for h in documented:
        problems.extend(h.problems)
        where = f"### {h.number} {h.name}"
        if h.number in seen:
            problems.append(f"{where}: hypercall {h.number} documented twice")
            continue
        seen.add(h.number)
        spec = table.get(h.number)
        if spec is None:
            problems.append(f"{where}: no hypercall {h.number} in spk._hypercalls.TABLE")
            continue
        if spec.number.name != h.name:
            problems.append(f"{where}: TABLE calls hypercall {h.number} {spec.number.name}")
        # arguments: names in order, in the convention's registers
        if h.args is None:
            problems.append(f"{where}: no '- Arguments:' item")
        else:
            names = tuple(a for a, _ in h.args)
            regs = tuple(r for _, r in h.args)
            if names != spec.args:
                problems.append(f"{where}: arguments {names} but TABLE has {spec.args}")
            if regs != ARG_REGISTERS[: len(regs)]:
                problems.append(f"{where}: argument registers {regs}, expected {ARG_REGISTERS[: len(regs)]}")
        if not h.has_result:
            problems.append(f"{where}: no '- Result:' item")
        # errors: exactly the TABLE entry's, each once
        if h.errors is None:
            problems.append(f"{where}: no parseable '- Errors:' item")
            continue
        unknown = [e for e in h.errors if e not in Status.__members__]
        if unknown:
            problems.append(f"{where}: unknown status names {unknown}")
        duplicated = sorted({e for e in h.errors if h.errors.count(e) > 1})
        if duplicated:
            problems.append(f"{where}: errors listed more than once: {duplicated}")
        want = {s.name for s in spec.errors}
        got = set(h.errors)
        if got - want:
            problems.append(f"{where}: documents {sorted(got - want)}, not in the TABLE entry's errors")
        if want - got:
            problems.append(f"{where}: TABLE entry's errors {sorted(want - got)} are not documented")
    for number in sorted(set(table) - seen):
        problems.append(f"hypercall {number} {table[number].number.name} has no '### {number} ...' section")
    return problems


def check_status_codes(text: str) -> list[str]:
    table = status_table(text)
    if table is None:
        return ["no table under '## Status codes'"]
    problems: list[str] = []
    header = [c.lower() for c in table[0]]
    if header[:2] != ["status", "code"]:
        problems.append(f"status table header starts {table[0][:2]}, expected status | code")
    documented: dict[str, int] = {}
    for row in table[1:]:
        cell = _NAME_CELL.match(row[0])
        value = parse_int(row[1]) if len(row) > 1 else None
        if cell is None or value is None:
            problems.append(f"status table row not `NAME` | code: {row}")
            continue
        if cell.group(1) in documented:
            problems.append(f"status {cell.group(1)} listed twice")
        documented[cell.group(1)] = value
        if "rax" in header and value:
            rax = parse_int(row[header.index("rax")])
            if rax != -value:
                problems.append(f"status {cell.group(1)}: rax column {row[header.index('rax')]!r}, expected {-value}")
    code = {s.name: int(s) for s in Status}
    for name in sorted(set(code) - set(documented)):
        problems.append(f"status {name} = {code[name]} is not documented")
    for name in sorted(set(documented) - set(code)):
        problems.append(f"status {name} is documented but not in spk.abi.Status")
    for name in sorted(set(code) & set(documented)):
        if code[name] != documented[name]:
            problems.append(f"status {name}: doc says {documented[name]}, code says {code[name]}")
    return problems


def known_constants() -> dict[str, int]:
    """Every integer constant a guest sees by name, with its value."""
    values: dict[str, int] = {}
    for module in (abi, hypercalls, machine):
        for name, value in vars(module).items():
            if re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and type(value) is int:
                values.setdefault(name, value)
    for line in abi.asm_equates().splitlines():
        match = re.fullmatch(r"\.equ (\w+), (-?(?:0x[0-9a-fA-F]+|\d+))", line)
        assert match, f"unexpected asm_equates line {line!r}"
        values.setdefault(match.group(1), int(match.group(2), 0))
    return values


#: Constants the document must give a value for (in a constant table).
REQUIRED_CONSTANTS = (
    "ABI_VERSION", "PAGE_SIZE", "HYPERCALL_VECTOR", "SYSCALL_VECTOR",
    "USER_BASE", "USER_END", "KERNEL_BASE", "KERNEL_END", "SPK_BASE", "GDT_VADDR",
    "KERNEL_IMAGE_VADDR", "KERNEL_IMAGE_MAX", "KERNEL_DATA_VADDR", "KERNEL_DATA_SIZE",
    "START_INFO_VADDR", "KERNEL_STACK_TOP", "KERNEL_STACK_SIZE", "APP_IMAGE_VADDR",
    "START_INFO_MAGIC", "SI_MAGIC", "SI_ABI_VERSION", "SI_PARTITION_ID", "SI_MODULE_COUNT",
    "SI_QUOTA_FRAMES", "SI_FREE_FRAMES", "SI_NAME", "SI_NAME_LEN", "SI_MODULES",
    "SI_MODULE_SIZE", "SI_MAX_MODULES", "SIM_FIRST_MFN", "SIM_PAGES", "SIM_BYTES", "SIM_NAME",
    "IRET_FRAME_SIZE", "TRAP_FRAME_SIZE", "APP_FRAME_WORDS", "APP_FRAME_SIZE",
    "RFLAGS_USER_MASK", "RFLAGS_FIXED", "MAP_WRITE", "MAP_USER", "MAP_NO_EXEC", "MAP_FLAGS_VALID",
    "SEL_KERNEL_CODE0", "SEL_KERNEL_DATA0", "SEL_GUEST_CODE", "SEL_GUEST_DATA",
    "SEL_USER_CODE", "SEL_USER_DATA", "PF_PRESENT", "PF_WRITE", "PF_USER", "PF_FETCH",
    "MAX_SPACES", "CONSOLE_MAX", "CONSOLE_LINE_MAX",
)  # fmt: skip


def check_constants(text: str, values: dict[str, int]) -> list[str]:
    problems: list[str] = []
    documented: set[str] = set()
    for table in tables(text.splitlines()):
        for row in table[1:]:
            if len(row) < 2:
                continue
            cell = _NAME_CELL.match(row[0])
            value = parse_int(row[1])
            if cell is None or value is None or cell.group(1) not in values:
                continue
            name = cell.group(1)
            documented.add(name)
            if values[name] != value:
                problems.append(f"constant {name}: doc says {row[1]}, code says {values[name]:#x}")
    for name in REQUIRED_CONSTANTS:
        if name not in documented:
            problems.append(f"constant {name} has no row `{name}` | value in any table")
    return problems


def check_iret_frame(text: str) -> list[str]:
    table = iret_frame_table(text)
    if table is None:
        return ["no table under '## IRET frame'"]
    want = [*abi.GPR_ORDER, "rip", "rflags"]
    got = [(parse_int(r[0]), r[1].strip("`")) for r in table[1:] if len(r) >= 2]
    expected = list(enumerate(want))
    if got != expected:
        return [f"IRET frame table {got} != {expected}"]
    if len(want) != abi.APP_FRAME_WORDS:
        return [f"GPR_ORDER + rip + rflags is {len(want)} words, APP_FRAME_WORDS is {abi.APP_FRAME_WORDS}"]
    return []


# ---------------------------------------------------------------------------
# Tests against the real document and code
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def doc() -> str:
    return DOC_PATH.read_text(encoding="utf-8")


def test_doc_states_version(doc: str) -> None:
    first = doc.splitlines()[0]
    assert first == f"# The SPK guest ABI, version {abi.ABI_MAJOR}.{abi.ABI_MINOR}"


def test_every_hypercall_is_documented_exactly(doc: str) -> None:
    assert check_hypercalls(doc, hypercalls.TABLE) == []


def test_status_codes_match(doc: str) -> None:
    assert check_status_codes(doc) == []


def test_constants_match(doc: str) -> None:
    assert check_constants(doc, known_constants()) == []


def test_iret_frame_matches(doc: str) -> None:
    assert check_iret_frame(doc) == []


def test_hypercall_enum_and_table_agree() -> None:
    assert sorted(hypercalls.TABLE) == sorted(int(h) for h in Hypercall)
    for number, spec in hypercalls.TABLE.items():
        assert spec.number is Hypercall(number)
        assert len(spec.args) <= len(ARG_REGISTERS), spec
        assert len(set(spec.errors)) == len(spec.errors), f"{spec.number.name} lists an error twice"
        assert Status.OK not in spec.errors
        # NOT_SUPPORTED is the dispatcher's answer to an unknown number, and a
        # hypercall's answer only for a feature this platform lacks.
        if spec.number is not Hypercall.ATTEST:
            assert Status.NOT_SUPPORTED not in spec.errors
        assert spec.summary, f"{spec.number.name} has no docstring summary"


# ---------------------------------------------------------------------------
# The checkers catch drift (run against broken documents and tables)
# ---------------------------------------------------------------------------
def _without_section(text: str, heading: str) -> str:
    lines = text.splitlines()
    start = lines.index(heading)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("#"))
    return "\n".join(lines[:start] + lines[end:])


def test_checker_reports_a_missing_section(doc: str) -> None:
    problems = check_hypercalls(_without_section(doc, "### 6 MAP"), hypercalls.TABLE)
    assert any("hypercall 6 MAP has no" in p for p in problems), problems


def test_checker_reports_an_undocumented_new_hypercall(doc: str) -> None:
    table = dict(hypercalls.TABLE)
    spec = table[int(Hypercall.VERSION)]
    table[99] = replace(spec, number=Hypercall.VERSION)
    problems = check_hypercalls(doc, table)
    assert any("hypercall 99" in p for p in problems), problems


def test_checker_reports_an_extra_or_renamed_section(doc: str) -> None:
    beyond = max(hypercalls.TABLE) + 1
    extra = doc.replace("### 16 FRAME_FREE", f"### {beyond} FRAME_FREE")
    problems = check_hypercalls(extra, hypercalls.TABLE)
    assert any(f"no hypercall {beyond}" in p for p in problems), problems
    assert any("hypercall 16 FRAME_FREE has no" in p for p in problems), problems
    renamed = doc.replace("### 7 UNMAP", "### 7 UNMAP_ALL")
    problems = check_hypercalls(renamed, hypercalls.TABLE)
    assert any("TABLE calls hypercall 7 UNMAP" in p for p in problems), problems


def test_checker_reports_error_drift(doc: str) -> None:
    table = dict(hypercalls.TABLE)
    spec = table[int(Hypercall.MAP)]
    table[int(Hypercall.MAP)] = replace(spec, errors=(*spec.errors, Status.NOT_FOUND))
    problems = check_hypercalls(doc, table)
    assert any("['NOT_FOUND'] are not documented" in p for p in problems), problems
    table[int(Hypercall.MAP)] = replace(spec, errors=spec.errors[1:])
    problems = check_hypercalls(doc, table)
    assert any("documents ['BAD_HANDLE'], not in the TABLE" in p for p in problems), problems


def test_checker_reports_argument_drift(doc: str) -> None:
    table = dict(hypercalls.TABLE)
    spec = table[int(Hypercall.UNMAP)]
    table[int(Hypercall.UNMAP)] = replace(spec, args=(*spec.args, "count"))
    problems = check_hypercalls(doc, table)
    assert any("### 7 UNMAP: arguments" in p for p in problems), problems


def test_status_and_constant_checkers_report_drift(doc: str) -> None:
    broken = doc.replace("| `BUSY` | 4 | -4 |", "| `BUSY` | 9 | -9 |")
    assert any("BUSY" in p for p in check_status_codes(broken))
    broken = doc.replace("| `KERNEL_STACK_TOP` | 0xFFFF_8000_0020_0000 |", "| `KERNEL_STACK_TOP` | 0x1 |")
    assert any("KERNEL_STACK_TOP" in p for p in check_constants(broken, known_constants()))
