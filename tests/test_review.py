"""``spk review``: the report, its schema, its findings, its exit codes, its rendering.

Two reviews run once per module, as a user runs them (the installed ``spk``
script, in parallel): the repository's ``partitions.toml`` (exit 0) and
``LEAKY``, a description with a deliberate guest → guest → system flow
through channels (exit 1). The HTML of both is rendered by headless Chromium
(``make test`` installs Debian's ``chromium``); the screenshots land in
``test-artifacts/review/``. Rule-level cases use :func:`build_report` in
process, with a stub adversarial suite where the suite is not the point.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from spgs.config import load
from spk.abi import Hypercall
from spk_review.findings import RULES, Facts, check_all
from spk_review.flow import flow_graph
from spk_review.hypercalls import REQUIRES
from spk_review.model import FuzzCampaign, FuzzStats, ModuleSize, Report, SharedMapping, SharedRegion, schema_json
from spk_review.render import SECTIONS, render_html
from spk_review.report import build_report
from spk_review.summary import summary as review_summary
from spk_review.tcb import CHILD, _child_imports, c_source_size, module_size

ROOT = Path(__file__).resolve().parent.parent
SPK = Path(sys.executable).with_name("spk")
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "review"
SCHEMA = ROOT / "docs" / "review.schema.json"

#: sensor (guest) -[raw]-> filter (guest) -[clean]-> control (system) -[commands]-> actuator (guest); logger alone.
LEAKY = """
[system]
name = "leaky"
memory = "16MiB"
max_ticks = 300_000

[[partition]]
name = "sensor"
image = "refkernel"
apps = ["hello"]
memory = "512KiB"
window = 10_000
ports = [{ name = "out", direction = "source" }]

[[partition]]
name = "filter"
image = "refkernel"
memory = "512KiB"
window = 10_000
ports = [{ name = "in", direction = "destination" }, { name = "out", direction = "source" }]

[[partition]]
name = "control"
image = "manager"
role = "system"
memory = "256KiB"
window = 20_000
ports = [
  { name = "in", direction = "destination" },
  { name = "cmd", direction = "source" },
  { name = "spare", direction = "source" },
]

[[partition]]
name = "actuator"
image = "refkernel"
memory = "512KiB"
window = 10_000
ports = [{ name = "cmd", direction = "destination" }]

[[partition]]
name = "logger"
image = "refkernel"
memory = "512KiB"
window = 10_000

[[channel]]
name = "raw"
kind = "sampling"
source = "sensor.out"
destinations = ["filter.in"]
message_size = 8

[[channel]]
name = "clean"
kind = "queuing"
source = "filter.out"
destinations = ["control.in"]
message_size = 64
depth = 4

[[channel]]
name = "commands"
kind = "queuing"
source = "control.cmd"
destinations = ["actuator.cmd"]
message_size = 32
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    env["NO_COLOR"] = "1"
    return env


