"""pipelined.config.load + pipelined.graph.check: a pipeline file → PipelineSpec, defaults, overrides, nesting, problems."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelined.config.load import is_pipeline_file
from pipelined.config.spec import Hooks, PipelineSpec, Problem
from pipelined.graph.check import check_paths, load_pipeline, parse_pipeline

STAGES = textwrap.dedent(
    """\
    def produce(limit=3):
        yield from range(limit)

    def work(item):
        return item

    def route(item, ctx):
        ctx.emit_to("sink", item)

    def save(item):
        return None

    def hook(*args):
        return None

    class Scorer:
        def __init__(self, weight=1):
            self.weight = weight

        def __call__(self, item):
            return item
    """
)
MINIMAL = """\
python_path = ["code"]

[[stage]]
name = "src"
kind = "producer"
call = "cfgt_stages:produce"

[[stage]]
name = "sink"
kind = "consumer"
call = "cfgt_stages:save"
"""


@pytest.fixture
def conf(tmp_path: Path) -> Iterator[Path]:
    """A conf dir whose code/ holds the module cfgt_stages (forgotten after the test)."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "cfgt_stages.py").write_text(STAGES)
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("cfgt_")]:
        del sys.modules[name]
    for entry in [e for e in sys.path if e.startswith(str(tmp_path))]:
        sys.path.remove(entry)


def load(conf: Path, text: str, name: str = "orders") -> tuple[PipelineSpec | None, list[Problem]]:
    path = conf / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return load_pipeline(path)


def valid(conf: Path, text: str, name: str = "orders") -> PipelineSpec:
    spec, problems = load(conf, text, name)
    errors = [str(p) for p in problems if p.severity == "error"]
    assert spec is not None and not errors, errors
    return spec


def messages(problems: list[Problem]) -> list[str]:
    return [f"{p.where}: {p.message}" for p in problems]


# -- valid files -------------------------------------------------------------------------------
def test_minimal_file_gets_every_default(conf: Path) -> None:
    spec = valid(conf, MINIMAL)
    assert (spec.name, spec.file, spec.description, spec.enabled) == (
        "orders",
        conf / "orders.toml",
        "",
        True,
    )
    assert (spec.max_threads, spec.max_processes, spec.max_retries, spec.retry_backoff) == (5, 2, 3, 0.1)
    assert (spec.queue_size, spec.on_full, spec.track_latency, spec.drain_timeout) == (
        1000,
        "block",
        False,
        None,
    )
    assert spec.python_path == (conf / "code",)
    assert spec.hooks == Hooks()
    src, sink = spec.stages
    assert (src.name, src.kind, src.call, src.args, src.threads, src.processes) == (
        "src", "producer", "cfgt_stages:produce", {}, None, None,
    )  # fmt: skip
    assert (src.auto_start, src.to, src.from_, src.fanout, src.weights) == (True, None, None, None, None)
    assert (src.queue_size, src.on_full, src.max_retries, src.retry_backoff) == (1000, "block", 3, 0.1)
    assert (src.process_mode, src.start_method, src.max_items_per_worker) == ("pool", "forkserver", 0)
    assert (src.line, sink.line) == (3, 8)


def test_version_is_the_sha256_prefix_of_the_bytes(conf: Path) -> None:
    spec = valid(conf, MINIMAL)
    assert spec.version == hashlib.sha256(MINIMAL.encode()).hexdigest()[:12]


def test_every_pipeline_key(conf: Path) -> None:
    spec = valid(
        conf,
        """\
        description = "all keys"
        enabled = false
        max_threads = 8
        max_processes = 3
        max_retries = 0
        retry_backoff = "250ms"
        queue_size = 10
        on_full = "reject"
        track_latency = true
        drain_timeout = "2m"
        python_path = ["code", "./code/../code"]

        [hooks]
        before_run = "cfgt_stages:hook"
        after_run = "cfgt_stages:hook"
        before_fork = "cfgt_stages:hook"
        after_fork = "cfgt_stages:hook"
        on_error = "cfgt_stages:hook"
        """
        + MINIMAL.split("\n", 1)[1],
    )
    assert (spec.description, spec.enabled, spec.max_threads, spec.max_processes) == ("all keys", False, 8, 3)
    assert (spec.max_retries, spec.retry_backoff, spec.queue_size, spec.on_full) == (0, 0.25, 10, "reject")
    assert (spec.track_latency, spec.drain_timeout) == (True, 120.0)
    assert spec.python_path == (conf / "code", conf / "code")
    assert spec.hooks == Hooks(*(["cfgt_stages:hook"] * 5))
    assert all(
        (s.queue_size, s.on_full, s.max_retries, s.retry_backoff) == (10, "reject", 0, 0.25)
        for s in spec.stages
    )


