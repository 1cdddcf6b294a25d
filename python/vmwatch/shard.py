# SPDX-License-Identifier: Apache-2.0
"""One vCenter's shard (issue 12; design.md "Shards"): its session, watcher, fingerprint cache (Decider),
uniqueID index, delivery ledger, checkpoint, restart backoff, status and metrics (label vcenter).

One watcher lifetime: log in (the credentials files are read again), load the checkpoint, gather the folders
of this vCenter's Zones (skipping deleting Zones without our finalizer, filtering folders that no longer
exist with one RetrievePropertiesEx, adding the finalizer to the live Zones being watched), start the
watcher, and hand every signal to the intake. When the watcher ends it is restarted after a capped
exponential backoff with jitter, reset after a healthy period (spec 7.2 #1); repeated failures of the same
kind are logged at a bounded rate. Nothing here is keyed by MoRef outside this vCenter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from vmwatch.delivery import DeliveryLedger
from vmwatch.intake import SignalIntake
from vmwatch.kube.checkpoint import Checkpointer, CheckpointError, CheckpointStore
from vmwatch.kube.zones import ensure_finalizer, finalizers, folder_of, is_deleting, owner_id
from vmwatch.retry import Backoff, RateLimitedLog
from vmwatch.settings import FINALIZER, LEGACY_FINALIZER, ServiceSettings
from vmwatch.vcenters import VCenter
from vmwatch.vsphere import Endpoint, InvalidLoginError, MoRef, NotAuthenticatedError, Session, SessionError
from vmwatch.vsphere.errors import CredentialsError
from vmwatch.vsphere.inventory import existing
from vmwatch.watcher import Watcher, WatcherSlot, make_decider

if TYPE_CHECKING:
    from vmwatch.kube.index import VirtualMachineIndex
    from vmwatch.kube.routing import VCenterRouter
    from vmwatch.kube.zones import ZoneController
    from vmwatch.metrics import ShardMetrics
    from vmwatch.queue import WorkQueue

__all__ = ['Shard', 'ZonesUnavailableError']

log = logging.getLogger('vmwatch.service')


class ZonesUnavailableError(RuntimeError):
    """The Zones cannot be listed (the CRD is missing, RBAC, the API is down): no folder to watch yet."""


class Shard:
    """Watches one vCenter for the Zones that belong to it, while `start_watching()` holds."""

    def __init__(
        self,
        vcenter: VCenter,
        *,
        settings: ServiceSettings,
        api: Any,
        objects: Any,
        lease_name: str,
        index: VirtualMachineIndex,
        router: VCenterRouter,
        zones: ZoneController,
        queue: WorkQueue,
        metrics: ShardMetrics,
        disabled: bool,
    ) -> None:
        self.vcenter = vcenter
        self.name = vcenter.name
        self.lease_name = lease_name
        self.settings = settings
        self.objects = objects
        self.zones = zones
        self.router = router
        self.metrics = metrics
        self.disabled = disabled
        # process-global: the fingerprint cache survives watcher restarts (spec 1.1)
        self.decider = make_decider(settings.filter_settings(), index.indexes[self.name])
        self.ledger = DeliveryLedger(self.decider)
        self.intake = SignalIntake(
            self.name, index=index, router=router, objects=objects, queue=queue, ledger=self.ledger,
            metrics=metrics, timeout_s=settings.kube_timeout_s, concurrency=settings.validation_concurrency,
        )  # fmt: skip
        self.checkpointer: Checkpointer | None = None
        if settings.checkpoint_interval_s > 0:
            store = CheckpointStore(api, namespace=settings.resolved_lease_namespace(), lease_name=lease_name)
            self.checkpointer = Checkpointer(
                store, self.decider, interval_s=settings.checkpoint_interval_s, metrics=metrics.checkpoint
            )
        self.slot = WatcherSlot(disabled=disabled)
        self.backoff = Backoff(settings.restart_initial_s, settings.restart_max_s, settings.restart_reset_s)
        self.status = 'standby'
        self.held = False  # this replica holds the shard (its Lease, or needs none): it writes for its Zones
        self.watching = False
        self.restarts = 0
        self.logins = 0
        self.last_error: BaseException | None = None
        self.session: Session | None = None  # the current watcher's session
        self._rate_log = RateLimitedLog(log)
        self._stop = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._checkpoint_task: asyncio.Task[None] | None = None
        self._metrics_watcher: Watcher | None = None
        self._metrics_seen: dict[str, int] = {}
        self._last_response_at: float | None = None  # any watcher's (monotonic), for the version lag
        self._held_since: float | None = None

    # -- health ---------------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """Ready while its watcher runs (or async signal is disabled)."""
        if self.disabled:
            return True, 'idle: async signal disabled'
        if not self.watching:
            return False, self.status
        watcher = self.slot.watcher
        if watcher is None or not watcher.running:  # its loop ended; the shard has not noticed it yet
            error = watcher.error if watcher is not None else None
            return False, f'the watcher stopped{f": {error}" if error else ""}; restarting'
        return True, 'watching'

    # -- lifecycle ------------------------------------------------------------------------------------
    def start_watching(self) -> None:
        """Become this vCenter's watcher (this replica holds its Lease, or needs none)."""
        if not self.active:
            self._held_since, self._last_response_at = time.monotonic(), None
        self.held = True
        if self.disabled:
            log.info('async signal is disabled (ASYNC_SIGNAL_DISABLED / ASYNC_SIGNAL_ENABLED): not watching')
            self.status = 'disabled'
            return
        if self._watch_task is None or self._watch_task.done():
            self._stop.clear()
            self.status = 'starting'
            if self.checkpointer is not None:
                self.checkpointer.reset()  # another holder may have written since: load again before the first wait
                task = asyncio.create_task(self.checkpointer.run(), name=f'vmwatch-checkpoint-{self.name}')
                self._checkpoint_task = task
            self._watch_task = asyncio.create_task(self._watch_forever(), name=f'vmwatch-shard-{self.name}')

    async def stop_watching(self) -> None:
        """Stop the watcher and the checkpoint writer at once (lost the Lease, or shutting down). Writes nothing:
        after a lost Lease another replica may be writing; a clean shutdown calls `save_checkpoint` itself.
        `held` stays as it is: whoever holds the shard (Leadership, or the Service without leader election)
        says when it is let go."""
        tasks = [t for t in (self._watch_task, self._checkpoint_task) if t is not None]
        self._watch_task = self._checkpoint_task = None
        self._stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.watching = False
        self.status = 'standby'

    async def save_checkpoint(self) -> None:
        """Write the checkpoint now (a clean shutdown or a voluntary hand-over, still holding the Lease). Nothing
        is written unless this term's checkpoint was loaded; failures are logged (the next holder gets
        duplicates, not losses)."""
        if self.checkpointer is None:
            return
        try:
            await self.checkpointer.save()
        except CheckpointError as e:
            log.warning('vcenter %s: last checkpoint not written: %s', self.name, e)

    @property
    def active(self) -> bool:
        """start_watching() was called and stop_watching() not since."""
        return self._watch_task is not None

    # -- the watcher loop -----------------------------------------------------------------------------
    async def _watch_forever(self) -> None:
        log.info('vcenter %s: starting the VM watcher', self.name)
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
            self.metrics.restart(cause)
            healthy = time.monotonic() - started
            delay = 0.0 if cause == 'closed' else self.backoff.next(healthy_for_s=healthy)
            if delay:
                log.debug('vcenter %s: restarting the watcher in %.1f s (cause: %s)', self.name, delay, cause)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay or 0.001)
            except TimeoutError:
                pass

    def _failed(self, e: BaseException, level: int, message: str) -> None:
        self.last_error = e
        self.status = message
        self._rate_log.log(level, type(e).__name__, 'vcenter %s: %s', self.name, message)

    def _endpoint(self) -> Endpoint:
        vc = self.vcenter
        user = vc.user
        if vc.user_file is not None:
            try:
                user = vc.user_file.read_text(encoding='utf-8').strip()
            except OSError as e:
                raise CredentialsError(f'cannot read the vCenter user file {vc.user_file}: {e.strerror}') from None
        assert vc.password_file is not None  # VCenter.check() requires it
        return Endpoint(
            url=vc.url,
            user=user,
            password_file=vc.password_file,
            ca_file=vc.ca_file,
            thumbprint=vc.thumbprint or None,
            insecure=vc.insecure,
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
                    await self.intake.handle(signal, arrived_at=watcher.responses.taken_at)
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

    def _my_zones(self) -> list[dict[str, Any]]:
        return [z for z in self.zones.cache.zones() if self.router.zone_vcenter(z) == self.name]

    async def _gather_folders(self, session: Session) -> dict[MoRef, list[str]]:
        """Spec 4.3: folders of this vCenter's Zones with their owner IDs; stale folders filtered; finalizers
        added."""
        owners: dict[MoRef, list[str]] = defaultdict(list)
        to_patch: list[dict[str, Any]] = []
        for zone in self._my_zones():
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
            log.warning('vcenter %s: folder %s named by zones %s does not exist: not watched', self.name, ref,
                        ', '.join(owners[ref]))  # fmt: skip
        for zone in to_patch:
            if MoRef.parse(folder_of(zone)) in alive:
                await ensure_finalizer(self.objects, zone)
        result = {ref: ids for ref, ids in owners.items() if ref in alive}
        for ref, ids in result.items():
            for owner in ids:
                self.zones.registry[owner] = (self.name, str(ref))
        return result

    # -- metrics --------------------------------------------------------------------------------------
    def refresh_metrics(self, index_size: int, index_bytes: int) -> None:
        """Copy the watcher's, cache's and index's counts into this vCenter's series (before a scrape)."""
        m = self.metrics
        watcher = self.slot.watcher
        if watcher is not None:
            if watcher is not self._metrics_watcher:  # a new watcher counts from zero
                self._metrics_watcher, self._metrics_seen = watcher, {}
            if m.observe_watcher(watcher.stats, self._metrics_seen):
                m.last_wait.set_to_current_time()
            if watcher.responses.last_response_at is not None:
                self._last_response_at = watcher.responses.last_response_at
            m.observe_skips(watcher.stats, self._metrics_seen)
            m.observe_problems(watcher.stats, self._metrics_seen)
            times = watcher.decide_seconds
            while times:
                m.batch_seconds.observe(times.popleft())
        m.observe_cache(self.decider.cache_stats())
        # seconds since the last response, while this replica watches the vCenter (from the start until one)
        lag_from = self._last_response_at or self._held_since
        m.observe_lag(time.monotonic() - lag_from if self.active and not self.disabled and lag_from else None)
        m.index_size.set(index_size)
        m.index_bytes.set(index_bytes)
