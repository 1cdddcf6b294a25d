# SPDX-License-Identifier: Apache-2.0
"""Kubernetes Events on the objects an operator looks at (`kubectl describe zone ...`).

Best effort, as client-go's recorder: an Event that cannot be written is logged at debug level and never
fails the caller. An object's Event is written only when it differs (reason, message) from the last one
written about that object by this process (bounded memory): a state change, never one per reconcile, so a
Zone reconciled every few seconds does not flood the API server, and a Zone whose folder goes missing, is
watched again, and goes missing again gets each of the three.

ZoneEvents names the Events an operator reads on a Zone (`kubectl describe zone`): FolderWatched,
FolderMissing, WatchRemoved and UnknownVCenter. Only the replica holding the Zone's vCenter writes them (the
Zone controller calls them where it acts on that vCenter's watcher).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

__all__ = ['EventRecorder', 'ZoneEvents']

log = logging.getLogger(__name__)

_REMEMBER = 4096


class EventRecorder:
    """Writes core/v1 Events (component `vmwatch`) about objects given as their dicts."""

    def __init__(self, api: Any, *, component: str = 'vmwatch', instance: str = '') -> None:
        self.api = api
        self.component = component
        self.instance = instance
        self._last: OrderedDict[str, tuple[str, str]] = OrderedDict()  # object -> (reason, message) last written
        self.recorded = 0

    async def record(self, obj: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
        """Record one Event about `obj` (a Kubernetes object as a dict: apiVersion, kind, metadata), unless the
        last one recorded about it said the same."""
        md = obj.get('metadata') or {}
        key = str(md.get('uid') or f'{md.get("namespace")}/{md.get("name")}')
        before = self._last.get(key)
        if before == (reason, message):
            self._last.move_to_end(key)
            return
        self._last[key] = (reason, message)
        self._last.move_to_end(key)
        while len(self._last) > _REMEMBER:
            self._last.popitem(last=False)
        try:
            await asyncio.to_thread(self._create, obj, md, type_, reason, message)
            self.recorded += 1
        except Exception as e:  # an Event is a courtesy: never a reason to fail a reconcile
            if before is None:  # try again next time
                self._last.pop(key, None)
            else:
                self._last[key] = before
            log.debug('could not record event %s on %s/%s: %s', reason, md.get('namespace'), md.get('name'), e)

    def _create(self, obj: dict[str, Any], md: dict[str, Any], type_: str, reason: str, message: str) -> None:
        from kubernetes import client

        from vmwatch.settings import FIELD_MANAGER

        now = datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')
        namespace = md.get('namespace') or 'default'
        body: Any = {
            'apiVersion': 'v1',
            'kind': 'Event',
            'metadata': {'generateName': f'{md.get("name", "object")}.', 'namespace': namespace},
            'involvedObject': {
                'apiVersion': obj.get('apiVersion'),
                'kind': obj.get('kind'),
                'name': md.get('name'),
                'namespace': md.get('namespace'),
                'uid': md.get('uid'),
                'resourceVersion': md.get('resourceVersion'),
            },
            'type': type_,
            'reason': reason,
            'message': message[:1024],
            'source': {'component': self.component},
            'reportingComponent': self.component,
            'reportingInstance': self.instance or self.component,
            'firstTimestamp': now,
            'lastTimestamp': now,
            'count': 1,
        }
        client.CoreV1Api(self.api).create_namespaced_event(
            namespace, body, field_manager=FIELD_MANAGER, _request_timeout=10
        )


class ZoneEvents:
    """The Events on Zones (as dicts, from the Zone API or cache): one per state change of each Zone's watch."""

    def __init__(self, recorder: EventRecorder, *, api_version: str, kind: str = 'Zone') -> None:
        self.recorder = recorder
        self.api_version = api_version
        self.kind = kind

    async def watched(self, zone: dict[str, Any], *, vcenter: str, folder: str) -> None:
        await self._record(zone, 'Normal', 'FolderWatched', f'vmwatch watches the VMs of {folder} on vCenter {vcenter}')

    async def missing(self, zone: dict[str, Any], *, vcenter: str, folder: str) -> None:
        await self._record(zone, 'Warning', 'FolderMissing',
                           f'vmwatch: {folder} does not exist on vCenter {vcenter}: its VMs are not watched '
                           '(fix spec.managedVMs.folderMoID or the vmwatch.dev/vcenter label)')  # fmt: skip

    async def removed(self, zone: dict[str, Any], *, vcenter: str, folder: str) -> None:
        await self._record(zone, 'Normal', 'WatchRemoved', f'vmwatch stopped watching {folder} on vCenter {vcenter}')

    async def unknown_vcenter(self, zone: dict[str, Any], *, what: str) -> None:
        await self._record(zone, 'Warning', 'UnknownVCenter', f'vmwatch: this Zone {what}; its folder is not watched')

    async def _record(self, zone: dict[str, Any], type_: str, reason: str, message: str) -> None:
        obj = {**zone, 'apiVersion': self.api_version, 'kind': self.kind}
        await self.recorder.record(obj, type_=type_, reason=reason, message=message)