def test_every_stage_key(conf: Path) -> None:
    spec = valid(
        conf,
        """\
        python_path = ["code"]

        [[stage]]
        name = "src"
        kind = "producer"
        call = "cfgt_stages:produce"
        args = { limit = 5 }
        auto_start = false
        threads = 2
        to = ["a", "b"]
        fanout = "weighted"
        weights = { a = 1, b = 3 }

        [[stage]]
        name = "a"
        call = "cfgt_stages:Scorer"
        args = { weight = 2 }
        processes = 2
        process_mode = "pool"
        start_method = "spawn"
        max_items_per_worker = 100
        to = ["batch"]
        queue_size = 5
        on_full = "drop_oldest"
        max_retries = 1
        retry_backoff = 2

        [stage.hooks]
        on_error = "cfgt_stages:hook"

        [[stage]]
        name = "b"
        call = "cfgt_stages:work"
        processes = 1
        process_mode = "fork_per_item"

        [[stage]]
        name = "batch"
        kind = "accumulator"
        from = ["a", "b"]
        max_size = 50
        max_wait = "5s"

        [[stage]]
        name = "sink"
        kind = "consumer"
        call = "cfgt_stages:save"
        """,
    )
    src = spec.stage("src")
    assert src is not None and (src.args, src.auto_start, src.threads, src.to) == (
        {"limit": 5},
        False,
        2,
        ("a", "b"),
    )
    assert (src.fanout, src.weights, src.effective_fanout) == ("weighted", {"a": 1, "b": 3}, "weighted")
    a = spec.stage("a")
    assert a is not None and (a.processes, a.threads, a.process_mode, a.start_method) == (
        2,
        None,
        "pool",
        "spawn",
    )
    assert (a.max_items_per_worker, a.queue_size, a.on_full, a.max_retries, a.retry_backoff) == (
        100, 5, "drop_oldest", 1, 2.0,
    )  # fmt: skip
    assert a.hooks == Hooks(on_error="cfgt_stages:hook") and a.uses_processes and a.requested_threads == 0
    b = spec.stage("b")
    assert b is not None and (b.process_mode, b.processes) == ("fork_per_item", 1)
    batch = spec.stage("batch")
    assert batch is not None and (batch.from_, batch.max_size, batch.max_wait) == (("a", "b"), 50, 5.0)


def test_nested_pipelines_any_depth_inherit_overrides(conf: Path) -> None:
    spec = valid(
        conf,
        """\
        python_path = ["code"]
        queue_size = 100

        [[stage]]
        name = "src"
        kind = "producer"
        call = "cfgt_stages:produce"

        [[stage]]
        name = "outer"
        kind = "pipeline"
        mode = "parallel"
        fanout = "round_robin"
        max_threads = 3
        max_processes = 1
        queue_size = 7
          [[stage.stage]]
          name = "left"
          call = "cfgt_stages:work"
          [[stage.stage]]
          name = "inner"
          kind = "pipeline"
          max_retries = 9
            [[stage.stage.stage]]
            name = "deep"
            call = "cfgt_stages:work"
            queue_size = 1

        [[stage]]
        name = "sink"
        kind = "consumer"
        call = "cfgt_stages:save"
        """,
    )
    outer = spec.stage("outer")
    assert outer is not None and (outer.mode, outer.max_threads, outer.max_processes, outer.fanout) == (
        "parallel", 3, 1, "round_robin",
    )  # fmt: skip
    assert [s.name for s in spec.walk()] == ["src", "outer", "left", "inner", "deep", "sink"]
    left, inner, deep = spec.stage("left"), spec.stage("inner"), spec.stage("deep")
    assert left is not None and inner is not None and deep is not None
    assert (left.queue_size, left.max_retries) == (7, 3)
    assert (inner.queue_size, inner.max_retries) == (7, 9)
    assert (deep.queue_size, deep.max_retries, deep.line) == (1, 9, 24)
    assert spec.stage("src") is not None and spec.stage("src").queue_size == 100  # type: ignore[union-attr]


