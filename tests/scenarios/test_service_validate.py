# SPDX-License-Identifier: Apache-2.0
"""Spec 4.5 result validation against the real kube-apiserver when the index lags or the API fails.

The index follows a watch, so it can be behind the API: a VirtualMachine created a moment before
its vSphere change is not in it yet. That signal must still become a request (the API decides);
only a VM the API does not have is dropped; an API that cannot answer must not lose the signal.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from vmwatch.devenv import free_port
from vmwatch.kube.priority import PRIORITY_GENERIC
from vmwatch.service import Service
from vmwatch.settings import ServiceSettings

pytestmark = pytest.mark.anyio

VMS = ('vmoperator.vmware.com', 'v1alpha6', 'virtualmachines')


def signal(moref: str, namespace: str, name: str) -> Any:
    """What _handle reads of a vmwatch Signal (the core's Signal has no Python constructor)."""
    return SimpleNamespace(
        moref=moref, namespace=namespace, name=name, verified=False, deleting=False, reason='changed'
    )


async def handle(service: Service, sig: Any) -> None:
    """Hand one signal to the service and wait until it is enqueued or dropped (a GET runs in a task of its own)."""
    await service.shard.intake.handle(sig)
    while service.validating:
        await asyncio.sleep(0.01)


@pytest.fixture
def lagging(kube_api: client.ApiClient) -> Iterator[Any]:
    """A Service whose index listed and synced, then stopped following the watch (a lagging index)."""
    namespace = 'val-' + uuid.uuid4().hex[:8]
    client.CoreV1Api(kube_api).create_namespace({'metadata': {'name': namespace}})
    service = Service(ServiceSettings(leader_elect=False), api=kube_api, disabled=False, zone_controller=False)
    service.index.start()
    assert service.index.wait_synced(30)
    service.index.stop()
    assert service.index.synced  # synced, and from now on behind the API
    objects = client.CustomObjectsApi(kube_api)
    yield service, objects, namespace
    for obj in objects.list_namespaced_custom_object(*VMS[:2], namespace, VMS[2])['items']:
        objects.delete_namespaced_custom_object(*VMS[:2], namespace, VMS[2], obj['metadata']['name'])


def _create_vm(objects: client.CustomObjectsApi, namespace: str, name: str, power: str = 'PoweredOn') -> None:
    objects.create_namespaced_custom_object(*VMS[:2], namespace, VMS[2], {
        'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
        'metadata': {'name': name, 'namespace': namespace}, 'spec': {'powerState': power},
    })  # fmt: skip


async def test_a_vm_the_index_has_not_seen_yet_is_validated_by_the_api(lagging: Any) -> None:
    service, objects, namespace = lagging
    _create_vm(objects, namespace, 'new-vm')
    assert service.index.get(namespace, 'new-vm') is None  # the index has not seen it
    await handle(service, signal('vm-1', namespace, 'new-vm'))
    assert len(service.queue) == 1
    assert service.metrics.validation_gets.labels(vcenter='default')._value.get() == 1
    assert service.metrics.skipped.labels(vcenter='default', reason='unvalidated')._value.get() == 0


async def test_a_vm_the_api_does_not_have_is_dropped(lagging: Any) -> None:
    service, _objects, namespace = lagging
    await handle(service, signal('vm-2', namespace, 'not-in-this-cluster'))
    assert len(service.queue) == 0
    assert service.metrics.skipped.labels(vcenter='default', reason='unvalidated')._value.get() == 1


async def test_a_vm_being_deleted_is_not_enqueued(lagging: Any) -> None:
    service, objects, namespace = lagging
    _create_vm(objects, namespace, 'going')
    objects.patch_namespaced_custom_object(*VMS[:2], namespace, VMS[2], 'going',
                                           {'metadata': {'finalizers': ['test/hold']}},
                                           _content_type='application/merge-patch+json')  # fmt: skip
    objects.delete_namespaced_custom_object(*VMS[:2], namespace, VMS[2], 'going')
    await handle(service, signal('vm-3', namespace, 'going'))
    assert len(service.queue) == 0
    assert service.metrics.skipped.labels(vcenter='default', reason='deleting')._value.get() == 1
    objects.patch_namespaced_custom_object(*VMS[:2], namespace, VMS[2], 'going', {'metadata': {'finalizers': None}},
                                           _content_type='application/merge-patch+json')  # fmt: skip


async def test_an_api_that_cannot_answer_does_not_lose_the_signal(
    lagging: Any, caplog: pytest.LogCaptureFixture
) -> None:
    service, _objects, namespace = lagging
    dead = client.Configuration()
    dead.host = f'https://127.0.0.1:{free_port()}'  # nothing listens there
    dead.retries = False
    with client.ApiClient(dead) as api:
        service.shard.intake.objects = client.CustomObjectsApi(api)
        await handle(service, signal('vm-4', namespace, 'unknown'))
    assert len(service.queue) == 1
    assert await service.queue.get() == (namespace, 'unknown')
    assert service.queue.priority_of((namespace, 'unknown')) == PRIORITY_GENERIC
    assert any('enqueued unvalidated' in r.getMessage() for r in caplog.records)
