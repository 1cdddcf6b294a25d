# SPDX-License-Identifier: Apache-2.0
"""Consumers of the work queue that hand reconcile requests to something outside this process.

* `AnnotateSink` patches one annotation (default `vmwatch.dev/async-signal`) on the VirtualMachine, so
  a controller in another process, in any language, sees an update event and reconciles it. The queue
  already coalesces keys; the sink adds an overall rate limit on patches. The value is a UTC timestamp
  with microseconds, strictly increasing within the process, so every signal changes the object.
  A VM that no longer exists (404) is dropped; other failures are retried with the queue's backoff.
* `StdoutSink` writes one JSON line per request: {"namespace", "name", "priority", "time"}. The writes run
  in a writer thread, so a reader that stops reading stalls the sink, never the event loop (SIGTERM, health
  and the Lease keep working). A reader that went away (EPIPE) is `SinkClosedError`: it cannot come back.

Both run until the queue is shut down (`await sink.run(queue)`); drain the queue to flush them. A sink that
is cancelled (the Lease was lost, shutdown) hands the request it was working on back to the queue.
`SinkRunner` runs a sink, restarts it with backoff when it fails, and reports it (`ready()`, a metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue as thread_queue
import select
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import IO, Any, Final, Protocol

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vmwatch.kube.index import VM_GROUP, VM_PLURAL, VM_VERSION
from vmwatch.queue import Key, TokenBucket, WorkQueue
from vmwatch.settings import FIELD_MANAGER

__all__ = ['SIGNAL_ANNOTATION', 'AnnotateSink', 'Sink', 'SinkClosedError', 'SinkRunner', 'StdoutSink']

log = logging.getLogger(__name__)

SIGNAL_ANNOTATION: Final = 'vmwatch.dev/async-signal'


class _Stamp:
    """Strictly increasing UTC timestamps (microseconds), also when the clock stands still or steps back."""

    def __init__(self) -> None:
        self._last_us = 0

    def __call__(self) -> str:
        now_us = max(time.time_ns() // 1000, self._last_us + 1)
        self._last_us = now_us
        return datetime.fromtimestamp(now_us / 1e6, UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


class AnnotateSink:
    """Signal an external controller by patching an annotation on the VirtualMachine."""

    def __init__(
        self,
        api: Any,
        *,
        annotation: str = SIGNAL_ANNOTATION,
        group: str = VM_GROUP,
        version: str = VM_VERSION,
        plural: str = VM_PLURAL,
        qps: float = 20.0,
        burst: int = 50,
        workers: int = 2,
        request_timeout_s: float = 10.0,
    ) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.annotation = annotation
        self.group, self.version, self.plural = group, version, plural
        self.bucket = TokenBucket(qps=qps, burst=burst)
        self.workers = workers
        self.request_timeout_s = request_timeout_s
        self.stamp = _Stamp()
        self.patched = 0  # annotations written
        self.gone = 0  # VMs that no longer existed (dropped)
        self.failed = 0  # failed patches (retried by the queue)

    async def run(self, queue: WorkQueue) -> None:
        async with asyncio.TaskGroup() as group:
            for _ in range(self.workers):
                group.create_task(_deliver(queue, self.signal))

    async def signal(self, key: Key) -> None:
        """Patch the annotation on `key` (waits for the rate limit). Raises on failures worth a retry."""
        delay_s = self.bucket.when(key)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        try:
            await asyncio.to_thread(self._patch, key, self.stamp())
        except ApiException as exc:
            if exc.status == 404:
                self.gone += 1
                log.debug('VirtualMachine %s/%s is gone: signal dropped', *key)
                return
            self.failed += 1
            raise
        except Exception:
            self.failed += 1
            raise
        self.patched += 1

    def _patch(self, key: Key, value: str) -> None:
        namespace, name = key
        body = {'metadata': {'annotations': {self.annotation: value}}}  # sent as a JSON merge patch
        self.objects.patch_namespaced_custom_object(
            self.group,
            self.version,
            namespace,
            self.plural,
            name,
            body,
            field_manager=FIELD_MANAGER,
            _request_timeout=self.request_timeout_s,
        )


async def _deliver(queue: WorkQueue, signal: Callable[[Key], Awaitable[None]]) -> None:
    """One worker: signal each key; a failure is retried with the queue's backoff, a cancellation (or a sink
    that is gone) hands the key back, so the next sink run, or the next leader's, still delivers it."""
    async for key in queue:
        priority = queue.priority_of(key) or 0
        try:
            await signal(key)
        except (asyncio.CancelledError, SinkClosedError):
            queue.add(key, priority=priority)  # refused once the queue is shut down
            queue.done(key)
            raise
        except Exception as e:
            log.warning('signal for %s/%s failed, retried with backoff: %s', *key, e)
            queue.add_rate_limited(key, priority=priority)
        else:
            queue.forget(key)
        queue.done(key)


_CLOSED = 'the reader of stdout went away (EPIPE): requests cannot be delivered'


class SinkClosedError(ConnectionError):
    """The sink's destination is gone for good (stdout's reader went away): the process must exit."""


