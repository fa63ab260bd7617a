"""A value read over the network, as callers on one event loop see it: never older than a TTL,
renewed in the background so that steady traffic never waits for the read.

Used for what the query service serves on every call but may serve slightly old: the status
snapshots (:class:`cluster.snapshots.SnapshotCache`) and a live run's roster
(:class:`swarm.api.backends.RayLevels`). Both reads are round trips that a busy node makes slow
(a Ray call queues behind the node's work); awaiting one on every request, or on every
concurrent request once per TTL, puts that round trip into the requests' latency.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class RenewingRead(Generic[T]):
    """The result of ``read()``, started at most ``ttl_s`` ago (seconds, monotonic clock).

    A held value older than ``ttl_s / 2`` is renewed in the background (the caller gets the held
    value at once); one older than ``ttl_s``, or than the last :meth:`invalidate`, or any value when
    ``force``, is awaited. Reads run one at a time; callers arriving meanwhile share the read in
    flight when it started late enough for them. With ``ttl_s`` 0 every call reads. A failed read
    raises in the callers that awaited it; a failed background read is dropped (the next caller that
    needs a fresh value reads again and gets the error).
    """

    def __init__(self, read: Callable[[], Awaitable[T]], ttl_s: float, name: str = "RenewingRead",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl_s >= 0:
            raise ValueError(f"{name}: ttl_s must be >= 0, got {ttl_s}")
        self.read, self.ttl_s, self.clock = read, ttl_s, clock
        self._held: T | None = None
        self._held_at = -math.inf  # monotonic start of the read that gave _held
        self._invalidated = -math.inf
        self._task: asyncio.Future | None = None
        self._task_started = -math.inf

    def invalidate(self) -> None:
        """The next :meth:`get` waits for a read that started after this call (this process changed
        something it will be asked about)."""
        self._invalidated = self.clock()

    async def get(self, force: bool = False) -> T:
        """The value, read at most ``ttl_s`` ago, or read after this call began when ``force``."""
        now = self.clock()
        need = now if force else max(now - self.ttl_s, self._invalidated)
        if self._held_at >= need and self.ttl_s > 0:
            if now - self._held_at >= self.ttl_s / 2 and not self._reading():
                self._start()  # renew in the background: no caller waits for it
            return self._held
        while True:  # a read that started no earlier than `need`
            if not self._reading():
                self._start()
            task, started = self._task, self._task_started
            value = await asyncio.shield(task)
            if started >= need:
                return value

    def _reading(self) -> bool:
        return self._task is not None and not self._task.done()

    def _start(self) -> None:
        started = self._task_started = self.clock()

        async def read() -> T:
            value = await self.read()
            if started >= self._held_at:
                self._held, self._held_at = value, started
            return value

        self._task = asyncio.ensure_future(read())
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())  # see the class doc
