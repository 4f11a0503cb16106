"""The outermost middleware (:class:`RequestGuard`): the allowed hosts, the key rule, the body's size and time
limits, the access log and a JSON 500 for anything that escapes the app."""

import asyncio
import json
import logging
import time

from colbert_az_pylate.serving.access import AllowedHosts

__all__ = ["RequestGuard", "send_json_error", "shown_path"]

log = logging.getLogger("colbert_az_pylate.serve")
access_log = logging.getLogger("colbert_az_pylate.serve.access")


def shown_path(scope) -> str:
    """The request's path as it was sent (still percent-encoded): a decoded ``%0A`` must not split, or forge, a log
    line or a one-line error."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("ascii", "backslashreplace")
    return str(scope.get("path", "")).encode("unicode_escape").decode("ascii")


class RequestGuard:
    """Outermost middleware: the allowed hosts, the key rule and the body size and time limits before any body is
    parsed, an access log line without any request or response content, and a JSON 500 for anything that escapes
    the app."""

    DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body up to this size is read and dropped, so the client hears 413

    def __init__(
        self, app, max_body_bytes: int, refusal=None, hosts: AllowedHosts | None = None, body_timeout: float = 30.0
    ) -> None:
        self.app, self.max_body_bytes, self.hosts, self.body_timeout = app, max_body_bytes, hosts, body_timeout
        self.refusal = refusal or (lambda method, path, headers: None)  # the key rule, before any body is read

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, sent = time.perf_counter(), [0], [0]

        async def send_logged(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host", b"").decode("latin-1")
            method = "GET" if scope.get("method") == "HEAD" else scope.get("method")  # HEAD is a GET: same rule
            body = b""
            if self.hosts is not None and not self.hosts.allows(host):
                shown = host[:100].encode("unicode_escape").decode("ascii")
                refusal = (400, f"host {shown!r} is not served here; the server names it with --allowed-host")
            else:
                refusal = self.refusal(method, scope.get("path"), headers)
            if refusal is None:
                try:
                    body, refusal = await asyncio.wait_for(self._read_body(scope, receive), self.body_timeout)
                except asyncio.TimeoutError:
                    message = f"the request body did not arrive within {self.body_timeout:g} s (--body-timeout)"
                    refusal = (408, message, {"Connection": "close"})
            if refusal is not None:
                await send_json_error(send_logged, *refusal)
            else:
                replayed = [False]

                async def replay():
                    if not replayed[0]:
                        replayed[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_logged)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), shown_path(scope))
            if status[0] == 0:
                await send_json_error(send_logged, 500, "internal error (logged on the server)")
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s "%s %s" %d %dB %.1fms',
                client[0],
                scope.get("method"),
                shown_path(scope),
                status[0],
                sent[0],
                (time.perf_counter() - started) * 1000,
            )

    async def _read_body(self, scope, receive) -> tuple[bytes, tuple | None]:
        limit = self.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = (413, f"the request body is over this server's limit of {limit} bytes (--max-body-bytes)")
        if declared is not None:
            try:
                declared = int(declared)
            except ValueError:
                return b"", (400, "Content-Length is not a number")
            if declared > limit:
                if declared <= self.DRAIN_LIMIT:
                    await self._drain(receive)
                return b"", too_big
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", (400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                if message.get("more_body"):
                    await self._drain(receive, size)
                return b"", too_big
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks), None

    async def _drain(self, receive, size: int = 0) -> None:
        while size <= self.DRAIN_LIMIT:
            message = await receive()
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                return


async def send_json_error(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer ``{"error": message}`` with ``status`` (and ``headers``) through the ASGI ``send``."""
    body = json.dumps({"error": message}, ensure_ascii=False).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
