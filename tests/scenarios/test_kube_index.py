# SPDX-License-Identifier: Apache-2.0
"""The VirtualMachine index against a real kube-apiserver: list, watch, deletion, 410 Gone -> relist."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from vmwatch._vmwatch import Index
from vmwatch.kube.index import VM_GROUP, VM_PLURAL, VM_VERSION, VirtualMachineIndex
from vmwatch.kube.priority import PRIORITY_CREATING, PRIORITY_DELETING, PRIORITY_GENERIC

TIMEOUT_S = 20.0


def create_vm(api: Any, ns: str, name: str, *, created: bool = True, uid: str = '') -> str:
    """Create a VirtualMachine (and its status); returns the last resourceVersion written."""
    objs = client.CustomObjectsApi(api)
    body = {
        'apiVersion': f'{VM_GROUP}/{VM_VERSION}',
        'kind': 'VirtualMachine',
        'metadata': {'name': name, 'namespace': ns},
        'spec': {'powerState': 'PoweredOff', 'promoteDisksMode': 'Disabled'},
    }
    out = objs.create_namespaced_custom_object(VM_GROUP, VM_VERSION, ns, VM_PLURAL, body)
    if not created and not uid:
        return str(out['metadata']['resourceVersion'])
    return set_status(api, ns, name, created=created, uid=uid)


def set_status(api: Any, ns: str, name: str, *, created: bool = True, uid: str = '') -> str:
    status: dict[str, Any] = {
        'powerState': 'PoweredOff',
        'conditions': [
            {
                'type': 'VirtualMachineCreated',
                'status': 'True' if created else 'False',
                'lastTransitionTime': '2026-01-01T00:00:00Z',
                'reason': 'Test',
                'message': '',
            }
        ],
    }
    if uid:
        status['uniqueID'] = uid
    out = client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        VM_GROUP, VM_VERSION, ns, VM_PLURAL, name, {'status': status}
    )
    return str(out['metadata']['resourceVersion'])


def patch_vm(api: Any, ns: str, name: str, patch: dict[str, Any]) -> str:
    out = client.CustomObjectsApi(api).patch_namespaced_custom_object(VM_GROUP, VM_VERSION, ns, VM_PLURAL, name, patch)
    return str(out['metadata']['resourceVersion'])


def delete_vm(api: Any, ns: str, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object(VM_GROUP, VM_VERSION, ns, VM_PLURAL, name)


def current_rv(api: Any, ns: str) -> str:
    out = client.CustomObjectsApi(api).list_namespaced_custom_object(VM_GROUP, VM_VERSION, ns, VM_PLURAL, limit=1)
    return str(out['metadata']['resourceVersion'])


def compact_etcd(etcd_port: int) -> int:
    """Compact etcd at its current revision (through etcd's JSON gateway), so older resourceVersions are gone."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f'http://127.0.0.1:{etcd_port}{path}', data=json.dumps(body).encode(), method='POST'
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.load(response)
            return result

    revision = int(post('/v3/kv/range', {'key': 'AA=='})['header']['revision'])
    post('/v3/kv/compaction', {'revision': str(revision), 'physical': True})
    return revision


def test_index_lists_then_follows_every_change(kube_api: Any, namespace: str) -> None:
    api, ns = kube_api, namespace
    create_vm(api, ns, 'listed', uid='vm-101')
    with VirtualMachineIndex(api, index=Index()) as idx:
        assert idx.wait_synced(TIMEOUT_S)
        assert idx.get(ns, 'listed') == ('vm-101', False, PRIORITY_GENERIC)
        assert idx.by_unique_id('vm-101') == (ns, 'listed')

        rv = create_vm(api, ns, 'watched', created=False)
        assert idx.wait_for_resource_version(rv, TIMEOUT_S)
        assert idx.get(ns, 'watched') == ('', False, PRIORITY_CREATING)

        rv = set_status(api, ns, 'watched', uid='vm-102')
        assert idx.wait_for_resource_version(rv, TIMEOUT_S)
        assert idx.get(ns, 'watched') == ('vm-102', False, PRIORITY_GENERIC)

        patch_vm(api, ns, 'watched', {'metadata': {'finalizers': ['test/hold']}})
        delete_vm(api, ns, 'watched')
        assert idx.wait_for_resource_version(current_rv(api, ns), TIMEOUT_S)
        assert idx.get(ns, 'watched') == ('vm-102', True, PRIORITY_DELETING)

        patch_vm(api, ns, 'watched', {'metadata': {'finalizers': None}})
        assert idx.wait_for_resource_version(current_rv(api, ns), TIMEOUT_S)
        assert idx.get(ns, 'watched') is None and idx.by_unique_id('vm-102') is None
        assert idx.stats.errors == 0 and idx.stats.lists == 1


def test_vms_are_indexed_per_vcenter_and_listed_once_after_the_zones(kube_api: Any, namespace: str) -> None:
    """Two VirtualMachines with the same uniqueID on two vCenters land in two indexes (issue 12). The Zone changes
    seen while the first list waits for the Zones cost no second list; a later change of the map relists."""
    api, ns = kube_api, namespace
    create_vm(api, ns, 'on-a', uid='vm-7')
    create_vm(api, ns, 'on-b', uid='vm-7')
    routes = {'on-a': 'a', 'on-b': 'b'}
    holder: list[VirtualMachineIndex] = []

    def before_list() -> None:  # what the Zone cache's first list does meanwhile: the Zone -> vCenter map changes
        holder[0].request_relist()

    idx = VirtualMachineIndex(api, indexes={'a': Index(), 'b': Index()}, before_list=before_list,
                              route=lambda obj: routes.get(obj['metadata']['name']))  # fmt: skip
    holder.append(idx)
    with idx:
        assert idx.wait_synced(TIMEOUT_S)
        time.sleep(0.5)
        assert idx.stats.lists == 1
        assert idx.indexes['a'].by_unique_id('vm-7') == (ns, 'on-a')
        assert idx.indexes['b'].by_unique_id('vm-7') == (ns, 'on-b')
        assert idx.get(ns, 'on-a', vcenter='b') is None and idx.owner(ns, 'on-a') == 'a'
        routes['on-a'] = 'b'  # its Zone now names vCenter b
        idx.request_relist()
        deadline = time.monotonic() + TIMEOUT_S
        while idx.stats.lists < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert idx.stats.lists == 2
        assert idx.owner(ns, 'on-a') == 'b' and idx.indexes['a'].get(ns, 'on-a') is None
        assert idx.indexes['b'].by_unique_id('vm-7') is None  # two VMs claim it there now: ambiguous


def test_410_gone_relists_without_losing_or_keeping_a_vm(kube_api: Any, kube_server: Any, namespace: str) -> None:
    api, ns = kube_api, namespace
    for name in ('kept', 'deleted', 'changed'):
        create_vm(api, ns, name)
    idx = VirtualMachineIndex(api, index=Index(), backoff_max_s=1.0)
    idx.start()
    try:
        assert idx.wait_synced(TIMEOUT_S)
        assert idx.get(ns, 'deleted') is not None
        idx.stop()  # the watch is down while these happen:
        delete_vm(api, ns, 'deleted')
        create_vm(api, ns, 'created', uid='vm-201')
        set_status(api, ns, 'changed', created=False)
        # make the index's resourceVersion too old for both etcd and the apiserver's watch cache
        compact_etcd(kube_server.etcd_port)
        kube_server.restart_apiserver()

        idx.start()  # resumes from the old resourceVersion -> 410 -> relist
        deadline = time.monotonic() + TIMEOUT_S
        while idx.stats.lists < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert idx.stats.relists_gone >= 1 and idx.stats.lists >= 2
        assert idx.get(ns, 'deleted') is None  # no stale VM kept
        assert idx.get(ns, 'created') == ('vm-201', False, PRIORITY_GENERIC)  # no VM lost
        assert idx.get(ns, 'changed') == ('', False, PRIORITY_CREATING)
        assert idx.get(ns, 'kept') is not None

        rv = create_vm(api, ns, 'after')  # and the watch goes on
        assert idx.wait_for_resource_version(rv, TIMEOUT_S)
        assert idx.get(ns, 'after') is not None
    finally:
        idx.stop()


def test_stop_is_prompt_while_the_watch_is_idle(kube_api: Any) -> None:
    idx = VirtualMachineIndex(kube_api, index=Index())
    idx.start()
    assert idx.wait_synced(TIMEOUT_S)
    time.sleep(0.2)  # the watch request is open and blocked on a read
    t0 = time.monotonic()
    idx.stop()
    assert time.monotonic() - t0 < 2.0
    assert idx._thread is not None and not idx._thread.is_alive()
    with pytest.raises(ApiException):  # the client still works after the stream was shut down
        client.CoreV1Api(kube_api).read_namespace('no-such-namespace-xyz')
