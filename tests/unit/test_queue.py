# SPDX-License-Identifier: Apache-2.0
"""The work queue: client-go semantics, priorities, delays, rate limiting, shutdown, threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from vmwatch.queue import (
    SHUTDOWN,
    ItemExponentialBackoff,
    Key,
    MaxOfRateLimiter,
    TokenBucket,
    WorkQueue,
    default_rate_limiter,
    run_workers,
)

T = TypeVar('T')
A: Key = ('ns', 'a')
B: Key = ('ns', 'b')
C: Key = ('ns', 'c')


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(fn(), timeout=10))  # type: ignore[arg-type]


async def nothing_ready(q: WorkQueue) -> bool:
    """True when get() would block (checked without consuming anything)."""
    task = asyncio.ensure_future(q.get())
    await asyncio.sleep(0.01)
    if task.done():
        raise AssertionError(f'get() returned {task.result()!r}')
    task.cancel()
    return True


def test_a_key_queued_twice_is_held_once_with_the_max_priority() -> None:
    async def main() -> None:
        q = WorkQueue()
        assert q.add(A, priority=1)
        assert q.add(B, priority=5)
        assert q.add(A, priority=10)
        assert q.add(A, priority=3)
        assert len(q) == 2 and q.depth == 2
        assert await q.get() == A
        assert q.priority_of(A) == 10
        assert await q.get() == B
        assert q.metrics.coalesced == 2 and q.metrics.adds == 4

    run(main)


def test_higher_priority_first_fifo_within_a_priority() -> None:
    async def main() -> None:
        q = WorkQueue()
        keys = [('ns', str(i)) for i in range(6)]
        for i, k in enumerate(keys):
            q.add(k, priority=i % 2)
        got = [await q.get() for _ in keys]
        assert got == [keys[1], keys[3], keys[5], keys[0], keys[2], keys[4]]

    run(main)


def test_a_key_in_flight_is_parked_and_requeued_once_on_done() -> None:
    async def main() -> None:
        q = WorkQueue()
        q.add(A)
        assert await q.get() == A
        for p in range(50):  # a burst while processing
            q.add(A, priority=p)
        assert len(q) == 0 and q.depth == 1 and q.in_flight == 1
        assert await nothing_ready(q)  # never to a second worker
        q.done(A)
        assert len(q) == 1
        assert await q.get() == A
        assert q.priority_of(A) == 49
        q.done(A)
        assert q.depth == 0 and await nothing_ready(q)  # exactly one follow-up

    run(main)


def test_add_after_and_an_immediate_add_wins() -> None:
    async def main() -> None:
        q = WorkQueue()
        q.add_after(A, 0.05)
        q.add_after(B, 30)
        assert len(q) == 0 and q.depth == 2
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await q.get() == A
        assert loop.time() - t0 >= 0.04
        q.add(B)  # ready now, not in 30 s
        assert await q.get() == B
        q.add_after(C, 30)
        q.add_after(C, 0.01)  # the earliest ready time wins
        assert await q.get() == C

    run(main)


def test_delayed_add_while_in_flight_waits_after_done() -> None:
    async def main() -> None:
        q = WorkQueue()
        q.add(A)
        assert await q.get() == A
        q.add_after(A, 0.05)
        q.done(A)
        assert len(q) == 0 and q.depth == 1
        assert await q.get() == A

    run(main)


def test_item_exponential_backoff() -> None:
    rl = ItemExponentialBackoff()
    delays = [rl.when(A) for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1000.0 and max(delays) == 1000.0
    assert rl.num_requeues(A) == 20 and rl.num_requeues(B) == 0
    for _ in range(5000):
        rl.when(B)  # no overflow after many failures
    assert rl.when(B) == 1000.0
    rl.forget(A)
    assert rl.num_requeues(A) == 0 and rl.when(A) == 0.005


def test_token_bucket_10_qps_burst_100() -> None:
    now = [0.0]
    bucket = TokenBucket(qps=10, burst=100, clock=lambda: now[0])
    assert [bucket.when(A) for _ in range(100)] == [0.0] * 100
    assert bucket.when(A) == pytest.approx(0.1)
    assert bucket.when(A) == pytest.approx(0.2)
    now[0] = 100.0  # refilled, but never beyond the burst
    assert sum(bucket.when(A) == 0.0 for _ in range(101)) == 100


def test_default_rate_limiter_is_the_max_of_both() -> None:
    rl = default_rate_limiter()
    assert isinstance(rl, MaxOfRateLimiter)
    assert rl.when(A) == 0.005
    for i in range(99):
        rl.when(('x', str(i)))  # drain the bucket with other keys
    assert rl.when(B) == pytest.approx(0.1, abs=0.01)  # the bucket's delay beats B's 5 ms
    assert rl.num_requeues(A) == 1
    rl.forget(A)
    assert rl.num_requeues(A) == 0


def test_add_rate_limited_and_forget() -> None:
    async def main() -> None:
        q = WorkQueue(rate_limiter=ItemExponentialBackoff(base_s=0.01, max_s=0.02))
        q.add_rate_limited(A, priority=3)
        assert len(q) == 0
        assert await q.get() == A
        assert q.num_requeues(A) == 1 and q.metrics.retries == 1
        q.forget(A)
        q.done(A)
        assert q.num_requeues(A) == 0

    run(main)


def test_max_depth_refuses_new_keys_but_coalesces_held_ones() -> None:
    async def main() -> None:
        q = WorkQueue(max_depth=2)
        assert q.add(A) and q.add(B)
        assert not q.add(C)
        assert q.add(A, priority=9)
        assert q.metrics.rejected == 1 and q.depth == 2

    run(main)


def test_shutdown_with_drain_hands_out_everything_then_says_shutdown() -> None:
    async def main() -> None:
        q = WorkQueue()
        q.add(A)
        q.add_after(B, 300)  # delayed keys are not dropped either
        assert await q.get() == A
        q.add(A)  # parked while in flight

        processed: list[Key] = []

        async def worker() -> None:
            async for key in q:
                processed.append(key)
                await asyncio.sleep(0.01)
                q.done(key)

        workers = asyncio.gather(worker(), worker())
        await asyncio.sleep(0.01)
        shutdown = asyncio.ensure_future(q.shutdown(drain=True))
        await asyncio.sleep(0.01)
        assert not shutdown.done()  # A is still in flight
        assert not q.add(C)  # refused once shutting down
        q.done(A)
        await shutdown
        await workers
        assert sorted(processed) == [A, B]
        assert await q.get() == SHUTDOWN

    run(main)


def test_shutdown_without_drain_drops_queued_keys() -> None:
    async def main() -> None:
        q = WorkQueue()
        waiter = asyncio.ensure_future(q.get())
        await asyncio.sleep(0)
        q.add(A)
        assert await waiter == A
        q.add(B)
        q.add(A)
        await q.shutdown()
        assert await q.get() == SHUTDOWN
        q.done(A)  # a late done is harmless
        assert q.depth == 0 and len(q) == 0 and not q.add(C)

    run(main)


def test_blocked_getters_are_released_by_shutdown() -> None:
    async def main() -> None:
        q = WorkQueue()
        getters = [asyncio.ensure_future(q.get()) for _ in range(3)]
        await asyncio.sleep(0)
        await q.shutdown(drain=True)
        assert await asyncio.gather(*getters) == [SHUTDOWN] * 3

    run(main)


def test_a_cancelled_getter_does_not_lose_the_wakeup() -> None:
    async def main() -> None:
        q = WorkQueue()
        first = asyncio.ensure_future(q.get())
        second = asyncio.ensure_future(q.get())
        await asyncio.sleep(0)
        q.add(A)  # wakes `first`...
        first.cancel()  # ...which is cancelled before it runs
        assert await second == A

    run(main)


def test_add_threadsafe_from_another_thread() -> None:
    unbound = WorkQueue()

    async def main() -> None:
        with pytest.raises(RuntimeError):
            unbound.add_threadsafe(A)
        q = WorkQueue()  # created on the loop: bound to it
        thread = threading.Thread(target=lambda: [q.add_threadsafe(('t', str(i % 10))) for i in range(1000)])
        thread.start()
        await asyncio.to_thread(thread.join)
        got = set()
        while len(q):
            key = await q.get()
            assert key != SHUTDOWN
            got.add(key)
        assert len(got) == 10

    run(main)


def test_metrics_latency_and_work_duration() -> None:
    async def main() -> None:
        seen: list[float] = []
        q = WorkQueue()
        q.metrics.on_work_s = seen.append
        q.add(A)
        await asyncio.sleep(0.02)
        assert await q.get() == A
        await asyncio.sleep(0.02)
        q.done(A)
        m = q.metrics
        assert m.gets == 1 and m.work_count == 1
        assert m.latency_s_sum >= 0.015 and m.work_s_sum >= 0.015 and seen == [m.work_s_sum]

    run(main)


def test_run_workers_retries_failures_and_honours_requeue_after() -> None:
    async def main() -> None:
        q = WorkQueue(rate_limiter=ItemExponentialBackoff(base_s=0.001, max_s=0.01))
        calls: dict[Key, int] = {}

        async def reconcile(key: Key) -> float | None:
            calls[key] = calls.get(key, 0) + 1
            if key == A and calls[key] < 3:
                raise RuntimeError('boom')
            if key == B and calls[key] == 1:
                return 0.01
            return None

        q.add(A, priority=5)
        q.add(B)
        task = asyncio.ensure_future(run_workers(q, reconcile, workers=2))
        while calls.get(A, 0) < 3 or calls.get(B, 0) < 2:
            await asyncio.sleep(0.005)
        await q.shutdown(drain=True)
        await task
        assert calls == {A: 3, B: 2}
        assert q.num_requeues(A) == 0  # forgotten after the success

    run(main)


def test_methods_need_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        WorkQueue().add(A)
    with pytest.raises(ValueError):
        WorkQueue(max_depth=0)
