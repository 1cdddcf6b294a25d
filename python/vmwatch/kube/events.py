# SPDX-License-Identifier: Apache-2.0
"""Kubernetes Events on the objects an operator looks at (`kubectl describe zone ...`).

Best effort, as client-go's recorder: an Event that cannot be written is logged at debug level and never
fails the caller. The same (object, reason, message) is recorded once per process (bounded memory), so a
Zone reconciled every few seconds does not flood the API server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

__all__ = ['EventRecorder']

log = logging.getLogger(__name__)

_REMEMBER = 4096


class EventRecorder:
    """Writes core/v1 Events (component `vmwatch`) about objects given as their dicts."""

    def __init__(self, api: Any, *, component: str = 'vmwatch', instance: str = '') -> None:
        self.api = api
        self.component = component
        self.instance = instance
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self.recorded = 0

    async def record(self, obj: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
        """Record one Event about `obj` (a Kubernetes object as a dict: apiVersion, kind, metadata)."""
        md = obj.get('metadata') or {}
        key = (str(md.get('uid') or f'{md.get("namespace")}/{md.get("name")}'), reason, message)
        if key in self._seen:
            self._seen.move_to_end(key)
            return
        self._seen[key] = None
        while len(self._seen) > _REMEMBER:
            self._seen.popitem(last=False)
        try:
            await asyncio.to_thread(self._create, obj, md, type_, reason, message)
            self.recorded += 1
        except Exception as e:  # an Event is a courtesy: never a reason to fail a reconcile
            self._seen.pop(key, None)  # try again next time
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
