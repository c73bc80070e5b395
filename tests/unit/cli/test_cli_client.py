"""`pipelined status|stats|trigger|drain|start|reload|graph --remote` against the real API app
(over FakeControl) served by uvicorn on a free port and on a Unix socket."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from fake_control import TOKEN, FakeControl  # noqa: E402

from harness import free_port, wait_for  # noqa: E402
from pipelined.api import ApiSettings, create_app  # noqa: E402
from pipelined.cli.main import main  # noqa: E402
from pipelined.cli.remote import parse_arg  # noqa: E402


class Served:
    """The API app over a FakeControl, served by uvicorn in a thread."""

    def __init__(self, settings: ApiSettings, uds: Path | None = None) -> None:
        self.fake = FakeControl()
        self.port = free_port()
        self.uds = uds
        options: dict[str, Any] = {"uds": str(uds)} if uds else {"host": "127.0.0.1", "port": self.port}
        config = uvicorn.Config(create_app(self.fake, settings), log_config=None, lifespan="on", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def api(self) -> str:
        return f"unix:{self.uds}" if self.uds else f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Served:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10, what="uvicorn started")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with Served(ApiSettings()) as s:
        yield s


@pytest.fixture(autouse=True)
def reset(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    served.fake.__init__()  # type: ignore[misc]
    monkeypatch.delenv("PIPELINED_TOKEN", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_status_table_and_json(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "--api", served.api)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "VERSION", "STAGES", "ERROR"]
    assert lines[2].split()[:2] == ["orders", "running"]
    code, out, _ = run(capsys, "status", "--api", served.api, "--json")
    assert [p["name"] for p in orjson.loads(out)] == ["broken", "orders"]


def test_stats_all_and_one(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", "--api", served.api)
    assert code == 0 and "pid 4242" in out and "enrich" in out
    code, out, _ = run(capsys, "stats", "orders", "--api", served.api)
    assert code == 0 and out.startswith("orders: running") and "bottleneck enrich" in out
    code, out, _ = run(capsys, "stats", "orders", "--api", served.api, "--json")
    assert orjson.loads(out)["pipeline"] == "orders"
    code, _, err = run(capsys, "stats", "ghost", "--api", served.api)
    assert code == 1 and "404 no pipeline named 'ghost'" in err


def test_trigger_args_are_json_when_they_parse(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["trigger", "orders", "read", "--arg", "n=5", "--arg", "name=bob", "--arg", 'l=[1,"a"]',
            "--arg", "eq=a=b", "--arg", "t=true", "--api", served.api]  # fmt: skip
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out.strip() == "started run r-000001 of orders at stage read"
    trigger = next(c for c in served.fake.calls if c[0] == "trigger")
    assert trigger[1] == (
        "orders",
        "read",
        {"n": 5, "name": "bob", "l": [1, "a"], "eq": "a=b", "t": True},
        None,
    )


def test_trigger_items_and_wait(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "trigger", "orders", "enrich", "--items", "[1, 2]", "--wait", "--api", served.api
    )
    assert code == 0 and out.startswith("run r-000001: completed (2 produced")
    assert ("wait_run", ("orders", "r-000001")) in served.fake.calls  # waited without a thread (run_waiter)
    code, out, _ = run(capsys, "trigger", "orders", "enrich", "--items", "[3]", "--json", "--api", served.api)
    assert orjson.loads(out)["run"] == "r-000002"


def test_trigger_priority_goes_in_the_body(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "trigger", "orders", "read", "--priority", "5", "--api", served.api)
    assert code == 0
    assert served.fake.calls[-1] == ("trigger", ("orders", "read", None, None, 5))
    code, _, _ = run(capsys, "trigger", "orders", "enrich", "--items", "[1]", "--priority", "-3", "--api", served.api)
    assert code == 0
    assert served.fake.calls[-1] == ("trigger", ("orders", "enrich", None, [1], -3))
    code, out, err = run(capsys, "trigger", "orders", "read", "--priority", "11", "--api", served.api)
    assert code == 1 and out == "" and "'priority' must be an integer from -10 to 10, not 11" in err


def test_trigger_wait_timeout_exits_1(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "trigger",
        "orders",
        "read",
        "--arg",
        "slow=true",
        "--wait",
        "--timeout",
        "0.05",
        "--api",
        served.api,
    ]
    code, out, err = run(capsys, *argv)
    assert code == 1 and "running" in out and "still running" in err


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--items", "[1", "--api", "x"], "--items: not valid JSON"),
        (["--items", "{}", "--api", "x"], "non-empty JSON list"),
        (["--items", "[1]", "--arg", "a=1", "--api", "x"], "not both"),
        (["--arg", "novalue", "--api", "x"], "KEY=VALUE"),
    ],
)
def test_trigger_bad_options(capsys: pytest.CaptureFixture[str], extra: list[str], words: str) -> None:
    code, _, err = run(capsys, "trigger", "orders", "enrich", *extra)
    assert code == 1 and words in err


def test_trigger_error_from_daemon_is_one_line(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "trigger", "orders", "nope", "--api", served.api)
    assert code == 1 and out == ""
    assert err.strip() == (
        "pipelined trigger: POST /pipelines/orders/stages/nope/trigger: 404 pipeline 'orders' has no stage 'nope'"
    )


def test_drain_wait_and_start(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "drain", "orders", "--wait", "--timeout", "5", "--api", served.api)
    assert code == 0 and out.strip() == "orders: drained"
    code, _, err = run(capsys, "drain", "orders", "--api", served.api)
    assert code == 1 and "409" in err
    code, out, _ = run(capsys, "start", "orders", "--api", served.api)
    assert code == 0 and out.strip() == "orders: running"
    served.fake.pipelines["orders"].slow_drain = True
    code, out, err = run(capsys, "drain", "orders", "--wait", "--timeout", "0.05", "--api", served.api)
    assert code == 1 and "not drained" in err


def test_reload_exits_1_naming_failed_pipelines(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "reload", "--api", served.api)
    assert code == 1
    assert "updated: orders" in out
    assert "pipelined reload: broken failed to reload: broken.toml: broken/read/call" in err
    served.fake.reload = lambda: {"added": ["x"], "updated": [], "removed": [], "unchanged": [], "failed": {}}  # type: ignore[method-assign]
    code, out, err = run(capsys, "reload", "--api", served.api, "--json")
    assert code == 0 and orjson.loads(out)["added"] == ["x"] and err == ""


def test_graph_remote(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "graph", "--remote", "orders", "--api", served.api)
    assert code == 0 and out.startswith("flowchart LR")
    code, out, _ = run(capsys, "graph", "--remote", "orders", "--format", "dot", "--api", served.api)
    assert out.startswith("digraph")
    code, out, _ = run(capsys, "graph", "--remote", "orders", "--format", "json", "--api", served.api)
    assert orjson.loads(out)["edges"][0]["from"] == "read"


def test_unreachable_daemon_is_a_clear_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port = free_port()
    code, out, err = run(capsys, "status", "--api", f"http://127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert err.startswith(f"pipelined status: cannot reach the pipelined daemon at http://127.0.0.1:{port}")
    code, _, err = run(capsys, "reload", "--api", f"unix:{tmp_path / 'no.sock'}")
    assert code == 1 and "cannot reach the pipelined daemon at unix:" in err


def test_api_address_from_the_settings_file(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings = tmp_path / "pipelined.toml"
    settings.write_text(f'[api]\nlisten = "127.0.0.1:{served.port}"\n')
    code, out, _ = run(capsys, "status", "--config", str(settings))
    assert code == 0 and "orders" in out
    settings.write_text("[api\n")
    code, _, err = run(capsys, "status", "--config", str(settings))
    assert code == 1 and "not valid TOML" in err


def test_token_from_file_or_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Served(ApiSettings(token=TOKEN)) as secured:
        code, _, err = run(capsys, "status", "--api", secured.api)
        assert code == 1 and "401" in err and "Bearer" in err
        # one line, the request named once (the daemon's detail names it too: not repeated)
        assert err.count("\n") == 1 and err.count("GET /pipelines") == 1, err
        assert err.startswith("pipelined status: GET /pipelines: 401 missing or wrong bearer token"), err
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        assert run(capsys, "status", "--api", secured.api, "--token-file", str(token_file))[0] == 0
        monkeypatch.setenv("PIPELINED_TOKEN", TOKEN)
        assert run(capsys, "status", "--api", secured.api)[0] == 0
        code, _, err = run(capsys, "status", "--api", secured.api, "--token-file", str(tmp_path / "missing"))
        assert code == 1 and "cannot read token file" in err


def test_unix_socket(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with Served(ApiSettings(), uds=tmp_path / "api.sock") as over_socket:
        code, out, _ = run(capsys, "status", "--api", over_socket.api)
        assert code == 0 and "orders" in out


def test_parse_arg() -> None:
    assert parse_arg("n=5") == ("n", 5)
    assert parse_arg("s=hello world") == ("s", "hello world")
    assert parse_arg('s="5"') == ("s", "5")
    assert parse_arg("x=") == ("x", "")
    assert parse_arg('o={"a": null}') == ("o", {"a": None})


@pytest.mark.parametrize(
    ("api", "sent"),
    [
        ("http://10.1.2.3:8470", False),
        ("http://example.com:8470", False),
        ("http://127.0.0.1:8470", True),
        ("http://localhost:8470", True),
        ("http://[::1]:8470", True),
        ("https://10.1.2.3:8470", True),
        ("unix:/run/pipelined/api.sock", True),
    ],
)
def test_a_token_found_on_this_machine_is_not_sent_in_clear_text_to_another_host(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: str, sent: bool
) -> None:
    import argparse

    from pipelined.cli.client import resolve_endpoint

    monkeypatch.delenv("PIPELINED_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    token_file = tmp_path / "api.token"
    token_file.write_text(TOKEN + "\n")
    settings = tmp_path / "pipelined.toml"
    settings.write_text(f'[api]\ntoken_file = "{token_file}"\n')
    args = argparse.Namespace(api=api, config=settings, token_file=None, cacert=None)
    assert (resolve_endpoint(args).token == TOKEN) is sent
    assert ("not sending the token" in capsys.readouterr().err) is not sent
    # given explicitly, it is the operator's choice
    monkeypatch.setenv("PIPELINED_TOKEN", TOKEN)
    assert resolve_endpoint(args).token == TOKEN
