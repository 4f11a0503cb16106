"""Locks of the server: many searches at once beside an exclusive index refresh, and one model served to queries
first.

:class:`ReadWriteLock` lets any number of searches read the index together while a refresh to a new commit (or a
write to a store that searches share) waits for them and runs alone; a waiting writer holds new readers back, so a
stream of searches cannot starve it. :class:`PriorityLock` hands the one model to query encodings ahead of document
encodings, and lets bulk document work step aside while searches are in flight. :class:`TurnLock` serves rerank
requests in arrival order.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["BULK", "QUERIES", "WRITES", "LeftBeforeTurnError", "PriorityLock", "ReadWriteLock", "TurnLock"]

QUERIES, WRITES, BULK = 0, 1, 2  # PriorityLock levels: query batches, document encodings of writes, bulk embeddings


class ReadWriteLock:
    """Shared reads, exclusive writes; writers go ahead of readers that arrive after them.

    Examples
    --------
    >>> lock = ReadWriteLock()
    >>> with lock.read(), lock.read():      # readers share it
    ...     lock.readers
    2
    >>> with lock.write():
    ...     lock.writing
    True
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.readers = 0
        self.writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared (a search)."""
        with self._cond:
            while self.writing or self._writers_waiting:
                self._cond.wait()
            self.readers += 1
        try:
            yield
        finally:
            with self._cond:
                self.readers -= 1
                if not self.readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock alone (a refresh to a new commit, a write to a shared store)."""
        with self._cond:
            self._writers_waiting += 1
            try:
                while self.writing or self.readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self.writing = True
        try:
            yield
        finally:
            with self._cond:
                self.writing = False
                self._cond.notify_all()


class PriorityLock:
    """A mutex whose waiters are served by level: :data:`QUERIES` before :data:`WRITES` before :data:`BULK`.

    ``hold(level, defer=...)`` also waits while ``defer()`` is true (searches in flight: bulk work steps aside so
    it takes no CPU from them), but never longer than ``max_defer`` seconds, so it is slowed, never starved.

    Examples
    --------
    >>> lock = PriorityLock()
    >>> with lock.hold(QUERIES):
    ...     lock.held
    True
    >>> with lock.hold(BULK, defer=lambda: True, max_defer=0.01):   # deferred at most 10 ms
    ...     lock.held
    True
    """

    POLL_S = 0.005  # how often a deferred waiter looks at ``defer()`` again

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.held = False
        self._waiting = [0, 0, 0]

    @contextlib.contextmanager
    def hold(self, level: int, defer: Callable[[], bool] | None = None, max_defer: float = 1.0) -> Iterator[None]:
        """Hold the lock at ``level`` (0 first)."""
        deadline = time.monotonic() + max_defer
        with self._cond:
            self._waiting[level] += 1
            try:
                while True:
                    ahead = self.held or any(self._waiting[:level])
                    deferring = defer is not None and time.monotonic() < deadline and defer()
                    if not ahead and not deferring:
                        break
                    self._cond.wait(self.POLL_S if deferring else None)
            finally:
                self._waiting[level] -= 1
            self.held = True
        try:
            yield
        finally:
            with self._cond:
                self.held = False
                self._cond.notify_all()


class TurnLock:
    """A mutex handed over in arrival order (first come, first served), which a waiter may leave when ``stop`` is
    set: what rerank requests take around their document encoding, so that under load each finishes in turn
    instead of all of them sharing the model chunk by chunk (and some waiting for every other one).

    Examples
    --------
    >>> turns = TurnLock()
    >>> with turns.hold():                      # the first ticket (0) is served at once
    ...     turns.serving
    0
    >>> stop = threading.Event(); stop.set()
    >>> with turns.hold(), turns.hold(stop):   # a waiter whose client left gives up its turn
    ...     pass
    Traceback (most recent call last):
    ...
    colbert_az_pylate.serving.concurrency.LeftBeforeTurnError: the waiter left before its turn
    """

    POLL_S = 0.05  # how often a waiter looks at ``stop``

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self.serving = 0  # the ticket whose turn it is (tickets given up are skipped)
        self._left: set[int] = set()

    @contextlib.contextmanager
    def hold(self, stop: threading.Event | None = None) -> Iterator[None]:
        """Wait for this caller's turn, then hold the lock; :class:`LeftBeforeTurnError` if ``stop`` is set first."""
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while self.serving != ticket:
                if stop is not None and stop.is_set():
                    self._left.add(ticket)
                    raise LeftBeforeTurnError("the waiter left before its turn")
                self._cond.wait(self.POLL_S if stop is not None else None)
        try:
            yield
        finally:
            with self._cond:
                self.serving += 1
                while self.serving in self._left:  # skip the tickets whose waiters left
                    self._left.discard(self.serving)
                    self.serving += 1
                self._cond.notify_all()


class LeftBeforeTurnError(Exception):
    """A :class:`TurnLock` waiter left (its ``stop`` was set) before its turn."""
