# SPDX-License-Identifier: Apache-2.0
"""The watcher's server-side objects: a private PropertyCollector, one ListView, one ContainerView per
watched container, and one PropertyFilter over ListView -> ContainerView -> VirtualMachine (spec 2.5).

Adding or removing a container only changes the ListView (ModifyListView), never the filter. Owners are
reference-counted per container (spec 1.2). Everything created is destroyed by `close()`, also when
`open()` fails half-way. All methods block; the watcher runs them in a thread, one at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vmwatch.vsphere._pyvmomi import PC, vim
from vmwatch.vsphere.errors import NotAuthenticatedError, TransportError, VsphereError, VsphereFault
from vmwatch.vsphere.refs import MoRef, RefLike
from vmwatch.vsphere.session import Session

__all__ = ['Views', 'filter_spec']

log = logging.getLogger('vmwatch.vsphere')


def filter_spec(list_view: Any, watched_paths: Sequence[str]) -> Any:
    """The PropertyFilterSpec of spec 2.5: ListView (skipped) -> its ContainerViews -> their VMs."""
    return PC.FilterSpec(
        objectSet=[
            PC.ObjectSpec(
                obj=list_view,
                skip=True,
                selectSet=[
                    PC.TraversalSpec(
                        name='', type=vim.view.ListView, path='view', selectSet=[PC.SelectionSpec(name='visitViews')]
                    ),
                    PC.TraversalSpec(name='visitViews', type=vim.view.ContainerView, path='view'),
                ],
            )
        ],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=list(watched_paths))],
    )


class Views:
    """Collector, ListView, ContainerViews and filter of one watcher, with per-owner reference counts."""

    def __init__(self, session: Session, *, watched_paths: Sequence[str]) -> None:
        self._session = session
        self._paths = tuple(watched_paths)
        self._lock = threading.Lock()
        self._collector: Any = None
        self._filter: Any = None
        self._list_view: Any = None
        self._views: dict[MoRef, Any] = {}  # container -> its ContainerView
        self._owners: dict[MoRef, set[str]] = {}  # container -> owner IDs; a key here has a view
        self._closed = False

    @property
    def collector_id(self) -> str:
        """The private PropertyCollector's MoRef value (the `_this` of WaitForUpdatesEx)."""
        if self._collector is None:
            raise RuntimeError('views are not open')
        return str(self._collector._moId)

    def owners(self) -> dict[MoRef, frozenset[str]]:
        """A snapshot: watched container -> its owner IDs."""
        with self._lock:
            return {ref: frozenset(ids) for ref, ids in self._owners.items()}

    def open(self, containers: Mapping[MoRef, Iterable[str]]) -> None:
        """Create everything, watching `containers` (container -> owner IDs) from the start.

        On failure, whatever was created is destroyed before the error propagates.
        """
        initial = {MoRef.parse(ref): set(ids) for ref, ids in containers.items()}
        s = self._session
        content = s.content
        with self._lock:
            if self._closed or self._collector is not None:
                raise RuntimeError('views can be opened once')
            try:
                self._collector = s.call('CreatePropertyCollector', content.propertyCollector.CreatePropertyCollector)
                for ref, ids in initial.items():
                    self._views[ref] = self._create_view(ref)
                    self._owners[ref] = ids
                self._list_view = s.call(
                    'CreateListView', content.viewManager.CreateListView, list(self._views.values())
                )
                spec = filter_spec(self._list_view, self._paths)
                self._filter = s.call('CreateFilter', self._collector.CreateFilter, spec, partialUpdates=False)
            except BaseException:
                self._destroy_all()
                raise
        log.debug('watching %d containers with collector %s', len(initial), self._collector._moId)

    def _create_view(self, ref: MoRef) -> Any:
        s = self._session
        return s.call(
            f'CreateContainerView({ref})',
            s.content.viewManager.CreateContainerView,
            s.managed_object(ref),
            [vim.VirtualMachine],
            True,
        )

    def add_owner(self, ref: RefLike, owner_id: str) -> bool:
        """Bookkeeping only: when `ref` is already watched, record `owner_id` and return True. False when
        adding needs vCenter (then call `add`), so a caller can skip pausing the wait for a no-op."""
        ref = MoRef.parse(ref)
        with self._lock:
            self._check_open()
            if ref not in self._views:
                return False
            self._owners[ref].add(owner_id)
            return True

    def drop_owner(self, ref: RefLike, owner_id: str) -> bool:
        """Bookkeeping only: True when removing `owner_id` from `ref` leaves vCenter as it is (unknown
        container or owner, or other owners remain; the owner is dropped). False: call `remove`."""
        ref = MoRef.parse(ref)
        with self._lock:
            self._check_open()
            owners = self._owners.get(ref)
            if owners is None or owner_id not in owners:
                return True
            if len(owners) > 1:
                owners.discard(owner_id)
                return True
            return False

    def add(self, ref: RefLike, owner_id: str) -> bool:
        """Watch `ref` on behalf of `owner_id`. True when vCenter was changed (the first owner)."""
        ref = MoRef.parse(ref)
        s = self._session
        with self._lock:
            self._check_open()
            if ref in self._views:
                self._owners[ref].add(owner_id)
                return False
            view = self._create_view(ref)
            try:
                unresolved = s.call(f'ModifyListView(add={ref})', self._list_view.ModifyListView, add=[view])
                if unresolved:
                    raise VsphereFault('ManagedObjectNotFound', f'the ListView did not take the view of {ref}')
            except VsphereError as e:
                try:
                    s.call(f'DestroyView({ref})', view.DestroyView)
                except VsphereError as d:
                    e.add_note(f'destroying the new ContainerView of {ref} also failed: {d}')
                raise
            self._views[ref] = view
            self._owners[ref] = {owner_id}
            return True

    def remove(self, ref: RefLike, owner_id: str) -> bool:
        """Drop `owner_id` from `ref`; the last owner stops the watch. True when vCenter was changed.

        Unknown containers and unknown owners are a no-op. If vCenter fails, the bookkeeping is kept so
        that a retry can finish the job.
        """
        ref = MoRef.parse(ref)
        s = self._session
        with self._lock:
            self._check_open()
            owners = self._owners.get(ref)
            if owners is None:
                return False
            if owner_id not in owners or len(owners) > 1:
                owners.discard(owner_id)
                return False
            view = self._views[ref]
            s.call(f'ModifyListView(remove={ref})', self._list_view.ModifyListView, remove=[view])
            s.call(f'DestroyView({ref})', view.DestroyView)
            del self._views[ref]
            del self._owners[ref]
            return True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError('views are closed')
        if self._list_view is None:
            raise RuntimeError('views are not open')

    def close(self) -> None:
        """Destroy the filter, the collector and every view. Idempotent; never raises for vCenter errors."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._destroy_all()

    def _destroy_all(self) -> None:
        s = self._session
        steps: list[tuple[str, Any]] = []
        if self._filter is not None:
            steps.append(('DestroyPropertyFilter', self._filter.DestroyPropertyFilter))
        if self._collector is not None:
            steps.append(('DestroyPropertyCollector', self._collector.DestroyPropertyCollector))
        if self._list_view is not None:
            steps.append(('DestroyView(ListView)', self._list_view.DestroyView))
        steps.extend((f'DestroyView({ref})', view.DestroyView) for ref, view in self._views.items())
        self._filter = self._list_view = None
        self._views.clear()
        self._owners.clear()
        session_gone = False
        for what, fn in steps:
            if session_gone:
                break  # session-scoped objects die with the session; no point in more round trips
            try:
                s.call(what, fn)
            except (NotAuthenticatedError, TransportError) as e:
                log.debug('%s: %s (the session is gone, so are its objects)', what, e)
                session_gone = True
            except VsphereError as e:
                log.warning('%s failed: %s', what, e)
        # keep _collector: collector_id stays readable for a wait that is still being cancelled
