"""Client commands given names that are not names, against a real daemon: an empty RUN, `..`,
`?`, `#` and `/` in NAME or RUN must reach the daemon as that one path segment (or be refused
before sending), never as another endpoint — `pipelined trigger '../../reload#' x` once reloaded
the daemon, and `run-info NAME ../` printed the pipeline as if it were a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import DaemonProcess
from pipelined.cli.main import main

STAGES = """
def produce(n=2):
    yield from range(n)

def sink(x):
    pass
"""
ORDERS = """
[[stage]]
name = "read"
kind = "producer"
call = "hostilestages:produce"
auto_start = false

[[stage]]
name = "store"
kind = "consumer"
call = "hostilestages:sink"
"""


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def reloads(daemon: DaemonProcess) -> int:
    return daemon.logs().count("reload (api)")


def test_names_that_are_not_names_never_reach_another_endpoint(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    daemon = DaemonProcess(tmp_path)
    daemon.write_module("hostilestages", STAGES)
    daemon.write_pipeline("orders", ORDERS)
    daemon.start()
    api = ("--api", daemon.url)
    try:
        before = reloads(daemon)
        for argv in (("trigger", "../../reload#", "x"), ("trigger", "orders", "../../../reload?"),
                     ("drain", "../reload#"), ("start", "../reload#")):  # fmt: skip
            code, out, err = cli(capsys, *argv, *api)
            assert code == 1 and out == "" and err.count("\n") == 1, (argv, err)
        assert reloads(daemon) == before, "a client command reached POST /reload"
        assert daemon.pipeline("orders")["state"] == "running"

        for run in ("", ".", "..", "../", "?x", "#", "r-000001/.."):
            code, out, err = cli(capsys, "run-info", "orders", run, *api)
            assert code == 1 and out == "" and err.count("\n") == 1, (run, out, err)
            assert err.startswith("pipelined run-info: "), err
        code, _, err = cli(capsys, "run-info", "orders", "?x", *api)
        assert "has no run '?x'" in err
        code, _, err = cli(capsys, "run-info", "orders", "", *api)
        assert "RUN '' is not a valid name" in err

        for argv in (("runs", "a/b"), ("dead-letters", "a#b"), ("stats", "a?b"), ("graph", "--remote", "a/b")):
            code, out, err = cli(capsys, *argv, *api)
            assert code == 1 and out == "" and ": 404 " in err and err.count("\n") == 1, (argv, err)
            if "/" not in argv[-1]:  # the router decodes %2F before matching: "no such endpoint" then
                assert f"no pipeline named {argv[-1]!r}" in err, (argv, err)
        for argv in (("runs", ".."), ("dead-letters", "."), ("stats", "..")):
            code, out, err = cli(capsys, *argv, *api)
            assert code == 1 and out == "" and "is not a valid name" in err, (argv, out, err)
    finally:
        daemon.close()
