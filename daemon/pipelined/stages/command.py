"""`command`: run an external program once per item, JSON in on stdin, JSON lines out."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from pipelined.stages._support import StageContext, resolve_path, to_seconds, where
from pipelined.stages.processors import to_json_bytes

_STDERR_KEEP = 2000


class CommandFailed(RuntimeError):
    """The program exited with a non-zero status, was killed, or timed out."""


def command(
    item: Any,
    cmd: str | list[str],
    timeout: float | str = 30.0,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    ctx: StageContext | None = None,
) -> Iterator[Any]:
    """Run `cmd` (a list of strings, or one string split like a shell would, without a shell)
    with the item as one JSON line on stdin; emit every non-empty stdout line parsed as JSON,
    or as a plain string when it is not JSON.

    Outputs are emitted only after the program exits with status 0, so a failed attempt emits
    nothing and a retry cannot duplicate outputs. Non-zero status, death by signal or `timeout`
    (default 30 s; the program is killed) raise `CommandFailed` with the status and the end of
    stderr. `cwd` (relative: against the state dir) and `env` (added to the daemon's) are optional.
    """
    place = where(ctx, "command")
    argv = _argv(cmd, place)
    limit = to_seconds(timeout, "timeout", place)
    workdir = resolve_path(cwd, "cwd", place) if cwd is not None else None
    environment = _environment(env, place)
    try:
        done = subprocess.run(
            argv,
            input=to_json_bytes(item) + b"\n",
            capture_output=True,
            timeout=limit,
            cwd=workdir,
            env=environment,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandFailed(f"{place}: cmd: cannot run {argv[0]!r}: {exc.strerror}") from None
    except PermissionError:
        raise CommandFailed(f"{place}: cmd: {argv[0]!r} is not executable") from None
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(
            f"{place}: {shlex.join(argv)} timed out after {limit:g} s and was killed{_stderr_note(exc.stderr)}"
        ) from None
    if done.returncode != 0:
        raise CommandFailed(
            f"{place}: {shlex.join(argv)} {_status_text(done.returncode)}{_stderr_note(done.stderr)}"
        )
    for line in done.stdout.splitlines():
        if line.strip():
            yield _parse_line(line)


def _argv(cmd: object, place: str) -> list[str]:
    if isinstance(cmd, str):
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            raise ValueError(f"{place}: cmd: cannot split {cmd!r}: {exc}") from None
    elif isinstance(cmd, list | tuple) and all(isinstance(part, str) for part in cmd):
        argv = list(cmd)
    else:
        raise TypeError(f"{place}: cmd: expected a string or a list of strings, got {cmd!r}")
    if not argv:
        raise ValueError(f"{place}: cmd: must not be empty")
    return argv


def _environment(env: object, place: str) -> dict[str, str] | None:
    if env is None:
        return None
    if not isinstance(env, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in env.items()
    ):
        raise TypeError(f"{place}: env: expected a table of strings, got {env!r}")
    return {**os.environ, **env}


def _parse_line(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return line.decode("utf-8", errors="replace").rstrip("\r")


def _status_text(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (exit code {returncode})"
    return f"exited with exit code {returncode}"


def _stderr_note(stderr: bytes | str | None) -> str:
    if not stderr:
        return ""
    text = stderr.decode("utf-8", errors="replace") if isinstance(stderr, bytes) else stderr
    text = text.strip()
    if len(text) > _STDERR_KEEP:
        text = "..." + text[-_STDERR_KEEP:]
    return f"; stderr: {text}" if text else ""
