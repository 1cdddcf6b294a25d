# SPDX-License-Identifier: Apache-2.0
"""A priority work queue with client-go semantics, for reconcile requests keyed by (namespace, name).

Semantics (client-go workqueue + controller-runtime's priority queue, reimplemented):

* A key is held at most once. Adding a key that is already queued keeps it once, with the **max**
  priority of its adds and the **earliest** of its ready times (an immediate add makes a delayed key
  ready now).
* A key being processed (handed out by `get`, not yet `done`) is never handed to a second worker.
  Adds meanwhile are parked and the key is re-queued **once** when `done` is called.
* `get` hands out the ready key with the highest priority; FIFO within one priority (order of becoming
  ready; raising a queued key's priority keeps its place among equals).
* `add_rate_limited` re-queues after the rate limiter's delay: per-key exponential backoff
  5 ms -> 1000 s, combined (max) with an overall token bucket of 10 qps, burst 100 (client-go's
  DefaultControllerRateLimiter). `forget` resets the key's backoff after a success.
* `shutdown(drain=True)` refuses new adds, makes delayed keys ready, hands out everything still queued
  (including keys parked while processing) and returns once nothing is queued or in flight; `get`
  returns `'shutdown'` after that. `shutdown()` without drain drops what is queued at once.
* Bounded: at most `max_depth` distinct keys are held (ready, delayed or parked). An add of a new key
  beyond that is refused (`add` returns False, counted in `metrics.rejected`); adds of held keys always
  coalesce. Since keys coalesce, the depth never exceeds the number of distinct VMs.

Design: **asyncio-first**. The queue binds to the running event loop on first use; every method
except the `*_threadsafe` ones must be called from that loop's thread (no locks on the hot path).
Producers in other threads (the vSphere watcher, the Kubernetes watch thread) use `add_threadsafe`,
which hops onto the loop with `call_soon_threadsafe`. Delays use the loop's clock and one timer for
the earliest delayed key.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

__all__ = [
    'SHUTDOWN',
    'ItemExponentialBackoff',
    'Key',
    'KeyedTasks',
    'MaxOfRateLimiter',
    'QueueMetrics',
    'RateLimiter',
    'TokenBucket',
    'WorkQueue',
    'default_rate_limiter',
    'run_workers',
]

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name) of a VirtualMachine: reconciles are level-based, so the key is all a worker needs."""

SHUTDOWN: Final = 'shutdown'
"""What `WorkQueue.get` returns once the queue is shut down (and drained)."""


class RateLimiter(Protocol):
    """How long to wait before a key is retried (client-go's RateLimiter)."""

    def when(self, key: Key) -> float:
        """The delay in seconds for this retry; records the retry."""

    def forget(self, key: Key) -> None:
        """The key succeeded: reset its history."""

    def num_requeues(self, key: Key) -> int:
        """Retries recorded for the key since it was last forgotten."""


class ItemExponentialBackoff:
    """Per-key exponential backoff: base_s * 2**failures, capped at max_s."""

    def __init__(self, *, base_s: float = 0.005, max_s: float = 1000.0) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._failures: dict[Key, int] = {}

    def when(self, key: Key) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # 2.0**1024 overflows a float; long before that the cap applies anyway
        return min(self.base_s * 2.0 ** min(failures, 1000), self.max_s)

    def forget(self, key: Key) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: Key) -> int:
        return self._failures.get(key, 0)


class TokenBucket:
    """An overall token bucket: `qps` tokens per second, at most `burst` saved up.

    Like golang.org/x/time/rate's Reserve: every call takes a token, possibly going into debt, and the
    delay is the time until that token exists. It limits the retry rate of the whole queue.
    """

    def __init__(self, *, qps: float = 10.0, burst: int = 100, clock: Callable[[], float] = time.monotonic) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError('qps must be > 0 and burst >= 1')
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def when(self, key: Key | None = None) -> float:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, key: Key) -> None:
        pass

    def num_requeues(self, key: Key) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay of several limiters (each one records every retry)."""

    def __init__(self, *limiters: RateLimiter) -> None:
        self.limiters = limiters

    def when(self, key: Key) -> float:
        return max(limiter.when(key) for limiter in self.limiters)

    def forget(self, key: Key) -> None:
        for limiter in self.limiters:
            limiter.forget(key)

    def num_requeues(self, key: Key) -> int:
        return max(limiter.num_requeues(key) for limiter in self.limiters)


def default_rate_limiter() -> MaxOfRateLimiter:
    """client-go's DefaultControllerRateLimiter: backoff 5 ms -> 1000 s per key, max with 10 qps / burst 100."""
    return MaxOfRateLimiter(ItemExponentialBackoff(base_s=0.005, max_s=1000.0), TokenBucket(qps=10.0, burst=100))


