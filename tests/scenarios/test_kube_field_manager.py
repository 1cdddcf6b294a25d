# SPDX-License-Identifier: Apache-2.0
"""Every write vmwatch makes to a real kube-apiserver carries the field manager `vmwatch` (issue 14): the Lease
(create, renew, release), a Zone's finalizers, the annotate sink's annotation and the checkpoint ConfigMaps.
The API server records the manager of each write in `metadata.managedFields`; a write without one shows up
as the client's default manager instead."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client

from vmwatch.kube.index import VM_GROUP, VM_PLURAL, VM_VERSION
from vmwatch.kube.leader import LeaderElector, LeaseSettings
from vmwatch.kube.sinks import AnnotateSink
from vmwatch.kube.zones import ZONE_GROUP, ZONE_PLURAL, ZONE_VERSION, patch_finalizers
from vmwatch.queue import WorkQueue
from vmwatch.settings import FIELD_MANAGER, FINALIZER


def managers(obj: Any) -> set[str]:
    """The field managers the API server recorded on an object (a dict or a client model)."""
    if isinstance(obj, dict):
        return {mf['manager'] for mf in obj['metadata'].get('managedFields') or []}
    return {mf.manager for mf in obj.metadata.managed_fields or []}


def test_every_write_uses_the_vmwatch_field_manager(kube_api: Any, namespace: str) -> None:
    assert FIELD_MANAGER == 'vmwatch'
    objects = client.CustomObjectsApi(kube_api)
    objects.create_namespaced_custom_object(ZONE_GROUP, ZONE_VERSION, namespace, ZONE_PLURAL, {
        'apiVersion': f'{ZONE_GROUP}/{ZONE_VERSION}', 'kind': 'Zone',
        'metadata': {'name': 'zone-1', 'namespace': namespace},
        'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'a'},
                 'managedVMs': {'folderMoID': 'group-v1'}},
    }, field_manager='test-setup')  # fmt: skip
    objects.create_namespaced_custom_object(VM_GROUP, VM_VERSION, namespace, VM_PLURAL, {
        'apiVersion': f'{VM_GROUP}/{VM_VERSION}', 'kind': 'VirtualMachine',
        'metadata': {'name': 'vm-1', 'namespace': namespace}, 'spec': {'powerState': 'PoweredOff'},
    }, field_manager='test-setup')  # fmt: skip

    async def writes() -> None:
        zone = objects.get_namespaced_custom_object(ZONE_GROUP, ZONE_VERSION, namespace, ZONE_PLURAL, 'zone-1')
        await patch_finalizers(objects, zone, [FINALIZER])
        queue = WorkQueue()
        queue.add((namespace, 'vm-1'))
        sink = AnnotateSink(kube_api)
        task = asyncio.ensure_future(sink.run(queue))
        await asyncio.wait_for(queue.shutdown(drain=True), 20)
        await task
        assert sink.patched == 1
        settings = LeaseSettings(lease_duration_s=3, renew_deadline_s=2, retry_period_s=0.2)
        elector = LeaderElector(kube_api, namespace=namespace, name='fm-lease', settings=settings)

        async def lead() -> None:
            await asyncio.sleep(0.5)  # renewed at least once meanwhile
            elector.stop()  # released on the way out

        await asyncio.wait_for(elector.run(lead), 20)
        assert elector.transitions == 1

    asyncio.run(writes())
    zone = objects.get_namespaced_custom_object(ZONE_GROUP, ZONE_VERSION, namespace, ZONE_PLURAL, 'zone-1')
    assert zone['metadata']['finalizers'] == [FINALIZER]
    assert managers(zone) == {'test-setup', 'vmwatch'}
    vm = objects.get_namespaced_custom_object(VM_GROUP, VM_VERSION, namespace, VM_PLURAL, 'vm-1')
    assert managers(vm) == {'test-setup', 'vmwatch'}
    lease = client.CoordinationV1Api(kube_api).read_namespaced_lease('fm-lease', namespace)
    assert lease.spec.holder_identity is None  # released
    assert managers(lease) == {'vmwatch'}
