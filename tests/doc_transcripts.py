"""Executed command transcripts of the documentation (```console blocks).

Why: a command example that nobody runs goes stale (issue 12). Every fenced
block whose info string is ``console`` is a transcript the test suite runs
and compares, the convention of docs/contributing.md ("Doc transcripts"):

* a line starting with ``$ `` is a command, run by ``bash -c`` from a scratch
  copy of the repository (each command in its own shell: a ``cd`` does not
  carry over); ``spk`` is the spk command beside the Python running the tests;
* the lines up to the next command are its expected output, stdout and
  stderr combined; a last line ``[N]`` expects exit status N (otherwise the
  command must exit 0);
* a line ``...`` alone matches any number of lines (none included), ``...``
  inside a line matches any text within that line;
* trailing spaces and trailing blank lines never count;
* the blocks of one document run in order in one scratch folder, so a block
  may use the files an earlier block of the same document wrote.

Sybil (a maintained documentation-testing library) finds the blocks: its
markdown lexer knows fences, their info strings and their positions. This
module runs and compares them; ``tests/test_doc_transcripts.py`` makes each
block a pytest item.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sybil import Document, Example
from sybil.parsers.abstract import AbstractCodeBlockParser
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

LANGUAGE = "console"
PROMPT = "$ "
ELLIPSIS = "..."
COLUMNS = "100"
COMMAND_TIMEOUT = 120.0
# Set to 1 to rewrite the expected output in the documents instead of failing.
UPDATE_VARIABLE = "SPK_DOCS_UPDATE"

_STATUS = re.compile(r"\[(\d+)\]")
# Variables that would make rich (or another tool) decorate or size its
# output after the machine running the tests rather than after the transcript.
_DROPPED_VARIABLES = frozenset(
    {"FORCE_COLOR", "CLICOLOR_FORCE", "COLORTERM", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "LINES", "PYTHONPATH"}
)


class TranscriptError(Exception):
    """A ``console`` block that is not a transcript (output before its first command)."""


@dataclass
class Command:
    """One ``$ `` line of a transcript and the output lines expected after it."""

    command: str
    expected: list[str] = field(default_factory=list)


class TranscriptParser(AbstractCodeBlockParser):
    """Sybil parser yielding one region per fenced ``console`` block.

    Only fences count (no HTML-comment directives): what a reader sees is
    what runs. The region's ``parsed`` value is the block's raw text;
    :class:`TranscriptRunner` interprets it, so a malformed block fails its
    own test instead of the collection.
    """

    def __init__(self) -> None:
        lexer = FencedCodeBlockLexer(language=r".+", mapping={"language": "arguments", "source": "source"})
        super().__init__([lexer], language=LANGUAGE)


def transcripts(paths: Iterable[Path]) -> list[Example]:
    """Every ``console`` block of the given markdown files, in file then document order."""
    parser = TranscriptParser()
    found: list[Example] = []
    for path in paths:
        found.extend(Document.parse(str(path), parser).examples())
    return found


def parse(source: str) -> list[Command]:
    """Split a block's text into commands and their expected output.

    Errors: TranscriptError when a non-blank line comes before the first
    command, or a prompt has no command.
    """
    commands: list[Command] = []
    for number, raw in enumerate(source.splitlines(), start=1):
        line = raw.rstrip()
        if line == PROMPT.rstrip() or (raw.startswith(PROMPT) and not line[len(PROMPT) :].strip()):
            raise TranscriptError(f"block line {number}: a prompt without a command")
        if raw.startswith(PROMPT):
            commands.append(Command(line[len(PROMPT) :].strip()))
        elif commands:
            commands[-1].expected.append(line)
        elif line:
            raise TranscriptError(f"block line {number}: output before the first `$ ` command: {line!r}")
    for command in commands:
        _trim(command.expected)
    return commands


def render(commands: Iterable[Command]) -> str:
    """The block text of commands and their expected output (the inverse of :func:`parse`)."""
    lines: list[str] = []
    for command in commands:
        lines.append(PROMPT + command.command)
        lines.extend(command.expected)
    return "".join(line + "\n" for line in lines)


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.split(ELLIPSIS)))


def reconcile(expected: list[str], actual: list[str]) -> tuple[bool, list[str]]:
    """Align actual output with expected output.

    Returns whether they match, and the output as it should be recorded:
    the actual lines, except that every expected line that still matches
    (``...`` lines and lines with ``...`` inside them included) is kept as
    written. A least-edits alignment (dynamic programming over lines: an
    expected line matched, replaced, dropped, or an actual line added; ``...``
    takes any lines for free), so a diff of ``expected`` against the recorded
    lines shows only what really changed.
    """
    n, m = len(expected), len(actual)
    patterns = [None if line == ELLIPSIS else _line_pattern(line) for line in expected]
    # cost[i][j]: fewest edits aligning expected[i:] with actual[j:].
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for j in range(m - 1, -1, -1):
        cost[n][j] = cost[n][j + 1] + 1
    for i in range(n - 1, -1, -1):
        pattern = patterns[i]
        cost[i][m] = cost[i + 1][m] + (0 if pattern is None else 1)
        for j in range(m - 1, -1, -1):
            if pattern is None:
                cost[i][j] = min(cost[i + 1][j], cost[i][j + 1])
            else:
                same = 0 if pattern.fullmatch(actual[j]) else 1
                cost[i][j] = min(cost[i + 1][j + 1] + same, cost[i + 1][j] + 1, cost[i][j + 1] + 1)
    recorded: list[str] = []
    i = j = 0
    while i < n or j < m:
        here = cost[i][j]
        pattern = patterns[i] if i < n else None
        if i < n and pattern is None:
            if j < m and cost[i + 1][j] != here:
                j += 1  # the `...` takes this line
            else:
                recorded.append(ELLIPSIS)
                i += 1
        elif i < n and j < m and pattern is not None and pattern.fullmatch(actual[j]) and cost[i + 1][j + 1] == here:
            recorded.append(expected[i])
            i += 1
            j += 1
        elif i < n and j < m and cost[i + 1][j + 1] + 1 == here:
            recorded.append(actual[j])  # replaces expected[i]
            i += 1
            j += 1
        elif i < n and cost[i + 1][j] + 1 == here:
            i += 1  # an expected line the output no longer has
        else:
            recorded.append(actual[j])
            j += 1
    return cost[0][0] == 0, recorded


def command_environment(cache: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of transcript commands: deterministic output, the venv first on PATH.

    Errors: FileNotFoundError when no ``spk`` command sits beside this Python.
    """
    bin_dir = Path(sys.executable).parent
    if shutil.which("spk", path=str(bin_dir)) is None:
        raise FileNotFoundError(f"no spk command in {bin_dir}: install the project (pip install -e '.[dev]')")
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k not in _DROPPED_VARIABLES and not k.startswith("SPK_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{source.get('PATH', os.defpath)}",
        SPK_CACHE_DIR=str(cache),
        COLUMNS=COLUMNS,
        NO_COLOR="1",
        TERM="dumb",
        PYTHONIOENCODING="utf-8",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run(command: str, cwd: Path, env: Mapping[str, str], timeout: float = COMMAND_TIMEOUT) -> tuple[list[str], str]:
    """Run one command: its combined output lines, and its status line.

    The status line is ``[N]`` when it exited N != 0, empty for 0. It is kept
    apart so that no ``...`` can swallow it.
    """
    try:
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output or b""
        status = f"[timed out after {timeout:g} s]"
    else:
        output = proc.stdout
        status = f"[{proc.returncode}]" if proc.returncode else ""
    return _trim([line.rstrip() for line in output.decode("utf-8", errors="replace").splitlines()]), status


def split_status(expected: list[str]) -> tuple[list[str], str]:
    """Expected output lines and the expected status line (``[N]`` last, or empty for exit 0)."""
    if expected and _STATUS.fullmatch(expected[-1]):
        return expected[:-1], expected[-1]
    return expected, ""


def repository_files(root: Path) -> list[Path]:
    """The files of the repository a scratch copy holds: tracked, and new ones not ignored.

    Errors: RuntimeError when ``root`` is not a git work tree.
    """
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"doc transcripts run in a copy of the git work tree; git ls-files failed: {exc}") from exc
    return [Path(name) for name in sorted(set(listing.decode().split("\0"))) if name]


