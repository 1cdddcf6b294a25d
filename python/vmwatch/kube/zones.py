# SPDX-License-Identifier: Apache-2.0
"""The Zone controller (spec 5) and the service's view of Zones (spec 4.3).

Per reconcile of Zone <ns>/<name> (owner ID "<ns>/<name>"):

* deleting: `remove(Folder:<folderMoID>, owner)` on the watcher; the "disabled" error is fine, any other
  error (also "no watcher": the interlock of spec 5) keeps the finalizer and retries with backoff. Then
  the finalizer (and the legacy name) is removed.
* live: without our finalizer, add it and stop (the update event brings the zone back, spec 5). Else
  `add(Folder:<folderMoID>, owner)` on every reconcile (the watcher is ephemeral). Errors other than
  "disabled" retry with backoff.
* A folder change on a live Zone removes the old folder for that owner: the controller remembers the
  vCenter and folder each owner was last added with (the desired-state registry of spec 7.2 #8), so a
  change is a diff instead of a leak.

Several vCenters (issue 12): a Zone belongs to one vCenter (kube/routing.py) and only the replica holding
that vCenter's shard Lease writes for it (finalizers) or adds its folder; the others skip it, and reconcile
every Zone again when they acquire a shard. A Zone naming a vCenter that is not configured is reported (a
warning, `unknown_vcenter` in `unrouted`, an Event on the Zone) and not watched; if it carries our finalizer
when it is deleted, the holder of the first vCenter by name removes it.

Reconciles run from a work queue: one key is never reconciled twice at once; failures are retried with
exponential backoff (5 ms -> 1000 s); success forgets the key's history.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vmwatch.kube.events import EventRecorder, ZoneEvents
from vmwatch.kube.listwatch import ListWatch, object_name
from vmwatch.kube.routing import VCenterRouter
from vmwatch.queue import SHUTDOWN, Key, WorkQueue
from vmwatch.settings import FIELD_MANAGER, FINALIZER, LEGACY_FINALIZER

__all__ = [
    'ZONE_GROUP',
    'ZONE_PLURAL',
    'ZONE_VERSION',
    'FolderTargets',
    'ShardTargets',
    'ZoneCache',
    'ZoneController',
    'folder_of',
    'custom_objects',
    'ensure_finalizer',
    'is_deleting',
    'patch_finalizers',
]

log = logging.getLogger('vmwatch.zones')

REQUEST_TIMEOUT_S = 10.0
"""Timeout of each Zone read and patch (a hung API server fails the reconcile, which is retried with backoff)."""

ZONE_GROUP: Final = 'topology.tanzu.vmware.com'
ZONE_VERSION: Final = 'v1alpha1'
ZONE_PLURAL: Final = 'zones'


def folder_of(zone: dict[str, Any]) -> str:
    """'Folder:<spec.managedVMs.folderMoID>' or '' when the zone names no folder."""
    managed = (zone.get('spec') or {}).get('managedVMs') or {}
    moid = managed.get('folderMoID') if isinstance(managed, dict) else None
    return f'Folder:{moid}' if isinstance(moid, str) and moid else ''


def is_deleting(zone: dict[str, Any]) -> bool:
    return bool((zone.get('metadata') or {}).get('deletionTimestamp'))


def finalizers(zone: dict[str, Any]) -> list[str]:
    return list((zone.get('metadata') or {}).get('finalizers') or [])


def owner_id(zone: dict[str, Any]) -> str:
    md = zone.get('metadata') or {}
    return f'{md.get("namespace", "")}/{md.get("name", "")}'


class FolderTargets(Protocol):
    """What the controller needs from the watcher slot (vmwatch.watcher.WatcherSlot satisfies it)."""

    async def add(self, ref: str, owner_id: str) -> None: ...

    async def remove(self, ref: str, owner_id: str) -> None: ...


class ShardTargets(Protocol):
    """Where a vCenter's folders go: its shard's watcher slot while this replica holds the shard, else None."""

    def targets(self, vcenter: str) -> FolderTargets | None: ...


class ZoneCache(ListWatch):
    """All Zones, kept current by a list + watch; changes are reported to `on_change(key)`.

    A Zone the service cannot read (no namespace/name, or spec, spec.managedVMs or folderMoID of the wrong
    type) is not kept: it counts as absent, as a Zone naming no folder would, and is counted by reason in
    `bad_objects` and logged once. Every other Zone is kept, so one garbage Zone cannot stop the feed.
    """

    thread_name = 'vmwatch-zones'

    def __init__(self, api: Any, *, on_change: Callable[[Key], None] | None = None, **kwargs: Any) -> None:
        super().__init__(api, f'/apis/{ZONE_GROUP}/{ZONE_VERSION}/{ZONE_PLURAL}', **kwargs)
        self._zones: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.on_change = on_change

    @staticmethod
    def _key(obj: dict[str, Any]) -> Key:
        md = obj.get('metadata') or {}
        return (str(md.get('namespace', '')), str(md.get('name', '')))

    def _usable(self, obj: Any) -> Key | None:
        """The Zone's key when the service can read it; else None (reported)."""
        md = obj.get('metadata') if isinstance(obj, dict) else None
        if not isinstance(md, dict) or not all(isinstance(md.get(f), str) and md.get(f) for f in ('namespace', 'name')):
            self.bad_objects.report(object_name(obj), 'no_name', 'no metadata.namespace/name: skipped')
            return None
        problem = _zone_problem(obj)
        if problem is not None:
            self.bad_objects.report(object_name(obj), 'bad_spec', f'{problem}: not kept (as if it named no folder)')
            return None
        return md['namespace'], md['name']

    def on_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        fresh = {key: o for o in items if (key := self._usable(o)) is not None}
        with self._lock:
            gone = set(self._zones) - set(fresh)
            self._zones = fresh
        for key in (*fresh, *gone):
            self._notify(key)

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        key = self._usable(obj)
        if key is None:
            if kind == 'DELETED' or not isinstance(obj.get('metadata'), dict):
                return
            key = self._key(obj)  # a kept Zone turned unreadable: drop it, as if it named no folder
            kind = 'DELETED'
        with self._lock:
            if kind == 'DELETED':
                self._zones.pop(key, None)
            else:
                self._zones[key] = obj
        self._notify(key)

    def _notify(self, key: Key) -> None:
        if self.on_change is not None:
            self.on_change(key)

    def zones(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._zones.values())

    def get(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            return self._zones.get(key)


def _zone_problem(zone: dict[str, Any]) -> str | None:
    """What makes a Zone unreadable for folder_of & co, or None."""
    spec = zone.get('spec')
    if spec is None:
        return None
    if not isinstance(spec, dict):
        return f'spec is a {type(spec).__name__}'
    managed = spec.get('managedVMs')
    if managed is None:
        return None
    if not isinstance(managed, dict):
        return f'spec.managedVMs is a {type(managed).__name__}'
    moid = managed.get('folderMoID')
    if moid is not None and not isinstance(moid, str):
        return f'spec.managedVMs.folderMoID is a {type(moid).__name__}'
    return None


@dataclass
class ReconcileStats:
    reconciles: int = 0
    errors: int = 0
    added: int = 0
    removed: int = 0


class ZoneController:
    """Reconciles Zones against the watcher (`targets`), from a work queue fed by a ZoneCache."""

    def __init__(
        self,
        api: client.ApiClient,
        shards: ShardTargets,
        *,
        router: VCenterRouter,
        events: EventRecorder | None = None,
        disabled_errors: tuple[type[BaseException], ...] = (),
        workers: int = 2,
        queue: WorkQueue | None = None,
    ) -> None:
        self.api = api
        self.objects: Any = client.CustomObjectsApi(api)  # dict bodies and results
        self.shards = shards
        self.router = router
        self.events = None if events is None else ZoneEvents(events, api_version=f'{ZONE_GROUP}/{ZONE_VERSION}')
        self.disabled_errors = disabled_errors
        self.workers = workers
        self.queue = queue or WorkQueue()
        self.cache = ZoneCache(api, on_change=self._changed_from_thread)
        self.registry: dict[str, tuple[str, str]] = {}  # owner ID -> (vCenter, folder) last added for it
        self.unrouted: dict[Key, str] = {}  # Zones naming no configured vCenter -> the vCenter they name ('' none)
        self.stats = ReconcileStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self, *, reconcile: bool = True) -> ZoneController:
        """Start the Zone cache and (unless `reconcile` is False: the cache alone) the reconcile workers."""
        self._loop = asyncio.get_running_loop()
        self.cache.start()
        if reconcile:
            self.start_reconciling()
        return self

    def start_reconciling(self) -> None:
        """Start the reconcile workers (idempotent), and reconcile every known Zone.

        Only the Lease holder reconciles (it alone writes finalizers); a standby keeps the cache warm, and
        the Zones that changed meanwhile wait in the queue (one entry per Zone) for its turn to lead."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._worker(), name=f'vmwatch-zone-worker-{i}') for i in range(self.workers)
        ]
        self.requeue_all()

    async def stop_reconciling(self) -> None:
        """Stop the reconcile workers (the Lease was lost); the cache keeps following the Zones."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def reconciling(self) -> bool:
        return bool(self._tasks)

    async def stop(self) -> None:
        await asyncio.to_thread(self.cache.stop)
        await self.queue.shutdown(drain=False)
        await self.stop_reconciling()

    def requeue_all(self) -> None:
        """Reconcile every known Zone again (a new watcher started: it must learn every folder)."""
        for zone in self.cache.zones():
            self.queue.add(ZoneCache._key(zone))

    def _changed_from_thread(self, key: Key) -> None:
        self.router.zone_changed(key, self.cache.get(key))
        if self._loop is not None:
            self.queue.add_threadsafe(key)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key == SHUTDOWN:
                return
            try:
                await self.reconcile(key)
            except Exception as e:
                self.stats.errors += 1
                retries = self.queue.num_requeues(key)
                level = logging.WARNING if retries < 5 or retries % 10 == 0 else logging.DEBUG
                if type(e).__name__ == 'NoWatcherError':
                    level = logging.DEBUG  # expected between watcher lifetimes; retried until one runs
                log.log(level, 'zone %s/%s: %s (retry %d)', key[0], key[1], e, retries + 1)
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)

    # -- reconcile --------------------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> None:
        self.stats.reconciles += 1
        namespace, name = key
        zone = await self._get(namespace, name)
        if zone is None:
            self.unrouted.pop(key, None)
            return
        owner = owner_id(zone)
        vcenter = self.router.zone_vcenter(zone)
        await self._leave_other_vcenter(zone, owner, vcenter)
        if not self.router.known(vcenter):
            await self._unroutable(key, zone, owner, vcenter or '')
            return
        self.unrouted.pop(key, None)
        assert vcenter is not None
        targets = self.shards.targets(vcenter)
        if targets is None:
            return  # another replica holds this vCenter's shard: it alone writes for this Zone
        folder = folder_of(zone)
        if is_deleting(zone):
            await self._reconcile_delete(zone, owner, folder, targets, vcenter)
            return
        if FINALIZER not in finalizers(zone):
            await self._set_finalizers(zone, [*[f for f in finalizers(zone) if f != LEGACY_FINALIZER], FINALIZER])
            return  # the update event brings the zone back; the next reconcile adds the folder (spec 5)
        _, previous = self.registry.get(owner, ('', ''))
        if previous and previous != folder:
            if await self._call(targets.remove, previous, owner):  # folder changed: drop the old one
                await self._event('removed', zone, vcenter, previous)
            self.registry.pop(owner, None)
        if folder:
            try:
                added = await self._call(targets.add, folder, owner)
            except Exception as e:
                if getattr(e, 'fault_type', None) == 'ManagedObjectNotFound':  # vsphere.VsphereFault
                    await self._event('missing', zone, vcenter, folder)
                raise
            self.registry[owner] = (vcenter, folder)
            self.stats.added += 1
            if added:
                await self._event('watched', zone, vcenter, folder)

    async def _event(self, what: str, zone: dict[str, Any], vcenter: str, folder: str) -> None:
        if self.events is not None:
            await getattr(self.events, what)(zone, vcenter=vcenter, folder=folder)

    async def _leave_other_vcenter(self, zone: dict[str, Any], owner: str, vcenter: str | None) -> None:
        """The Zone now names another vCenter than the one its folder was added to: remove it there."""
        before, folder = self.registry.get(owner, ('', ''))
        if not before or before == vcenter:
            return
        targets = self.shards.targets(before)
        if targets is not None and await self._call(targets.remove, folder, owner):
            await self._event('removed', zone, before, folder)
        self.registry.pop(owner, None)

    async def _unroutable(self, key: Key, zone: dict[str, Any], owner: str, vcenter: str) -> None:
        """A Zone naming no configured vCenter: reported once per change, never watched."""
        if self.unrouted.get(key) != vcenter:
            what = f'names vCenter {vcenter!r}, which is not configured' if vcenter else 'names no vCenter'
            log.warning('zone %s %s (label vmwatch.dev/vcenter; configured: %s): not watched', owner, what,
                        ', '.join(self.router.names))  # fmt: skip
            if self.events is not None:
                await self.events.unknown_vcenter(zone, what=what)
        self.unrouted[key] = vcenter
        ours = {FINALIZER, LEGACY_FINALIZER}
        first = min(self.router.names)
        if is_deleting(zone) and ours & set(finalizers(zone)) and self.shards.targets(first) is not None:
            await self._set_finalizers(zone, [f for f in finalizers(zone) if f not in ours])

    async def _reconcile_delete(
        self, zone: dict[str, Any], owner: str, folder: str, targets: FolderTargets, vcenter: str
    ) -> None:
        ours = {FINALIZER, LEGACY_FINALIZER}
        if not ours & set(finalizers(zone)):
            self.registry.pop(owner, None)
            return
        _, registered = self.registry.get(owner, ('', ''))
        for ref in dict.fromkeys(r for r in (folder, registered) if r):
            removed = await self._call(targets.remove, ref, owner)  # "no watcher" raises: keep the finalizer
            self.stats.removed += 1
            if removed and ref == registered:  # it was watched (a missing folder never was)
                await self._event('removed', zone, vcenter, ref)
        self.registry.pop(owner, None)
        await self._set_finalizers(zone, [f for f in finalizers(zone) if f not in ours])

    async def _call(self, fn: Callable[[str, str], Awaitable[None]], ref: str, owner: str) -> bool:
        """Call `fn`; False when async signal is disabled (nothing done)."""
        try:
            await fn(ref, owner)
        except self.disabled_errors:
            log.debug('async signal disabled: %s(%s, %s) skipped', getattr(fn, '__name__', fn), ref, owner)
            return False
        return True

    async def _get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await asyncio.to_thread(
                self.objects.get_namespaced_custom_object, ZONE_GROUP, ZONE_VERSION, namespace, ZONE_PLURAL, name,
                _request_timeout=REQUEST_TIMEOUT_S,
            )  # fmt: skip
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj if isinstance(obj, dict) else None

    async def _set_finalizers(self, zone: dict[str, Any], wanted: Iterable[str]) -> None:
        await patch_finalizers(self.objects, zone, wanted)


