# SPDX-License-Identifier: Apache-2.0
"""Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection does it.

* **Acquire**: the Lease is free when it has no holder, or when its record has not changed for
  `leaseDurationSeconds` as observed on *our* monotonic clock (no trust in other nodes' clocks). Writes
  use the Lease's resourceVersion (optimistic concurrency): of two candidates, one wins, one gets 409.
* **Renew** every `retry_period_s`. Leadership is lost when a renewal sees another holder, or when no
  renewal succeeded for `renew_deadline_s` (< lease duration, so we stop before anyone may take over).
  Losing the Lease cancels the leader's work at once.
* **Release** on a clean stop: the holder is cleared (and the duration set to 1 s) so another replica
  takes over at its next retry instead of waiting for expiry.

The elector is asyncio-based; the blocking kubernetes client runs in threads with request timeouts.
`run(work)` is the usual entry point: it runs `work()` only while leading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vmwatch.settings import FIELD_MANAGER

__all__ = ['LeaderElector', 'LeaseSettings', 'brief', 'default_identity']

log = logging.getLogger(__name__)


def brief(exc: BaseException) -> str:
    """One line for a failed API call: `409 Conflict` for an ApiException (its str() carries the headers and
    the body over several lines), the type and message otherwise."""
    if isinstance(exc, ApiException):
        return f'HTTP {exc.status} {exc.reason}'
    text = str(exc).splitlines()
    return f'{type(exc).__name__}: {text[0][:300] if text else ""}'


def default_identity() -> str:
    """hostname + a random suffix: unique per process even with several replicas on one host."""
    return f'{socket.gethostname()}_{secrets.token_hex(4)}'


@dataclass(frozen=True, kw_only=True)
class LeaseSettings:
    lease_duration_s: float = 15.0
    """How long a Lease stays valid without renewal; candidates wait this long before taking over (client-go)."""
    renew_deadline_s: float = 10.0
    """The leader gives up when it could not renew for this long; must be < lease_duration_s (client-go)."""
    retry_period_s: float = 2.0
    """Time between attempts to acquire or renew (client-go)."""

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError('need 0 < retry_period_s < renew_deadline_s < lease_duration_s')


def _now() -> str:
    return datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


class LeaderElector:
    """One candidate for the Lease `namespace/name`."""

    def __init__(
        self,
        api: Any,
        *,
        namespace: str,
        name: str,
        identity: str | None = None,
        settings: LeaseSettings | None = None,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        may_acquire: Callable[[], bool] | None = None,
    ) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.settings = settings or LeaseSettings()
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.may_acquire = may_acquire  # asked before taking a free Lease (shards: this replica is under its share)
        self.transitions = 0  # times this elector became the leader
        self._observed: tuple[Any, ...] | None = None  # the last record seen
        self._observed_at = 0.0  # our monotonic time when it changed
        self._holder = ''  # holder in the last record seen
        self._leading = False
        self._leading_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # stop() or step_down()
        self.stepping_down = False  # step_down() was asked and the Lease is not released yet
        self.renewal_paused = False
        """For tests and drills: True makes every acquire/renew attempt fail, as if the apiserver were unreachable."""

    # -- state --------------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def leader(self) -> str:
        """The holder identity last observed ('' when none)."""
        return self._holder

    async def wait_until_leading(self) -> None:
        await self._leading_event.wait()

    def stop(self) -> None:
        """Ask `run` to stop; it releases the Lease if it holds it (call from the event loop)."""
        self._stop.set()
        self._wake.set()

    def step_down(self) -> None:
        """Hand the Lease over (shard rebalancing): the work is cancelled, the Lease released, and the elector
        campaigns again (gated by `may_acquire`). `stepping_down` is True until the release."""
        if self._leading:
            self.stepping_down = True
            self._wake.set()

    # -- the loop -----------------------------------------------------------------------------------
    async def run(self, work: Callable[[], Coroutine[Any, Any, None]] | None = None, *, release: bool = True) -> None:
        """Campaign until `stop()` (or cancellation); run `work()` while leading, cancel it on loss.

        After losing the Lease the elector campaigns again. `release=False` keeps the Lease on stop
        (it then expires), which is what a crashed process looks like.
        """
        work_task: asyncio.Task[None] | None = None
        try:
            while not self._stop.is_set():
                if not await self._acquire():
                    break  # stopped while campaigning
                self._became_leader()
                if work is not None:
                    work_task = asyncio.create_task(work(), name=f'leader-work-{self.name}')
                await self._renew_until_lost(work_task)
                if work_task is not None:
                    await self._cancel(work_task)
                    work_task = None
                if (self._stop.is_set() and release) or self.stepping_down:
                    await self._release_quietly()
                self.stepping_down = False
                if not self._stop.is_set():
                    self._wake.clear()
                self._lost_leadership()
        finally:
            if work_task is not None:
                await self._cancel(work_task)
            if self._leading:
                if release:
                    await asyncio.shield(self._release_quietly())
                self._lost_leadership()

    async def _acquire(self) -> bool:
        period = self.settings.retry_period_s
        while not self._stop.is_set():
            if (self.may_acquire is None or self.may_acquire()) and await self._try_acquire_or_renew():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=period)
        return False

    async def _renew_until_lost(self, work_task: asyncio.Task[None] | None) -> None:
        s = self.settings
        last_renew = time.monotonic()
        while not self._stop.is_set():
            sleeper = asyncio.ensure_future(self._wake.wait())
            waits: set[asyncio.Future[Any]] = {sleeper}
            if work_task is not None:
                waits.add(work_task)
            await asyncio.wait(waits, timeout=s.retry_period_s, return_when=asyncio.FIRST_COMPLETED)
            sleeper.cancel()
            if self._stop.is_set() or self.stepping_down:
                return
            if work_task is not None and work_task.done():
                self._stop.set()  # the work ended (or failed): step down and release
                if not work_task.cancelled() and work_task.exception() is not None:
                    log.error('leader work failed; releasing the Lease', exc_info=work_task.exception())
                return
            if await self._try_acquire_or_renew():
                last_renew = time.monotonic()
                continue
            if self._holder and self._holder != self.identity:
                log.warning('lease %s/%s taken over by %s', self.namespace, self.name, self._holder)
                return
            if time.monotonic() - last_renew >= s.renew_deadline_s:
                log.warning('could not renew lease %s/%s for %.1f s', self.namespace, self.name, s.renew_deadline_s)
                return

    # -- one attempt --------------------------------------------------------------------------------
    async def _try_acquire_or_renew(self) -> bool:
        if self.renewal_paused:
            return False
        timeout_s = max(0.5, self.settings.renew_deadline_s / 2)
        holder = self._holder
        try:
            ok = await asyncio.wait_for(asyncio.to_thread(self._try_acquire_or_renew_sync, timeout_s), timeout_s + 1)
        except Exception as exc:  # any failure (timeout, API error, connection refused) is "not this time"
            log.info('lease %s/%s: attempt failed: %s', self.namespace, self.name, brief(exc))
            ok = False
        if self._holder != holder and self._holder and self.on_new_leader is not None:
            self.on_new_leader(self._holder)
        return ok

    async def _release_quietly(self) -> None:
        try:
            await self._release()
        except Exception as exc:  # the Lease then expires on its own
            log.warning('could not release lease %s/%s: %s', self.namespace, self.name, exc)

    def _try_acquire_or_renew_sync(self, timeout_s: float) -> bool:
        now = _now()
        duration = max(1, round(self.settings.lease_duration_s))
        try:
            lease: Any = self.leases.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout_s)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = self._body(None, holder=self.identity, acquire=now, renew=now, duration=duration, transitions=0)
            try:
                self.leases.create_namespaced_lease(
                    self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=timeout_s
                )
            except ApiException as create_exc:
                if create_exc.status == 409:  # another candidate created it first
                    return False
                raise
            self._observe((self.identity, now, now, 0, duration))
            return True
        spec = lease.spec
        holder = spec.holder_identity or ''
        record = (holder, spec.renew_time, spec.acquire_time, spec.lease_transitions, spec.lease_duration_seconds)
        self._observe(record)
        record_duration = spec.lease_duration_seconds or duration
        if holder and holder != self.identity and time.monotonic() < self._observed_at + record_duration:
            return False  # held by another and not expired (on our clock)
        transitions = spec.lease_transitions or 0
        if holder == self.identity:
            acquire = spec.acquire_time.strftime('%Y-%m-%dT%H:%M:%S.%fZ') if spec.acquire_time else now
        else:
            acquire, transitions = now, transitions + 1
        body = self._body(
            lease.metadata.resource_version,
            holder=self.identity,
            acquire=acquire,
            renew=now,
            duration=duration,
            transitions=transitions,
        )
        try:
            self.leases.replace_namespaced_lease(
                self.name, self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=timeout_s
            )
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote it between our read and write
                return False
            raise
        self._observe((self.identity, now, acquire, transitions, duration))
        return True

    async def _release(self) -> None:
        def release() -> None:
            lease: Any = self.leases.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
            if (lease.spec.holder_identity or '') != self.identity:
                return
            now = _now()
            body = self._body(
                lease.metadata.resource_version,
                holder='',
                acquire=now,
                renew=now,
                duration=1,
                transitions=lease.spec.lease_transitions or 0,
            )
            self.leases.replace_namespaced_lease(
                self.name, self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=5
            )

        await asyncio.wait_for(asyncio.to_thread(release), timeout=10)
        log.info('released lease %s/%s', self.namespace, self.name)

    def _body(
        self, resource_version: str | None, *, holder: str, acquire: str, renew: str, duration: int, transitions: int
    ) -> Any:
        """A Lease as a dict (the client serialises dicts as they are)."""
        metadata: dict[str, Any] = {'name': self.name, 'namespace': self.namespace}
        if resource_version is not None:
            metadata['resourceVersion'] = resource_version
        spec: dict[str, Any] = {
            'holderIdentity': holder or None,
            'leaseDurationSeconds': duration,
            'acquireTime': acquire,
            'renewTime': renew,
            'leaseTransitions': transitions,
        }
        return {'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease', 'metadata': metadata, 'spec': spec}

    def _observe(self, record: tuple[Any, ...]) -> None:
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
            self._holder = record[0] or ''

    # -- transitions --------------------------------------------------------------------------------
    def _became_leader(self) -> None:
        self._leading = True
        self.transitions += 1
        self._leading_event.set()
        log.info('%s became the leader of %s/%s', self.identity, self.namespace, self.name)
        if self.on_started_leading is not None:
            self.on_started_leading()

    def _lost_leadership(self) -> None:
        if not self._leading:
            return
        self._leading = False
        self._leading_event.clear()
        log.info('%s stopped leading %s/%s', self.identity, self.namespace, self.name)
        if self.on_stopped_leading is not None:
            self.on_stopped_leading()

    @staticmethod
    async def _cancel(task: asyncio.Task[None]) -> None:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