def spk(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SPK), *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@dataclass
class Reviewed:
    code: int
    stdout: str
    stderr: str
    out: Path

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads((self.out / "report.json").read_text(encoding="utf-8")))

    @property
    def report(self) -> Report:
        return Report.model_validate(self.json)


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Reviewed]]:
    """``spk review`` of the example and of LEAKY, started together."""
    base = tmp_path_factory.mktemp("review")
    leaky = base / "leaky.toml"
    leaky.write_text(textwrap.dedent(LEAKY).lstrip(), encoding="utf-8")
    configs = {"example": ROOT / "partitions.toml", "leaky": leaky}
    procs = {
        key: subprocess.Popen([str(SPK), "review", str(config), "--out", str(base / key)], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for key, config in configs.items()
    }  # fmt: skip
    results = {}
    for key, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        results[key] = Reviewed(proc.returncode, stdout, stderr, base / key)
    yield results


# -- exit codes and the flow violation ---------------------------------------------------------
def test_example_passes_with_exit_0(reviews: dict[str, Reviewed]) -> None:
    r = reviews["example"]
    assert r.code == 0, r.stdout + r.stderr
    assert r.stderr == ""
    report = r.report
    assert report.verdict.passed and report.verdict.counts["high"] == 0
    assert "PASS" in r.stdout and str(r.out / "report.html") in " ".join(r.stdout.split())
    assert {p.name for p in report.system.partitions} == {"alpha", "beta", "gamma"}


def test_example_attacks_all_contained(reviews: dict[str, Reviewed]) -> None:
    adversarial = reviews["example"].report.adversarial
    assert adversarial.ran, adversarial.error
    assert adversarial.attacks
    assert [a.title for a in adversarial.attacks if not a.contained] == []


def test_flow_violation_is_high_and_exits_1(reviews: dict[str, Reviewed]) -> None:
    r = reviews["leaky"]
    assert r.code == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "guest_to_system_flow" in r.stdout
    report = r.report
    flows = [f for f in report.findings if f.rule == "guest_to_system_flow"]
    assert {(f.severity, f.subject) for f in flows} == {("high", "sensor → control"), ("high", "filter → control")}
    transitive = next(f for f in flows if f.subject == "sensor → control")
    assert "sensor → [raw] → filter → [clean] → control" in transitive.message
    assert transitive.field == "channel.0" and transitive.line == LEAKY.lstrip().splitlines().index("[[channel]]") + 1
    assert report.flow.violations == [["sensor", "raw", "filter", "clean", "control"], ["filter", "clean", "control"]]
    marked = {e.channel: e.on_violation for e in report.flow.edges}
    assert marked == {"raw": True, "clean": True, "commands": False}
    assert {n.name for n in report.flow.nodes if n.on_violation} == {"sensor", "filter", "control"}


def test_leaky_findings_name_the_configuration(reviews: dict[str, Reviewed]) -> None:
    findings = {(f.rule, f.subject): f for f in reviews["leaky"].report.findings}
    spare = findings[("unused_port", "control.spare")]
    assert (spare.severity, spare.field) == ("low", "partition.2.ports.2")
    assert findings[("management_observes", "control")].severity == "info"
    assert ("large_window", "control") not in findings  # 20 000 of 60 000: a third


def test_json_option_prints_the_report(tmp_path: Path) -> None:
    result = spk("review", "partitions.toml", "--out", tmp_path, "--json", "--max-ticks", "100000")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["format"] == "spk-review/1"
    assert printed == json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))


def test_bad_config_exits_2_with_the_lines_validate_prints(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[partition]]\nname = "A"\nimage = "refkernel"\nwindow = 10\n', encoding="utf-8")
    review = spk("review", bad, "--out", tmp_path / "out")
    validate = spk("validate", bad)
    assert (review.returncode, validate.returncode) == (2, 2)
    assert review.stderr == validate.stderr
    assert "Traceback" not in review.stderr
    assert re.search(r"bad\.toml:2: partition\.0\.name: .* \[partition_name\]", review.stderr)
    assert not (tmp_path / "out").exists()


def test_missing_config_and_unwritable_out_are_clean_errors(tmp_path: Path) -> None:
    missing = spk("review", tmp_path / "nope.toml", "--out", tmp_path / "out")
    assert missing.returncode == 2 and "readable_file" in missing.stderr and "Traceback" not in missing.stderr
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    unwritable = spk("review", "partitions.toml", "--out", blocker, "--max-ticks", "50000")
    assert unwritable.returncode == 2 and unwritable.stderr.startswith("error: cannot write the report")


# -- the schema --------------------------------------------------------------------------------
def test_committed_schema_is_the_generated_one() -> None:
    regenerate = "run: python -m spk_review.model > docs/review.schema.json"
    assert SCHEMA.read_text(encoding="utf-8") == schema_json(), regenerate


@pytest.mark.parametrize("key", ["example", "leaky"])
def test_report_validates_against_the_schema(reviews: dict[str, Reviewed], key: str) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(reviews[key].json)


