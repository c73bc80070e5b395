"""The `pipelined[ray]` extra missing: a pipeline with `executor = "ray"` fails to load with an
error naming its file, stage and key and saying how to install Ray; the daemon and its other
pipelines are unharmed, and a reload that moves a stage onto Ray keeps the running version.

Ray is hidden from the daemon's Python as an uninstalled package looks to `import` and to
`importlib.util.find_spec`: a `sitecustomize` on its PYTHONPATH sets `sys.modules["ray"] = None`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import DaemonProcess

pytestmark = pytest.mark.timeout(120)

CODE = """
def numbers(n: int = 3):
    yield from range(n)

def double(item):
    return item * 2
"""

PIPELINE = """
[[stage]]
name = "src"
kind = "producer"
call = "nora:numbers"
auto_start = false
[[stage]]
name = "work"
call = "nora:double"{executor}
[[stage]]
name = "sink"
kind = "consumer"
call = "nora:double"
"""
RAY = '\nexecutor = "ray"\nreplicas = 2'


def test_without_the_ray_extra_a_ray_pipeline_fails_to_load_and_nothing_else(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path)
    daemon.write_module("sitecustomize", "import sys\nsys.modules['ray'] = None  # as if not installed\n")
    daemon.write_module("nora", CODE)
    needs_ray = daemon.write_pipeline("remote", PIPELINE.format(executor=RAY))
    daemon.write_pipeline("local", PIPELINE.format(executor=""))
    daemon.start(timeout=60)
    try:
        remote = daemon.pipeline("remote")
        assert remote["state"] == "failed", remote
        error = remote["error"]
        for part in (str(needs_ray.name), "work", "executor", "Ray", "pip install 'pipelined[ray]'"):
            assert part in error, (part, error)
        assert daemon.pipeline("local")["state"] == "running"
        r = daemon.client.post("/pipelines/local/stages/src/trigger", params={"wait": "true", "timeout": "30"},
                               json={"args": {"n": 3}}, timeout=40)
        assert r.status_code == 200 and r.json()["state"] == "completed", r.text

        old = daemon.pipeline("local")["version"]
        daemon.write_pipeline("local", PIPELINE.format(executor=RAY))
        r = daemon.client.post("/reload", timeout=60)
        assert r.status_code in (200, 202, 409, 422), r.text
        local = daemon.wait_for(lambda: (p := daemon.pipeline("local")).get("error") and p, 30, what="the error")
        assert local["state"] == "running" and local["version"] == old, local
        assert "pip install 'pipelined[ray]'" in local["error"], local["error"]
        assert daemon.client.get("/health").status_code == 200
        assert not (daemon.state_dir / "ray").exists()  # no driver was ever started
    finally:
        daemon.close()