class _FdWriter:
    """Blocking writes to a file descriptor in a daemon thread; `await write(data)` returns once written.

    A daemon thread stuck in os.write (a reader that stopped reading) never holds up the process exit, and
    no Python-level lock is held while it blocks. While idle, the thread polls the descriptor every
    `poll_s`: a pipe whose reader went away reports POLLERR, which settles the `gone()` future, so a dead
    reader is noticed without waiting for the next request.
    """

    def __init__(self, fd: int, *, poll_s: float = 0.5) -> None:
        self.fd = fd
        self.poll_s = poll_s
        self._jobs: thread_queue.SimpleQueue[tuple[bytes, asyncio.Future[None]]] = thread_queue.SimpleQueue()
        self._gone: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, name='vmwatch-stdout', daemon=True)
        self._thread.start()

    async def write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.put((data, done))
        await done

    def gone(self) -> asyncio.Future[None]:
        """A future that completes when the reader of the descriptor is gone (a new one per call)."""
        self._gone = asyncio.get_running_loop().create_future()
        return self._gone

    def _run(self) -> None:
        while True:
            try:
                data, done = self._jobs.get(timeout=self.poll_s)
            except thread_queue.Empty:
                gone = self._gone
                if gone is not None and not gone.done() and self._reader_gone():
                    self._settle_from_thread(gone, None)
                continue
            error: BaseException | None = None
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError as e:
                error = e
            self._settle_from_thread(done, error)

    def _reader_gone(self) -> bool:
        poller = select.poll()
        poller.register(self.fd, 0)  # no events asked: only POLLERR / POLLHUP / POLLNVAL are reported
        return any(mask & (select.POLLERR | select.POLLNVAL) for _fd, mask in poller.poll(0))

    @staticmethod
    def _settle_from_thread(done: asyncio.Future[None], error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            done.get_loop().call_soon_threadsafe(_settle, done, error)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class StdoutSink:
    """JSON lines on a stream (stdout by default), one per reconcile request."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.written = 0
        self._writer: _FdWriter | None = None
        try:
            fd = self.stream.fileno()
        except (OSError, ValueError):  # an in-memory stream: written in place
            fd = -1
        if fd >= 0:
            self.stream.flush()
            self._writer = _FdWriter(fd)

    async def run(self, queue: WorkQueue) -> None:
        """Deliver until the queue is shut down; SinkClosedError as soon as the reader of stdout is gone."""
        if self._writer is None:
            await _deliver(queue, lambda key: self._signal(queue, key))
            return
        deliver = asyncio.ensure_future(_deliver(queue, lambda key: self._signal(queue, key)))
        gone = self._writer.gone()
        try:
            await asyncio.wait({deliver, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not deliver.done():
                raise SinkClosedError(_CLOSED)
            await deliver
        finally:
            gone.cancel()
            deliver.cancel()
            await asyncio.gather(deliver, return_exceptions=True)

    async def _signal(self, queue: WorkQueue, key: Key) -> None:
        line = {
            'namespace': key[0],
            'name': key[1],
            'priority': queue.priority_of(key),
            'time': datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ'),
        }
        data = orjson.dumps(line) + b'\n'
        try:
            if self._writer is not None:
                await self._writer.write(data)
            else:
                self.stream.write(data)
                self.stream.flush()
        except BrokenPipeError:
            raise SinkClosedError(_CLOSED) from None
        self.written += 1


class Sink(Protocol):
    async def run(self, queue: WorkQueue) -> None: ...


class SinkRunner:
    """Runs a sink on a queue while started; a sink that fails is restarted with capped exponential backoff.

    A failed sink makes `ready()` false until its restart has run `healthy_after_s` without failing again, and
    counts in `failures` (exported as `vmwatch_sink_failures_total`). A `SinkClosedError` is final: the sink
    is not restarted and `on_closed` is called (the process exits: a closed stdout cannot come back).
    """

    def __init__(
        self,
        sink: Sink,
        queue: WorkQueue,
        *,
        on_closed: Callable[[BaseException], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        healthy_after_s: float = 10.0,
    ) -> None:
        self.sink = sink
        self.queue = queue
        self.on_closed = on_closed
        self.on_failure = on_failure
        self.initial_s, self.max_s, self.healthy_after_s = initial_s, max_s, healthy_after_s
        self.failures = 0
        self.closed: BaseException | None = None
        self.last_error: BaseException | None = None
        self._failed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def ready(self) -> tuple[bool, str]:
        if self.closed is not None:
            return False, f'sink closed: {self.closed}'
        if self.last_error is not None and time.monotonic() - self._failed_at < self.healthy_after_s:
            return False, f'sink failed, restarting: {type(self.last_error).__name__}: {self.last_error}'
        return True, 'sink running' if self.running else 'sink stopped (not leading)'

    def start(self) -> None:
        if not self.running and self.closed is None:
            self._task = asyncio.create_task(self._supervise(), name='vmwatch-sink')

    async def stop(self) -> None:
        """Cancel the sink; the request it was delivering goes back to the queue."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _supervise(self) -> None:
        streak = 0
        while True:
            started = time.monotonic()
            try:
                await self.sink.run(self.queue)
                return  # the queue was shut down
            except SinkClosedError as e:
                self.closed = e
                log.error('sink closed: %s', e)
                if self.on_closed is not None:
                    self.on_closed(e)
                return
            except Exception as e:
                if time.monotonic() - started >= self.healthy_after_s:
                    streak = 0
                self.failures += 1
                self.last_error, self._failed_at = e, time.monotonic()
                if self.on_failure is not None:
                    self.on_failure()
                delay = min(self.max_s, self.initial_s * 2**streak)
                streak = min(streak + 1, 32)
                log.error('sink failed (%s: %s): restarting in %.1f s', type(e).__name__, e, delay)
                self._failed_at += delay  # not ready during the backoff and healthy_after_s after the restart
                await asyncio.sleep(delay)
