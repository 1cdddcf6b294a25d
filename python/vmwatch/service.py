# SPDX-License-Identifier: Apache-2.0
"""The service (spec 4): keeps one watcher running for the Zones' folders and turns signals into requests.

    service = Service(settings, api=api_client)
    await service.run()          # until stop(); never exits because vCenter is down or misconfigured

One watcher lifetime: log in (the password file is read again), gather the Zones' folders (skipping
deleting Zones without our finalizer, filtering folders that no longer exist with one
RetrievePropertiesEx, adding the finalizer to the live Zones being watched), start the watcher, and
for every signal validate it against the VirtualMachine index (or the API when the index does not have it yet) and
enqueue (namespace, name) with the VM's priority. When the watcher ends it is restarted after a capped
exponential backoff with jitter, reset after a healthy period (spec 7.2 #1); repeated failures of the
same kind are logged at a bounded rate.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from vmwatch._vmwatch import Index, Signal
from vmwatch.delivery import DeliveryLedger
from vmwatch.kube.checkpoint import Checkpointer, CheckpointError, CheckpointStore
from vmwatch.kube.index import VirtualMachineIndex, fetch_vm_entry
from vmwatch.kube.priority import PRIORITY_GENERIC
from vmwatch.kube.zones import (
    ZoneController,
    custom_objects,
    ensure_finalizer,
    finalizers,
    folder_of,
    is_deleting,
    owner_id,
)
from vmwatch.metrics import Metrics
from vmwatch.queue import Key, KeyedTasks, WorkQueue
from vmwatch.settings import FINALIZER, LEGACY_FINALIZER, ServiceSettings, async_signal_disabled
from vmwatch.vsphere import Endpoint, InvalidLoginError, MoRef, NotAuthenticatedError, Session, SessionError
from vmwatch.vsphere.errors import CredentialsError
from vmwatch.vsphere.inventory import existing
from vmwatch.watcher import AsyncSignalDisabledError, Watcher, WatcherSlot, make_decider

__all__ = ['Backoff', 'RateLimitedLog', 'Service', 'ZonesUnavailableError']

log = logging.getLogger('vmwatch.service')


class ZonesUnavailableError(RuntimeError):
    """The Zones cannot be listed (the CRD is missing, RBAC, the API is down): no folder to watch yet."""


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter in [delay/2, delay], reset after a healthy run."""

    initial_s: float = 1.0
    max_s: float = 300.0
    reset_after_s: float = 120.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next(self, *, healthy_for_s: float) -> float:
        if healthy_for_s >= self.reset_after_s:
            self.failures = 0
        delay = min(self.max_s, self.initial_s * 2**self.failures)
        self.failures = min(self.failures + 1, 32)
        return float(delay * self.rng.uniform(0.5, 1.0))


