"""Where `pipelined top` gets its data: a `TopSource` (the daemon's API over HTTP, or a fake in
tests) and the `Poller` that decides what to ask for on each refresh.

One refresh is one `GET /stats` (every pipeline's stats at once, never one request per
pipeline). Only as needed, and once per pipeline version: `GET /pipelines/{name}` for the chosen
pipeline's error while it is `failed`, and `GET /pipelines/{name}/graph` while the graph view is
shown. Every failure is a `ClientError` (an `Unreachable` when the daemon cannot be reached);
the poller turns it into a result, never an exception, so the view keeps retrying.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipelined.cli.client import ApiClient, ClientError, Endpoint, answer_json, segment

POLL_TIMEOUT_S = 5.0  # a daemon that does not answer within this counts as unreachable
ACTION_TIMEOUT_S = 30.0  # trigger / drain


class TopSource(Protocol):
    """The API calls `top` makes; each returns the JSON of api.md or raises ClientError."""

    address: str

    def stats(self) -> dict[str, Any]: ...

    def pipeline(self, name: str) -> dict[str, Any]: ...

    def graph(self, name: str) -> dict[str, Any]: ...

    def trigger(self, name: str, stage: str, body: dict[str, Any] | None) -> dict[str, Any]: ...

    def drain(self, name: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


class HttpSource:
    """The daemon's HTTP API through the client commands' `ApiClient` (same address, token and
    error handling as `pipelined status`), over one kept-alive connection."""

    def __init__(self, endpoint: Endpoint, timeout: float = POLL_TIMEOUT_S) -> None:
        self.address = endpoint.describe()
        self._client = ApiClient(endpoint, timeout)

    def stats(self) -> dict[str, Any]:
        return checked_stats(answer_json(self._client.request("GET", "/stats")))

    def pipeline(self, name: str) -> dict[str, Any]:
        return dict(answer_json(self._client.request("GET", f"/pipelines/{segment(name, 'NAME')}")))

    def graph(self, name: str) -> dict[str, Any]:
        return dict(answer_json(self._client.request("GET", f"/pipelines/{segment(name, 'NAME')}/graph")))

    def trigger(self, name: str, stage: str, body: dict[str, Any] | None) -> dict[str, Any]:
        path = f"/pipelines/{segment(name, 'NAME')}/stages/{segment(stage, 'STAGE')}/trigger"
        return dict(answer_json(self._client.request("POST", path, body=body, timeout=ACTION_TIMEOUT_S)))

    def drain(self, name: str) -> dict[str, Any]:
        path = f"/pipelines/{segment(name, 'NAME')}/drain"
        return dict(answer_json(self._client.request("POST", path, timeout=ACTION_TIMEOUT_S)))

    def close(self) -> None:
        self._client.close()


NOT_STATS = "not the /stats answer of a pipelined daemon (is --api its address?)"


def checked_stats(doc: Any) -> dict[str, Any]:
    """`doc` if it has the shape of api.md's `GET /stats` answer as far as `top` reads it (objects
    where objects are expected; the numbers in them are read leniently), else ClientError."""

    def fail(where: str) -> ClientError:
        return ClientError(f"GET /stats: {NOT_STATS}: {where}", 200)

    if not isinstance(doc, dict):
        raise fail(f"the answer is a JSON {type(doc).__name__}, not an object")
    if not isinstance(doc.get("daemon", {}), dict):
        raise fail('"daemon" is not an object')
    pipelines = doc.get("pipelines", {})
    if not isinstance(pipelines, dict):
        raise fail('"pipelines" is not an object')
    for name, pipeline in pipelines.items():
        if not isinstance(pipeline, dict):
            raise fail(f"pipeline {name!r} is not an object")
        for key in ("stages", "runs"):
            if not isinstance(pipeline.get(key) or {}, dict):
                raise fail(f'"{key}" of pipeline {name!r} is not an object')
        for stage, value in (pipeline.get("stages") or {}).items():
            if not isinstance(value, dict):
                raise fail(f"stage {stage!r} of pipeline {name!r} is not an object")
    return doc


@dataclass
class PollResult:
    stats: dict[str, Any] | None = None  # None: the daemon was not reached (see `problem`)
    problem: str | None = None
    status: int | None = None  # the HTTP status of a failed poll that got an answer
    note: str | None = None  # a secondary request failed (the stats are still good)
    errors: dict[str, str | None] = field(default_factory=dict)  # pipeline → its load error
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)  # pipeline → graph JSON


class Poller:
    """What to request on one refresh; remembers per-version answers so they are asked once."""

    def __init__(self, source: TopSource) -> None:
        self.source = source
        self._errors: dict[tuple[str, str | None, str], str | None] = {}
        self._graphs: dict[tuple[str, str | None], dict[str, Any]] = {}

    def poll(self, chosen: str | None, want_graph: bool) -> PollResult:
        try:
            stats = checked_stats(self.source.stats())
        except ClientError as exc:
            return PollResult(problem=str(exc), status=exc.status)
        result = PollResult(stats=stats)
        pipeline = ((stats.get("pipelines") or {}).get(chosen) or {}) if chosen else {}
        if not pipeline:
            return result
        assert chosen is not None
        version = None if pipeline.get("version") is None else str(pipeline["version"])
        if pipeline.get("state") == "failed":
            key = (chosen, version, "failed")
            if key not in self._errors:
                try:
                    self._errors[key] = self.source.pipeline(chosen).get("error")
                except ClientError as exc:
                    self._errors.pop(key, None)
                    result.note = str(exc)
            result.errors[chosen] = self._errors.get(key)
        if want_graph:
            graph_key = (chosen, version)
            if graph_key not in self._graphs:
                try:
                    self._graphs[graph_key] = self.source.graph(chosen)
                except ClientError as exc:
                    result.note = str(exc)
            if graph_key in self._graphs:
                result.graphs[chosen] = self._graphs[graph_key]
        return result


def poll_in_background(poller: Poller, chosen: str | None) -> Future[PollResult]:
    """The first poll, started before Textual is imported (about a third of a second), so the
    first frame can already show the daemon's numbers. A daemon thread of its own, not an
    executor's: quitting never waits for a daemon that does not answer."""
    future: Future[PollResult] = Future()

    def run() -> None:
        try:
            future.set_result(poller.poll(chosen, False))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
            future.set_exception(exc)

    threading.Thread(target=run, name="top-first-poll", daemon=True).start()
    return future
