"""The small functions behind the conf.d examples."""

from __future__ import annotations

from pipelined.stages.examples import count_words, keep_even, parity, square, summarize, words


def test_words_lowercases_and_drops_punctuation_and_numbers() -> None:
    assert list(words('NAME="Debian GNU/Linux" VERSION_ID="12" it\'s')) == [
        "name",
        "debian",
        "gnu",
        "linux",
        "version",
        "id",
        "it's",
    ]
    assert list(words("42 --- !!")) == []


def test_count_words_totals_and_top() -> None:
    summary = count_words(["a", "b", "a", "c", "a", "b"], top=2)
    assert summary == {"words": 6, "distinct": 3, "top": [["a", 3], ["b", 2]]}


def test_number_helpers() -> None:
    assert square(3) == {"n": 3, "square": 9}
    assert parity(3) == {"n": 3, "parity": "odd"}
    assert [keep_even(n) for n in (1, 2)] == [None, 2]
    assert summarize([{"n": 2}, {"n": 3}, {"n": 4}]) == {"count": 3, "first": 2, "last": 4, "sum": 9}