@dataclass
class QueueMetrics:
    """Counters a metrics module reads (all monotonic except the gauges on WorkQueue itself).

    `on_latency_s` / `on_work_s`, when set, observe every queue latency (ready -> handed out) and
    work duration (handed out -> done), e.g. into a histogram.
    """

    adds: int = 0  # add / add_after / add_rate_limited calls accepted (new or coalesced)
    coalesced: int = 0  # accepted adds of a key that was already held
    rejected: int = 0  # adds refused: shut down, or a new key beyond max_depth
    retries: int = 0  # add_rate_limited calls
    gets: int = 0  # keys handed out
    latency_s_sum: float = 0.0
    latency_s_max: float = 0.0
    work_s_sum: float = 0.0
    work_s_max: float = 0.0
    work_count: int = 0
    on_latency_s: Callable[[float], None] | None = field(default=None, repr=False)
    on_work_s: Callable[[float], None] | None = field(default=None, repr=False)


class _Entry:
    """A held key: ready (in the ready heap), delayed (in the waiting heap) or parked (being processed)."""

    __slots__ = ('priority', 'ready_at', 'ready_since', 'seq')

    def __init__(self, priority: int, ready_at: float | None) -> None:
        self.priority = priority
        self.ready_at = ready_at  # None: ready now (or parked until done)
        self.seq = -1  # position among equals in the ready heap; -1 when not in it
        self.ready_since = 0.0