def test_parallel_nested_pipeline_defaults_to_broadcast(conf: Path) -> None:
    spec = valid(
        conf,
        MINIMAL.replace(
            '[[stage]]\nname = "sink"',
            '[[stage]]\nname = "both"\nkind = "pipeline"\nmode = "parallel"\n'
            '[[stage.stage]]\nname = "x"\ncall = "cfgt_stages:work"\n'
            '[[stage.stage]]\nname = "y"\ncall = "cfgt_stages:work"\n\n[[stage]]\nname = "sink"',
        ),
    )
    both = spec.stage("both")
    assert both is not None and both.fanout is None and both.effective_fanout == "broadcast"


def test_parse_pipeline_validates_text_for_a_path_that_does_not_exist(conf: Path) -> None:
    spec, problems = parse_pipeline(MINIMAL, conf / "fresh.toml")
    assert spec is not None and spec.name == "fresh" and not (conf / "fresh.toml").exists()
    spec_bytes, _ = parse_pipeline(MINIMAL.encode(), conf / "fresh.toml")
    assert spec_bytes == spec


def test_spec_equality_tracks_content(conf: Path) -> None:
    first = valid(conf, MINIMAL)
    again = valid(conf, MINIMAL)
    changed = valid(conf, MINIMAL.replace('"cfgt_stages:save"', '"cfgt_stages:save"\nthreads = 2'))
    assert first == again and first != changed


# -- problems ----------------------------------------------------------------------------------
def test_all_problems_of_a_file_are_collected_with_lines(conf: Path) -> None:
    spec, problems = load(
        conf,
        """\
        python_path = ["code"]
        max_thread = 4
        on_full = "wait"

        [[stage]]
        name = "src"
        kind = "producer"
        call = "cfgt_stages:produce"
        thread = 2

        [[stage]]
        name = "sink"
        kind = "consumer"
        call = "cfgt_stages:nope"
        max_size = 3
        """,
    )
    assert spec is None
    assert [(p.line, p.where) for p in problems] == [
        (2, "orders/max_thread"),
        (3, "orders/on_full"),
        (9, "orders/src/thread"),
        (14, "orders/sink/call"),
        (15, "orders/sink/max_size"),
    ]
    assert all(p.file == str(conf / "orders.toml") for p in problems)


def test_problem_prints_like_pipelined_check(conf: Path) -> None:
    _, problems = load(conf, MINIMAL.replace('name = "src"', 'name = "src"\nthread = 2'))
    assert str(problems[0]) == (
        f'{conf / "orders.toml"}:5: orders/src/thread: unknown key "thread" (did you mean "threads"?)'
    )


def test_warnings_keep_the_spec(conf: Path) -> None:
    spec, problems = load(
        conf, MINIMAL.replace('python_path = ["code"]', 'python_path = ["code", "missing"]')
    )
    assert spec is not None
    assert messages(problems) == [f'orders/python_path: "missing" is not a directory ({conf / "missing"})']
    assert problems[0].severity == "warning" and str(problems[0]).startswith("warning: ")


def test_start_method_with_fork_per_item_is_a_warning(conf: Path) -> None:
    text = MINIMAL.replace(
        'call = "cfgt_stages:save"',
        'call = "cfgt_stages:save"\nprocesses = 2\nprocess_mode = "fork_per_item"\nstart_method = "spawn"',
    )
    spec, problems = load(conf, text)
    assert spec is not None
    assert [p.severity for p in problems] == ["warning"] and "fork_per_item" in problems[0].message


