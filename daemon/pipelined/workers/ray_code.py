"""What a Ray actor of a pipeline version needs to import its code: the actor's `runtime_env`.

Ray uploads each `py_modules` entry to the cluster (content-hashed, so an unchanged module is
uploaded once) and puts it first on the actor's `sys.path`. A cluster whose nodes never saw the
conf dir runs the version's code, and a reload whose code changed gets new hashes, hence new
actor processes importing the new code.

- `pipelined` itself is shipped, so the actor can unpickle its own class without the daemon
  being installed on the cluster (its Python needs Ray and what the stage code imports).
- Each `python_path` directory is shipped as its top-level entries: every `*.py` module and every
  directory (a package, with its data files). Files beside them that are not `.py` are not
  shipped. `__pycache__`, hidden entries and `*.pyc` are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pipelined

EXCLUDES = ["__pycache__", "*.pyc", ".git", ".mypy_cache", ".pytest_cache"]


def shipped_modules(python_path: Iterable[Path | str]) -> list[str]:
    """The `py_modules` entries for a version: pipelined, then each python_path dir's entries.

    A name found in two python_path directories ships from the first, as `sys.path` would
    import it."""
    entries = [str(Path(pipelined.__file__).parent)]
    seen: set[str] = {"pipelined"}
    for directory in python_path:
        path = Path(directory)
        if not path.is_dir():
            continue
        for child in sorted(path.iterdir()):
            if child.name.startswith(".") or child.name == "__pycache__":
                continue
            if child.is_dir() and _has_python(child):
                name = child.name
            elif child.is_file() and child.suffix == ".py":
                name = child.stem
            else:
                continue
            if name in seen:
                continue
            seen.add(name)
            entries.append(str(child))
    return entries


def _has_python(directory: Path) -> bool:
    return any(directory.rglob("*.py"))


def runtime_env(python_path: Iterable[Path | str]) -> dict[str, Any]:
    return {"py_modules": shipped_modules(python_path), "excludes": list(EXCLUDES)}


def actor_options(
    runtime: dict[str, Any],
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: int | None = None,
    resources: dict[str, float] | None = None,
    max_in_flight: int = 2,
) -> dict[str, Any]:
    """`ray.remote(...).options(...)` for one actor of a stage.

    Ray restarts nothing by itself (`max_restarts = 0`): the stage replaces a dead actor, so a
    batch that was in flight fails its attempt once and is retried by the engine. One call runs at
    a time (`max_concurrency = 1`); `max_in_flight` calls may wait in the actor's queue."""
    options: dict[str, Any] = {
        "max_restarts": 0,
        "max_task_retries": 0,
        "max_concurrency": 1,
        "max_pending_calls": max(4, max_in_flight * 4),
        "runtime_env": runtime,
    }
    if num_cpus is not None:
        options["num_cpus"] = num_cpus
    if num_gpus is not None:
        options["num_gpus"] = num_gpus
    if memory is not None:
        options["memory"] = memory
    if resources:
        options["resources"] = dict(resources)
    return options
