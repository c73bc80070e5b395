"""command: one program run per item, JSON in, JSON lines out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from stages_fake_context import FakeContext

from pipelined.stages import CommandFailed, command

PY = sys.executable


def run(item: object, ctx: FakeContext | None = None, **kwargs: object) -> list[object]:
    return list(command(item, ctx=ctx, **kwargs))  # type: ignore[arg-type]


def test_the_item_arrives_as_json_and_json_lines_come_back() -> None:
    script = "import json,sys; d=json.load(sys.stdin); print(json.dumps({'double': d['n']*2})); print(); print('[1, 2]')"
    assert run({"n": 21}, cmd=[PY, "-c", script]) == [{"double": 42}, [1, 2]]


def test_lines_that_are_not_json_come_back_as_strings() -> None:
    assert run("hello", cmd="tr a-z A-Z") == ["HELLO"]  # '"hello"' → '"HELLO"', a JSON string
    assert run(None, cmd=[PY, "-c", "print('plain words')\nprint('{broken')"]) == ["plain words", "{broken"]


def test_a_string_cmd_is_split_like_a_shell_without_a_shell(tmp_path: Path) -> None:
    assert run(0, cmd=f"{PY} -c 'print(\"$HOME\")'") == ["$HOME"]


def test_non_zero_exit_raises_with_exit_code_and_stderr(ctx: FakeContext) -> None:
    script = "import sys; print('partial output'); sys.stderr.write('boom: bad input\\n'); sys.exit(3)"
    with pytest.raises(CommandFailed) as info:
        run(1, ctx=ctx, cmd=[PY, "-c", script])
    message = str(info.value)
    assert message.startswith("demo/source (command): ")
    assert "exited with exit code 3; stderr: boom: bad input" in message


def test_long_stderr_is_trimmed_to_its_end() -> None:
    script = "import sys; sys.stderr.write('x' * 10000 + 'THE END'); sys.exit(1)"
    with pytest.raises(CommandFailed) as info:
        run(1, cmd=[PY, "-c", script])
    assert str(info.value).endswith("xxxTHE END")
    assert len(str(info.value)) < 3000


def test_a_failed_attempt_emits_nothing() -> None:
    outputs = command(1, cmd=[PY, "-c", "print(1); raise SystemExit(2)"])
    with pytest.raises(CommandFailed):
        next(outputs)  # raised before the first output: a retry cannot duplicate outputs


def test_timeout_kills_the_program() -> None:
    with pytest.raises(CommandFailed, match=r"timed out after 0.3 s and was killed"):
        run(1, cmd=[PY, "-c", "import time; time.sleep(30)"], timeout="300ms")


def test_death_by_signal_names_the_signal() -> None:
    with pytest.raises(CommandFailed, match=r"was killed by SIGKILL \(exit code -9\)"):
        run(1, cmd=[PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])


def test_missing_program_is_a_clear_error(ctx: FakeContext) -> None:
    with pytest.raises(
        CommandFailed, match=r"demo/source \(command\): cmd: cannot run 'no-such-program-xyz'"
    ):
        run(1, ctx=ctx, cmd=["no-such-program-xyz"])


def test_cwd_and_env(tmp_path: Path) -> None:
    script = "import os; print(os.getcwd()); print(os.environ['GREETING'])"
    assert run(1, cmd=[PY, "-c", script], cwd=str(tmp_path), env={"GREETING": "hi"}) == [str(tmp_path), "hi"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cmd": []}, "cmd: must not be empty"),
        ({"cmd": ["ls", 3]}, "cmd: expected a string or a list of strings"),
        ({"cmd": "echo 'unclosed"}, "cmd: cannot split"),
        ({"cmd": "true", "env": {"A": 1}}, "env: expected a table of strings"),
        ({"cmd": "true", "timeout": "forever"}, "timeout: invalid duration 'forever'"),
    ],
)
def test_bad_arguments_name_stage_and_key(ctx: FakeContext, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        run(1, ctx=ctx, **kwargs)
    assert str(info.value).startswith("demo/source (command): ")
    assert message in str(info.value)
