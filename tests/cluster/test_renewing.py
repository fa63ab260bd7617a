"""RenewingRead: never older than its TTL, renewed in the background, one read at a time, forced reads
start after the call, and failures reach only those who waited."""

import asyncio

import pytest

from cluster.renewing import RenewingRead


class Source:
    """A read that returns 0, 1, 2, ... and finishes only when the test opens its gate."""

    def __init__(self) -> None:
        self.started = 0
        self.gate = asyncio.Event()
        self.fail = False

    async def read(self) -> int:
        n = self.started
        self.started += 1
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("board gone")
        return n


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_concurrent_callers_share_one_read_and_a_fresh_value_is_served_without_reading():
    async def main():
        src, clock = Source(), Clock()
        cache = RenewingRead(src.read, ttl_s=1.0, clock=clock)
        callers = [asyncio.ensure_future(cache.get()) for _ in range(8)]
        await settle()
        assert src.started == 1 and not any(c.done() for c in callers)
        src.gate.set()
        assert await asyncio.gather(*callers) == [0] * 8
        clock.t += 0.4  # younger than ttl/2: served as held, no read
        assert await cache.get() == 0 and src.started == 1

    asyncio.run(main())


def test_past_half_the_ttl_the_held_value_is_returned_at_once_and_renewed_in_the_background():
    async def main():
        src, clock = Source(), Clock()
        cache = RenewingRead(src.read, ttl_s=1.0, clock=clock)
        src.gate.set()
        assert await cache.get() == 0
        src.gate.clear()  # the renewal will hang until the gate opens again
        clock.t += 0.6
        assert await asyncio.wait_for(cache.get(), 0.5) == 0  # no wait for the slow read
        assert await asyncio.wait_for(cache.get(), 0.5) == 0 and src.started == 2  # one renewal, not two
        src.gate.set()
        await settle()
        assert await cache.get() == 1 and src.started == 2

    asyncio.run(main())


def test_past_the_ttl_or_an_invalidate_callers_wait_for_a_read_that_started_after_them():
    async def main():
        src, clock = Source(), Clock()
        cache = RenewingRead(src.read, ttl_s=1.0, clock=clock)
        src.gate.set()
        assert await cache.get() == 0
        clock.t += 1.5
        assert await cache.get() == 1
        clock.t += 0.01
        cache.invalidate()
        assert await cache.get() == 2

    asyncio.run(main())


def test_a_forced_get_does_not_take_a_read_that_was_already_in_flight():
    async def main():
        src, clock = Source(), Clock()
        cache = RenewingRead(src.read, ttl_s=10.0, clock=clock)
        early = asyncio.ensure_future(cache.get())
        await settle()
        clock.t += 0.1
        forced = asyncio.ensure_future(cache.get(force=True))
        await settle()
        src.gate.set()
        assert await early == 0
        assert await forced == 1 and src.started == 2

    asyncio.run(main())


def test_a_failed_read_raises_in_its_waiters_and_a_failed_background_read_is_dropped():
    async def main():
        src, clock = Source(), Clock()
        cache = RenewingRead(src.read, ttl_s=1.0, clock=clock)
        src.gate.set()
        assert await cache.get() == 0
        src.fail = True
        clock.t += 0.6
        assert await cache.get() == 0  # the background renewal fails quietly ...
        await settle()
        assert await cache.get() == 0  # ... and the held value still serves within its TTL
        clock.t += 1.0
        with pytest.raises(RuntimeError, match="board gone"):
            await cache.get()
        src.fail = False
        assert await cache.get() == src.started - 1

    asyncio.run(main())


def test_ttl_zero_reads_on_every_call_and_a_negative_ttl_is_refused_by_name():
    async def main():
        src = Source()
        src.gate.set()
        cache = RenewingRead(src.read, ttl_s=0)
        assert [await cache.get() for _ in range(3)] == [0, 1, 2]

    asyncio.run(main())
    with pytest.raises(ValueError, match="roster: ttl_s must be >= 0, got -1"):
        RenewingRead(Source().read, ttl_s=-1, name="roster")
