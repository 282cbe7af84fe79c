"""Replay files: a finding as the list of actions that shows it.

A replay file is JSON::

    {"format": "spk-fuzz-replay/1", "campaign": "hypercalls", "world": "agent",
     "finding": {"invariant": "frame_accounting", "message": "..."},
     "seed": 7, "actions": [["hypercall", 4], ["hypercall", 6, 1, 4194304, 9, 3]]}

:func:`replay` boots the named world, resets it to its snapshot and performs
the actions in order, with every invariant checked after each: the run is
deterministic, so a finding shows again exactly, and a fixed one shows a
clean run. Files under ``tests/regressions/`` are replayed by the test suite
and must run clean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz.world import Action, Violation, World

FORMAT = "spk-fuzz-replay/1"


class ReplayError(Exception):
    """A replay file that cannot be read: names the file and what is wrong."""


@dataclass(frozen=True)
class Replay:
    campaign: str
    world: str
    actions: list[Action]
    invariant: str = ""
    message: str = ""
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "campaign": self.campaign, "world": self.world,
            "finding": {"invariant": self.invariant, "message": self.message},
            "seed": self.seed, "actions": [list(a) for a in self.actions],
        }  # fmt: skip

    def write(self, path: Path) -> Path:
        """Write the file: one action per line, so a diff of two replays reads well."""
        data = self.to_json()
        actions = data.pop("actions")
        head = json.dumps(data, indent=1)[:-2]
        body = ",\n".join(f"  {json.dumps(action)}" for action in actions)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'{head},\n "actions": [\n{body}\n ]\n}}\n')
        return path


@dataclass
class ReplayResult:
    """What a replay did: every step's result, and the violation if one showed."""

    steps: list[tuple[Action, Any]] = field(default_factory=list)
    violation: Violation | None = None

    @property
    def clean(self) -> bool:
        return self.violation is None


def load(path: Path) -> Replay:
    """Read a replay file. Errors: :class:`ReplayError` (unreadable, not JSON, wrong format, unknown world)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ReplayError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReplayError(f"{path}: not a replay file (format must be {FORMAT!r})")
    actions = data.get("actions")
    if not isinstance(actions, list) or not all(isinstance(a, list) and a and isinstance(a[0], str) for a in actions):
        raise ReplayError(f"{path}: 'actions' must be a list of [name, arguments...]")
    import fuzz.campaigns  # noqa: F401  (each campaign's world registers when its module loads)

    if data.get("world") not in World.KINDS:
        raise ReplayError(f"{path}: unknown world {data.get('world')!r} (known: {', '.join(sorted(World.KINDS))})")
    finding = data.get("finding") or {}
    return Replay(
        campaign=str(data.get("campaign", "")), world=str(data["world"]), actions=[tuple(a) for a in actions],
        invariant=str(finding.get("invariant", "")), message=str(finding.get("message", "")), seed=data.get("seed"),
    )  # fmt: skip


_WORLDS: dict[str, World] = {}


def world_of(kind: str) -> World:
    """The process's world of that kind, booted once (a world resets for every use)."""
    if kind not in _WORLDS:
        _WORLDS[kind] = World.KINDS[kind]()
    return _WORLDS[kind]


def run_program(world: World, actions: list[Action]) -> ReplayResult:
    """Perform ``actions`` on ``world`` from its snapshot; stop at the first violation.

    The one way a recorded program runs: replays, mutation rounds and the
    benchmark all use it. Errors: :class:`ReplayError` for an action the
    world does not know.
    """
    world.reset()
    result = ReplayResult()
    for action in actions:
        try:
            result.steps.append((action, world.perform(action)))
        except Violation as violation:
            result.steps.append((action, None))
            result.violation = violation
            break
        except ValueError as exc:
            raise ReplayError(str(exc)) from exc
    return result


def replay(recorded: Replay) -> ReplayResult:
    """Perform the recorded actions on a fresh world of its kind. Errors: those of :func:`run_program`."""
    return run_program(world_of(recorded.world), recorded.actions)
