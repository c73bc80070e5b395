"""pipelined.config.durations: durations and sizes."""

from __future__ import annotations

import pytest

from pipelined.config.durations import parse_duration, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 10 ms ", 0.01),
        ("3", 3.0),
        ("0", 0.0),
        (5, 5.0),
        (0.5, 0.5),
        ("2H", 7200.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "5 sec", "s", "1d", "-1s", "1e3", "abc", "5s5", True, None, [], -1, float("inf")]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_parse_duration_message_quotes_the_value() -> None:
    with pytest.raises(ValueError, match=r"invalid duration '5 sec': expected a duration like \"250ms\""):
        parse_duration("5 sec")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("1MiB", 1024**2),
        ("1mib", 1024**2),
        ("10KB", 10_000),
        ("512KiB", 512 * 1024),
        ("2GB", 2 * 10**9),
        ("1GiB", 1024**3),
        ("100B", 100),
        ("100", 100),
        (4096, 4096),
        ("1.5KiB", 1536),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "1TB", "MiB", "-1", -5, 1.5, False, "1 Mebibyte"])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)
