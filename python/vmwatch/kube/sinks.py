# SPDX-License-Identifier: Apache-2.0
"""Consumers of the work queue that hand reconcile requests to something outside this process.

* `AnnotateSink` patches one annotation (default `vmwatch.dev/async-signal`) on the VirtualMachine, so
  a controller in another process, in any language, sees an update event and reconciles it. The queue
  already coalesces keys; the sink adds an overall rate limit on patches. The value is a UTC timestamp
  with microseconds, strictly increasing within the process, so every signal changes the object.
  A VM that no longer exists (404) is dropped; other failures are retried with the queue's backoff.
* `StdoutSink` writes one JSON line per request: {"namespace", "name", "priority", "time"}.

Both run until the queue is shut down (`await sink.run(queue)`); drain the queue to flush them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any, Final

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vmwatch.kube.index import VM_GROUP, VM_PLURAL, VM_VERSION
from vmwatch.queue import Key, TokenBucket, WorkQueue, run_workers

__all__ = ['SIGNAL_ANNOTATION', 'AnnotateSink', 'StdoutSink']

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
        await run_workers(queue, self.signal, workers=self.workers)

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
            _request_timeout=self.request_timeout_s,
        )


class StdoutSink:
    """JSON lines on a stream (stdout by default), one per reconcile request."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.written = 0

    async def run(self, queue: WorkQueue) -> None:
        async for key in queue:
            line = {
                'namespace': key[0],
                'name': key[1],
                'priority': queue.priority_of(key),
                'time': datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ'),
            }
            try:
                self.stream.write(orjson.dumps(line) + b'\n')
                self.stream.flush()
                self.written += 1
            finally:
                queue.forget(key)
                queue.done(key)