def test_invalid_pipeline_name_is_an_error_but_the_content_is_still_checked(conf: Path) -> None:
    spec, problems = load(conf, MINIMAL.replace('name = "src"', 'name = "src"\nthread = 1'), name="Orders")
    assert spec is None
    assert messages(problems)[0].startswith('Orders: invalid pipeline name "Orders"')
    assert any("unknown key" in m for m in messages(problems))


@pytest.mark.parametrize("stem", ["a", "0-x_y", "a" * 64])
def test_valid_pipeline_names(conf: Path, stem: str) -> None:
    valid(conf, MINIMAL, name=stem)


@pytest.mark.parametrize("stem", ["A", "-a", "_a", "a.b", "a" * 65, "a b", "ä"])
def test_invalid_pipeline_names(conf: Path, stem: str) -> None:
    spec, problems = load(conf, MINIMAL, name=stem)
    assert spec is None and "invalid pipeline name" in problems[0].message


def test_unreadable_file(conf: Path) -> None:
    spec, problems = load_pipeline(conf / "absent.toml")
    assert spec is None and "cannot read the file" in problems[0].message


def test_unnamed_stage_is_reported_by_position(conf: Path) -> None:
    _, problems = load(conf, MINIMAL.replace('name = "sink"\n', ""))
    assert 'orders/stage #2: missing required key "name"' in messages(problems)


def test_duplicate_names_are_reported_once_per_duplicate(conf: Path) -> None:
    _, problems = load(
        conf, MINIMAL + '\n[[stage]]\nname = "src"\nkind = "consumer"\ncall = "cfgt_stages:save"\n'
    )
    dupes = [p for p in problems if "duplicate" in p.message]
    assert [(p.where, p.line) for p in dupes] == [("orders/src", 14)]


def test_kind_typo_checks_the_rest_as_the_suggested_kind(conf: Path) -> None:
    _, problems = load(conf, MINIMAL.replace('kind = "consumer"', 'kind = "consumr"'))
    assert len(problems) == 1 and '(did you mean "consumer"?)' in problems[0].message


def test_args_on_producer_not_auto_started_may_be_left_to_the_trigger(conf: Path) -> None:
    (conf / "code" / "cfgt_needs.py").write_text("def fetch(*, source):\n    return [source]\n")
    text = MINIMAL.replace("cfgt_stages:produce", "cfgt_needs:fetch")
    _, problems = load(conf, text)
    assert messages(problems) == ['orders/src/args: cfgt_needs:fetch is missing required argument "source"']
    valid(conf, text.replace('kind = "producer"', 'kind = "producer"\nauto_start = false'))


def test_emit_to_targets_are_checked_against_every_stage_name(conf: Path) -> None:
    valid(conf, MINIMAL.replace('call = "cfgt_stages:save"', 'call = "cfgt_stages:route"'))
    _, problems = load(conf, MINIMAL.replace('call = "cfgt_stages:produce"', 'call = "cfgt_stages:route"'))
    assert any("producer" in m for m in messages(problems))


def test_a_stage_fed_only_by_a_literal_emit_to_is_not_reported_unreachable(conf: Path) -> None:
    text = textwrap.dedent(
        """\
        python_path = ["code"]

        [[stage]]
        name = "src"
        kind = "producer"
        call = "cfgt_stages:produce"

        [[stage]]
        name = "router"
        kind = "consumer"
        call = "cfgt_stages:route"

        [[stage]]
        name = "sink"
        kind = "consumer"
        call = "cfgt_stages:save"
        """
    )
    spec, problems = load(conf, text)
    assert spec is not None, [str(p) for p in problems]
    assert not [p for p in problems if "sends to" in p.message], problems
    # without the emit_to call the same stage is (rightly) reported as reached by nothing
    _, problems = load(conf, text.replace("cfgt_stages:route", "cfgt_stages:save"))
    assert any('no stage sends to "sink"' in p.message for p in problems)


def test_code_problems_are_reported_alongside_structure_problems(conf: Path) -> None:
    _, problems = load(conf, MINIMAL.replace("cfgt_stages:save", "cfgt_stages:absent") + "bogus = 1\n")
    where = [p.where for p in problems]
    assert "orders/sink/call" in where and "orders/sink/bogus" in where


