# SPDX-License-Identifier: Apache-2.0
"""SinkRunner (restart with backoff, readiness, final close) and the stdout sink on real pipes."""

from __future__ import annotations

import asyncio
import os

import pytest

from vmwatch.kube.sinks import SinkClosedError, SinkRunner, StdoutSink
from vmwatch.queue import WorkQueue


class FlakySink:
    """Fails `failures` times at start, then takes keys off the queue."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.runs = 0
        self.got: list[tuple[str, str]] = []

    async def run(self, queue: WorkQueue) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise self.error
        async for key in queue:
            self.got.append(key)
            queue.done(key)


async def _until(predicate: object, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, 'timed out'
        await asyncio.sleep(0.005)


def test_a_failing_sink_is_restarted_with_backoff_and_not_ready_meanwhile() -> None:
    async def main() -> None:
        queue = WorkQueue()
        sink = FlakySink(2, RuntimeError('boom'))
        counted: list[int] = []
        runner = SinkRunner(sink, queue, on_failure=lambda: counted.append(1), initial_s=0.05, healthy_after_s=0.2)
        assert runner.ready() == (True, 'sink stopped (not leading)')
        runner.start()
        await _until(lambda: runner.failures == 1)
        ok, reason = runner.ready()
        assert not ok and 'boom' in reason
        queue.add(('ns', 'a'))
        await _until(lambda: sink.got == [('ns', 'a')])
        assert sink.runs == 3 and runner.failures == 2 and len(counted) == 2
        await _until(lambda: runner.ready()[0], timeout_s=2)
        await runner.stop()
        assert not runner.running

    asyncio.run(main())


def test_a_closed_sink_is_final() -> None:
    async def main() -> None:
        closed: list[BaseException] = []
        sink = FlakySink(5, SinkClosedError('gone'))
        runner = SinkRunner(sink, WorkQueue(), on_closed=closed.append, initial_s=0.01)
        runner.start()
        await _until(lambda: closed)
        await asyncio.sleep(0.05)
        assert sink.runs == 1 and not runner.running and runner.ready() == (False, 'sink closed: gone')
        runner.start()  # never again
        assert not runner.running

    asyncio.run(main())


def test_stdout_sink_on_a_pipe_whose_reader_left_raises_closed() -> None:
    async def main() -> None:
        r, w = os.pipe()
        os.close(r)
        with os.fdopen(w, 'wb') as stream:
            queue = WorkQueue()
            queue.add(('ns', 'a'))
            with pytest.raises(SinkClosedError):
                await StdoutSink(stream).run(queue)
            assert queue.depth == 1  # handed back, not dropped

    asyncio.run(main())


def test_stdout_sink_notices_a_reader_gone_with_nothing_to_write() -> None:
    async def main() -> None:
        r, w = os.pipe()
        with os.fdopen(w, 'wb') as stream:
            sink = StdoutSink(stream)
            task = asyncio.ensure_future(sink.run(WorkQueue()))
            await asyncio.sleep(0.1)
            assert not task.done()
            os.close(r)
            with pytest.raises(SinkClosedError):
                await asyncio.wait_for(task, timeout=3)

    asyncio.run(main())


def test_a_stuck_stdout_write_blocks_neither_the_loop_nor_stop() -> None:
    async def main() -> None:
        r, w = os.pipe()
        os.set_blocking(w, False)
        try:
            while True:
                os.write(w, b'#' * 4096)
        except BlockingIOError:
            os.set_blocking(w, True)
        with os.fdopen(w, 'wb') as stream:
            queue = WorkQueue()
            queue.add(('ns', 'a'))
            runner = SinkRunner(StdoutSink(stream), queue)
            runner.start()
            await _until(lambda: queue.in_flight == 1)
            await asyncio.sleep(0.05)  # the loop runs while the write is stuck
            await asyncio.wait_for(runner.stop(), timeout=2)
            assert queue.depth == 1 and queue.in_flight == 0  # the request went back to the queue
            os.close(r)  # the writer thread's write fails now: the process could exit

    asyncio.run(main())
