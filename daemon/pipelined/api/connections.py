"""Nobody can shut the API out: a deadline for every request, a cap on open connections, and
calm when the process runs out of file descriptors.

uvicorn's own protocol has no header timeout (`timeout_keep_alive` only applies between
requests) and no connection cap that keeps `/health` reachable (`limit_concurrency` answers
503 to everyone once slow clients hold the slots). So the API serves with `GuardedH11Protocol`:
- **request deadline**: a connection that has not sent a whole request (headers and body)
  within `REQUEST_TIMEOUT_S` of its first byte (or of being opened) is closed — 50 half-sent
  requests no longer stay open for ever. A request being answered (a `?wait=true` waiting for
  its run) has arrived whole and is never cut.
- **connection cap**: at most `[api] max_connections` connections, and never more than 3/4 of
  the open-files limit (`RLIMIT_NOFILE`): a new connection beyond the cap closes the oldest
  one that is not being answered (a slow or idle client), so a probe that connects now is
  served; only when every connection is being answered is the new one closed instead.
- **EMFILE**: asyncio's accept loop logs "socket.accept() out of system resource" with a
  traceback for each of up to `backlog` failed accepts, every second (116 MB of log in 30 s);
  the guard's loop exception handler takes those instead: it lowers the cap below what is open
  for a while and closes the oldest idle connections, which frees descriptors.
- **TLS** (`[api] tls_cert`): the handshake is done here (`loop.start_tls`), not by the server,
  so a TLS connection is counted, capped and on the request deadline from the moment it is
  accepted; the handshake is part of its first request's deadline. (With the server's own TLS a
  connection reached the guard only after its handshake, which asyncio allows 60 s: connections
  that never sent a ClientHello held descriptors nobody counted and shut HTTPS out.)
- What it closes is logged as one warning line per minute at most, with counts.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections import OrderedDict
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("pipelined.api")

REQUEST_TIMEOUT_S = 5.0
FD_SHARE = 0.75  # of RLIMIT_NOFILE that API connections may use
MIN_CAP = 8
EMFILE_HOLD_S = 30.0  # how long the lowered cap stays after an EMFILE
REPORT_EVERY_S = 60.0
_OUT_OF_RESOURCE = "socket.accept() out of system resource"
_WAITING_FOR_REQUEST = (h11.IDLE, h11.SEND_BODY)


class ConnectionGuard:
    """The connections of one API server (used only on its event loop's thread)."""

    def __init__(
        self, max_connections: int, request_timeout: float = REQUEST_TIMEOUT_S, tls: ssl.SSLContext | None = None
    ) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.tls = tls  # set: every connection starts TLS itself (GuardedH11Protocol)
        self.open: OrderedDict[int, GuardedH11Protocol] = OrderedDict()  # oldest first
        self._emfile_cap: int | None = None
        self._emfile_until = 0.0
        self._counts = {"timed_out": 0, "evicted": 0, "refused": 0, "emfile": 0}
        self._reported = 0.0

    # -- the cap -----------------------------------------------------------------------------
    def limit(self) -> int:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = self.max_connections
        if soft != resource.RLIM_INFINITY:
            cap = min(cap, max(MIN_CAP, int(soft * FD_SHARE)))
        if self._emfile_cap is not None:
            if time.monotonic() < self._emfile_until:
                cap = min(cap, self._emfile_cap)
            else:
                self._emfile_cap = None
        return cap

    def opened(self, proto: GuardedH11Protocol) -> None:
        self.open[id(proto)] = proto
        excess = len(self.open) - self.limit()
        if excess > 0 and self._evict(excess, keep=proto) < excess:
            self._count("refused")
            proto.transport.close()  # every other connection is being answered

    def closed(self, proto: GuardedH11Protocol) -> None:
        self.open.pop(id(proto), None)

    def _evict(self, wanted: int, keep: GuardedH11Protocol | None = None) -> int:
        """Close up to `wanted` of the oldest connections not being answered."""
        victims = [p for p in self.open.values() if p is not keep and p.waiting_for_request()][:wanted]
        for proto in victims:
            self.open.pop(id(proto), None)
            proto.transport.close()
            self._count("evicted")
        return len(victims)

    # -- events ------------------------------------------------------------------------------
    def timed_out(self, proto: GuardedH11Protocol) -> None:
        self._count("timed_out")
        proto.transport.close()

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The server loop's exception handler: EMFILE on accept is handled here, quietly."""
        if context.get("message") != _OUT_OF_RESOURCE:
            loop.default_exception_handler(context)
            return
        self._count("emfile")
        if self._emfile_cap is None or time.monotonic() >= self._emfile_until:
            self._emfile_cap = max(MIN_CAP, int(len(self.open) * FD_SHARE))
            self._emfile_until = time.monotonic() + EMFILE_HOLD_S
            self._evict(len(self.open) - self._emfile_cap)

    def _count(self, what: str) -> None:
        self._counts[what] += 1
        now = time.monotonic()
        if now - self._reported >= REPORT_EVERY_S:
            self._report(now)

    def _report(self, now: float) -> None:
        counts, self._counts = self._counts, dict.fromkeys(self._counts, 0)
        since = "since start" if not self._reported else f"in the last {now - self._reported:.0f}s"
        self._reported = now
        words = {
            "timed_out": f"closed without a whole request within {self.request_timeout:g}s",
            "evicted": "idle closed for newer ones",
            "refused": "refused (every other one was being answered)",
            "emfile": "accept() failures for lack of file descriptors",
        }
        parts = ", ".join(f"{n} {words[what]}" for what, n in counts.items() if n)
        log.warning(
            "API connections %s: %s; %d open, limit %d ([api] max_connections = %d, at most %d%% of "
            "the open-files limit)",
            since, parts, len(self.open), self.limit(), self.max_connections, int(FD_SHARE * 100),
        )  # fmt: skip

    def protocol_class(self) -> type[GuardedH11Protocol]:
        """The protocol class uvicorn instantiates per connection, bound to this guard."""
        return type("GuardedH11ProtocolBound", (GuardedH11Protocol,), {"guard": self})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a whole-request deadline, registered with its guard from the
    moment the connection is accepted (before a TLS handshake, which it does itself)."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._request_deadline: asyncio.TimerHandle | None = None
        self._connected = False  # uvicorn's connection_made was called (after TLS, if any)
        self._early: list[bytes] = []  # data that came with the TLS handshake, before that
        self._early_eof = False
        self._handshake: asyncio.Task[None] | None = None
        tls = self.guard.tls
        if tls is None:
            self._connect(transport)
        else:
            self.transport = transport  # what the guard closes (an evicted or late handshake)
        self._arm()
        self.guard.opened(self)
        if tls is not None and not transport.is_closing():
            self._handshake = self.loop.create_task(self._start_tls(transport, tls))

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            secure = await self.loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=self.guard.request_timeout
            )
        except asyncio.CancelledError:  # the server stops
            raw.close()
            self._gone_before_connected()
            raise
        except Exception:  # noqa: BLE001 - a failed, cut or late handshake: the connection is gone
            raw.close()
            self._gone_before_connected()
            return
        if secure is None or self.transport.is_closing():
            raw.close()
            self._gone_before_connected()
            return
        self._connect(secure)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._early_eof:
            self.eof_received()

    def _connect(self, transport: asyncio.Transport) -> None:
        self._connected = True
        super().connection_made(transport)

    def _gone_before_connected(self) -> None:
        self._disarm()
        self.guard.closed(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.closed(self)
        if self._connected:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._connected:  # decrypted data delivered before start_tls returned
            self._early.append(data)
            return
        if self._request_deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state not in _WAITING_FOR_REQUEST:
            self._disarm()  # the whole request is in (or the connection is done)

    def eof_received(self) -> None:
        if not self._connected:
            self._early_eof = True
            return
        super().eof_received()

    def waiting_for_request(self) -> bool:
        """True when no request of this connection is being answered (idle or half-sent)."""
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._request_deadline = self.loop.call_later(self.guard.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _expired(self) -> None:
        self._request_deadline = None
        if not self.transport.is_closing() and self.conn.their_state in _WAITING_FOR_REQUEST:
            self.guard.timed_out(self)
