"""`pipelined check` and `pipelined graph FILE` (pipelined.cli.offline)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelined.cli import offline as cli_offline

PIPELINE = """\
python_path = ["code"]

[[stage]]
name = "src"
kind = "producer"
call = "clit_stages:produce"

[[stage]]
name = "double"
call = "clit_stages:double"
threads = 3

[[stage]]
name = "sink"
kind = "consumer"
call = "clit_stages:save"
"""
STAGES = """\
def produce():
    yield from range(3)

def double(item):
    return item * 2

def save(item):
    return None
"""


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipelined")
    cli_offline.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.handler(args)
    assert isinstance(code, int)
    return code


@pytest.fixture
def conf(tmp_path: Path) -> Iterator[Path]:
    conf_dir = tmp_path / "conf.d"
    (conf_dir / "code").mkdir(parents=True)
    (conf_dir / "code" / "clit_stages.py").write_text(STAGES)
    (conf_dir / "orders.toml").write_text(PIPELINE)
    yield conf_dir
    for name in [n for n in sys.modules if n.startswith("clit_")]:
        del sys.modules[name]
    for entry in [e for e in sys.path if e.startswith(str(tmp_path))]:
        sys.path.remove(entry)


def test_check_valid_directory(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", str(conf)]) == 0
    assert capsys.readouterr().out == "checked 1 file: 1 valid, 0 invalid (0 errors, 0 warnings)\n"


def test_check_prints_every_problem_then_a_summary(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (conf / "broken.toml").write_text(PIPELINE.replace("threads = 3", "thread = 3\nmax_size = 2"))
    (conf / "warned.toml").write_text(PIPELINE.replace('["code"]', '["code", "nowhere"]'))
    assert run(["check", str(conf)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f'{conf}/broken.toml:11: broken/double/thread: unknown key "thread" (did you mean "threads"?)',
        f'{conf}/broken.toml:12: broken/double/max_size: "max_size" only applies to kind = "accumulator" '
        '(this stage\'s kind is "processor")',
        f'warning: {conf}/warned.toml:1: warned/python_path: "nowhere" is not a directory ({conf}/nowhere)',
        "checked 3 files: 2 valid, 1 invalid (2 errors, 1 warning)",
    ]


def test_check_warnings_alone_exit_zero(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (conf / "orders.toml").write_text(PIPELINE.replace('["code"]', '["code", "nowhere"]'))
    assert run(["check", str(conf / "orders.toml")]) == 0
    assert (
        capsys.readouterr().out.splitlines()[-1] == "checked 1 file: 1 valid, 0 invalid (0 errors, 1 warning)"
    )


def test_check_file_with_invalid_pipeline_name_counts_as_invalid(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (conf / "Orders.toml").write_text(PIPELINE)
    assert run(["check", str(conf)]) == 1
    out = capsys.readouterr().out
    assert 'invalid pipeline name "Orders"' in out
    assert out.splitlines()[-1] == "checked 2 files: 1 valid, 1 invalid (1 error, 0 warnings)"


def test_check_defaults_to_the_conf_dir_of_the_settings_file(
    conf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "pipelined.toml"
    settings.write_text(f'[daemon]\nconf_dir = "{conf}"\n')
    assert run(["check", "--config", str(settings)]) == 0
    assert "checked 1 file: 1 valid" in capsys.readouterr().out


def test_check_with_an_invalid_settings_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "pipelined.toml"
    settings.write_text('[daemon]\nconf_dri = "/x"\n')
    assert run(["check", "--config", str(settings)]) == 1
    assert "conf_dri" in capsys.readouterr().err


def test_conf_dir_fallback_reads_the_settings_toml_itself(tmp_path: Path) -> None:
    settings = tmp_path / "pipelined.toml"
    settings.write_text('[daemon]\nconf_dir = "/srv/conf.d"\n')
    assert cli_offline._conf_dir_from_toml(settings) == Path("/srv/conf.d")
    assert cli_offline._conf_dir_from_toml(None) in (cli_offline.DEFAULT_CONF_DIR, Path("/srv/conf.d"))


def test_graph_mermaid_by_default(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["graph", str(conf / "orders.toml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart LR\n")
    assert "st_src --> st_double" in out and "st_double --> st_sink" in out and "3 threads" in out


def test_graph_json_is_the_api_shape(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["graph", str(conf / "orders.toml"), "--format", "json"]) == 0
    graph: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    assert [(n["id"], n["kind"], n["threads"]) for n in graph["nodes"]] == [
        ("src", "producer", 1),
        ("double", "processor", 3),
        ("sink", "consumer", 1),
    ]
    assert [(e["from"], e["to"], e["route"]) for e in graph["edges"]] == [
        ("src", "double", "direct"),
        ("double", "sink", "direct"),
    ]


def test_graph_dot(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["graph", str(conf / "orders.toml"), "--format", "dot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "orders"') and out.rstrip().endswith("}")


def test_graph_of_an_invalid_file_prints_its_problems(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (conf / "orders.toml").write_text(PIPELINE + "bogus = 1\n")
    assert run(["graph", str(conf / "orders.toml")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and 'unknown key "bogus"' in captured.err


def test_graph_needs_a_file_or_remote(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["graph"]) == 2
    assert "FILE" in capsys.readouterr().err


def test_graph_remote_is_delegated_to_the_remote_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []

    def remote_graph(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(cli_offline, "remote_graph", remote_graph)
    argv = ["graph", "--remote", "orders", "--api", "unix:/run/p.sock", "--token-file", "/t", "--json"]
    assert run([*argv, "--format", "dot"]) == 0
    (args,) = seen
    assert (args.remote, args.api, args.token_file, args.json, args.format) == (
        "orders", "unix:/run/p.sock", Path("/t"), True, "dot",
    )  # fmt: skip


def test_pipelined_check_command_end_to_end(conf: Path) -> None:
    (conf / "bad.toml").write_text(PIPELINE.replace("clit_stages:save", "clit_stages:missing"))
    done = subprocess.run(
        [sys.executable, "-m", "pipelined", "check", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert textwrap.dedent(done.stdout).splitlines() == [
        f'{conf}/bad.toml:16: bad/sink/call: module "clit_stages" has no attribute "missing"',
        "checked 2 files: 1 valid, 1 invalid (1 error, 0 warnings)",
    ]


def test_what_user_code_prints_on_import_stays_out_of_the_output(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (conf / "code" / "clit_stages.py").write_text('print("hello from import")\n' + STAGES)
    assert run(["check", str(conf)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "checked 1 file: 1 valid, 0 invalid (0 errors, 0 warnings)\n"
    assert "hello from import" in captured.err