async def patch_finalizers(
    objects: Any, zone: dict[str, Any], wanted: Iterable[str], *, timeout_s: float = REQUEST_TIMEOUT_S
) -> None:
    """Set the Zone's finalizers with a JSON merge patch, locked to the resourceVersion read (409 if stale)."""
    md = zone.get('metadata') or {}
    body = {'metadata': {'finalizers': list(wanted), 'resourceVersion': md.get('resourceVersion')}}
    await asyncio.to_thread(
        objects.patch_namespaced_custom_object, ZONE_GROUP, ZONE_VERSION, md.get('namespace'), ZONE_PLURAL,
        md.get('name'), body, field_manager=FIELD_MANAGER, _content_type='application/merge-patch+json',
        _request_timeout=timeout_s,
    )  # fmt: skip


def custom_objects(api: Any) -> Any:
    """A CustomObjectsApi on `api` (typed as Any: it takes and returns plain dicts)."""
    return client.CustomObjectsApi(api)


async def ensure_finalizer(objects: Any, zone: dict[str, Any]) -> None:
    """Add our finalizer with optimistic locking (spec 4.3 step 5). A conflict re-reads the Zone and tries
    again (the Zone controller may have added it meanwhile); never onto a Zone that started deleting."""
    for attempt in range(3):
        md = zone.get('metadata') or {}
        if FINALIZER in finalizers(zone) or is_deleting(zone):
            return
        try:
            await patch_finalizers(objects, zone, [*finalizers(zone), FINALIZER])
            return
        except ApiException as e:
            if e.status == 404:
                return  # deleted meanwhile: nothing to protect
            if e.status != 409 or attempt == 2:
                raise RuntimeError(f'failed to add finalizer to zone {owner_id(zone)}: {e.status} {e.reason}') from e
        zone = await asyncio.to_thread(
            objects.get_namespaced_custom_object, ZONE_GROUP, ZONE_VERSION, md.get('namespace'), ZONE_PLURAL,
            md.get('name'), _request_timeout=REQUEST_TIMEOUT_S,
        )  # fmt: skip
