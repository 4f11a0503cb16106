"""Micro-batching of query encodings: concurrent requests share one forward pass.

A request's queries wait at most ``wait_ms`` for others; the texts collected (up to ``max_batch``) go to the
model in one ``encode`` call, run in a worker thread, and each request gets back its own rows. While one batch is
being encoded, newly arriving texts collect for the next one, so under load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from colbert_az_pylate.errors import InvalidArgumentError

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Collect the texts of concurrent ``await encode(texts)`` calls into one call of a blocking ``encode_many``.

    Parameters
    ----------
    encode_many
        A blocking function from a list of texts to one result per text, in order (a model's query encoder); it
        runs in a worker thread, one call at a time.
    wait_ms
        How long the first text of a batch waits for others, in milliseconds (default 2). ``0`` turns batching
        off: every call encodes its own texts at once, in its own thread.
    max_batch
        At most this many texts per call of ``encode_many`` (default 64); a single request larger than that is
        encoded on its own.
    company
        Optional: whether other requests may still bring texts (the server counts its requests that have not
        been encoded yet). When it says no, a request does not wait ``wait_ms`` for nobody: a lone client pays no
        batching delay.

    Examples
    --------
    >>> import asyncio
    >>> calls = []
    >>> def lengths(texts):
    ...     calls.append(len(texts))
    ...     return [len(text) for text in texts]
    >>> async def three_requests():
    ...     batcher = MicroBatcher(lengths, wait_ms=20)
    ...     try:
    ...         return await asyncio.gather(batcher.encode(["Bakı"]), batcher.encode(["Şəki", "Quba"]),
    ...                                     batcher.encode(["Gəncə"]))
    ...     finally:
    ...         await batcher.close()
    >>> asyncio.run(three_requests()), calls      # three requests, one call
    ([[4], [4, 4], [5]], [4])
    """

    def __init__(
        self,
        encode_many: Callable[[list[str]], Sequence[Any]],
        *,
        wait_ms: float = 2.0,
        max_batch: int = 64,
        company: Callable[[], bool] | None = None,
    ):
        if isinstance(wait_ms, bool) or not isinstance(wait_ms, (int, float)) or not wait_ms >= 0:
            raise InvalidArgumentError(f"wait_ms must be a number of milliseconds >= 0, got {wait_ms!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InvalidArgumentError(f"max_batch must be a whole number >= 1, got {max_batch!r}")
        self.encode_many, self.wait_ms, self.max_batch = encode_many, float(wait_ms), max_batch
        self.company = company
        self.calls = 0  # calls of encode_many, and the texts they encoded: the batching actually achieved
        self.texts = 0
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        """Whether texts wait for others (``wait_ms > 0``)."""
        return self.wait_ms > 0

    async def encode(self, texts: Sequence[str]) -> list[Any]:
        """The results of ``encode_many`` for ``texts``, computed together with other waiting texts.

        Parameters
        ----------
        texts
            The texts of one request.

        Returns
        -------
        list
            One result per text, in order (see the class example). An exception of ``encode_many`` reaches only
            the request whose texts raised it: a failed batch is encoded again request by request.
        """
        texts = list(texts)
        if not self.enabled:
            return await self._run([texts])
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._collect())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _run(self, requests: list[list[str]]) -> list[Any]:
        flat = [text for texts in requests for text in texts]
        self.calls += 1
        self.texts += len(flat)
        results = list(await asyncio.to_thread(self.encode_many, flat))
        if len(results) != len(flat):
            raise RuntimeError(f"encode_many returned {len(results)} results for {len(flat)} texts")
        return results

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        batch: list = []
        carry = None  # a request that did not fit the batch before: it starts the next one
        try:
            while True:
                batch = [carry if carry is not None else await queue.get()]
                carry = None
                wait = self.wait_ms / 1000 if self.company is None or self.company() else 0.0
                size, deadline = len(batch[0][0]), loop.time() + wait
                while size < self.max_batch:
                    remaining = deadline - loop.time()
                    try:
                        item = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
                    except (asyncio.QueueEmpty, asyncio.TimeoutError):  # asyncio's: not the builtin before 3.11
                        break
                    if size + len(item[0]) > self.max_batch:
                        carry = item
                        break
                    batch.append(item)
                    size += len(item[0])
                await self._encode_batch(batch)
                batch = []
        except BaseException as exc:
            # whatever stops the collector (close(), a bug), no request it holds or that waits for it may hang
            self._abandon([*batch, *([carry] if carry is not None else [])], queue, exc)
            raise

    @staticmethod
    def _abandon(held: list, queue: asyncio.Queue, exc: BaseException) -> None:
        while not queue.empty():
            held.append(queue.get_nowait())
        for _, future in held:
            if future.done():
                continue
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(RuntimeError(f"the query batcher stopped: {type(exc).__name__}: {exc}"))

    async def _encode_batch(self, batch: list[tuple[list[str], asyncio.Future]]) -> None:
        live = [(texts, future) for texts, future in batch if not future.done()]  # a cancelled request is dropped
        if not live:
            return
        try:
            results = await self._run([texts for texts, _ in live])
        except Exception as exc:
            if len(live) == 1:
                if not live[0][1].done():
                    live[0][1].set_exception(exc)
                return
            for texts, future in live:  # one bad request must not fail the others
                await self._encode_batch([(texts, future)])
            return
        start = 0
        for texts, future in live:
            if not future.done():
                future.set_result(results[start : start + len(texts)])
            start += len(texts)

    async def close(self) -> None:
        """Stop the collecting task (pending requests are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a collector that failed told its requests
                await self._worker
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()
