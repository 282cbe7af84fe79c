"""What must never be committed is ignored (issue 12): keys, signed systems, reports, findings, traces.

A private key in a commit is a key to throw away; a signed system, a review,
a fuzz finding or a trace is output, rebuilt at will. The paths are asked of
git itself (``git check-ignore --no-index``), so the test checks the rules
as git reads them, not a copy of them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

IGNORED = [
    "keys/vendor.key", "keys/vendor.pub", "examples/keys/platform.key", "vendor.key", "signed/partitions.toml",
    "signed/images/alpha/app/hello.bin", "review/report.html", "fuzz-findings/hypercalls-1.json", "run.jsonl",
    "traces/run.jsonl.gz", "tampered.jsonl",
]  # fmt: skip
KEPT = ["tests/regressions/trace.jsonl", "tests/fixtures/run.jsonl.gz", "partitions.toml", "spk_review/report.py"]


def _ignored(paths: list[str]) -> set[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and the repository's work tree")
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(paths),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return set(result.stdout.split())


def test_keys_signed_systems_reports_findings_and_traces_are_ignored() -> None:
    assert _ignored(IGNORED) == set(IGNORED)


def test_test_fixtures_and_sources_are_not_ignored() -> None:
    assert _ignored(KEPT) == set()
