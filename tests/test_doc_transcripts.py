"""Every command transcript of the documentation runs and matches (issue 12).

Each fenced ``console`` block of README.md and docs/ is one test, named by
its file and line (``test_transcript[docs/guest.md:120]``); a mismatch shows
a unified diff. ``SPK_DOCS_UPDATE=1 pytest tests/test_doc_transcripts.py``
re-records the expected output in place instead (docs/contributing.md).
The convention and the engine: ``tests/doc_transcripts.py``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sybil import Example

from spgs.assembler import cache_dir
from tests.doc_transcripts import (
    COLUMNS,
    UPDATE_VARIABLE,
    TranscriptError,
    TranscriptRunner,
    command_environment,
    copy_repository,
    parse,
    reconcile,
    repository_files,
    run,
    transcripts,
)

ROOT = Path(__file__).resolve().parent.parent


def documents() -> list[Path]:
    """The documents whose transcripts run: README.md and every markdown file under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _name(example: Example) -> str:
    return f"{Path(example.path).relative_to(ROOT).as_posix()}:{example.line}"


EXAMPLES = transcripts(documents())


@pytest.fixture(scope="session")
def doc_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TranscriptRunner]:
    """One runner for the session: scratch copies of the repository.

    The commands share the image cache of the rest of the suite (``SPK_CACHE_DIR``
    or the default): a cold build of the C guests costs seconds per process, and
    the cache is content-addressed and written atomically, so sharing it
    between xdist workers and sessions changes no output.
    """
    update = os.environ.get(UPDATE_VARIABLE) == "1"
    if update and os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail(f"{UPDATE_VARIABLE}=1 rewrites documents: run it without -n", pytrace=False)
    work = tmp_path_factory.mktemp("doc-transcripts")
    env = command_environment(cache_dir())
    runner = TranscriptRunner(lambda folder: copy_repository(ROOT, folder), work, env, update=update)
    yield runner
    for line in runner.write_updates():
        print(line, file=sys.__stderr__)


@pytest.mark.parametrize("example", EXAMPLES, ids=[_name(e) for e in EXAMPLES])
def test_transcript(example: Example, doc_runner: TranscriptRunner) -> None:
    try:
        failure = doc_runner.check(example)
    except TranscriptError as exc:
        pytest.fail(f"{_name(example)}: {exc}", pytrace=False)
    if failure:
        pytest.fail(
            f"{failure}\n(re-record with {UPDATE_VARIABLE}=1 .venv/bin/pytest tests/test_doc_transcripts.py)",
            pytrace=False,
        )


# A console fence as a reader sees it, found without Sybil: any indentation
# or list/quote prefix, backticks or tildes, anything after the word.
_CONSOLE_FENCE = re.compile(r"^[ \t>*+\-\d.)]*(?:`{3,}|~{3,})[ \t]*console\b", re.IGNORECASE)


def test_every_console_block_is_collected() -> None:
    """No transcript is silently ignored: every console fence of every markdown file is a test."""
    found: set[str] = set()
    for relative in repository_files(ROOT):
        if relative.suffix == ".md" and (ROOT / relative).is_file():
            text = (ROOT / relative).read_text(encoding="utf-8")
            for number, line in enumerate(text.splitlines(), start=1):
                if _CONSOLE_FENCE.match(line):
                    found.add(f"{relative.as_posix()}:{number}")
    collected = {_name(e) for e in transcripts(documents())}  # parsed now: the same text as the scan
    assert found - collected == set(), (
        "console blocks that would not run (outside README.md and docs/, or an info string other than"
        " exactly `console`)"
    )
    assert collected <= found


# The engine itself, on small documents of its own.


def _document(tmp_path: Path, text: str) -> list[Example]:
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    return transcripts([path])


def _runner(tmp_path: Path, update: bool = False) -> TranscriptRunner:
    work = Path(tempfile.mkdtemp(prefix="work-", dir=tmp_path))
    return TranscriptRunner(lambda folder: None, work, command_environment(tmp_path / "cache"), update=update)


def test_only_console_fences_are_transcripts(tmp_path: Path) -> None:
    examples = _document(tmp_path, "```sh\n$ false\n```\n\n```console\n$ echo hi\nhi\n```\n\n```\n$ false\n```\n")
    assert [e.line for e in examples] == [5]


