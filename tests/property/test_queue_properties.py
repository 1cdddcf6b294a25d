# SPDX-License-Identifier: Apache-2.0
"""Hypothesis properties of the work queue.

A state machine compares the queue with a small model after every step, which proves: no key is
handed to two workers at once; a burst of adds while a key is in flight collapses to exactly one
follow-up; the max priority of coalesced adds is kept; higher priority dequeues first, FIFO within
one priority; delayed keys are not handed out early. A second property runs real concurrent workers
that re-add keys and checks that shutdown(drain=True) drops nothing.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vmwatch.queue import SHUTDOWN, Key, WorkQueue

KEYS = st.sampled_from([('ns', f'vm-{i}') for i in range(5)] + [('other', 'vm-0')])
PRIORITIES = st.integers(min_value=-2, max_value=3)
FAR = 1e6  # a delay that never expires during a test


@dataclass
class Held:
    priority: int
    delayed: bool  # ready at FAR (not now)
    seq: int = -1  # place among equals once ready


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.queue: WorkQueue = self.loop.run_until_complete(self._make())
        self.held: dict[Key, Held] = {}  # ready, delayed or parked
        self.in_flight: set[Key] = set()
        self.seq = 0

    @staticmethod
    async def _make() -> WorkQueue:
        return WorkQueue()

    def teardown(self) -> None:
        self.loop.close()

    def _call(self, fn: object) -> object:
        async def run() -> object:
            return fn() if callable(fn) else await fn  # type: ignore[misc]

        return self.loop.run_until_complete(run())

    def _make_ready(self, key: Key) -> None:
        self.seq += 1
        self.held[key].delayed = False
        self.held[key].seq = self.seq

    def _model_add(self, key: Key, priority: int, delayed: bool) -> None:
        held = self.held.get(key)
        if held is None:
            self.held[key] = Held(priority, delayed)
            if key not in self.in_flight and not delayed:
                self._make_ready(key)
            return
        held.priority = max(held.priority, priority)
        if held.delayed and not delayed:
            held.delayed = False
            if key not in self.in_flight:
                self._make_ready(key)

    @rule(key=KEYS, priority=PRIORITIES)
    def add(self, key: Key, priority: int) -> None:
        assert self._call(lambda: self.queue.add(key, priority=priority))
        self._model_add(key, priority, delayed=False)

    @rule(key=KEYS, priority=PRIORITIES)
    def add_far_future(self, key: Key, priority: int) -> None:
        assert self._call(lambda: self.queue.add_after(key, FAR, priority=priority))
        self._model_add(key, priority, delayed=True)

    @rule(key=KEYS, priority=PRIORITIES, n=st.integers(min_value=2, max_value=20))
    def burst(self, key: Key, priority: int, n: int) -> None:
        for i in range(n):
            self.add(key, priority - (i % 3))

    def _ready(self) -> list[Key]:
        return [k for k, h in self.held.items() if k not in self.in_flight and not h.delayed]

    @precondition(lambda self: self._ready())
    @rule()
    def get(self) -> None:
        ready = self._ready()
        expected = min(ready, key=lambda k: (-self.held[k].priority, self.held[k].seq))
        got = self._call(self.queue.get())
        assert got == expected, (got, expected)
        assert got not in self.in_flight  # never to a second worker
        assert self.queue.priority_of(expected) == self.held[expected].priority  # max priority kept
        del self.held[expected]
        self.in_flight.add(expected)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.in_flight)))
        self._call(lambda: self.queue.done(key))
        self.in_flight.discard(key)
        held = self.held.get(key)
        if held is not None and not held.delayed:
            self._make_ready(key)  # exactly one follow-up, whatever the number of adds

    @invariant()
    def gauges_match_the_model(self) -> None:
        assert len(self.queue) == len(self._ready())
        assert self.queue.depth == len(self.held)
        assert self.queue.in_flight == len(self.in_flight)

    @invariant()
    def nothing_else_is_handed_out(self) -> None:
        if not self._ready():
            got = self._call(self._get_nowait())
            assert got is None, got

    async def _get_nowait(self) -> object:
        task = asyncio.ensure_future(self.queue.get())
        await asyncio.sleep(0)
        if task.done():
            return task.result()
        task.cancel()
        return None


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@settings(max_examples=60, deadline=None)
@given(
    adds=st.lists(st.tuples(KEYS, PRIORITIES), min_size=1, max_size=40),
    workers=st.integers(min_value=1, max_value=4),
    readd_rate=st.floats(min_value=0, max_value=0.5),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_drain_drops_nothing_and_no_key_runs_twice_at_once(
    adds: list[tuple[Key, int]], workers: int, readd_rate: float, seed: int
) -> None:
    rnd = random.Random(seed)

    async def main() -> None:
        q = WorkQueue()
        owed: set[Key] = set()  # keys added and not processed since their last accepted add
        active: set[Key] = set()

        async def worker() -> None:
            async for key in q:
                assert key not in active, f'{key} handed to two workers'
                active.add(key)
                owed.discard(key)
                for _ in range(rnd.randint(0, 2)):
                    await asyncio.sleep(0)
                if rnd.random() < readd_rate and q.add(key):  # re-added while in flight
                    owed.add(key)
                active.discard(key)
                q.done(key)

        tasks = [asyncio.ensure_future(worker()) for _ in range(workers)]
        for i, (key, priority) in enumerate(adds):
            if q.add(key, priority=priority):
                owed.add(key)
            if i % 5 == 0:
                await asyncio.sleep(0)
        await q.shutdown(drain=True)
        await asyncio.gather(*tasks)
        assert not owed, f'dropped on drain: {owed}'
        assert q.depth == 0 and q.in_flight == 0
        assert await q.get() == SHUTDOWN

    asyncio.run(asyncio.wait_for(main(), timeout=10))
