"""What the routers share (:class:`ServerState`): the service, the limits, the request bodies and the key rule,
with the helpers that run blocking work off the event loop and drop a request whose client has gone."""

import asyncio
import hmac
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from colbert_az_pylate.errors import (
    ColbertAzError,
    IndexFormatError,
    IndexLockedError,
    InvalidArgumentError,
    check_count,
)
from colbert_az_pylate.serving.access import READ_ROUTES, WRITE_ROUTES, AllowedHosts, bearer_token, check_api_key
from colbert_az_pylate.serving.bodies import request_bodies
from colbert_az_pylate.serving.limits import ClientError, ServeLimits, client_gone
from colbert_az_pylate.serving.service import SearchService

__all__ = ["ServerState", "build_state", "disconnection"]

log = logging.getLogger("colbert_az_pylate.serve")


class ServerState:
    """The service behind the endpoints and the rules every route applies: the key, the limits, the bodies."""

    def __init__(
        self,
        service: SearchService,
        *,
        limits: ServeLimits,
        key: bytes | None,
        read_key_required: bool,
        hosts: AllowedHosts,
        body_timeout: float,
    ) -> None:
        self.service, self.limits, self.key, self.read_key_required = service, limits, key, read_key_required
        self.hosts, self.body_timeout = hosts, body_timeout
        self.bodies = request_bodies()

    @asynccontextmanager
    async def lifespan(self, app) -> AsyncIterator[None]:
        """The app's lifespan: on shutdown the batcher ends and the search pool stops."""
        yield
        await self.service.batcher.close()
        self.service.close()

    # -- the key rule
    def key_refusal(self, write: bool, authorization: str | None) -> tuple[int, str, dict] | None:
        """The one key rule: writes need the key (or a server that takes unauthenticated writes), reads need it
        with ``read_key_required``; ``None`` when the request may go on."""
        if not write and not self.read_key_required:
            return None
        if write and self.key is None:
            if self.service.writer is None:
                return 403, "this server is read-only: start it with --api-key-file to accept writes", {}
            return None  # allow_unauthenticated_writes
        given = bearer_token(authorization)
        if given is None:
            return 401, "missing API key: send Authorization: Bearer KEY", {"WWW-Authenticate": "Bearer"}
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.key):
            return 401, "wrong API key", {"WWW-Authenticate": "Bearer"}
        return None

    def authorise(self, request, write: bool) -> None:
        """Raise the key rule's refusal of ``request`` as a :class:`ClientError`."""
        refusal = self.key_refusal(write, request.headers.get("authorization"))
        if refusal is not None:
            raise ClientError(refusal[0], refusal[1], refusal[2] or None)

    def early_refusal(self, method: str | None, path: str | None, headers: dict) -> tuple | None:
        """The key rule applied by the outer guard before the body is read (``/openapi.json`` included)."""
        write = (method, path) in WRITE_ROUTES
        if not write and (method, path) not in READ_ROUTES:
            return None  # unknown routes answer 404/405 as usual
        raw = headers.get(b"authorization")
        return self.key_refusal(write, raw.decode("latin-1") if raw is not None else None)

    # -- running the work
    def public_error(self, exc: Exception) -> Exception:
        """``exc`` as the client hears it: the package's errors as one-line client errors without server paths."""
        service = self.service
        if isinstance(exc, ClientError):
            return exc
        if isinstance(exc, IndexLockedError):
            return ClientError(409, service.public_message(str(exc)))
        if isinstance(exc, IndexFormatError):
            log.error("index error: %s", exc)
            return ClientError(500, service.public_message(str(exc)))
        if isinstance(exc, InvalidArgumentError):
            return ClientError(400, service.public_message(str(exc)))
        if isinstance(exc, ColbertAzError):
            return ClientError(409, service.public_message(str(exc)))
        return exc

    async def blocking(self, function: Callable[..., Any], *args) -> Any:
        """``function(*args)`` in a worker thread (Starlette's pool), its errors as one-line client errors."""
        from starlette.concurrency import run_in_threadpool  # the [serve] extra: imported by the server only

        try:
            return await run_in_threadpool(function, *args)
        except Exception as exc:
            raise self.public_error(exc) from None

    async def in_search_pool(self, function: Callable[..., Any], *args) -> Any:
        """``function(*args)`` in the bounded search pool; a cancelled call that has not started never runs."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.service.search_pool, function, *args)
        except Exception as exc:
            raise self.public_error(exc) from None

    async def encode_queries(self, request, texts: list[str]) -> list:
        """The query vectors of ``texts``, micro-batched with other requests' (a lone request waits for none)."""
        self.service.unencoded += 1
        try:
            return await self.until_disconnected(request, self.service.batcher.encode(texts))
        finally:
            self.service.unencoded -= 1

    async def until_disconnected(self, request, work: Awaitable, stop: threading.Event | None = None) -> Any:
        """``await work``, unless the client goes first: then the work is cancelled (queued texts never reach the
        model, a queued search never starts) or, given ``stop``, told to stop at its next chunk; 499."""
        gone = client_gone()
        if await request.is_disconnected():
            if asyncio.iscoroutine(work):
                work.close()
            raise gone
        work = asyncio.ensure_future(work)
        listener = asyncio.ensure_future(disconnection(request))
        try:
            await asyncio.wait({work, listener}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            listener.cancel()
        if work.done():
            return work.result()
        if stop is None:
            work.cancel()
        else:
            stop.set()
            await asyncio.wait({work})  # it ends at its next chunk
            if not work.cancelled():
                work.exception()  # retrieved: nobody is left to hear it
        raise gone


async def disconnection(request) -> None:
    """Returns when the client has gone (the body was read already: the next message is the disconnection)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def build_state(
    searcher,
    *,
    api_key: str | None,
    read_key_required: bool,
    allow_unauthenticated_writes: bool,
    read_only: bool,
    limits: ServeLimits | None,
    batch_wait_ms: float,
    max_batch: int,
    allowed_hosts: Sequence[str],
    search_threads: int | None,
    body_timeout: float,
) -> ServerState:
    """:func:`~colbert_az_pylate.serving.app.create_app`'s arguments checked (one line each, before anything
    starts) and its service built over ``searcher``."""
    limits = limits or ServeLimits()
    if api_key is not None:
        api_key = check_api_key(api_key)
    if read_key_required and api_key is None:
        raise InvalidArgumentError("reads cannot require a key when no key is set; give api_key")
    if isinstance(body_timeout, bool) or not isinstance(body_timeout, (int, float)) or not body_timeout > 0:
        raise InvalidArgumentError(f"body_timeout must be a number of seconds > 0, got {body_timeout!r}")
    if search_threads is not None:
        check_count(search_threads, "search_threads")
    hosts = AllowedHosts(allowed_hosts)
    key = api_key.strip().encode() if api_key else None
    store_writable = searcher.backend_type.updatable and not getattr(searcher.index_store, "read_only", False)
    writable = store_writable and not read_only and (key is not None or allow_unauthenticated_writes)
    service = SearchService(
        searcher,
        writable=writable,
        limits=limits,
        batch_wait_ms=batch_wait_ms,
        max_batch=max_batch,
        search_threads=search_threads,
    )
    return ServerState(
        service, limits=limits, key=key, read_key_required=read_key_required, hosts=hosts, body_timeout=body_timeout
    )
