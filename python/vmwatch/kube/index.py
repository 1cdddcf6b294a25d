# SPDX-License-Identifier: Apache-2.0
"""The VirtualMachine index: a Kubernetes list + watch that feeds the Rust `Index`.

One background thread (`ListWatch`) lists `virtualmachines` in all namespaces (paginated), then
watches from the list's resourceVersion with bookmarks. Every object is decoded with orjson from the
raw HTTP body (the kubernetes client's model deserializer is not used) and stored in the Rust index as
`upsert(ns, name, unique_id=status.uniqueID, deleting=deletionTimestamp set, priority=vm_priority(obj))`.

* 410 Gone (on the watch request or as an ERROR event) -> relist, then delete every indexed VM the new
  list does not contain: no VM is lost, none is kept stale.
* Other failures (apiserver restarted, connection reset, read timeout) -> resume the watch from the last
  applied resourceVersion after a capped exponential backoff with jitter.
* `synced` is set once the first list is applied; `wait_for_resource_version(rv)` returns once an
  event or bookmark at or beyond `rv` has been applied (tests wait on it instead of sleeping).

Memory: the Rust index holds the state (see `Index.bytes()`); the Python side keeps only the set of
indexed names per namespace, which the relist needs to find deletions (the Rust index has no iteration).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from vmwatch._vmwatch import Index
from vmwatch.kube.listwatch import ListWatch
from vmwatch.kube.priority import vm_priority

__all__ = ['fetch_vm_entry', 'VM_GROUP', 'VM_PLURAL', 'VM_VERSION', 'VirtualMachineIndex']

log = logging.getLogger(__name__)

VM_GROUP: Final = 'vmoperator.vmware.com'
VM_VERSION: Final = 'v1alpha6'
VM_PLURAL: Final = 'virtualmachines'


class VirtualMachineIndex(ListWatch):
    """List + watch VirtualMachines (all namespaces) into a Rust `Index`. Use `start()`/`stop()` or `with`.

    The `Index` belongs to this watch: a relist removes every VM in it that the list does not have.

    `api` is a `kubernetes.client.ApiClient`; only its REST layer is used, with raw responses.
    """

    thread_name = 'vmwatch-vm-index'

    def __init__(
        self,
        api: Any,
        *,
        index: Index | None = None,
        group: str = VM_GROUP,
        version: str = VM_VERSION,
        plural: str = VM_PLURAL,
        page_size: int = 500,
        watch_timeout_s: int = 300,
        connect_timeout_s: float = 10.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        super().__init__(
            api,
            f'/apis/{group}/{version}/{plural}',
            page_size=page_size,
            watch_timeout_s=watch_timeout_s,
            connect_timeout_s=connect_timeout_s,
            backoff_max_s=backoff_max_s,
        )
        self.index = index if index is not None else Index()
        self._api_version = f'{group}/{version}'
        self._resume: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> VirtualMachineIndex:
        """Start the watch thread. After a `stop()` this resumes watching from the last applied
        resourceVersion (a 410 then relists), so a stop/start pair behaves like a dropped connection."""
        if self._thread is not None:
            if self._thread.is_alive():
                raise RuntimeError('already started')
            self._thread = None
            self._stop.clear()
            self._resume = self.resource_version if self.synced else None
        super().start()
        return self

    def __enter__(self) -> VirtualMachineIndex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _list(self) -> str:
        resume, self._resume = self._resume, None
        return resume if resume else super()._list()

    # -- reading ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def get(self, namespace: str, name: str) -> tuple[str, bool, int] | None:
        """(unique_id, deleting, priority) of an indexed VM, or None (what result validation needs)."""
        return self.index.get(namespace, name)

    def by_unique_id(self, unique_id: str) -> tuple[str, str] | None:
        return self.index.by_unique_id(unique_id)

    async def wait_synced_async(self, timeout_s: float | None = None) -> bool:
        return await asyncio.to_thread(self.wait_synced, timeout_s)

    async def wait_for_resource_version_async(self, resource_version: str, timeout_s: float | None = None) -> bool:
        return await asyncio.to_thread(self.wait_for_resource_version, resource_version, timeout_s)

    # -- ListWatch hooks ----------------------------------------------------------------------------
    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == 'DELETED':
            metadata = obj.get('metadata') or {}
            self._delete(metadata.get('namespace', ''), metadata.get('name', ''))
        else:
            self._upsert(obj)

    def on_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        """A complete list: upsert every item, delete every indexed VM that is not listed."""
        seen: dict[str, set[str]] = {}
        for obj in items:
            metadata = obj.get('metadata') or {}
            seen.setdefault(metadata.get('namespace', ''), set()).add(metadata.get('name', ''))
            self._upsert(obj)
        stale = [(ns, name) for ns, name in self.index.keys() if name not in seen.get(ns, ())]
        for namespace, name in stale:
            self._delete(namespace, name)
        if stale:
            log.info('relist removed %d VirtualMachines deleted while the watch was down', len(stale))

    def _upsert(self, obj: dict[str, Any]) -> None:
        metadata = obj.get('metadata') or {}
        namespace, name = metadata.get('namespace', ''), metadata.get('name', '')
        if not namespace or not name:
            return
        obj.setdefault('apiVersion', self._api_version)  # list items may omit them; the priority needs them
        obj.setdefault('kind', 'VirtualMachine')
        status = obj.get('status') or {}
        unique_id = status.get('uniqueID') if isinstance(status, dict) else None
        self.index.upsert(
            namespace,
            name,
            unique_id=unique_id if isinstance(unique_id, str) else '',
            deleting=bool(metadata.get('deletionTimestamp')),
            priority=vm_priority(obj),
        )

    def _delete(self, namespace: str, name: str) -> None:
        self.index.delete(namespace, name)


async def fetch_vm_entry(objects: Any, namespace: str, name: str) -> tuple[str, bool, int] | None:
    """(unique_id, deleting, priority) of a VirtualMachine read from the API (None when it does not exist):
    what validation uses before the index has synced."""
    from kubernetes.client.exceptions import ApiException

    try:
        obj = await asyncio.to_thread(objects.get_namespaced_custom_object, VM_GROUP, VM_VERSION, namespace,
                                      VM_PLURAL, name)  # fmt: skip
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    status = obj.get('status') or {}
    metadata = obj.get('metadata') or {}
    return str(status.get('uniqueID') or ''), bool(metadata.get('deletionTimestamp')), vm_priority(obj)
