"""schemathesis against a real daemon's OpenAPI document: no 5xx, errors well-formed, healthy after."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import schemathesis

from harness import DaemonProcess, write_token

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "api"))

from api_fuzzing import fuzz_every_operation  # noqa: E402

TOKEN = "fuzz-token"
STAGES = """
def produce(n=3):
    yield from range(n)

def double(x):
    return x * 2 if isinstance(x, int | float) else x

def sink(x):
    pass
"""
ORDERS = """
[[stage]]
name = "read"
kind = "producer"
call = "fuzzstages:produce"
auto_start = false

[[stage]]
name = "double"
call = "fuzzstages:double"

[[stage]]
name = "store"
kind = "consumer"
call = "fuzzstages:sink"
"""


def test_generated_requests_never_get_a_5xx(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    write_token(token_file, TOKEN)
    daemon = DaemonProcess(tmp_path, settings=f'[api]\ntoken_file = "{token_file}"\nmax_body = "64KiB"\n')
    daemon.write_module("fuzzstages", STAGES)
    daemon.write_pipeline("orders", ORDERS)
    daemon.write_pipeline("other", ORDERS)
    daemon.start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        schema = schemathesis.openapi.from_url(f"{daemon.url}/schema/openapi.json", headers=headers)

        def send(case: Any) -> Any:
            return case.call(base_url=daemon.url, headers=headers, timeout=60)

        sent = fuzz_every_operation(
            schema,
            send,
            examples=8,
            known_path_values={"name": ["orders"], "stage": ["read", "double", "store"], "run": ["r-000001"]},
        )
        assert len(sent) >= 200, len(sent)
        daemon.client.headers.update(headers)
        assert daemon.client.get("/health").json() == {"status": "ok"}
        assert daemon.client.get("/pipelines/other").json()["state"] == "running"  # never named: untouched
        assert daemon.alive()
    finally:
        daemon.close()
