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
* A bad object never stops the feed (ListWatch): out-of-range or garbage priority annotations are clamped
  to int32 or ignored (kube/priority.py), a field of an unexpected type (status not an object, uniqueID not
  a string, conditions not a list of objects, annotations not an object) counts as absent, an object
  without a namespace or name is skipped; each is counted by reason in `bad_objects` and logged once.
* `synced` is set once the first list is applied; `wait_for_resource_version(rv)` returns once an
  event or bookmark at or beyond `rv` has been applied (tests wait on it instead of sleeping).

Several vCenters (issue 12): one Rust `Index` per vCenter plus one for unassigned VMs; `route(obj)` (the
VCenterRouter) says which one a VM goes to, and an upsert removes it from the others (a VM relabelled to
another vCenter moves). `request_relist()` routes every VM again (the Zone -> vCenter map changed).

Memory: the Rust indexes hold the state (see `Index.bytes()`); the Python side keeps nothing per VM (a relist
finds deletions with `Index.keys()`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from vmwatch._vmwatch import Index
from vmwatch.kube.listwatch import ListWatch, object_name
from vmwatch.kube.priority import PRIORITY_ANNOTATION, PRIORITY_GENERIC, priority_problem, vm_priority

__all__ = ['fetch_vm', 'fetch_vm_entry', 'vm_entry', 'VM_GROUP', 'VM_PLURAL', 'VM_VERSION', 'VirtualMachineIndex']

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
        indexes: Mapping[str, Index] | None = None,
        route: Callable[[Any], str | None] | None = None,
        before_list: Callable[[], None] | None = None,
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
        if indexes is None:
            indexes = {'default': index if index is not None else Index()}
        self.indexes: dict[str, Index] = dict(indexes)
        self.unassigned = Index()  # VMs that belong to no configured vCenter (only with `route`)
        self.route = route
        self.before_list = before_list
        self._all = (*self.indexes.values(), self.unassigned)
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
        if resume:
            return resume
        if self.before_list is not None:
            self.before_list()
            # the Zone changes that arrived while it waited are in the map this list routes by: listing again
            # for them would only double the start-up cost (one more full list of every VirtualMachine)
            self._relist.clear()
        return super()._list()

    # -- reading ------------------------------------------------------------------------------------
    @property
    def index(self) -> Index:
        """The one vCenter's index (ValueError with several: use `indexes`)."""
        if len(self.indexes) != 1:
            raise ValueError('several vCenters: use indexes[name]')
        return next(iter(self.indexes.values()))

    def __len__(self) -> int:
        return sum(len(i) for i in self._all)

    def get(self, namespace: str, name: str, vcenter: str | None = None) -> tuple[str, bool, int] | None:
        """(unique_id, deleting, priority) of a VM indexed for `vcenter` or unassigned (any vCenter when None),
        or None (what result validation needs)."""
        where = self._all if vcenter is None else (self.indexes[vcenter], self.unassigned)
        for index in where:
            entry = index.get(namespace, name)
            if entry is not None:
                return entry
        return None

    def owner(self, namespace: str, name: str) -> str | None:
        """The vCenter whose index holds the VM, '' when it is unassigned, None when no index has it."""
        for vcenter, index in self.indexes.items():
            if index.get(namespace, name) is not None:
                return vcenter
        return '' if self.unassigned.get(namespace, name) is not None else None

    def by_unique_id(self, unique_id: str) -> tuple[str, str] | None:
        return self.index.by_unique_id(unique_id)

    async def wait_synced_async(self, timeout_s: float | None = None) -> bool:
        return await asyncio.to_thread(self.wait_synced, timeout_s)

    async def wait_for_resource_version_async(self, resource_version: str, timeout_s: float | None = None) -> bool:
        return await asyncio.to_thread(self.wait_for_resource_version, resource_version, timeout_s)

    # -- ListWatch hooks ----------------------------------------------------------------------------
    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == 'DELETED':
            key = _key(obj)
            if key is not None:
                self._delete(*key)
        else:
            self._upsert(obj)

    def on_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        """A complete list: upsert every item, delete every indexed VM that is not listed."""
        seen: dict[str, set[str]] = {}
        for obj in items:
            key = self._upsert(obj)
            if key is not None:
                seen.setdefault(key[0], set()).add(key[1])
        stale = 0
        for index in self._all:
            gone = [(ns, name) for ns, name in index.keys() if name not in seen.get(ns, ())]
            for namespace, name in gone:
                index.delete(namespace, name)
            stale += len(gone)
        if stale:
            log.info('relist removed %d VirtualMachines deleted while the watch was down', stale)

    def _upsert(self, obj: Any) -> tuple[str, str] | None:
        """Index one VM; returns its key, or None when it has none (skipped and reported)."""
        key = _key(obj)
        if key is None:
            self.bad_objects.report(object_name(obj), 'no_name', 'no metadata.namespace/name: skipped')
            return None
        try:
            entry = self._entry(obj, key)
        except Exception as exc:  # whatever else is wrong with it: the VM stays listed, with the defaults
            self.bad_objects.report(object_name(obj), 'error', f'{type(exc).__name__}: {exc}: indexed without '
                                    'uniqueID, at the default priority')  # fmt: skip
            entry = ('', False, PRIORITY_GENERIC)
        unique_id, deleting, priority = entry
        target = self._target(obj)
        try:
            target.upsert(*key, unique_id=unique_id, deleting=deleting, priority=priority)
            if self.route is not None:
                for other in self._all:
                    if other is not target and other.get(*key) is not None:
                        other.delete(*key)  # it moved to another vCenter
        except Exception as exc:  # the core refused it (it should not): skip this one, keep the feed
            self.bad_objects.report(object_name(obj), 'error', f'not indexed: {type(exc).__name__}: {exc}')
        return key

    def _entry(self, obj: dict[str, Any], key: tuple[str, str]) -> tuple[str, bool, int]:
        obj.setdefault('apiVersion', self._api_version)  # list items may omit them; the priority needs them
        obj.setdefault('kind', 'VirtualMachine')
        entry = vm_entry(obj)
        for reason, detail in _problems(obj):
            self.bad_objects.report(object_name(obj), reason, detail)
        return entry

    def _target(self, obj: dict[str, Any]) -> Index:
        if self.route is None:
            return next(iter(self.indexes.values()))
        try:
            vcenter = self.route(obj)
        except Exception as exc:  # the router must not stop the feed: unassigned (signalled by any vCenter)
            self.bad_objects.report(object_name(obj), 'error', f'not routed: {type(exc).__name__}: {exc}')
            vcenter = None
        return self.indexes.get(vcenter, self.unassigned) if vcenter is not None else self.unassigned

    def _delete(self, namespace: str, name: str) -> None:
        for index in self._all:
            index.delete(namespace, name)


def _key(obj: Any) -> tuple[str, str] | None:
    metadata = obj.get('metadata') if isinstance(obj, dict) else None
    if not isinstance(metadata, dict):
        return None
    namespace, name = metadata.get('namespace'), metadata.get('name')
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        return None
    return namespace, name


def vm_entry(obj: dict[str, Any]) -> tuple[str, bool, int]:
    """(unique_id, deleting, priority) of a raw VirtualMachine; fields of the wrong type count as absent and
    the priority is an int32 (kube/priority.py)."""
    metadata = obj.get('metadata')
    metadata = metadata if isinstance(metadata, dict) else {}
    status = obj.get('status')
    unique_id = status.get('uniqueID') if isinstance(status, dict) else None
    return unique_id if isinstance(unique_id, str) else '', bool(metadata.get('deletionTimestamp')), vm_priority(obj)


def _problems(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """What in a VirtualMachine was not usable as written: (reason, detail) pairs (empty for a good one)."""
    out: list[tuple[str, str]] = []
    metadata = obj.get('metadata') or {}
    annotations = metadata.get('annotations')
    if annotations is not None and not isinstance(annotations, dict):
        out.append(('bad_annotations', f'metadata.annotations is a {type(annotations).__name__}: ignored'))
    problem = priority_problem(obj)
    if problem is not None:
        raw = str((annotations or {}).get(PRIORITY_ANNOTATION))[:40]
        what = 'clamped to the int32 range' if problem == 'priority_out_of_range' else 'ignored'
        out.append((problem, f'priority annotation {raw!r} {what}'))
    status = obj.get('status')
    if status is not None and not isinstance(status, dict):
        out.append(('bad_status', f'status is a {type(status).__name__}: taken as empty'))
        return out
    status = status or {}
    unique_id = status.get('uniqueID')
    if unique_id is not None and not isinstance(unique_id, str):
        out.append(('bad_unique_id', f'status.uniqueID is a {type(unique_id).__name__}: indexed without it'))
    conditions = status.get('conditions')
    if conditions is not None and not (isinstance(conditions, list) and all(isinstance(c, dict) for c in conditions)):
        out.append(('bad_conditions', 'status.conditions is not a list of objects: taken as none'))
    return out


async def _in_daemon_thread(fn: Callable[[], Any]) -> Any:
    """`fn()` in a daemon thread of its own. Not the default pool: a GET against a hung API server keeps its
    thread past the caller's timeout (urllib3 retries a timed-out read), and such threads must neither take
    the default pool's few workers from everything else (Zone reads, vSphere calls) nor hold up the process
    exit. Bounded: the service runs at most `validation_concurrency` GETs at once, each thread ends after
    at most (retries + 1) request timeouts."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the caller gave up (timeout or cancel)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        result, error = None, None
        try:
            result = fn()
        except BaseException as e:
            error = e
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name='vmwatch-vm-get', daemon=True).start()
    return await future


async def fetch_vm(objects: Any, namespace: str, name: str, *, timeout_s: float = 10.0) -> Any:
    """A VirtualMachine read from the API (a dict), or None when it does not exist. Raises TimeoutError after
    `timeout_s`, and what the API raises for anything but a 404."""
    from kubernetes.client.exceptions import ApiException

    get = functools.partial(
        objects.get_namespaced_custom_object, VM_GROUP, VM_VERSION, namespace, VM_PLURAL, name,
        _request_timeout=timeout_s,
    )  # fmt: skip
    try:
        return await asyncio.wait_for(_in_daemon_thread(get), timeout_s)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    except TimeoutError:
        raise TimeoutError(f'GET virtualmachine {namespace}/{name}: no answer within {timeout_s:g} s') from None


async def fetch_vm_entry(
    objects: Any, namespace: str, name: str, *, timeout_s: float = 10.0
) -> tuple[str, bool, int] | None:
    """(unique_id, deleting, priority) of a VirtualMachine read from the API (None when it does not exist):
    what validation uses before the index has synced. Raises TimeoutError after `timeout_s`."""
    obj = await fetch_vm(objects, namespace, name, timeout_s=timeout_s)
    if obj is None:
        return None
    return vm_entry(obj) if isinstance(obj, dict) else ('', False, PRIORITY_GENERIC)
