# SPDX-License-Identifier: Apache-2.0
"""The service (spec 4): one shard per vCenter (vmwatch/shard.py), the Kubernetes feeds they share, and the
work queue their signals go to.

    service = Service(settings, api=api_client)
    await service.start()
    service.start_watching()     # every shard (without leader election); or shard by shard: shards[name]
    ...
    await service.stop()         # never exits because a vCenter is down or misconfigured

The service owns what the vCenters share: the work queue, the VirtualMachine watch (one Rust index per
vCenter, routed by kube/routing.py), the Zone cache and controller, the metrics. Each shard owns what is
per vCenter. A VM of `vm-42` on vCenter A and one of `vm-42` on vCenter B never meet.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from vmwatch._vmwatch import Index, Signal
from vmwatch.kube.events import EventRecorder
from vmwatch.kube.index import VirtualMachineIndex
from vmwatch.kube.routing import VCenterRouter
from vmwatch.kube.zones import ZoneController, custom_objects
from vmwatch.metrics import Metrics
from vmwatch.queue import Key, WorkQueue
from vmwatch.retry import Backoff, RateLimitedLog
from vmwatch.settings import ServiceSettings, async_signal_disabled
from vmwatch.shard import Shard, ZonesUnavailableError
from vmwatch.watcher import AsyncSignalDisabledError, WatcherSlot

__all__ = ['Backoff', 'RateLimitedLog', 'Service', 'ZonesUnavailableError']

log = logging.getLogger('vmwatch.service')

_ZONES_BEFORE_VMS_S = 30.0
"""With several vCenters, the VirtualMachine list waits this long for the Zones (VMs are routed by them)."""


class Service:
    """Zone controller + VirtualMachine index + one shard per vCenter + the work queue."""

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
        self.queue.on_idle = self._idle
        self.metrics.watch_queue('virtualmachine', self.queue)
        self.disabled = async_signal_disabled() if disabled is None else disabled
        vcenters = settings.vcenters()
        self.router = VCenterRouter([vc.name for vc in vcenters])
        several = self.router.only is None
        self.index = VirtualMachineIndex(
            api,
            indexes={vc.name: Index() for vc in vcenters},
            route=self.router.vm_vcenter if several else None,
            before_list=self._zones_before_vms if several else None,
        )
        self.router.on_map_change = self.index.request_relist
        self.zones = ZoneController(
            api, self, router=self.router, events=EventRecorder(api), disabled_errors=(AsyncSignalDisabledError,)
        )
        self.metrics.watch_queue('zone', self.zones.queue)
        self.objects = custom_objects(api)
        self.shards: dict[str, Shard] = {
            vc.name: Shard(
                vc,
                settings=settings,
                api=api,
                objects=self.objects,
                lease_name=settings.shard_lease_name(vc.name),
                index=self.index,
                router=self.router,
                zones=self.zones,
                queue=self.queue,
                metrics=self.metrics.shard(vc.name),
                disabled=self.disabled,
            )  # fmt: skip
            for vc in vcenters
        }
        for shard in self.shards.values():  # without leader election this process holds every shard
            shard.held = zone_controller
        self.metrics.watch_feed('virtualmachine', self.index.bad_objects)
        self.metrics.watch_feed('zone', self.zones.cache.bad_objects)

    @property
    def shard(self) -> Shard:
        """The one vCenter's shard (ValueError with several: use `shards`)."""
        if len(self.shards) != 1:
            raise ValueError('several vCenters: use shards[name]')
        return next(iter(self.shards.values()))

    # -- what the Zone controller and the sinks need --------------------------------------------------
    def targets(self, vcenter: str) -> WatcherSlot | None:
        """The watcher slot of `vcenter`'s shard while this replica holds it (ShardTargets)."""
        shard = self.shards.get(vcenter)
        return shard.slot if shard is not None and shard.held else None

    def signals(self, key: Key) -> list[Signal]:
        """The latest signal of each VM (of any vCenter) whose request waits under `key`."""
        return [s for shard in self.shards.values() for s in shard.ledger.signals(key)]

    def vcenter_of(self, signal: object) -> str:
        """The vCenter whose shard signalled `signal` (its ledger holds it), else ''."""
        for name, shard in self.shards.items():
            key = (getattr(signal, 'namespace', ''), getattr(signal, 'name', ''))
            if any(s is signal for s in shard.ledger.signals(key)):
                return name
        return ''

    def _idle(self, key: Key) -> None:
        for shard in self.shards.values():
            shard.ledger.idle(key)

    def _zones_before_vms(self) -> None:
        """VirtualMachines are routed by their Zone's vCenter: list the Zones first (bounded wait)."""
        if not self.zones.cache.wait_synced(_ZONES_BEFORE_VMS_S):
            log.warning('the Zones are not listed after %.0f s: VirtualMachines routed by their Zone are routed '
                        'again once they are', _ZONES_BEFORE_VMS_S)  # fmt: skip

    @property
    def validating(self) -> int:
        return sum(s.intake.validating for s in self.shards.values())

    # -- health ---------------------------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        """Ready while the VirtualMachine index has synced, the work queue has room and every shard this replica
        holds watches. The reason names each shard that does not (see `ready_detail`)."""
        if self.disabled:
            return True, 'idle: async signal disabled'
        if not self.index.synced:
            error = self.index.last_error
            return False, f'the VirtualMachine index has not synced yet{f" ({error})" if error else ""}'
        if self.queue.full:
            return False, f'the work queue is full ({self.queue.depth} keys): new requests are dropped'
        held = [s for s in self.shards.values() if s.held]
        if not held:
            return False, 'no vCenter is being watched'
        failing = [(s.name, reason) for s in held for ok, reason in [s.ready()] if not ok]
        if not failing:
            return True, 'watching'
        if self.router.only is not None:
            return False, failing[0][1]
        return False, '; '.join(f'vcenter {name}: {reason}' for name, reason in failing)

    def ready_detail(self) -> list[tuple[str, bool, str]]:
        """(check, ok, reason) per vCenter, for /readyz?verbose."""
        out = []
        for shard in self.shards.values():
            ok, reason = shard.ready() if shard.held else (True, 'standby: another replica holds it')
            out.append((f'vcenter {shard.name}', ok, reason))
        return out

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> Service:
        """Start the index and the Zone controller (every replica keeps them warm)."""
        await self.zones.start(reconcile=self.zone_controller)
        self.index.start()
        return self

    def start_watching(self) -> None:
        """Watch every vCenter (without leader election, or an embedding that needs no Lease)."""
        for shard in self.shards.values():
            shard.start_watching()

    async def stop_watching(self) -> None:
        for shard in self.shards.values():
            await shard.stop_watching()

    async def save_checkpoint(self) -> None:
        for shard in self.shards.values():
            if shard.active:
                await shard.save_checkpoint()

    @property
    def active(self) -> bool:
        return any(s.active for s in self.shards.values())

    @property
    def watching(self) -> bool:
        return any(s.watching for s in self.shards.values())

    async def stop(self) -> None:
        held = [s for s in self.shards.values() if s.active]
        await self.stop_watching()
        for shard in held:
            await shard.save_checkpoint()
        await self.zones.stop()
        await asyncio.to_thread(self.index.stop)

    def refresh_metrics(self) -> None:
        """Copy each shard's, the index's and the queues' counts into the metrics (called before a scrape)."""
        for name, shard in self.shards.items():
            index = self.index.indexes[name]
            shard.refresh_metrics(len(index), index.bytes())
        self.metrics.zones_unrouted.set(len(self.zones.unrouted))
        self.metrics.observe_queues()
