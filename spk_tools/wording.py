"""Words of the command's output: counts with their nouns in the right number."""

from __future__ import annotations


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 major frame``, ``2 major frames`` (``words`` for an irregular plural)."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"
