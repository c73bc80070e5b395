"""Stage keys rate_limit / concurrency / priority and the pipeline key priority_max_wait."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipelined.config.rates import parse_rate
from pipelined.config.spec import PipelineSpec, RateLimit
from pipelined.graph.check import load_pipeline

STAGE = '[[stage]]\nname = "src"\nkind = "producer"\ncall = "pipelined.stages:count"\n'


def load(tmp_path: Path, text: str, head: str = "") -> tuple[PipelineSpec | None, list[str]]:
    path = tmp_path / "orders.toml"
    path.write_text(textwrap.dedent(head) + STAGE + textwrap.dedent(text))
    spec, problems = load_pipeline(path)
    return spec, [str(p).replace(f"{tmp_path}/", "") for p in problems if p.severity == "error"]


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("10/s", 10, 1.0), ("600/min", 600, 60.0), ("5000/h", 5000, 3600.0), (" 3 / S ", 3, 1.0), ("1/MIN", 1, 60.0),
     ("1000000000000/s", 10**12, 1.0)],
)
def test_rates_parse(text: str, count: int, period: float) -> None:
    rate = parse_rate(text)
    assert (rate.count, rate.period_s) == (count, period)
    assert rate.per_second == count / period


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0/s", "0 calls would never call the stage"),
        ("10/m", 'did you mean "10/min"?'),
        ("10/sec", 'did you mean "10/s"?'),
        ("10/d", 'got string "10/d"'),
        ("1.5/s", 'got string "1.5/s"'),
        ("-1/s", 'got string "-1/s"'),
        ("10", 'got string "10"'),
        (10, "got integer 10"),
        (True, "got boolean true"),
        ("\uff11\uff10/s", "got string"),  # fullwidth digits: N is written in ASCII digits
        ("\u0663/s", "got string"),  # an Arabic-Indic three
        ("1" + "0" * 400 + "/s", "at most 1000000000000"),  # was accepted: no float holds it (start failed)
        ("1" + "0" * 5000 + "/s", "at most 1000000000000"),  # was Python's own int-conversion message
        ("1000000000001/h", "at most 1000000000000"),
    ],
)
def test_bad_rates_say_what_is_accepted(value: object, words: str) -> None:
    with pytest.raises(ValueError, match="a rate like") as caught:
        parse_rate(value)
    assert words in str(caught.value)


def test_keys_are_read(tmp_path: Path) -> None:
    spec, errors = load(
        tmp_path,
        """
        priority = 7
        [[stage]]
        name = "call_api"
        call = "pipelined.stages:log"
        rate_limit = "600/min"
        concurrency = 2
        threads = 8
        [[stage]]
        name = "store"
        kind = "consumer"
        call = "pipelined.stages:log"
        processes = 2
        rate_limit = "10/s"
        """,
        head='priority_max_wait = "2s"\n',
    )
    assert errors == []
    assert spec is not None
    assert spec.priority_max_wait == 2.0
    assert spec.stage("src").priority == 7  # type: ignore[union-attr]
    api = spec.stage("call_api")
    assert api is not None and api.rate_limit == RateLimit(600, 60.0, "600/min") and api.concurrency == 2
    store = spec.stage("store")
    assert store is not None and store.rate_limit == RateLimit(10, 1.0, "10/s") and store.concurrency is None


def test_defaults(tmp_path: Path) -> None:
    spec, errors = load(tmp_path, '[[stage]]\nname = "show"\nkind = "consumer"\ncall = "pipelined.stages:log"\n')
    assert errors == [] and spec is not None
    assert spec.priority_max_wait == 30.0
    assert spec.stage("src").priority == 0  # type: ignore[union-attr]
    show = spec.stage("show")
    assert show is not None and show.rate_limit is None and show.concurrency is None


def test_misuses_are_errors_naming_the_key(tmp_path: Path) -> None:
    _, errors = load(
        tmp_path,
        """
        priority = 11
        rate_limit = "5/s"
        [[stage]]
        name = "a"
        call = "pipelined.stages:log"
        rate_limit = "5 per second"
        concurrency = 0
        priority = 1
        [[stage]]
        name = "b"
        kind = "accumulator"
        concurrency = 2
        [[stage]]
        name = "c"
        kind = "consumer"
        call = "pipelined.stages:log"
        concurrency = true
        """,
        head='priority_max_wait = "0s"\n',
    )
    expected = [
        'orders/priority_max_wait: must be a duration > 0, got string "0s"',
        "orders/src/priority: must be an integer from -10 to 10, got integer 11",
        'orders/src/rate_limit: "rate_limit" only applies to kind = "processor" or "consumer" (this stage\'s kind '
        'is "producer"); a producer is called once per run: limit the stage its items go to',
        'orders/a/rate_limit: must be a rate like "10/s", "600/min" or "5000/h"',
        "orders/a/concurrency: must be an integer >= 1, got integer 0",
        'orders/a/priority: "priority" only applies to kind = "producer" (this stage\'s kind is "processor"); '
        "a run's priority comes from its trigger or its producer",
        'orders/b/concurrency: "concurrency" only applies to kind = "processor" or "consumer"',
        "orders/c/concurrency: must be an integer >= 1, got boolean true",
    ]
    for text in expected:
        assert any(text in e for e in errors), f"{text!r} not in:\n" + "\n".join(errors)
    assert len(errors) == len(expected), "\n".join(errors)


def test_a_pipeline_key_in_a_stage_says_where_it_belongs(tmp_path: Path) -> None:
    _, errors = load(tmp_path, '[[stage]]\nname = "a"\ncall = "pipelined.stages:log"\npriority_max_wait = "5s"\n')
    assert any('"priority_max_wait" is a pipeline key: put it at the top of the file' in e for e in errors), errors
