# SPDX-License-Identifier: Apache-2.0
"""The annotate sink against a real kube-apiserver: a signal changes the annotation on the VirtualMachine."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client

from vmwatch.kube.index import VM_GROUP, VM_PLURAL, VM_VERSION
from vmwatch.kube.sinks import SIGNAL_ANNOTATION, AnnotateSink
from vmwatch.queue import WorkQueue


def annotations(api: Any, ns: str, name: str) -> dict[str, str]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(VM_GROUP, VM_VERSION, ns, VM_PLURAL, name)
    result: dict[str, str] = obj['metadata'].get('annotations') or {}
    return result


def test_annotate_sink_signals_the_virtual_machine(kube_api: Any, namespace: str) -> None:
    objs = client.CustomObjectsApi(kube_api)
    body = {
        'apiVersion': f'{VM_GROUP}/{VM_VERSION}',
        'kind': 'VirtualMachine',
        'metadata': {'name': 'vm-1', 'namespace': namespace, 'annotations': {'keep': 'me'}},
        'spec': {'powerState': 'PoweredOff'},
    }
    objs.create_namespaced_custom_object(VM_GROUP, VM_VERSION, namespace, VM_PLURAL, body)

    async def main() -> AnnotateSink:
        q = WorkQueue()
        sink = AnnotateSink(kube_api)
        for priority in range(10):  # a burst for one VM: coalesced into one patch
            q.add((namespace, 'vm-1'), priority=priority)
        q.add((namespace, 'no-such-vm'))  # gone: dropped, not retried
        task = asyncio.ensure_future(sink.run(q))
        await asyncio.wait_for(q.shutdown(drain=True), 20)
        await task
        return sink

    sink = asyncio.run(main())
    assert (sink.patched, sink.gone, sink.failed) == (1, 1, 0)
    first = annotations(kube_api, namespace, 'vm-1')
    assert first['keep'] == 'me' and first[SIGNAL_ANNOTATION].endswith('Z')

    async def again() -> None:  # a later signal changes the value, so the object changes again
        q = WorkQueue()
        q.add((namespace, 'vm-1'))
        task = asyncio.ensure_future(sink.run(q))
        await asyncio.wait_for(q.shutdown(drain=True), 20)
        await task

    asyncio.run(again())
    second = annotations(kube_api, namespace, 'vm-1')
    assert second[SIGNAL_ANNOTATION] > first[SIGNAL_ANNOTATION]
