"""pipelined.config.lines: line numbers of tables and keys in raw TOML text."""

from __future__ import annotations

import textwrap

from pipelined.config.lines import LineIndex

TEXT = textwrap.dedent(
    '''\
    description = """
    name = "not a key: inside a multi-line string"
    """
    max_threads = 4          # line 4
    hooks.on_error = "m:f"   # line 5 (dotted key)

    [[stage]]                # line 7
    name = "a"
    "threads" = 2            # line 9 (quoted key)

    [stage.hooks]            # line 11
    after_fork = "m:g"

    [[stage]]                # line 14
    name = "b"
    kind = "pipeline"
      [[stage.stage]]        # line 17
      name = "c"
      [[ stage.stage.stage ]]  # line 19
      name = "d"
      [stage.stage.stage.args]
      x = 1                  # line 22
      [[stage.stage]]        # line 23
      name = "e"
    [[stage]]                # line 25
    name = "f"
    to = [
      "g",
    ]
    weights = { g = 1 }      # line 30
    '''
)


def test_table_headers_resolve_array_indices_at_every_depth() -> None:
    index = LineIndex.scan(TEXT)
    assert index.table_line(("stage", 0)) == 7
    assert index.table_line(("stage", 0, "hooks")) == 11
    assert index.table_line(("stage", 1)) == 14
    assert index.table_line(("stage", 1, "stage", 0)) == 17
    assert index.table_line(("stage", 1, "stage", 0, "stage", 0)) == 19
    assert index.table_line(("stage", 1, "stage", 1)) == 23
    assert index.table_line(("stage", 2)) == 25
    assert index.table_line(()) is None


def test_key_lines() -> None:
    index = LineIndex.scan(TEXT)
    assert index.key_line((), "description") == 1
    assert index.key_line((), "name") is None  # it was inside the multi-line string
    assert index.key_line((), "max_threads") == 4
    assert index.key_line((), "hooks") == 5
    assert index.key_line(("hooks",), "on_error") == 5
    assert index.key_line(("stage", 0), "threads") == 9
    assert index.key_line(("stage", 0, "hooks"), "after_fork") == 12
    assert index.key_line(("stage", 1, "stage", 0, "stage", 0, "args"), "x") == 22
    assert index.key_line(("stage", 2), "weights") == 30


def test_line_for_falls_back_to_the_key_then_the_enclosing_table() -> None:
    index = LineIndex.scan(TEXT)
    assert index.line_for(("stage", 1), "threads") == 14  # not set: the stage's header
    assert index.line_for(("stage", 2, "weights"), "g") == 30  # inline table: its key's line
    assert index.line_for(("hooks",), "on_error") == 5
    assert index.line_for((), "missing") is None


def test_inline_array_of_tables_points_at_its_key() -> None:
    index = LineIndex.scan('stage = [{ name = "a" }]\n')
    assert index.line_for(("stage", 0), "name") == 1


def test_multi_line_array_of_inline_tables_records_each_element() -> None:
    text = 'max_threads = 2\nstage = [\n    { name = "a", threads = 2 },\n    { name = "b", "to" = ["a"] },\n]\nx = 1\n'
    index = LineIndex.scan(text)
    assert index.table_line(("stage", 0)) == 3
    assert index.key_line(("stage", 0), "threads") == 3
    assert index.key_line(("stage", 1), "to") == 4
    assert index.line_for(("stage", 1), "kind") == 4
    assert index.key_line((), "x") == 6
