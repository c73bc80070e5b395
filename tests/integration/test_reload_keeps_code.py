"""A version's code stays the code it started with until that version is replaced (#15.2).

A `@dataclass` item made by a running version is pickled for its `processes = 1` stage by
reference to its class (`codemod.Point`): if a reload re-imports `codemod` while that version
runs, the class found under that name is another object and every item fails with
`PicklingError: … it's not the same object`. A reload that fails (a typo), reverting the typo,
and adding another pipeline with the same `python_path` must not re-import anything of the
running version; only a real code change replaces the pipelines that use it.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness import DaemonProcess

CODE = '''
from dataclasses import dataclass


@dataclass
class Point:
    x: int
    y: int


def points(n=5):
    for i in range(n):
        yield Point(i, {version})


def norm(p):
    return p.x + p.y
'''

PIPELINE = '''
python_path = ["../code"]

[[stage]]
name = "make"
kind = "producer"
call = "{make}"
auto_start = false

[[stage]]
name = "norm"
call = "codemod:norm"
processes = 1
'''

OTHER = '''
python_path = ["../code"]

[[stage]]
name = "make"
kind = "producer"
call = "codemod:points"
auto_start = false

[[stage]]
name = "sink"
kind = "consumer"
call = "codemod:norm"
'''


def _run(daemon: DaemonProcess, name: str = "shapes") -> dict[str, Any]:
    r = daemon.client.post(f"/pipelines/{name}/stages/make/trigger?wait=true&timeout=30", json={"args": {"n": 5}})
    assert r.status_code == 200, r.text
    run: dict[str, Any] = r.json()
    if run["state"] != "completed":
        letters = daemon.client.get(f"/pipelines/{name}/dead-letters?limit=1").json()
        raise AssertionError(f"run {run['state']}: {run['error']}; {letters[:1]}")
    return run


def _reload(daemon: DaemonProcess) -> dict[str, Any]:
    r = daemon.client.post("/reload")
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


@pytest.mark.timeout(120)
def test_a_running_version_keeps_its_classes_across_failed_and_unrelated_reloads(daemon: DaemonProcess) -> None:
    code = daemon.base_dir / "code"
    code.mkdir()
    (code / "codemod.py").write_text(CODE.format(version=1))
    daemon.write_pipeline("shapes", PIPELINE.format(make="codemod:points"))
    daemon.start()
    version = daemon.client.get("/pipelines/shapes").json()["version"]
    assert _run(daemon)["items"]["finished"] == 5

    # a typo: the reload fails, the running version keeps going — with its own classes
    daemon.write_pipeline("shapes", PIPELINE.format(make="codemod:pionts"))
    result = _reload(daemon)
    assert "shapes" in result["failed"] and "pionts" in result["failed"]["shapes"]
    assert _run(daemon)["items"]["finished"] == 5

    # the typo reverted: nothing to reload, still the same version, still working
    daemon.write_pipeline("shapes", PIPELINE.format(make="codemod:points"))
    result = _reload(daemon)
    assert result["unchanged"] == ["shapes"] and not result["failed"], result
    assert daemon.client.get("/pipelines/shapes").json()["version"] == version
    assert _run(daemon)["items"]["finished"] == 5

    # another pipeline importing the same code: shapes is not touched
    daemon.write_pipeline("other", OTHER)
    result = _reload(daemon)
    assert result["added"] == ["other"] and result["unchanged"] == ["shapes"], result
    assert _run(daemon)["items"]["finished"] == 5
    assert _run(daemon, "other")["items"]["finished"] == 5

    # a broken code change fails for both, and both keep running their code
    (code / "codemod.py").write_text(CODE.format(version=1) + "\ndef broken(:\n")
    result = _reload(daemon)
    assert set(result["failed"]) == {"shapes", "other"}, result
    assert _run(daemon)["items"]["finished"] == 5
    assert _run(daemon, "other")["items"]["finished"] == 5

    # a real code change replaces both, and the new versions run the new code
    (code / "codemod.py").write_text(CODE.format(version=2))
    result = _reload(daemon)
    assert sorted(result["updated"]) == ["other", "shapes"], result
    assert _run(daemon)["items"]["finished"] == 5
    assert _run(daemon, "other")["items"]["finished"] == 5
    assert daemon.stop() == 0