# -- check_paths -------------------------------------------------------------------------------
def test_check_paths_scans_directories_like_the_daemon(conf: Path) -> None:
    (conf / "good.toml").write_text(MINIMAL)
    (conf / "bad.toml").write_text(MINIMAL + "oops = 1\n")
    (conf / ".hidden.toml").write_text("not toml at all [")
    (conf / "_draft.toml").write_text("not toml at all [")
    (conf / "notes.txt").write_text("ignored")
    (conf / "Bad Name.toml").write_text(MINIMAL)
    problems, checked, invalid = check_paths([conf])
    assert (checked, invalid) == (3, 2)
    assert sorted({Path(p.file).name for p in problems}) == ["Bad Name.toml", "bad.toml"]


def test_check_paths_reports_a_missing_path(conf: Path) -> None:
    problems, checked, invalid = check_paths([conf / "nope.toml"])
    assert (checked, invalid) == (1, 1) and problems[0].message == "no such file or directory"


@pytest.mark.parametrize(
    ("name", "considered"),
    [("a.toml", True), (".a.toml", False), ("_a.toml", False), ("a.toml~", False), ("a.yaml", False)],
)
def test_is_pipeline_file(name: str, considered: bool) -> None:
    assert is_pipeline_file(Path(name)) is considered


def test_two_pipelines_must_not_use_different_modules_of_the_same_name(conf: Path) -> None:
    other = conf / "other"
    (other / "code").mkdir(parents=True)
    (other / "code" / "cfgt_stages.py").write_text(STAGES)
    (conf / "first.toml").write_text(MINIMAL)
    (other / "second.toml").write_text(MINIMAL)
    problems, checked, invalid = check_paths([conf / "first.toml", other / "second.toml"])
    assert (checked, invalid) == (2, 1)
    assert len(problems) == 1
    assert problems[0].file == str(other / "second.toml")
    assert 'module "cfgt_stages"' in problems[0].message and 'pipeline "first"' in problems[0].message
    # the same module from the same place is fine
    (conf / "third.toml").write_text(MINIMAL)
    assert check_paths([conf / "first.toml", conf / "third.toml"])[2] == 0


def test_auto_start_class_producer_must_be_callable_without_trigger_args(conf: Path) -> None:
    (conf / "code" / "cfgt_source.py").write_text(
        "class Source:\n    def __init__(self, dsn='x'):\n        self.dsn = dsn\n\n"
        "    def __call__(self, *, since):\n        return [since]\n"
    )
    text = MINIMAL.replace("cfgt_stages:produce", "cfgt_source:Source")
    _, problems = load(conf, text)
    assert messages(problems) == [
        "orders/src/call: auto_start calls cfgt_source:Source.__call__() without arguments, but it requires "
        '"since" (set auto_start = false, or give defaults)'
    ]
    valid(conf, text.replace('kind = "producer"', 'kind = "producer"\nauto_start = false'))


def test_fork_hooks_on_a_thread_stage_are_a_warning(conf: Path) -> None:
    text = MINIMAL.replace(
        'call = "cfgt_stages:save"',
        'call = "cfgt_stages:save"\n[stage.hooks]\nafter_fork = "cfgt_stages:hook"',
    )
    spec, problems = load(conf, text)
    assert spec is not None
    assert [(p.severity, p.where, p.line) for p in problems] == [
        ("warning", "orders/sink/hooks/after_fork", 13)
    ]
    valid(conf, text.replace('call = "cfgt_stages:save"', 'call = "cfgt_stages:save"\nprocesses = 1'))


def test_routing_is_checked_alongside_unrelated_key_problems(conf: Path) -> None:
    text = MINIMAL.replace('name = "src"', 'name = "src"\nto = ["snk"]') + "bogus = 1\n"
    _, problems = load(conf, text)
    assert {p.where for p in problems if p.severity == "error"} >= {"orders/src/to", "orders/sink/bogus"}


def test_routing_waits_for_valid_names_kinds_and_edges(conf: Path) -> None:
    _, problems = load(conf, MINIMAL.replace('kind = "consumer"', 'kind = "sink"'))
    assert [p.where for p in problems] == ["orders/sink/kind"]  # no guessing at the graph
