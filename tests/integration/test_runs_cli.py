"""`pipelined runs`, `run-info` and `dead-letters` against a real daemon: tables, `--json`,
`--limit`, 404s explained, a token, and one clear line when the daemon is unreachable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from harness import PACKAGE_DIR, DaemonProcess
from pipelined.cli.main import main

TOKEN = "runs-token"
STAGES = """
def produce(n=2):
    yield from range(n)

def check(x):
    if isinstance(x, dict) and x.get("bad"):
        raise ValueError(f"bad item {x['bad']}")
    return x

def sink(x):
    pass
"""
ORDERS = """
max_retries = 0

[[stage]]
name = "read"
kind = "producer"
call = "runstages:produce"
auto_start = false

[[stage]]
name = "check"
call = "runstages:check"

[[stage]]
name = "store"
kind = "consumer"
call = "runstages:sink"
"""


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_runs_run_info_and_dead_letters(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    daemon = DaemonProcess(tmp_path, settings=f'[api]\ntoken_file = "{token_file}"\n')
    daemon.write_module("runstages", STAGES)
    daemon.write_pipeline("orders", ORDERS)
    daemon.start()
    monkeypatch.setenv("PIPELINED_TOKEN", TOKEN)
    api = ("--api", daemon.url)
    try:
        code, out, _ = cli(capsys, "runs", "orders", *api)
        assert code == 0 and out == "orders: no runs yet\n"
        code, out, _ = cli(capsys, "dead-letters", "orders", *api)
        assert code == 0 and out == "orders: no dead letters\n"

        assert cli(capsys, "trigger", "orders", "read", "--arg", "n=3", "--wait", *api)[0] == 0
        code, _, _ = cli(capsys, "trigger", "orders", "check", "--items", '[{"bad": 1}, {"bad": 2}, 5]', "--wait", *api)
        assert code == 1  # the run failed: two items dead-lettered

        code, out, _ = cli(capsys, "runs", "orders", *api)
        lines = out.splitlines()
        assert code == 0 and lines[0].split()[:5] == ["RUN", "STAGE", "STATE", "STARTED", "TOOK"]
        assert [line.split()[:3] for line in lines[1:]] == [["r-000002", "check", "failed"],
                                                           ["r-000001", "read", "completed"]]  # newest first
        assert "2 items were dead-lettered (last error: " in lines[1] and lines[1].endswith("…")  # cut to 60
        code, out, _ = cli(capsys, "runs", "orders", "--limit", "1", "--json", *api)
        runs = orjson.loads(out)
        assert [r["run"] for r in runs] == ["r-000002"] and runs[0]["items"]["dead_lettered"] == 2

        code, out, _ = cli(capsys, "run-info", "orders", "r-000001", *api)
        info = dict(line.split(":", 1) for line in out.splitlines())
        assert code == 0 and info["run"].strip() == "r-000001" and info["state"].strip() == "completed"
        assert info["items produced"].strip() == "3" and info["items finished"].strip() == "3"
        assert info["error"].strip() == "-" and info["took"].strip().endswith("s")
        code, out, _ = cli(capsys, "run-info", "orders", "r-000002", "--json", *api)
        assert orjson.loads(out)["state"] == "failed"

        code, out, _ = cli(capsys, "dead-letters", "orders", *api)
        lines = out.splitlines()
        assert code == 0 and lines[0].split() == ["AT", "RUN", "STAGE", "ATTEMPTS", "ERROR", "ITEM"]
        assert len(lines) == 3 and all("r-000002" in line and "ValueError: bad item" in line for line in lines[1:])
        assert lines[1].rstrip().endswith('{"bad":2}') and lines[2].rstrip().endswith('{"bad":1}')  # newest first
        code, out, _ = cli(capsys, "dead-letters", "orders", "--limit", "1", "--json", *api)
        letters = orjson.loads(out)
        assert len(letters) == 1 and letters[0]["item"] == {"bad": 2} and letters[0]["attempts"] == 1

        # 404s say which thing is unknown and where to look
        code, _, err = cli(capsys, "run-info", "orders", "r-999999", *api)
        assert code == 1 and err == ("pipelined run-info: GET /pipelines/orders/runs/r-999999: 404 pipeline 'orders' "
                                     "has no run 'r-999999' (its recent runs: pipelined runs orders)\n")  # fmt: skip
        for command in (("runs", "nope"), ("dead-letters", "nope"), ("run-info", "nope", "r-000001")):
            code, _, err = cli(capsys, *command, *api)
            assert code == 1 and "404 no pipeline named 'nope' (the loaded pipelines: pipelined status)" in err
        # a wrong token: 401 in one line
        monkeypatch.setenv("PIPELINED_TOKEN", "wrong")
        code, _, err = cli(capsys, "runs", "orders", *api)
        assert code == 1 and err.startswith("pipelined runs: GET /pipelines/orders/runs: 401") and err.count("\n") == 1
        monkeypatch.setenv("PIPELINED_TOKEN", TOKEN)
        # bad --limit: argparse's usage error, exit 2
        with pytest.raises(SystemExit) as exited:
            main(["runs", "orders", "--limit", "0", *api])
        assert exited.value.code == 2 and "must be between 1 and 100000" in capsys.readouterr().err

        # as a subprocess too (how scripts call it), token from the file
        env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR)}
        env.pop("PIPELINED_TOKEN", None)
        done = subprocess.run([sys.executable, "-m", "pipelined", "dead-letters", "orders", "--json", "--token-file",
                               str(token_file), *api], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0 and len(orjson.loads(done.stdout)) == 2, done.stderr
    finally:
        daemon.close()
    for command in (("runs", "orders"), ("run-info", "orders", "r-000001"), ("dead-letters", "orders")):
        code, out, err = cli(capsys, *command, *api)
        assert code == 1 and out == "" and err.count("\n") == 1
        assert f"pipelined {command[0]}: cannot reach the pipelined daemon at {daemon.url}" in err
