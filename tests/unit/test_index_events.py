# SPDX-License-Identifier: Apache-2.0
"""The VirtualMachine index's event handling (no API server: events are fed by hand into the real Rust Index)."""

from __future__ import annotations

from typing import Any

import pytest

from vmwatch._vmwatch import Index
from vmwatch.kube import listwatch
from vmwatch.kube.index import VirtualMachineIndex
from vmwatch.kube.priority import PRIORITY_CREATING, PRIORITY_DELETING, PRIORITY_GENERIC


def vm(ns: str, name: str, rv: int, *, uid: str = '', created: bool = True, deleting: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {
        'metadata': {'namespace': ns, 'name': name, 'resourceVersion': str(rv)},
        'spec': {'powerState': 'PoweredOff', 'promoteDisksMode': 'Disabled'},
        'status': {'powerState': 'PoweredOff', 'conditions': [{'type': 'VirtualMachineCreated', 'status': 'True'}]},
    }
    if uid:
        obj['status']['uniqueID'] = uid
    if not created:
        obj['status']['conditions'] = []
    if deleting:
        obj['metadata']['deletionTimestamp'] = '2026-01-01T00:00:00Z'
    return obj


@pytest.fixture
def idx() -> VirtualMachineIndex:
    return VirtualMachineIndex(api=None, index=Index())  # the real Rust index: it is cheap


def test_list_then_events(idx: VirtualMachineIndex) -> None:
    idx.apply_list([vm('a', 'vm1', 5, uid='vm-1'), vm('a', 'vm2', 6, created=False)], '10')
    assert idx.synced and idx.resource_version == '10' and len(idx) == 2
    assert idx.get('a', 'vm1') == ('vm-1', False, PRIORITY_GENERIC)  # kind/apiVersion filled in for list items
    assert idx.get('a', 'vm2') == ('', False, PRIORITY_CREATING)
    assert idx.by_unique_id('vm-1') == ('a', 'vm1')

    idx.apply_event({'type': 'MODIFIED', 'object': vm('a', 'vm2', 11, uid='vm-2', deleting=True)})
    assert idx.get('a', 'vm2') == ('vm-2', True, PRIORITY_DELETING)
    idx.apply_event({'type': 'DELETED', 'object': vm('a', 'vm1', 12)})
    assert idx.get('a', 'vm1') is None
    idx.apply_event({'type': 'BOOKMARK', 'object': {'metadata': {'resourceVersion': '20'}}})
    assert idx.resource_version == '20'
    assert idx.wait_for_resource_version('20', timeout_s=0) and not idx.wait_for_resource_version('21', timeout_s=0)
    assert idx.stats.events == 3


def test_relist_removes_what_is_gone_and_keeps_the_rest(idx: VirtualMachineIndex) -> None:
    idx.apply_list([vm('a', 'vm1', 1), vm('a', 'vm2', 2), vm('b', 'vm1', 3)], '3')
    idx.apply_list([vm('a', 'vm2', 2), vm('c', 'new', 4, uid='vm-9')], '9')
    assert sorted(idx.index.keys()) == [('a', 'vm2'), ('c', 'new')]
    assert idx.by_unique_id('vm-9') == ('c', 'new') and idx.stats.lists == 2


def test_error_events(idx: VirtualMachineIndex) -> None:
    gone = {'type': 'ERROR', 'object': {'kind': 'Status', 'code': 410, 'reason': 'Expired', 'message': 'too old'}}
    with pytest.raises(listwatch.Gone):
        idx.apply_event(gone)
    with pytest.raises(listwatch.StreamError):
        idx.apply_event({'type': 'ERROR', 'object': {'code': 500, 'message': 'boom'}})
    with pytest.raises(listwatch.StreamError):
        idx.apply_event({'type': 'ADDED'})


def test_lines_are_split_across_chunks(idx: VirtualMachineIndex) -> None:
    class Response:
        def stream(self, amt: int) -> list[bytes]:
            return [b'{"a":', b'1}\n{"b"', b':2}\n\n{"c":3}']

    assert list(idx._lines(Response())) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
