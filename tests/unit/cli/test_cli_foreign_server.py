"""Client commands pointed (by mistake) at an HTTP server that is not a pipelined daemon — a web
server answering HTML, an API answering JSON of another shape — say so in one line and exit 1,
never with a traceback. The server is a real one (http.server on a free loopback port)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelined.cli.main import main

ANSWERS = {
    "html": (b"<html><body>It works!</body></html>", "text/html"),
    "list": (b"[1, 2, 3]", "application/json"),
    "object": (b'{"hello": "world"}', "application/json"),
    "string": (b'"ok"', "application/json"),
}


class Foreign(BaseHTTPRequestHandler):
    answer = "html"

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        body, media = ANSWERS[type(self).answer]
        self.send_response(200)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture
def foreign() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


COMMANDS = [
    ("status",), ("stats",), ("stats", "orders"), ("trigger", "orders", "read"), ("drain", "orders"),
    ("start", "orders"), ("reload",), ("runs", "orders"), ("run-info", "orders", "r-000001"),
    ("dead-letters", "orders"), ("graph", "--remote", "orders", "--json"), ("top", "--once"),
]  # fmt: skip


@pytest.mark.parametrize("answer", ["html", "list", "string"])
def test_an_answer_that_is_not_the_daemons_is_one_line_and_exit_1(
    foreign: str, answer: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Foreign, "answer", answer)
    monkeypatch.delenv("PIPELINED_TOKEN", raising=False)
    for argv in COMMANDS:
        if answer == "list" and argv[0] in ("status", "runs", "dead-letters"):
            continue  # a list is their answer's shape: of numbers, checked below
        code = main([*argv, "--api", foreign])
        out, err = capsys.readouterr()
        assert code == 1 and out == "", (argv, out, err)
        assert err.startswith(f"pipelined {argv[0]}: ") and err.count("\n") == 1, (argv, err)
        assert "pipelined daemon" in err, (argv, err)


def test_a_list_of_the_wrong_things_is_one_line_and_exit_1(
    foreign: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Foreign, "answer", "list")
    for argv in (("status",), ("runs", "orders"), ("dead-letters", "orders")):
        code = main([*argv, "--api", foreign])
        out, err = capsys.readouterr()
        assert code == 1 and out == "" and err.count("\n") == 1 and "pipelined daemon" in err, (argv, err)