class WorkQueue:
    """The queue. See the module docstring for semantics and the threading model."""

    def __init__(self, *, max_depth: int = 100_000, rate_limiter: RateLimiter | None = None) -> None:
        if max_depth < 1:
            raise ValueError('max_depth must be >= 1')
        self.max_depth = max_depth
        self.rate_limiter: RateLimiter = rate_limiter if rate_limiter is not None else default_rate_limiter()
        self.metrics = QueueMetrics()
        self._loop: asyncio.AbstractEventLoop | None = None
        try:  # created on the loop: bound at once, so threads can add before the first await
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
        self._entries: dict[Key, _Entry] = {}
        self._ready: list[tuple[int, int, Key]] = []  # (-priority, seq, key); stale tuples skipped on pop
        self._waiting: list[tuple[float, Key]] = []  # (ready_at, key); stale tuples skipped on pop
        self._n_ready = 0
        self._processing: dict[Key, tuple[float, int]] = {}  # key -> (started, priority)
        self._getters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._seq = 0
        self._shutting_down = False
        self._draining = False
        self._drained: asyncio.Event | None = None
        self.on_idle: Callable[[Key], None] | None = None
        """Called (on the loop) by `done(key)` when that processing succeeded (`forget(key)` was called during
        it) and the key was not added again meanwhile: every add of it so far was processed. The Service
        records deliveries with it."""
        self._succeeded: set[Key] = set()

    # -- gauges ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Keys ready to be handed out now (client-go's Len)."""
        return self._n_ready

    @property
    def depth(self) -> int:
        """Keys held: ready, delayed or parked while processing. Bounded by max_depth."""
        return len(self._entries)

    def holds(self, key: Key) -> bool:
        """Whether `key` is queued (ready or delayed) or being processed."""
        return key in self._entries or key in self._processing

    @property
    def in_flight(self) -> int:
        """Keys handed out and not yet done."""
        return len(self._processing)

    def processing_ages_s(self) -> list[float]:
        """How long each key being processed has been at it (client-go's unfinished work and longest running
        processor gauges). Safe from any thread: one C-level copy of the table."""
        now = self._loop.time() if self._loop is not None else time.monotonic()
        return [now - started for started, _priority in list(self._processing.values())]

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def priority_of(self, key: Key) -> int | None:
        """The priority a key had when it was handed out (None if it is not being processed)."""
        started = self._processing.get(key)
        return None if started is None else started[1]

    @property
    def full(self) -> bool:
        """True while an add of a new key would be refused for want of room (depth at max_depth)."""
        return len(self._entries) >= self.max_depth

    # -- adding -------------------------------------------------------------------------------------
    def add(self, key: Key, *, priority: int = 0) -> bool:
        """Queue `key` now. False if refused (shut down, or a new key beyond max_depth)."""
        return self._add(key, priority, None)

    def add_after(self, key: Key, delay_s: float, *, priority: int = 0) -> bool:
        """Queue `key` once `delay_s` seconds have passed (at once if <= 0)."""
        if delay_s <= 0:
            return self._add(key, priority, None)
        return self._add(key, priority, self._bind().time() + delay_s)

    def add_rate_limited(self, key: Key, *, priority: int = 0) -> bool:
        """Queue `key` after the rate limiter's delay (call this when processing it failed)."""
        self.metrics.retries += 1
        return self.add_after(key, self.rate_limiter.when(key), priority=priority)

    def forget(self, key: Key) -> None:
        """Processing `key` succeeded: reset its backoff."""
        self.rate_limiter.forget(key)
        if key in self._processing:
            self._succeeded.add(key)

    def num_requeues(self, key: Key) -> int:
        return self.rate_limiter.num_requeues(key)

    def add_threadsafe(self, key: Key, *, priority: int = 0, delay_s: float = 0.0) -> None:
        """`add_after` from any thread (fire and forget).

        The queue must be bound to its loop: created on it, or used on it once.
        """
        if self._loop is None:
            raise RuntimeError('the queue is not bound to an event loop yet: use it from the loop first')
        self._loop.call_soon_threadsafe(self._add_from_thread, key, priority, delay_s)

    def _add_from_thread(self, key: Key, priority: int, delay_s: float) -> None:
        self.add_after(key, delay_s, priority=priority)

    # -- consuming ----------------------------------------------------------------------------------
    async def get(self) -> Key | Literal['shutdown']:
        """The next key to process, waiting for one; `'shutdown'` once shut down (and drained).

        The caller owns the key until it calls `done(key)`; it must call `done` exactly once.
        """
        loop = self._bind()
        while True:
            key = self._pop_ready(loop)
            if key is not None:
                return key
            if self._finished():
                return SHUTDOWN
            waiter: asyncio.Future[None] = loop.create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if not waiter.cancelled() and self._n_ready:
                    self._wake_one()  # we were woken for an item we will not take: pass it on
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()

    def done(self, key: Key) -> None:
        """Processing of `key` is over: hand it out again if it was added meanwhile."""
        started = self._processing.pop(key, None)
        if started is None:
            return
        succeeded = key in self._succeeded
        self._succeeded.discard(key)
        loop = self._bind()
        work_s = loop.time() - started[0]
        m = self.metrics
        m.work_count += 1
        m.work_s_sum += work_s
        m.work_s_max = max(m.work_s_max, work_s)
        if m.on_work_s is not None:
            m.on_work_s(work_s)
        entry = self._entries.get(key)
        if entry is not None:
            self._place(loop, key, entry)
        elif succeeded and self.on_idle is not None:
            self.on_idle(key)
        self._check_drained()

    def __aiter__(self) -> AsyncIterator[Key]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Key]:
        while True:
            key = await self.get()
            if key == SHUTDOWN:
                return
            yield key

    # -- shutting down ------------------------------------------------------------------------------
    async def shutdown(self, *, drain: bool = False) -> None:
        """Refuse new adds and stop handing out keys.

        drain=False drops everything queued now (in-flight keys may still call done). drain=True hands
        out everything still queued, delayed keys immediately, and returns once nothing is queued or in
        flight.
        """
        loop = self._bind()
        self._shutting_down = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not drain:
            self._draining = False
            self._entries.clear()
            self._ready.clear()
            self._waiting.clear()
            self._n_ready = 0
        else:
            self._draining = True
            waiting, self._waiting = self._waiting, []
            for _, key in waiting:
                entry = self._entries.get(key)
                if entry is not None and entry.seq < 0 and key not in self._processing:
                    entry.ready_at = None
                    self._push_ready(loop, key, entry)
            self._drained = asyncio.Event()
            self._check_drained()
            await self._drained.wait()
        self._wake_all()

    # -- internals ----------------------------------------------------------------------------------
    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _finished(self) -> bool:
        if not self._shutting_down:
            return False
        return not self._draining or (not self._entries and not self._processing)

    def _add(self, key: Key, priority: int, ready_at: float | None) -> bool:
        loop = self._bind()
        m = self.metrics
        if self._shutting_down:
            m.rejected += 1
            return False
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_depth:
                m.rejected += 1
                return False
            m.adds += 1
            entry = self._entries[key] = _Entry(priority, ready_at)
            if key not in self._processing:  # else parked until done()
                self._place(loop, key, entry)
            return True
        m.adds += 1
        m.coalesced += 1
        if entry.seq >= 0:  # ready: it keeps its place, maybe with a higher priority
            if priority > entry.priority:
                entry.priority = priority
                heapq.heappush(self._ready, (-priority, entry.seq, key))
            return True
        entry.priority = max(entry.priority, priority)
        if entry.ready_at is None or (ready_at is not None and ready_at >= entry.ready_at):
            return True  # parked and ready at once on done(), or already due earlier
        entry.ready_at = ready_at
        if key not in self._processing:
            self._place(loop, key, entry)
        return True

    def _place(self, loop: asyncio.AbstractEventLoop, key: Key, entry: _Entry) -> None:
        """Put a held, not-in-flight key where it belongs: the ready heap or the waiting heap."""
        if entry.ready_at is None or entry.ready_at <= loop.time() or self._draining:
            entry.ready_at = None
            self._push_ready(loop, key, entry)
        else:
            heapq.heappush(self._waiting, (entry.ready_at, key))
            self._schedule(loop)

    def _push_ready(self, loop: asyncio.AbstractEventLoop, key: Key, entry: _Entry) -> None:
        self._seq += 1
        entry.seq = self._seq
        entry.ready_since = loop.time()
        self._n_ready += 1
        heapq.heappush(self._ready, (-entry.priority, entry.seq, key))
        self._wake_one()

    def _pop_ready(self, loop: asyncio.AbstractEventLoop) -> Key | None:
        ready = self._ready
        while ready:
            neg_priority, seq, key = heapq.heappop(ready)
            entry = self._entries.get(key)
            if entry is None or entry.seq != seq or entry.priority != -neg_priority:
                continue  # stale: the key was handed out, dropped, or its priority was raised
            del self._entries[key]
            self._n_ready -= 1
            now = loop.time()
            self._processing[key] = (now, entry.priority)
            m = self.metrics
            m.gets += 1
            latency_s = now - entry.ready_since
            m.latency_s_sum += latency_s
            m.latency_s_max = max(m.latency_s_max, latency_s)
            if m.on_latency_s is not None:
                m.on_latency_s(latency_s)
            return key
        return None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._waiting or self._shutting_down:
            return
        first = self._waiting[0][0]
        if self._timer is not None:
            if self._timer.when() <= first:
                return
            self._timer.cancel()
        self._timer = loop.call_at(first, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        loop = self._bind()
        now = loop.time()
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            ready_at, key = heapq.heappop(waiting)
            entry = self._entries.get(key)
            if entry is None or entry.seq >= 0 or entry.ready_at != ready_at or key in self._processing:
                continue  # stale
            entry.ready_at = None
            self._push_ready(loop, key, entry)
        self._schedule(loop)

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _check_drained(self) -> None:
        if self._draining and not self._entries and not self._processing:
            if self._drained is not None:
                self._drained.set()
            self._wake_all()


Reconcile = Callable[[Key], Awaitable[float | None]]
"""An in-process reconciler: returns None when done, or a delay in seconds to look again later."""


async def run_workers(queue: WorkQueue, reconcile: Reconcile, *, workers: int = 1) -> None:
    """Run `workers` concurrent consumers until the queue is shut down.

    A reconcile that raises is retried with `add_rate_limited` (at the priority it had); one that
    returns a delay is re-queued with `add_after` and forgotten; one that returns None is forgotten.
    """

    async def worker() -> None:
        async for key in queue:
            priority = queue.priority_of(key) or 0
            try:
                requeue_after_s = await reconcile(key)
            except asyncio.CancelledError:
                queue.done(key)
                raise
            except Exception:
                log.exception('reconcile of %s/%s failed; retrying with backoff', *key)
                queue.add_rate_limited(key, priority=priority)
            else:
                queue.forget(key)
                if requeue_after_s is not None:
                    queue.add_after(key, requeue_after_s, priority=priority)
            queue.done(key)

    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(worker())


class KeyedTasks:
    """Runs coroutines concurrently, at most `limit` at once, and one after the other per key, in the order
    they were started (a later one for a key waits for the earlier ones: nothing is reordered per key).

    `start` waits only while `limit` are already running (backpressure: memory stays bounded). A coroutine's
    exception is logged, never lost silently. Used for the validation GETs of signals the index missed.
    """

    def __init__(self, *, limit: int) -> None:
        if limit < 1:
            raise ValueError('limit must be >= 1')
        self._slots = asyncio.Semaphore(limit)
        self._last: dict[Key, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Coroutines started and not finished."""
        return len(self._tasks)

    def busy(self, key: Key) -> bool:
        """True while a coroutine for `key` is running or waiting."""
        return key in self._last

    async def start(self, key: Key, work: Callable[[], Awaitable[None]]) -> None:
        await self._slots.acquire()
        previous = self._last.get(key)
        task = asyncio.create_task(self._run(previous, work), name=f'vmwatch-keyed-{key[0]}/{key[1]}')
        self._last[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._finished(key, t))

    async def _run(self, previous: asyncio.Task[None] | None, work: Callable[[], Awaitable[None]]) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])
            await work()
        except Exception:
            log.exception('a keyed task failed')
        finally:
            self._slots.release()

    def _finished(self, key: Key, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._last.get(key) is task:
            del self._last[key]

    async def aclose(self) -> None:
        """Cancel every task and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