class RateLimitedLog:
    """Logs a repeated message once per `every_s` per key, with how many were suppressed."""

    def __init__(self, logger: logging.Logger, *, every_s: float = 60.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        suffix = f' ({n} similar messages suppressed)' if n else ''
        self.logger.log(level, msg + suffix, *args)


class Service:
    """Zone controller + VirtualMachine index + watcher supervision + enqueue, for one vCenter."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        api: Any,
        metrics: Metrics | None = None,
        queue: WorkQueue | None = None,
        disabled: bool | None = None,
        zone_controller: bool = True,
    ) -> None:
        self.settings = settings
        self.zone_controller = zone_controller
        self.api = api
        self.metrics = metrics or Metrics()
        self.queue = queue if queue is not None else WorkQueue()  # an empty queue is falsy (it has __len__)
        self.metrics.watch_queue('virtualmachine', self.queue)
        self.disabled = async_signal_disabled() if disabled is None else disabled
        self.index = VirtualMachineIndex(api, index=Index())
        # process-global: the fingerprint cache survives watcher restarts (spec 1.1)
        self.decider = make_decider(settings.filter_settings(), self.index.index)
        self.ledger = DeliveryLedger(self.decider, self.queue)
        self.checkpointer: Checkpointer | None = None
        if settings.checkpoint_interval_s > 0:
            store = CheckpointStore(api, namespace=settings.resolved_lease_namespace(), lease_name=settings.lease_name)
            self.checkpointer = Checkpointer(
                store, self.decider, interval_s=settings.checkpoint_interval_s, metrics=self.metrics.checkpoint
            )
        self.slot = WatcherSlot(disabled=self.disabled)
        self.zones = ZoneController(api, self.slot, disabled_errors=(AsyncSignalDisabledError,))
        self.metrics.watch_queue('zone', self.zones.queue)
        self.objects = custom_objects(api)
        self.backoff = Backoff(settings.restart_initial_s, settings.restart_max_s, settings.restart_reset_s)
        self.status = 'starting'
        self.watching = False
        self.restarts = 0
        self.logins = 0
        self.last_error: BaseException | None = None
        self.session: Session | None = None  # the current watcher's session
        self._rate_log = RateLimitedLog(log)
        self._validating = 0
        self._stop = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._metrics_watcher: Watcher | None = None
        self._metrics_seen: dict[str, int] = {}
        self._validations = KeyedTasks(limit=settings.validation_concurrency)  # validation GETs (index misses)
        self.metrics.watch_feed('virtualmachine', self.index.bad_objects)
        self.metrics.watch_feed('zone', self.zones.cache.bad_objects)

    # -- health ---------------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """Ready while the watcher runs, the VirtualMachine index has synced and the work queue has room."""
        if self.disabled:
            return True, 'idle: async signal disabled'
        if not self.index.synced:
            error = self.index.last_error
            return False, f'the VirtualMachine index has not synced yet{f" ({error})" if error else ""}'
        if self.queue.full:
            return False, f'the work queue is full ({self.queue.depth} keys): new requests are dropped'
        if not self.watching:
            return False, self.status
        watcher = self.slot.watcher
        if watcher is None or not watcher.running:  # its loop ended; the service has not noticed it yet
            error = watcher.error if watcher is not None else None
            return False, f'the watcher stopped{f": {error}" if error else ""}; restarting'
        return True, 'watching'

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> Service:
        """Start the index and the Zone controller (every replica keeps them warm)."""
        self.index.start()
        await self.zones.start(reconcile=self.zone_controller)
        return self

    def start_watching(self) -> None:
        """Become the active watcher (called when this replica leads, or at once without leader election)."""
        if self.disabled:
            log.info('async signal is disabled (ASYNC_SIGNAL_DISABLED / ASYNC_SIGNAL_ENABLED): not watching')
            self.status = 'disabled'
            return
        if self._watch_task is None or self._watch_task.done():
            if self.checkpointer is not None:
                self.checkpointer.reset()  # another holder may have written since: load again before the first wait
                self._checkpoint_task = asyncio.create_task(self.checkpointer.run(), name='vmwatch-checkpoint')
            self._watch_task = asyncio.create_task(self._watch_forever(), name='vmwatch-service')

    async def stop_watching(self) -> None:
        """Stop the watcher and the checkpoint writer at once (lost the Lease, or shutting down). Writes nothing:
        after a lost Lease another replica may be writing; a clean shutdown calls `save_checkpoint` itself."""
        tasks = [t for t in (self._watch_task, self._checkpoint_task) if t is not None]
        self._watch_task = self._checkpoint_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.watching = False
        self.status = 'standby'

    async def save_checkpoint(self) -> None:
        """Write the checkpoint now (a clean shutdown, while this replica still holds the Lease). Nothing is written
        unless this term's checkpoint was loaded; failures are logged (the next holder gets duplicates, not losses)."""
        if self.checkpointer is None:
            return
        try:
            await self.checkpointer.save()
        except CheckpointError as e:
            log.warning('last checkpoint not written: %s', e)

    @property
    def active(self) -> bool:
        """start_watching() was called and stop_watching() not since (this replica leads, or needs no Lease)."""
        return self._watch_task is not None

    async def stop(self) -> None:
        self._stop.set()
        leading = self.active
        await self.stop_watching()
        if leading:
            await self.save_checkpoint()
        await self.zones.stop()
        await asyncio.to_thread(self.index.stop)

    # -- the watcher loop -----------------------------------------------------------------------------
    async def _watch_forever(self) -> None:
        log.info('starting the VM watcher service')
        while not self._stop.is_set():
            started = time.monotonic()
            cause = 'closed'
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except (InvalidLoginError, NotAuthenticatedError, CredentialsError) as e:
                cause = 'auth'
                self._failed(e, logging.WARNING, f'vCenter login failed: {e}')
            except SessionError as e:
                cause = 'transport'
                self._failed(e, logging.WARNING, f'vCenter unreachable: {e}')
            except Exception as e:
                cause = 'error'
                self._failed(e, logging.ERROR, f'watcher failed: {type(e).__name__}: {e}')
            finally:
                self.watching = False
            self.restarts += 1
            self.metrics.watcher_restarts.labels(cause=cause).inc()
            healthy = time.monotonic() - started
            delay = 0.0 if cause == 'closed' else self.backoff.next(healthy_for_s=healthy)
            if delay:
                log.debug('restarting the watcher in %.1f s (cause: %s)', delay, cause)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay or 0.001)
            except TimeoutError:
                pass

    def _failed(self, e: BaseException, level: int, message: str) -> None:
        self.last_error = e
        self.status = message
        self._rate_log.log(level, type(e).__name__, '%s', message)

    def _endpoint(self) -> Endpoint:
        s = self.settings
        user = s.vc_user
        if s.vc_user_file is not None:
            try:
                user = s.vc_user_file.read_text(encoding='utf-8').strip()
            except OSError as e:
                raise CredentialsError(f'cannot read the vCenter user file {s.vc_user_file}: {e.strerror}') from None
        assert s.vc_password_file is not None  # validate() requires it
        return Endpoint(
            url=s.vc_url,
            user=user,
            password_file=s.vc_password_file,
            ca_file=s.vc_ca_file,
            thumbprint=s.vc_thumbprint or None,
            insecure=s.vc_insecure,
        )

    async def _watch_once(self) -> None:
        if self.last_error is None:
            self.status = 'logging in to vCenter'  # after a failure, the failure stays the status until watching
        session = self.session = Session(self._endpoint())  # credentials are read again on every attempt
        self.logins += 1
        await asyncio.to_thread(session.login)
        try:
            if self.checkpointer is not None:
                await self.checkpointer.load()  # before the first wait: first sightings are compared with it
            await self._zones_synced()
            folders = await self._gather_folders(session)
            async with Watcher(
                session=session,
                containers=folders,
                decider=self.decider,
                settings=self.settings.watch_settings(),
                filter_settings=self.settings.filter_settings(),
                slot=self.slot,
                deliver_on_take=False,  # delivered once the request has left the queue (self.ledger)
            ) as watcher:
                self.watching = True
                self.status = 'watching'
                self.last_error = None
                self.zones.requeue_all()  # zones added while no watcher ran are added now
                self.metrics.last_wait.set_to_current_time()
                async for signal in watcher:
                    await self._handle(signal)
                if watcher.error is not None:
                    raise watcher.error
        finally:
            self.watching = False
            await asyncio.to_thread(session.logout)

    async def _zones_synced(self, timeout_s: float = 60.0) -> None:
        """Wait for the Zone cache's first list. A failed list (e.g. the CRDs are not installed) fails this
        attempt with its reason, so the watcher is retried with backoff instead of watching no folder."""
        cache = self.zones.cache
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(cache.wait_synced, 0.5):
            if cache.last_error is not None or time.monotonic() > deadline:
                raise ZonesUnavailableError(f'cannot list Zones: {cache.last_error or "no answer"}')

    async def _gather_folders(self, session: Session) -> dict[MoRef, list[str]]:
        """Spec 4.3: folders of the Zones with their owner IDs; stale folders filtered; finalizers added."""
        owners: dict[MoRef, list[str]] = defaultdict(list)
        to_patch: list[dict[str, Any]] = []
        for zone in self.zones.cache.zones():
            folder = folder_of(zone)
            if not folder:
                continue
            has_finalizer = FINALIZER in finalizers(zone) or LEGACY_FINALIZER in finalizers(zone)
            if is_deleting(zone) and not has_finalizer:
                continue  # the controller already removed it, or it was deleted before any watcher existed
            owners[MoRef.parse(folder)].append(owner_id(zone))
            if not has_finalizer:
                to_patch.append(zone)
        if not owners:
            return {}
        try:
            alive = await asyncio.to_thread(existing, session, owners)
        except SessionError:
            raise
        except Exception as e:
            raise RuntimeError(f'failed to get managed VMs folder properties: {e}') from e
        for ref in set(owners) - alive:
            log.warning('folder %s named by zones %s does not exist: not watched', ref, ', '.join(owners[ref]))
        for zone in to_patch:
            if MoRef.parse(folder_of(zone)) in alive:
                await ensure_finalizer(self.objects, zone)
        result = {ref: ids for ref, ids in owners.items() if ref in alive}
        for ref, ids in result.items():
            for owner in ids:
                self.zones.registry[owner] = str(ref)
        return result

    # -- signals -> requests --------------------------------------------------------------------------
    @property
    def validating(self) -> int:
        """Signals taken from the watcher and not yet enqueued or dropped (a validation GET in flight)."""
        return self._validating

    async def _handle(self, signal: Signal) -> None:
        """Spec 4.5: enqueue only VMs that exist in this cluster (and are not being deleted).

        A VM the index has is enqueued at once. One it misses needs a GET: those run concurrently (at most
        `validation_concurrency`; beyond that this waits for one to finish), one after the other per VM, so
        a hung API server holds only the signals that need it, never the ones the index answers.
        """
        key: Key = (signal.namespace, signal.name)
        self._validating += 1
        if self.index.get(*key) is not None and not self._validations.busy(key):
            try:
                await self._validate_and_enqueue(signal)
            finally:
                self._validating -= 1
            return

        async def validate() -> None:
            try:
                await self._validate_and_enqueue(signal)
            finally:
                self._validating -= 1

        try:
            await self._validations.start(key, validate)
        except BaseException:
            self._validating -= 1
            raise

    async def _validate_and_enqueue(self, signal: Signal) -> None:
        self.metrics.signals.inc()
        entry = self.index.get(signal.namespace, signal.name)
        if entry is None:
            # The index follows a watch and lags the API: a VirtualMachine created a moment before its
            # vSphere change is not in it yet. The API is the authority; only a 404 there drops the signal.
            self.metrics.validation_gets.inc()
            try:
                entry = await fetch_vm_entry(
                    self.objects, signal.namespace, signal.name, timeout_s=self.settings.kube_timeout_s
                )
            except Exception as e:  # unreachable, refused or timed out: a spurious request beats a lost one
                what = f'{type(e).__name__}: {e}'
                self._rate_log.log(logging.WARNING, 'validate', 'unable to read vm %s/%s to validate it (%s): '
                                   'enqueued unvalidated', signal.namespace, signal.name, what)  # fmt: skip
                entry = ('', False, PRIORITY_GENERIC)
        if entry is None:
            log.debug('unable to validate vm %s/%s (%s): dropped', signal.namespace, signal.name, signal.moref)
            self.metrics.skipped.labels(reason='unvalidated').inc()
            self.ledger.settled(signal)  # no VirtualMachine here: no request is owed
            return
        _unique_id, deleting, priority = entry
        if deleting:
            self.metrics.skipped.labels(reason='deleting').inc()
            self.ledger.settled(signal)
            return
        key: Key = (signal.namespace, signal.name)
        if self.queue.add(key, priority=priority):
            self.ledger.enqueued(key, signal)
        else:
            self._refused(signal)

    def _refused(self, signal: Signal) -> None:
        """The queue refused the request (full: see ready()). Count and log it, and forget the VM's
        fingerprints so that its next sighting signals again: nothing is lost for good."""
        self.ledger.dropped(signal)
        if self.queue.shutting_down:  # refused because the process is stopping: not a full queue
            log.debug('queue shut down: request for vm %s/%s not taken', signal.namespace, signal.name)
            return
        self.metrics.dropped.labels(name='virtualmachine').inc()
        self._rate_log.log(logging.WARNING, 'queue-full', 'the work queue is full (%d keys): request for vm %s/%s '
                           'dropped; it signals again on its next change', self.queue.depth, signal.namespace,
                           signal.name)  # fmt: skip

    def refresh_metrics(self) -> None:
        """Copy the watcher's, cache's, index's and queue's counts into the metrics (called before a scrape)."""
        m = self.metrics
        watcher = self.slot.watcher
        if watcher is not None:
            if watcher is not self._metrics_watcher:  # a new watcher counts from zero
                self._metrics_watcher, self._metrics_seen = watcher, {}
            for key, counter in (
                ('batches', m.batches),
                ('objects', m.object_updates),
                ('name_fetches', m.name_fetches),
            ):
                value = watcher.stats[key]
                delta = value - self._metrics_seen.get(key, 0)
                if delta > 0:
                    counter.inc(delta)
                    self._metrics_seen[key] = value
                    if key == 'batches':
                        m.last_wait.set_to_current_time()
            m.observe_problems(watcher.stats, self._metrics_seen)
        m.observe_cache(self.decider.cache_stats())
        m.index_size.set(len(self.index))
        m.index_bytes.set(self.index.index.bytes())
        m.observe_queues()
