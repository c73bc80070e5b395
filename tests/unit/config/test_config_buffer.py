"""Pipeline keys buffer / buffer_sync: values read, misuses errors naming file, line and key."""

from __future__ import annotations

from pathlib import Path

from pipelined.graph.check import load_pipeline

STAGES = '''
[[stage]]
name = "src"
kind = "producer"
call = "pipelined.stages:count"

[[stage]]
name = "sink"
kind = "consumer"
call = "pipelined.stages:log"
'''


def load(tmp_path: Path, head: str, stages: str = STAGES) -> tuple[object, list[str], list[str]]:
    path = tmp_path / "orders.toml"
    path.write_text(head + stages)
    spec, problems = load_pipeline(path)
    return (
        spec,
        [str(p) for p in problems if p.severity == "error"],
        [str(p) for p in problems if p.severity == "warning"],
    )


def test_defaults_are_the_memory_buffer(tmp_path: Path) -> None:
    spec, errors, warnings = load(tmp_path, "")
    assert errors == [] and warnings == []
    assert (spec.buffer, spec.buffer_sync) == ("memory", "normal")  # type: ignore[attr-defined]


def test_disk_and_full_are_read(tmp_path: Path) -> None:
    spec, errors, warnings = load(tmp_path, 'buffer = "disk"\nbuffer_sync = "full"\n')
    assert errors == [] and warnings == []
    assert (spec.buffer, spec.buffer_sync) == ("disk", "full")  # type: ignore[attr-defined]


def test_unknown_values_are_errors_naming_file_line_and_key(tmp_path: Path) -> None:
    _, errors, _ = load(tmp_path, 'buffer = "disc"\nbuffer_sync = "always"\n')
    assert any(e.startswith(f"{tmp_path / 'orders.toml'}:1: orders/buffer: ") and '"disc"' in e
               and 'did you mean "disk"' in e for e in errors), errors
    assert any(":2: orders/buffer_sync: " in e and '"always"' in e for e in errors), errors
    _, errors, _ = load(tmp_path, "buffer = true\n")
    assert any("orders/buffer: " in e for e in errors), errors


def test_buffer_sync_without_a_disk_buffer_is_a_warning(tmp_path: Path) -> None:
    _, errors, warnings = load(tmp_path, 'buffer_sync = "full"\n')
    assert errors == []
    assert warnings == [f'warning: {tmp_path / "orders.toml"}:1: orders/buffer_sync: has no effect without buffer = "disk"']


def test_buffer_inside_a_stage_is_an_error_pointing_to_the_top(tmp_path: Path) -> None:
    _, errors, _ = load(tmp_path, "", STAGES + 'buffer = "disk"\n')
    assert any('unknown key "buffer"' in e and "is a pipeline key" in e for e in errors), errors
