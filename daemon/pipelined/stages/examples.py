"""Small stage functions used by the shipped conf.d/ examples (`pipelined.stages.examples:...`)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def words(line: str) -> Iterator[str]:
    """Processor (generator): every word of a line, lower-cased; a line without words emits nothing."""
    for match in _WORD.finditer(str(line)):
        yield match.group().lower()


def count_words(batch: Sequence[str], top: int = 10) -> dict[str, Any]:
    """Processor: a batch of words → {"words": total, "distinct": n, "top": [[word, count], ...]}."""
    counts = Counter(batch)
    return {
        "words": sum(counts.values()),
        "distinct": len(counts),
        "top": [[word, n] for word, n in counts.most_common(top)],
    }


def square(number: int | float) -> dict[str, Any]:
    """Processor: a number → {"n": number, "square": number²}."""
    return {"n": number, "square": number * number}


def parity(number: int) -> dict[str, Any]:
    """Processor: a number → {"n": number, "parity": "even" | "odd"}."""
    return {"n": number, "parity": "even" if number % 2 == 0 else "odd"}


def keep_even(number: int) -> int | None:
    """Processor used as a filter: returns even numbers, drops odd ones (returns None)."""
    return number if number % 2 == 0 else None


def summarize(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Processor: a batch of {"n": ...} dicts → {"count", "first", "last", "sum"} of their `n`."""
    numbers = [entry["n"] for entry in batch]
    return {"count": len(numbers), "first": numbers[0], "last": numbers[-1], "sum": sum(numbers)}