def test_schema_rejects_an_unknown_key(reviews: dict[str, Reviewed]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = reviews["example"].json
    broken["verdict"]["extra"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# -- the facts ----------------------------------------------------------------------------------
def test_tcb_counts_the_installed_ring0_package(reviews: dict[str, Reviewed]) -> None:
    import spk as ring0

    tcb = reviews["example"].report.tcb
    ring0_size = next(p for p in tcb.packages if p.ring == 0)
    directory = Path(ring0.__file__).parent
    files = sorted(f.stem for f in directory.glob("*.py"))
    native = sorted(f.name for f in directory.glob("*.c"))
    assert native == ["_clock.c"]  # ring 0's native code counts as ring 0
    assert [m.module for m in ring0_size.modules] == [f"spk.{f}" for f in files] + [f"spk/{f}" for f in native]
    for m in ring0_size.modules:
        assert m.lines == m.code + m.comments + m.docstrings + m.blank, m.module
    assert ring0_size.code == sum(m.code for m in ring0_size.modules) > 1000
    assert {d.module for d in tcb.dependencies} >= {"unicorn", "capstone", "nacl"}


@pytest.mark.parametrize(
    ("name", "text", "count", "expected"),
    [
        ("sample.py", '"""Module\ndocstring."""\n\n# a comment\nx = 1  # code\n\n\ndef f() -> str:\n'
         '    """One line."""\n    return """not a\ndocstring"""\n', module_size, (11, 4, 1, 3, 3)),
        ("sample.c", "/* a comment\n   on two lines */\n#include <stdint.h>\n\nint x = 1; /* trailing */\n"
         "// a line comment\nstatic int f(void)\n{\n    return x;\n}\n", c_source_size, (10, 6, 3, 0, 1)),
    ],
)  # fmt: skip
def test_source_size_counts_each_kind_of_line(
    tmp_path: Path, name: str, text: str, count: Callable[[Path, str], ModuleSize], expected: tuple[int, ...]
) -> None:
    """Lines, code, comments, docstrings, blank: Python by its tokenizer, C by pygments' lexer."""
    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    size = count(source, name)
    assert (size.lines, size.code, size.comments, size.docstrings, size.blank) == expected


def test_hypercall_table_reads_capabilities_from_the_booted_system(reviews: dict[str, Reviewed]) -> None:
    rows = {h.name: h for h in reviews["leaky"].report.tcb.hypercalls}
    assert [h.number for h in rows.values()] == [int(h) for h in Hypercall]
    for name in ("PART_LIST", "PART_QUERY", "PART_CONTROL"):
        assert rows[name].callers == ["control"]
    assert rows["PORT_SEND"].callers == ["sensor.out", "filter.out", "control.cmd"]  # spare: in no channel
    assert rows["PORT_RECEIVE"].callers == ["filter.in", "control.in", "actuator.cmd"]
    assert rows["MAP"].callers == ["sensor", "filter", "control", "actuator", "logger"]
    example = {h.name: h for h in reviews["example"].report.tcb.hypercalls}
    assert example["PART_CONTROL"].callers == [] and example["PORT_OPEN"].callers == []


def _abi_sections() -> dict[str, str]:
    text = (ROOT / "docs" / "abi.md").read_text(encoding="utf-8")
    parts = re.split(r"^### \d+ (\w+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_requirements_match_the_abi_document() -> None:
    """Each hypercall's caller check, as docs/abi.md states it, is the one the review reports."""
    phrases = [
        ("the caller's role is not `system`", "system_role"),
        ("the port is a destination port", "source_port"),
        ("the port is a source port", "destination_port"),
        ("without an attestation key", "attestation_key"),
        ("open port of the caller", "any_port"),
        ("gave the partition no port", "any_port"),
    ]
    sections = _abi_sections()
    assert set(sections) == {h.name for h in Hypercall}
    for call in Hypercall:
        documented = next((req for phrase, req in phrases if phrase in sections[call.name]), "any")
        assert REQUIRES.get(call, "any") == documented, call.name


def test_memory_map_of_the_example(reviews: dict[str, Reviewed]) -> None:
    memory = reviews["example"].report.memory
    assert memory.invariants is None
    assert sum(memory.owners.values()) == memory.ram_frames == (32 << 20) // 4096
    for p in memory.partitions:
        assert sum(r.frames for r in p.physical) == p.quota_frames
        assert p.frame_types.get("pool", 0) == p.quota_frames - p.frames_in_use
        regions = {m.region: m for m in p.mappings}
        assert not regions["start info"].writable and not regions["start info"].user
        assert regions["kernel image"].writable and not regions["kernel image"].user
        assert all(m.user == (m.va < 1 << 47) for m in p.mappings if m.region != "ring 0 (GDT)")
    # the only frame shared: ring 0's GDT, read-only, supervisor, in every partition: one region naming them all
    [gdt] = memory.shared
    assert (gdt.owner, gdt.frame_type, gdt.frames) == ("ring 0", "spk", 1)
    assert [m.partition for m in gdt.mapped_by] == sorted(p.name for p in memory.partitions)
    assert all(not m.writable and not m.user for m in gdt.mapped_by)
    gamma = next(p for p in memory.partitions if p.name == "gamma")
    # Every app of gamma has ended (bad_spin by the watchdog); its kernel keeps the modules mapped read-only.
    images = [m for m in gamma.mappings if m.region == "app image bad_spin"]
    assert images and not any(m.writable or m.user for m in images)


def test_attestation_of_the_example_verifies_and_matches_what_was_loaded(reviews: dict[str, Reviewed]) -> None:
    a = reviews["example"].report.attestation
    assert (a.key_origin, a.secure_boot) == ("ephemeral", "off")
    assert len(bytes.fromhex(a.nonce)) == 32
    for p in a.partitions:
        assert p.quoted and p.verified and p.expected, (p.name, p.problems, p.differences)
        assert [e.type for e in p.events][:2] == ["config", "kernel_image"]
        assert p.events == p.loaded
    alpha = next(p for p in a.partitions if p.name == "alpha")
    assert [e.description for e in alpha.events if e.type == "app"] == ["hello", "counter"]


def test_platform_key_file_signs_the_quotes(tmp_path: Path) -> None:
    assert spk("keygen", "platform", "--out", tmp_path).returncode == 0
    result = spk("review", "partitions.toml", "--out", tmp_path / "out", "--platform-key", tmp_path / "platform.key",
                 "--max-ticks", "100000", "--json")  # fmt: skip
    attestation = json.loads(result.stdout)["attestation"]
    assert attestation["key_origin"] == "file"
    assert attestation["platform_key"] == (tmp_path / "platform.pub").read_text().split()[-1].strip()


# -- rules fed by the suite, fuzzing and measured boot ---------------------------------------------
@dataclass(frozen=True)
class _Attack:
    attack_class: str
    title: str
    attacker: str
    contained: bool
    evidence: list[str]


def _suite(*attacks: _Attack) -> Any:
    def run(config_path: Path, *, seed: int | None = None) -> Sequence[_Attack]:
        return attacks

    return run


def _failing_suite(config_path: Path, *, seed: int | None = None) -> Sequence[_Attack]:
    raise RuntimeError("attacker image did not assemble")


def _rules(report: Report, severity: str) -> list[str]:
    return [f.rule for f in report.findings if f.severity == severity]


def test_not_contained_attack_is_high() -> None:
    escaped = _Attack("map_foreign", "map another partition's frame", "gamma", False, ["MAP returned 0"])
    held = _Attack("cpl3_hypercall", "int 0x82 at CPL 3", "gamma", True, ["#GP 0x412 at the int"])
    report = build_report(ROOT / "partitions.toml", max_ticks=50_000, suite=_suite(escaped, held))
    assert _rules(report, "high") == ["attack_not_contained"]
    assert not report.verdict.passed
    finding = report.findings[0]
    assert finding.subject == "map_foreign (gamma)" and "MAP returned 0" in finding.message
    html = render_html(report)
    assert "NOT contained" in html and "#GP 0x412 at the int" in html


def test_suite_that_cannot_run_is_high() -> None:
    report = build_report(ROOT / "partitions.toml", max_ticks=50_000, suite=_failing_suite)
    assert not report.adversarial.ran
    assert report.adversarial.error == "RuntimeError: attacker image did not assemble"
    assert _rules(report, "high") == ["adversarial_suite_error"]


def test_fuzz_statistics_are_reported_and_findings_are_high() -> None:
    fuzz = FuzzStats(
        campaigns=[FuzzCampaign(name="hypercalls", examples=40, executions=900, execs_per_s=310.5,
                                invariant_checks=1800, findings=0),
                   FuzzCampaign(name="cpl2_code", examples=20, executions=300, execs_per_s=120.0,
                                invariant_checks=600, findings=2)],
        examples=60, executions=1200, seconds=4.2, seed=7,
    )  # fmt: skip
    report = build_report(ROOT / "partitions.toml", max_ticks=50_000, fuzz=fuzz, suite=_suite())
    assert report.fuzz == fuzz
    assert [(f.rule, f.subject) for f in report.findings if f.severity == "high"] == [("fuzz_findings", "cpl2_code")]
    assert "2 finding(s) in 20 examples (300 executions)" in report.findings[0].message
    html = render_html(report)
    assert "cpl2_code" in html and "1,800" in html
    assert "60 examples, 1,200 executions in 2 campaigns" in html  # the totals, not only the findings
    printed = Console(width=200, record=True, file=io.StringIO())
    printed.print(review_summary(report, []))
    assert "fuzz: 2 findings in 2 campaigns, 60 examples, 1,200 executions (hypercalls: 900, cpl2_code: 300)" in (
        printed.export_text()
    )


def test_kernel_that_does_not_measure_its_apps(tmp_path: Path) -> None:
    config = tmp_path / "quiet.toml"
    config.write_text('[system]\nmemory = "8MiB"\nmax_ticks = 100_000\n\n[[partition]]\nname = "quiet"\n'
                      'image = "sensor"\napps = ["hello"]\nmemory = "256KiB"\n\n[partition.health]\n'
                      'overrun = "log"\n', encoding="utf-8")  # fmt: skip
    report = build_report(config, suite=_suite())
    medium = {f.rule: f for f in report.findings if f.severity == "medium"}
    assert set(medium) == {"secure_boot_off", "apps_not_measured"}
    assert "app 'hello': expected in the log, not measured" in medium["apps_not_measured"].message
    assert medium["apps_not_measured"].field == "partition.0.apps"
    assert "health_table_default" not in [f.rule for f in report.findings]
    quote = report.attestation.partitions[0]
    assert quote.verified and not quote.expected


def _with_shared(report: Report, extra: SharedRegion) -> Facts:
    """The report's facts as if ``extra`` were shared too."""
    memory = report.memory.model_copy(update={"shared": [*report.memory.shared, extra]})
    config = load(ROOT / "partitions.toml")
    flow = flow_graph(config.description, memory, {})
    return Facts(config, report.system, memory, flow, report.attestation, report.adversarial, None)


def test_frame_reachable_by_two_partitions_is_a_flow_and_high() -> None:
    report = build_report(ROOT / "partitions.toml", max_ticks=50_000, suite=_suite())
    beta = next(p for p in report.memory.partitions if p.name == "beta")
    mfn = beta.physical[0].first_mfn + 3
    alpha = SharedMapping(partition="alpha", va=0x500000, writable=False, user=True)
    leak = SharedRegion(mfn=mfn, frames=1, owner="beta", frame_type="data", mapped_by=[alpha])
    facts = _with_shared(report, leak)
    # alpha only reads it, but beta owns it and may write it: data flows beta -> alpha
    assert [(e.kind, e.source, e.destination) for e in facts.flow.edges] == [("shared_frame", "beta", "alpha")]
    high = [(f.rule, f.subject) for f in check_all(facts) if f.severity == "high"]
    assert high == [("shared_frame", f"frame {mfn:#x}"), ("foreign_mapping", "alpha")]


def test_ring0_frame_mapped_writable_is_high() -> None:
    report = build_report(ROOT / "partitions.toml", max_ticks=50_000, suite=_suite())
    [gdt] = report.memory.shared
    exposed = SharedMapping(partition="gamma", va=0x600000, writable=True, user=True)
    facts = _with_shared(report, gdt.model_copy(update={"mapped_by": [*gdt.mapped_by, exposed]}))
    findings = [f for f in check_all(facts) if f.severity == "high"]
    assert [(f.rule, f.subject) for f in findings] == [("ring0_frame_exposed", "gamma")]
    assert "(writable, user)" in findings[0].message


def test_signed_system_in_enforce_mode(tmp_path: Path) -> None:
    assert spk("keygen", "vendor", "--out", tmp_path / "keys").returncode == 0
    signed = spk("sign", "partitions.toml", "--key", tmp_path / "keys" / "vendor.key", "--out", tmp_path / "signed")
    assert signed.returncode == 0, signed.stderr
    report = build_report(tmp_path / "signed" / "partitions.toml", max_ticks=300_000, suite=_suite())
    a = report.attestation
    assert a.secure_boot == "enforce"
    assert set(a.secure_boot_decisions.values()) == {"verified"}
    assert all(p.verified and p.expected for p in a.partitions)
    rules = {f.rule for f in report.findings}
    assert not rules & {"secure_boot_off", "secure_boot_warn", "secure_boot_refused", "description_unsigned"}
    (tmp_path / "signed" / "partitions.toml.sig").unlink()
    unsigned = build_report(tmp_path / "signed" / "partitions.toml", max_ticks=50_000, suite=_suite())
    assert "description_unsigned" in {f.rule for f in unsigned.findings if f.severity == "low"}


# -- docs ------------------------------------------------------------------------------------------
def test_every_rule_is_documented_with_its_severity() -> None:
    text = (ROOT / "docs" / "review.md").read_text(encoding="utf-8")
    table = text.split("## Findings", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \| (high|medium|low|info) \|", table, flags=re.M)
    assert documented == [(fn.__name__, severity) for fn, severity in RULES]


def test_every_section_is_documented() -> None:
    text = (ROOT / "docs" / "review.md").read_text(encoding="utf-8")
    for sid, title in SECTIONS:
        assert f"| {title} (`{sid}`) |" in text, sid


# -- rendering ------------------------------------------------------------------------------------
def _chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM.exists(), "headless Chromium missing: `make chromium` installs Debian's package"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={user_dir}"]  # fmt: skip
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("key", ["example", "leaky"])
def test_html_renders_in_headless_chromium(reviews: dict[str, Reviewed], key: str, tmp_path: Path) -> None:
    html = reviews[key].out / "report.html"
    text = html.read_text(encoding="utf-8")
    assert "<script" not in text and "<link" not in text and " src=" not in text
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text)), "an external asset"
    dom = _chromium("--dump-dom", html.as_uri(), user_dir=tmp_path / "dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for sid, _title in (("summary", ""), *SECTIONS):
        assert f'id="{sid}"' in dom.stdout, sid
    assert re.search(r'<svg[^>]*id="flow-graph"', dom.stdout)
    assert ('class="edge violation"' in dom.stdout) == (key == "leaky")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{key}.png"
    shot.unlink(missing_ok=True)
    result = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", html.as_uri(), user_dir=tmp_path / "shot")
    assert result.returncode == 0, result.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1280, 2000)
    assert len(png) > 20_000  # a rendered page, not a blank one


# -- issue 12: restarts exhausted, fuzz executions, native code in the TCB, one row per shared region --------
def test_a_partition_halted_after_its_restarts_is_a_finding() -> None:
    report = build_report(ROOT / "examples" / "arinc.toml", suite=_suite())
    faulty = next(p for p in report.system.partitions if p.name == "faulty")
    assert (faulty.restarts, faulty.restarts_exhausted) == (2, "memory_violation")
    assert faulty.status.startswith("halted") or faulty.status.startswith("stopped"), faulty.status
    [finding] = [f for f in report.findings if f.rule == "restarts_exhausted"]
    assert (finding.severity, finding.subject) == ("medium", "faulty")
    assert finding.field == "partition.1.health.restart_limit" and finding.line is not None
    assert "halted after 2 restart(s): memory_violation again with restart_limit = 2 reached" in finding.message
    assert all(p.restarts_exhausted is None for p in report.system.partitions if p.name != "faulty")


def test_tcb_lists_the_native_code_ring_0_and_ring_1_load(reviews: dict[str, Reviewed]) -> None:
    deps = {d.module: d for d in reviews["example"].report.tcb.dependencies}
    # keystone runs in a child process of the assembler (its import is in a string of Python code)
    assert deps["keystone"].imported_by == [f"spgs.assembler{CHILD}"]
    for module in ("keystone", "unicorn", "capstone", "nacl"):
        assert deps[module].version and deps[module].distribution, module
        assert deps[module].native, f"{module}: a native library"
    assert deps["pydantic"].native == []


def test_child_process_imports_are_read_from_python_source_in_strings() -> None:
    source = 'CHILD = "import json\\nimport keystone\\nfrom nacl import bindings"\nTEXT = "import this, not code"\n'
    tree = ast.parse(source)
    assert _child_imports(tree) == ["json", "keystone", "nacl"]


def test_a_region_shared_by_several_partitions_is_one_row() -> None:
    report = build_report(ROOT / "partitions.toml", max_ticks=50_000, suite=_suite())
    names = sorted(p.name for p in report.memory.partitions)
    [gdt] = report.memory.shared  # not one row per partition
    assert [m.partition for m in gdt.mapped_by] == names
    html = render_html(report)
    assert html.count(f"<code>{gdt.mfn:#x}</code>") == 1 + sum(
        1 for p in report.memory.partitions for m in p.mappings if m.mfn == gdt.mfn
    )  # once in the shared table, and once in each partition's own mappings
