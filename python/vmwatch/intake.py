# SPDX-License-Identifier: Apache-2.0
"""Signals -> reconcile requests for one vCenter's shard (spec 4.5): enqueue only VMs that exist in this
cluster, belong to this vCenter (or to none) and are not being deleted.

A VM the index has is enqueued at once. One it misses needs a GET: those run concurrently (at most
`validation_concurrency`; beyond that `handle` waits for one to finish), one after the other per VM, so a
hung API server holds only the signals that need it, never the ones the index answers. A VM indexed for
another vCenter is skipped (`other_vcenter`): `vm-42` on vCenter A never signals the VirtualMachine of
`vm-42` on vCenter B (issue 12).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from vmwatch._vmwatch import Signal
from vmwatch.delivery import DeliveryLedger
from vmwatch.kube.index import VirtualMachineIndex, fetch_vm, vm_entry
from vmwatch.kube.priority import PRIORITY_GENERIC
from vmwatch.kube.routing import VCenterRouter
from vmwatch.metrics import ShardMetrics
from vmwatch.queue import Key, KeyedTasks, WorkQueue
from vmwatch.retry import RateLimitedLog

__all__ = ['SignalIntake']

log = logging.getLogger('vmwatch.service')


class SignalIntake:
    """Validates one shard's signals against the VirtualMachine index (or the API) and enqueues them."""

    def __init__(
        self,
        vcenter: str,
        *,
        index: VirtualMachineIndex,
        router: VCenterRouter,
        objects: Any,
        queue: WorkQueue,
        ledger: DeliveryLedger,
        metrics: ShardMetrics,
        timeout_s: float,
        concurrency: int,
    ) -> None:
        self.vcenter = vcenter
        self.index = index
        self.router = router
        self.objects = objects
        self.queue = queue
        self.ledger = ledger
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._rate_log = RateLimitedLog(log)
        self._validating = 0
        self._validations = KeyedTasks(limit=concurrency)  # validation GETs (index misses)

    @property
    def validating(self) -> int:
        """Signals taken from the watcher and not yet enqueued or dropped (a validation GET in flight)."""
        return self._validating

    async def handle(self, signal: Signal, *, arrived_at: float | None = None) -> None:
        """Enqueue `signal` (or drop it); `arrived_at`: time.monotonic() when its response arrived, for the
        change -> enqueue latency."""
        key: Key = (signal.namespace, signal.name)
        self._validating += 1
        if self.index.get(*key, vcenter=self.vcenter) is not None and not self._validations.busy(key):
            try:
                await self._validate_and_enqueue(signal, arrived_at)
            finally:
                self._validating -= 1
            return

        async def validate() -> None:
            try:
                await self._validate_and_enqueue(signal, arrived_at)
            finally:
                self._validating -= 1

        try:
            await self._validations.start(key, validate)
        except BaseException:
            self._validating -= 1
            raise

    async def _validate_and_enqueue(self, signal: Signal, arrived_at: float | None) -> None:
        self.metrics.signal(signal.reason)
        entry = self.index.get(signal.namespace, signal.name, vcenter=self.vcenter)
        if entry is None:
            if self.index.owner(signal.namespace, signal.name):  # indexed for another vCenter
                self._skip(signal, 'other_vcenter')
                return
            entry, reason = await self._fetch(signal)
            if entry is None:
                log.debug('vm %s/%s (%s): %s: dropped', signal.namespace, signal.name, signal.moref, reason)
                self._skip(signal, reason)  # no VirtualMachine of this vCenter here: no request is owed
                return
        _unique_id, deleting, priority = entry
        if deleting:
            self._skip(signal, 'deleting')
            return
        key: Key = (signal.namespace, signal.name)
        if self.queue.add(key, priority=priority):
            if arrived_at is not None:
                self.metrics.enqueue_seconds.observe(time.monotonic() - arrived_at)
            self.ledger.enqueued(key, signal)
        else:
            self._refused(signal)

    async def _fetch(self, signal: Signal) -> tuple[tuple[str, bool, int] | None, str]:
        """The VM read from the API (the index follows a watch and lags it: a VirtualMachine created a moment
        before its vSphere change is not in it yet). The API is the authority; only a 404 (or a VM of another
        vCenter) drops the signal; an unreachable API enqueues it unvalidated."""
        self.metrics.validation_gets.inc()
        try:
            obj = await fetch_vm(self.objects, signal.namespace, signal.name, timeout_s=self.timeout_s)
        except Exception as e:  # unreachable, refused or timed out: a spurious request beats a lost one
            what = f'{type(e).__name__}: {e}'
            self._rate_log.log(logging.WARNING, 'validate', 'unable to read vm %s/%s to validate it (%s): '
                               'enqueued unvalidated', signal.namespace, signal.name, what)  # fmt: skip
            return ('', False, PRIORITY_GENERIC), ''
        if obj is None:
            return None, 'unvalidated'
        if not isinstance(obj, dict):
            return ('', False, PRIORITY_GENERIC), ''
        if self.router.only is None:
            vcenter = self.router.vm_vcenter(obj)
            if vcenter is not None and vcenter != self.vcenter:
                return None, 'other_vcenter'
        return vm_entry(obj), ''

    def _skip(self, signal: Signal, reason: str) -> None:
        self.metrics.skipped(reason)
        self.ledger.settled(signal)

    def _refused(self, signal: Signal) -> None:
        """The queue refused the request (full: see ready()). Count and log it, and forget the VM's
        fingerprints so that its next sighting signals again: nothing is lost for good."""
        self.ledger.dropped(signal)
        if self.queue.shutting_down:  # refused because the process is stopping: not a full queue
            log.debug('queue shut down: request for vm %s/%s not taken', signal.namespace, signal.name)
            return
        self.metrics.dropped.inc()
        self._rate_log.log(logging.WARNING, 'queue-full', 'the work queue is full (%d keys): request for vm %s/%s '
                           'dropped; it signals again on its next change', self.queue.depth, signal.namespace,
                           signal.name)  # fmt: skip
