"""Every exception pipelined raises on purpose.

    PipelinedError
    ├── ConfigInvalid          a pipeline or settings file has problems (carries every Problem)
    ├── RequestError           something a caller asked for cannot be done; `status` is its HTTP code
    │   ├── BadRequest         400: malformed body, wrong field, argument the callable does not accept
    │   ├── Forbidden          403: switched off by configuration
    │   ├── NotFound           404: unknown pipeline, stage or run
    │   ├── Conflict           409: does not fit the current state (trigger while draining, ...)
    │   ├── QueueFull          429: the target queue refused the items (on_full = "reject")
    │   └── Unavailable        503: not ready, stopping, a blocking enqueue or a swap timed out
    └── StartError             a pipeline version could not start (setup(), after_fork, limits, ...)

The API maps RequestError subclasses to their `status`; nothing else reaches a client as a trace.
`Problem` (one error or warning about a file) lives here too, because `ConfigInvalid` carries
them and every layer reports them; `pipelined.config.spec` re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One error or warning about a file: printed as `<file>[:<line>]: <where>: <message>`.

    `where` is the path inside the file: `pipeline`, `pipeline/stage`, `pipeline/stage/key`
    (e.g. `orders/enrich/threads`).
    """

    file: str
    where: str
    message: str
    line: int | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{loc}: {self.where}: {self.message}"
        return f"warning: {text}" if self.severity == "warning" else text


class PipelinedError(Exception):
    """Base of every error pipelined raises on purpose."""


class ConfigInvalid(PipelinedError):
    """A file has one or more problems; `problems` lists every one of them (errors and warnings)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        super().__init__("; ".join(str(p) for p in errors) or "invalid configuration")


class RequestError(PipelinedError):
    status: int = 400

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class BadRequest(RequestError):
    status = 400


class Forbidden(RequestError):
    status = 403


class NotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409


class UnsupportedMediaType(RequestError):
    status = 415


class QueueFull(RequestError):
    status = 429


class Unavailable(RequestError):
    status = 503


class StartError(PipelinedError):
    """A pipeline version failed to start; the message says which stage and why."""
