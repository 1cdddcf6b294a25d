# SPDX-License-Identifier: Apache-2.0
"""`--sink cloudevents`: each reconcile request as a CloudEvents 1.0 event, HTTP binary mode, at least once.

* Attributes: `ce-specversion: 1.0`, `ce-id` (a UUID, the same for every attempt of one event), `ce-type`
  `dev.vmwatch.virtualmachine.changed`, `ce-source` `//<vCenter host[:port]>` (a network-path URI-reference
  taken from `--vc-url`), `ce-subject` `namespace/name`, `ce-time` (RFC 3339, UTC); the body is JSON
  (`Content-Type: application/json`): namespace, name, priority, reason, and per VM waiting under the key
  its MoRef, kind, changed paths, reason and whether the index verified it (`build_event`).
* A request counts as delivered only after a 2xx answer (then `_deliver` forgets and finishes the key, and the
  delivery checkpoint records it). Nothing is buffered here: at most `workers` events are in flight; every
  other request waits in the work queue (coalesced per VM).
* A receiver that cannot be reached, times out or answers 5xx/408/429 is retried `attempts` times with capped
  exponential backoff; then it is down: `run()` raises `ReceiverDownError`, every request in flight goes back
  to the work queue unpenalised, and `SinkRunner` reports not ready and restarts the sink with its own backoff
  (0.5 s doubling to 30 s): each restart is the next probe, with a real request.
* Any other answer (4xx: the receiver refused this event) is retried with the queue's per-key backoff; 3
  refusals in a row without a success mean the receiver refuses everything: down as above.
* TLS is verified (system CAs, or only `--sink-ca-file`); the HTTP calls run in a small thread pool, never on
  the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import orjson
import urllib3

from vmwatch.kube.sinks import _deliver
from vmwatch.queue import Key, WorkQueue

__all__ = ['EVENT_TYPE', 'CloudEventsSink', 'Event', 'ReceiverDownError', 'build_event', 'event_source']

log = logging.getLogger(__name__)

EVENT_TYPE: Final = 'dev.vmwatch.virtualmachine.changed'
SPEC_VERSION: Final = '1.0'
_RETRYABLE: Final = frozenset({408, 429})
_REFUSALS_DOWN: Final = 3


class SignalLike(Protocol):
    """What the sink reads of a `vmwatch.Signal` (the ledger's latest per VM)."""

    @property
    def moref(self) -> str: ...
    @property
    def kind(self) -> int: ...
    @property
    def verified(self) -> bool: ...
    @property
    def priority(self) -> int: ...
    @property
    def changed(self) -> tuple[str, ...]: ...
    @property
    def reason(self) -> str: ...


class ReceiverDownError(ConnectionError):
    """The receiver did not accept events after the retries: the process is not ready until it does."""


class _Refused(Exception):
    """The receiver answered 4xx to one event (retried with the queue's per-key backoff)."""


@dataclass(frozen=True)
class Event:
    """One CloudEvent in binary mode: the HTTP headers and body as sent."""

    id: str
    headers: dict[str, str]
    body: bytes


def event_source(vc_url: str) -> str:
    """`ce-source` for a vCenter URL: `//host[:port]`, lowercase, without path or user info."""
    parts = urlsplit(vc_url if '://' in vc_url else f'https://{vc_url}')
    host = (parts.hostname or '').lower()
    if ':' in host:  # IPv6
        host = f'[{host}]'
    return f'//{host}:{parts.port}' if parts.port else f'//{host}'


def build_event(
    key: Key,
    priority: int,
    signals: Sequence[SignalLike],
    *,
    source: str,
    event_id: str | None = None,
    now: datetime | None = None,
) -> Event:
    """The event for the request `key`; `signals` are the VMs waiting under it (possibly none: the request was
    added without details, e.g. a resync or a re-queue after a failover)."""
    namespace, name = key
    vms = [
        {
            'moref': s.moref,
            'kind': s.kind,
            'changed': list(s.changed),
            'reason': s.reason,
            'verified': s.verified,
            'priority': s.priority,
        }
        for s in sorted(signals, key=lambda s: s.moref)
    ]
    reasons = sorted({s.reason for s in signals})
    data = {
        'namespace': namespace,
        'name': name,
        'priority': priority,
        'reason': reasons[0] if len(reasons) == 1 else ('mixed' if reasons else 'requested'),
        'morefs': [vm['moref'] for vm in vms],
        'changed': sorted({p for s in signals for p in s.changed}),
        'vms': vms,
    }
    event_id = event_id or str(uuid.uuid4())
    when = (now or datetime.now(UTC)).astimezone(UTC)
    headers = {
        'ce-specversion': SPEC_VERSION,
        'ce-id': event_id,
        'ce-type': EVENT_TYPE,
        'ce-source': source,
        'ce-subject': f'{namespace}/{name}',
        'ce-time': when.strftime('%Y-%m-%dT%H:%M:%S.%fZ'),
        'Content-Type': 'application/json',
    }
    return Event(id=event_id, headers=headers, body=orjson.dumps(data))


def safe_url(url: str) -> str:
    """The URL as logged: scheme, host and path (no user info, query or fragment: they may carry a token)."""
    parts = urlsplit(url)
    return f'{parts.scheme}://{parts.hostname or ""}{":" + str(parts.port) if parts.port else ""}{parts.path}'


class CloudEventsSink:
    """POST each reconcile request to `url` as a CloudEvent; see the module docstring for the guarantees."""

    def __init__(
        self,
        url: str,
        *,
        source: str,
        details: Callable[[Key], Sequence[SignalLike]] | None = None,
        source_of: Callable[[SignalLike], str] | None = None,
        ca_file: Path | None = None,
        workers: int = 4,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.url = url
        self.source = source  # requests without details (a resync) and, with `source_of`, its fallback
        self.details = details
        self.source_of = source_of  # the source of a request from its first signal (its vCenter)
        self.workers = workers
        self.attempts = max(1, attempts)
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.delivered = 0  # events accepted (2xx)
        self.failed_attempts = 0  # POSTs that failed (each retry counts)
        self.refused = 0  # events the receiver refused (4xx)
        self._refusals = 0  # refusals since the last success
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
        self._http = urllib3.PoolManager(
            num_pools=2,
            maxsize=workers,
            ssl_context=context,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix='vmwatch-cloudevents')
        self._down: asyncio.Event | None = None
        self._down_reason = ''

    async def run(self, queue: WorkQueue) -> None:
        """Deliver until the queue is shut down; `ReceiverDownError` once the receiver is down (the requests in
        flight go back to the queue)."""
        down = self._down = asyncio.Event()
        workers = {asyncio.ensure_future(_deliver(queue, lambda k: self.signal(queue, k))) for _ in range(self.workers)}
        watch = asyncio.ensure_future(down.wait())
        try:
            pending = set(workers)
            while pending:
                done, _ = await asyncio.wait({*pending, watch}, return_when=asyncio.FIRST_COMPLETED)
                if watch in done:
                    raise ReceiverDownError(self._down_reason)
                for task in done:
                    task.result()  # a worker that failed fails the sink
                pending -= done
        finally:
            watch.cancel()
            for task in workers:
                task.cancel()
            await asyncio.gather(watch, *workers, return_exceptions=True)

    async def signal(self, queue: WorkQueue, key: Key) -> None:
        """Deliver one request; returns once the receiver accepted it."""
        signals = self.details(key) if self.details is not None else ()
        source = (self.source_of(signals[0]) or self.source) if signals and self.source_of is not None else self.source
        event = build_event(key, queue.priority_of(key) or 0, signals, source=source)
        loop = asyncio.get_running_loop()
        error = ''
        for attempt in range(self.attempts):
            if attempt:
                delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            try:
                status = await loop.run_in_executor(self._pool, self._post, event)
            except Exception as e:  # urllib3's, ssl's, OSError; anything the HTTP stack raises is a failed attempt
                error = f'{type(e).__name__}: {_reason(e)}'
            else:
                if 200 <= status < 300:
                    self.delivered += 1
                    self._refusals = 0
                    return
                error = f'HTTP {status}'
                if status < 500 and status not in _RETRYABLE:
                    self._refused(key, status)
            self.failed_attempts += 1
            log.debug('CloudEvent %s for %s/%s: attempt %d failed: %s', event.id, *key, attempt + 1, error)
        self._receiver_down(f'{error} after {self.attempts} attempts')
        await asyncio.Event().wait()  # cancelled by run(): the request goes back to the queue, unpenalised

    def _refused(self, key: Key, status: int) -> None:
        self.failed_attempts += 1
        self.refused += 1
        self._refusals += 1
        if self._refusals >= _REFUSALS_DOWN:
            self._receiver_down(f'HTTP {status} for {self._refusals} events in a row')
        raise _Refused(f'the receiver at {safe_url(self.url)} refused the event for {key[0]}/{key[1]}: HTTP {status}')

    def _receiver_down(self, why: str) -> None:
        self._down_reason = f'the CloudEvents receiver at {safe_url(self.url)} is not accepting events: {why}'
        if self._down is not None:
            self._down.set()

    def _post(self, event: Event) -> int:
        resp = self._http.request('POST', self.url, body=event.body, headers=event.headers, preload_content=False)
        try:
            resp.drain_conn()  # the connection goes back to the pool
        finally:
            resp.release_conn()
        return int(resp.status)


def _reason(e: BaseException) -> str:
    """The innermost cause of a urllib3 error (e.g. the certificate verification failure), without the URL."""
    reason: Any = getattr(e, 'reason', None)
    while reason is not None and getattr(reason, 'reason', None) is not None and reason.reason is not reason:
        reason = reason.reason
    return str(reason if reason is not None else e)