def copy_repository(root: Path, destination: Path) -> None:
    """Copy the repository's files (see :func:`repository_files`) into ``destination``."""
    for relative in repository_files(root):
        source = root / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@dataclass
class _DocumentState:
    folder: Path
    done: int = 0  # blocks of the document already run in ``folder``


@dataclass(frozen=True)
class _Update:
    start: int
    old: str
    new: str


class TranscriptRunner:
    """Runs transcripts, one scratch folder per document, blocks in document order.

    A block asked for before its predecessors ran (``pytest -k``, or another
    xdist worker having run them) first replays them, unchecked, in a fresh
    folder, so every block gets the folder its document prepared.
    """

    def __init__(
        self,
        populate: Callable[[Path], None],
        workdir: Path,
        env: Mapping[str, str],
        update: bool = False,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self._populate = populate
        self._workdir = workdir
        self._env = dict(env)
        self._timeout = timeout
        self.update = update
        self._documents: dict[str, _DocumentState] = {}
        self._updates: dict[str, list[_Update]] = {}

    def check(self, example: Example) -> str | None:
        """Run one block; None when its output matches, else a unified diff.

        In update mode a mismatch is recorded for :meth:`write_updates`
        instead. Errors: TranscriptError for a malformed block.
        """
        commands = parse(example.parsed)
        folder = self._folder_for(example)
        recorded: list[Command] = []
        for command in commands:
            lines, status = run(command.command, folder, self._env, self._timeout)
            expected, _ = split_status(command.expected)
            output = reconcile(expected, lines)[1]
            recorded.append(Command(command.command, [*output, status] if status else output))
        self._documents[example.path].done += 1
        old, new = render(commands), render(recorded)
        if old == new:
            return None
        if self.update:
            self._record_update(example, new)
            return None
        diff = difflib.unified_diff(
            old.splitlines(),
            new.splitlines(),
            fromfile=f"{_where(example)} (expected)",
            tofile="actual",
            lineterm="",
        )
        return "\n".join(diff)

    def _folder_for(self, example: Example) -> Path:
        siblings = list(example.document.examples())
        index = [s.start for s in siblings].index(example.start)
        state = self._documents.get(example.path)
        if state is None or state.done > index:
            folder = Path(tempfile.mkdtemp(prefix=f"{Path(example.path).stem}-", dir=self._workdir))
            self._populate(folder)
            state = self._documents[example.path] = _DocumentState(folder)
        for earlier in siblings[state.done : index]:
            for command in parse(earlier.parsed):
                run(command.command, state.folder, self._env, self._timeout)
            state.done += 1
        return state.folder

    def _record_update(self, example: Example, new: str) -> None:
        lexeme = example.region.lexemes["source"]
        start = example.start + lexeme.offset
        self._updates.setdefault(example.path, []).append(_Update(start, str(lexeme), new))

    def write_updates(self) -> Iterator[str]:
        """Rewrite the recorded blocks in their documents; yields one line per block.

        A block whose text changed since it was read (or that sits indented in
        a list) is left alone and reported.
        """
        for path, updates in sorted(self._updates.items()):
            text = Path(path).read_text(encoding="utf-8")
            for update in sorted(updates, key=lambda u: u.start, reverse=True):
                line = text.count("\n", 0, update.start)
                if text[update.start : update.start + len(update.old)] != update.old:
                    yield f"{path}:{line}: not rewritten (the block changed, or is indented): edit it by hand"
                    continue
                text = text[: update.start] + update.new + text[update.start + len(update.old) :]
                yield f"{path}:{line}: expected output re-recorded"
            Path(path).write_text(text, encoding="utf-8")
        self._updates.clear()


def _where(example: Example) -> str:
    return f"{os.path.relpath(example.path)}:{example.line}"
