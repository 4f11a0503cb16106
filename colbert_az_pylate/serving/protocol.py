"""The connection limits of ``colbert-az serve``: uvicorn's HTTP/1.1 protocol with a header-read timeout and a
concurrency limit that answers in the server's own JSON.

uvicorn times out an idle keep-alive connection (``timeout_keep_alive``) but not a client that opens a connection
and sends its request headers slowly, or not at all: enough of them hold every file descriptor. Here each
connection has ``header_timeout`` seconds from its first byte (from its opening, for a new connection) to finish
the headers of a request; past it the server answers 408 and closes the connection. ``limit_concurrency`` (open
connections or requests in progress, at most) answers 503 with ``Retry-After`` beyond it, as uvicorn does, but
with a one-line JSON error.
"""

from __future__ import annotations

import json
import os
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HEADER_TIMEOUT_ENV", "GuardedH11Protocol", "guarded_protocol", "uvicorn_options"]

HEADER_TIMEOUT_ENV = "COLBERT_AZ_HEADER_TIMEOUT"  # how `--workers N` hands --header-timeout to each worker
DEFAULT_HEADER_TIMEOUT = 10.0


def _raw_response(status: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header-read timeout and a JSON 503 beyond ``limit_concurrency``.

    The timeout is the class attribute ``header_timeout`` (seconds), else ``$COLBERT_AZ_HEADER_TIMEOUT``, else 10;
    :func:`guarded_protocol` makes a subclass with another one.
    """

    header_timeout: float | None = None

    def __init__(self, config, server_state, app_state: dict[str, Any], _loop=None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        timeout = type(self).header_timeout
        if timeout is None:
            timeout = float(os.environ.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT))
        self._header_timeout = timeout
        self._header_timer = None
        # the concurrency limit is checked here, to answer it in JSON: uvicorn's own check is turned off
        self._limit, self.limit_concurrency = self.limit_concurrency, None
        if self._limit is not None:
            app = self.app

            async def admitted(scope, receive, send) -> None:
                await self._admit(app, scope, receive, send)

            self.app = admitted

    # -- the header-read timeout
    def _awaiting_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _start_header_timer(self) -> None:
        if self._header_timer is None and self._header_timeout > 0:
            self._header_timer = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers():
            self._start_header_timer()  # a keep-alive connection's next request starts its own clock
        super().data_received(data)
        if not self._awaiting_headers():
            self._stop_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timeout; the next byte arms ours
        if not self._awaiting_headers():
            self._stop_header_timer()

    def connection_lost(self, exc) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._awaiting_headers() or self.transport.is_closing():
            return
        message = f"the request headers did not arrive within {self._header_timeout:g} s (--header-timeout)"
        self.transport.write(_raw_response(408, "Request Timeout", message))
        self.transport.close()

    # -- the concurrency limit
    async def _admit(self, app, scope, receive, send) -> None:
        # this request's task and connection are counted already: beyond the limit means more than it
        if scope["type"] == "http" and (len(self.connections) > self._limit or len(self.tasks) > self._limit):
            self.logger.warning("exceeded the concurrency limit (--limit-concurrency %d)", self._limit)
            message = f"the server is at its limit of {self._limit} connections (--limit-concurrency); retry shortly"
            body = json.dumps({"error": message}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)


def guarded_protocol(header_timeout: float) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` with ``header_timeout`` seconds (0: none) to read a request's headers."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": float(header_timeout)})


def uvicorn_options(
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    keep_alive_timeout: float = 5.0,
    limit_concurrency: int | None = 256,
    backlog: int = 2048,
) -> dict:
    """Keyword arguments of ``uvicorn.Config`` (or ``uvicorn.run``) for these limits, in one process.

    Examples
    --------
    >>> options = uvicorn_options(header_timeout=2)
    >>> options["http"].header_timeout, options["timeout_keep_alive"], options["limit_concurrency"]
    (2.0, 5.0, 256)
    """
    return {
        "http": guarded_protocol(header_timeout),
        "timeout_keep_alive": keep_alive_timeout,
        "limit_concurrency": limit_concurrency,
        "backlog": backlog,
    }
