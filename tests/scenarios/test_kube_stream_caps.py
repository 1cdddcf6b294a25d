# SPDX-License-Identifier: Apache-2.0
"""Watch events and list pages are read with a size cap (issue 11, C3), against a real kube-apiserver.

The caps are set low here (a few KiB) so that an ordinary VirtualMachine with a large annotation passes them;
the defaults (64 MiB per event, 512 MiB per page) are far above what etcd stores (~1.5 MiB per object).
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client

from vmwatch.kube.index import VM_GROUP, VM_PLURAL, VM_VERSION, VirtualMachineIndex
from vmwatch.kube.listwatch import MAX_EVENT_BYTES, MAX_PAGE_BYTES


def create_vm(api: Any, ns: str, name: str, *, note_bytes: int = 0) -> None:
    metadata: dict[str, Any] = {'name': name, 'namespace': ns}
    if note_bytes:
        metadata['annotations'] = {'example.com/note': 'x' * note_bytes}
    body = {'apiVersion': f'{VM_GROUP}/{VM_VERSION}', 'kind': 'VirtualMachine', 'metadata': metadata, 'spec': {}}
    client.CustomObjectsApi(api).create_namespaced_custom_object(VM_GROUP, VM_VERSION, ns, VM_PLURAL, body)


def until(cond: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f'timed out waiting for {what}'
        time.sleep(0.05)


def test_a_watch_event_over_the_cap_restarts_the_watch_and_loses_nothing(kube_api: Any, namespace: str) -> None:
    ix = VirtualMachineIndex(kube_api, index=None, backoff_max_s=0.5)
    ix.max_event_bytes = 16 << 10
    with ix:
        assert ix.wait_synced(20)
        create_vm(kube_api, namespace, 'big', note_bytes=32 << 10)  # its ADDED event is twice the cap
        create_vm(kube_api, namespace, 'small')
        until(lambda: ix.get(namespace, 'big') is not None and ix.get(namespace, 'small') is not None, 'both VMs')
        assert ix.stats.errors >= 1 and 'an event over 16384 bytes' in str(ix.last_error)


def test_a_list_page_over_the_cap_fails_the_list_until_it_fits(kube_api: Any, namespace: str) -> None:
    create_vm(kube_api, namespace, 'vm-a', note_bytes=8 << 10)
    ix = VirtualMachineIndex(kube_api, index=None, backoff_max_s=0.5)
    ix.max_page_bytes = 4 << 10
    with ix:
        until(lambda: ix.stats.errors >= 1, 'a failed list')
        assert not ix.synced and 'a page over 4096 bytes' in str(ix.last_error)
        ix.max_page_bytes = MAX_PAGE_BYTES
        until(lambda: ix.get(namespace, 'vm-a') is not None, 'the list once the page fits')


def test_the_default_caps_are_far_above_any_object() -> None:
    assert MAX_EVENT_BYTES >= 32 * 1536 * 1024 and MAX_PAGE_BYTES >= 500 * 1024 * 1024
