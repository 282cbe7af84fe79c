"""Mutation rounds: the programs hypothesis generated, mutated at the world's speed.

Hypothesis spends more time choosing a stateful step than the world spends
performing it and checking every invariant. In a time-budgeted run, each
hypothesis batch therefore seeds a corpus (the action lists its examples
ran) and a mutation round follows, as coverage-less fuzzers do: a program
from the corpus with a few edits (drop, repeat, swap or splice actions;
change one argument to an edge value, a neighbour, a flipped bit, a word
the corpus uses elsewhere, a small number or any word; flip one bit of a
code blob), performed through the same
:meth:`World.perform` and the same checks. A finding is minimised by
dropping actions (:func:`fuzz.runner.minimise`) and written as a replay file
like any other.

Mutation is seeded (``random.Random``), so a round repeats exactly from its
seed and corpus.
"""

from __future__ import annotations

import random
import string
from typing import Any

from fuzz.world import Action

#: The longest mutated program (the world's programs are short: resets are cheap).
MAX_STEPS = 16
EDGES = (0, 1, 0xFFF, 0x1000, 2**47 - 0x1000, 2**47, 0xFFFF_8000_0000_0000, 2**63, 2**64 - 0x1000, 2**64 - 1)
_HEX = frozenset(string.hexdigits)


def _leaves(value: Any, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Paths to every int or hex-string argument (below the action name), nested lists included."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [path]
    if isinstance(value, str):
        return [path] if path and value and len(value) % 2 == 0 and set(value) <= _HEX else []
    if isinstance(value, (list, tuple)):
        start = 1 if value and isinstance(value[0], str) else 0  # an action's first item is its name
        return [leaf for i, item in enumerate(value) if i >= start for leaf in _leaves(item, (*path, i))]
    return []


def _replace(value: Any, path: tuple[int, ...], new: Any) -> Any:
    if not path:
        return new
    items = list(value)
    items[path[0]] = _replace(items[path[0]], path[1:], new)
    return tuple(items) if isinstance(value, tuple) else items


def _get(value: Any, path: tuple[int, ...]) -> Any:
    for index in path:
        value = value[index]
    return value


class Mutator:
    """Edits programs of one corpus, deterministically from its random source."""

    def __init__(self, rng: random.Random, corpus: list[list[Action]]) -> None:
        self.rng = rng
        self.corpus = [program for program in corpus if program]
        #: Every integer the corpus uses (handles, frame numbers, addresses): a dictionary.
        self.words = sorted({
            word for program in self.corpus for action in program for path in _leaves(action)
            if isinstance(word := _get(action, path), int)
        })  # fmt: skip

    def _argument(self, old: Any) -> Any:
        rng = self.rng
        if isinstance(old, str):  # a hex blob: flip a byte
            blob = bytearray(bytes.fromhex(old))
            blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
            return blob.hex()
        choice = rng.randrange(6)
        if choice == 0:
            return rng.choice(EDGES)
        if choice == 1:
            return (old + rng.choice((-1, 1, -0x1000, 0x1000))) % 2**64
        if choice == 2:
            return old ^ (1 << rng.randrange(64))
        if choice == 3 and self.words:
            return rng.choice(self.words)
        if choice == 4:
            return rng.randrange(1024)  # small numbers: handles, frames, counts
        return rng.getrandbits(64)

    def program(self) -> list[Action]:
        """A corpus program with one to four edits."""
        rng = self.rng
        program = list(rng.choice(self.corpus))
        for _ in range(rng.randint(1, 4)):
            edit = rng.randrange(6)
            where = rng.randrange(len(program)) if program else 0
            if edit == 0 and len(program) > 1:
                del program[where]
            elif edit == 1:
                program.insert(rng.randrange(len(program) + 1), program[where])
            elif edit == 2:
                donor = rng.choice(self.corpus)
                program.insert(rng.randrange(len(program) + 1), rng.choice(donor))
            elif edit == 3 and len(program) > 1:
                other = rng.randrange(len(program))
                program[where], program[other] = program[other], program[where]
            else:
                leaves = _leaves(program[where]) if program else []
                if leaves:
                    path = rng.choice(leaves)
                    program[where] = _replace(program[where], path, self._argument(_get(program[where], path)))
        return program[:MAX_STEPS]
