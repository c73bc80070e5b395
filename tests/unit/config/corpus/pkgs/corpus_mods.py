"""Callables the invalid-file corpus points at (good ones and deliberately wrong ones)."""

from collections.abc import Iterator
from typing import Any

not_callable = 42


def produce() -> Iterator[int]:
    yield from range(3)


def produce_needs(item: Any) -> Iterator[Any]:
    yield item


def process(item: Any) -> Any:
    return item


def process_none() -> None:
    return None


def process_two(item: Any, other: Any) -> Any:
    return item, other


def process_kw(item: Any, *, factor: int) -> Any:
    return item * factor


def consume(item: Any) -> None:
    return None


def emits_unknown(item: Any, ctx: Any) -> None:
    ctx.emit_to("ghost", item)


class Scorer:
    def __init__(self, weight: int = 1) -> None:
        self.weight = weight

    def __call__(self, item: Any) -> Any:
        return item * self.weight


class NoCall:
    def __init__(self) -> None:
        self.ready = True


def hook_run(run: Any) -> None:
    return None


def hook_noargs() -> None:
    return None


class SourceNeeds:
    def __call__(self, *, since: int) -> list[int]:
        return [since]