def test_ellipsis_matches_any_lines_and_any_text() -> None:
    assert reconcile(["a", "...", "z"], ["a", "b", "c", "z"])[0]
    assert reconcile(["a", "...", "z"], ["a", "z"])[0]
    assert reconcile(["took ... s (... execs)"], ["took 0.4 s (183 execs)"])[0]
    assert not reconcile(["took ... s"], ["took 0.4 s", "extra"])[0]
    assert not reconcile(["a", "...", "z"], ["a", "b"])[0]
    assert not reconcile(["exact"], ["exactly"])[0]


def test_reconcile_keeps_matching_expected_lines() -> None:
    ok, recorded = reconcile(["start ...", "...", "old end"], ["start 1", "x", "y", "new end"])
    assert not ok
    assert recorded == ["start ...", "...", "new end"]


def test_mismatch_is_a_unified_diff(tmp_path: Path) -> None:
    [example] = _document(tmp_path, "```console\n$ printf 'one\\ntwo\\n'\none\nthree\n```\n")
    failure = _runner(tmp_path).check(example)
    assert failure is not None
    assert "-three" in failure and "+two" in failure and " one" in failure
    assert "doc.md:1 (expected)" in failure


def test_exit_status_is_part_of_the_transcript(tmp_path: Path) -> None:
    assert run("echo out; echo err >&2; exit 2", tmp_path, command_environment(tmp_path / "c")) == (
        ["out", "err"],
        "[2]",
    )
    passing, failing, swallowed, unexpected = _document(
        tmp_path,
        "```console\n$ sh -c 'exit 2'\n[2]\n```\n\n```console\n$ sh -c 'exit 2'\n```\n\n"
        "```console\n$ echo hi; exit 3\n...\n```\n\n```console\n$ true\n[1]\n```\n",
    )
    runner = _runner(tmp_path)
    assert runner.check(passing) is None
    for example, line in ((failing, "+[2]"), (swallowed, "+[3]"), (unexpected, "-[1]")):
        failure = runner.check(example)
        assert failure is not None and line in failure, (example.line, failure)


def test_blocks_of_a_document_share_one_folder_in_order(tmp_path: Path) -> None:
    first, second = _document(
        tmp_path, "```console\n$ echo kept > note.txt\n```\n\nprose\n\n```console\n$ cat note.txt\nkept\n```\n"
    )
    runner = _runner(tmp_path)
    assert runner.check(first) is None
    assert runner.check(second) is None
    # Asked alone (pytest -k, another xdist worker), a block replays its predecessors first.
    assert _runner(tmp_path).check(second) is None


def test_commands_see_a_fixed_width_no_colour_and_the_venvs_spk(tmp_path: Path) -> None:
    env = command_environment(tmp_path / "cache", {"PATH": "/usr/bin:/bin", "FORCE_COLOR": "1", "SPK_X": "1"})
    assert run('echo "$COLUMNS $NO_COLOR $TERM ${FORCE_COLOR-unset} ${SPK_X-unset}"', tmp_path, env) == (
        [f"{COLUMNS} 1 dumb unset unset"],
        "",
    )
    assert run("command -v spk", tmp_path, env) == ([str(Path(sys.executable).parent / "spk")], "")


def test_a_block_with_output_before_its_first_command_is_an_error() -> None:
    with pytest.raises(TranscriptError, match="before the first"):
        parse("stray\n$ echo hi\nhi\n")
    assert [(c.command, c.expected) for c in parse("$ echo hi\nhi\n\n$ true\n")] == [("echo hi", ["hi"]), ("true", [])]


def test_update_rewrites_the_expected_output_in_place(tmp_path: Path) -> None:
    text = "# t\n\n```console\n$ printf 'v1 ok\\nnoise\\nend\\n'\nv... ok\n...\nold end\n```\n\ntail\n"
    [example] = _document(tmp_path, text)
    runner = _runner(tmp_path, update=True)
    assert runner.check(example) is None
    assert [line.split(": ", 1)[1] for line in runner.write_updates()] == ["expected output re-recorded"]
    rewritten = (tmp_path / "doc.md").read_text(encoding="utf-8")
    assert rewritten == text.replace("old end", "end")
    [again] = transcripts([tmp_path / "doc.md"])
    assert _runner(tmp_path).check(again) is None


def test_the_scratch_copy_holds_the_repository(tmp_path: Path) -> None:
    copy_repository(ROOT, tmp_path)
    assert (tmp_path / "partitions.toml").is_file()
    assert (tmp_path / "docs" / "abi.md").is_file()
    assert not (tmp_path / ".venv").exists()
