# SPDX-License-Identifier: Apache-2.0
"""A service running against the real vcsim and kube-apiserver, with helpers to drive and observe it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes import client

from vmwatch.devenv import VcsimServer
from vmwatch.queue import Key
from vmwatch.service import Service
from vmwatch.settings import FINALIZER, ServiceSettings
from vmwatch.vsphere import Endpoint, MoRef, Session
from vmwatch.vsphere import inventory as inv

ZONES = ('topology.tanzu.vmware.com', 'v1alpha1', 'zones')
VMS = ('vmoperator.vmware.com', 'v1alpha6', 'virtualmachines')


@dataclass
class ServiceEnv:
    api: client.ApiClient
    vc: VcsimServer
    session: Session  # the test's own vSphere session (the "other client")
    namespace: str
    service: Service
    received: list[Key] = field(default_factory=list)
    priorities: list[tuple[Key, int | None]] = field(default_factory=list)  # each request as the queue handed it out

    @property
    def objects(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    # -- Kubernetes -----------------------------------------------------------------------------------
    def create_zone(self, name: str, folder: str, *, finalizers: list[str] | None = None) -> None:
        md: dict[str, Any] = {'name': name, 'namespace': self.namespace}
        if finalizers:
            md['finalizers'] = finalizers
        body = {
            'apiVersion': 'topology.tanzu.vmware.com/v1alpha1',
            'kind': 'Zone',
            'metadata': md,
            'spec': {
                'availabilityZoneReference': {'apiVersion': 'v1', 'name': name},
                'managedVMs': {'folderMoID': folder},
            },
        }
        self.objects.create_namespaced_custom_object(*ZONES[:2], self.namespace, ZONES[2], body)

    def zone(self, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.objects.get_namespaced_custom_object(*ZONES[:2], self.namespace, ZONES[2], name)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    def patch_zone(self, name: str, body: dict[str, Any]) -> None:
        self.objects.patch_namespaced_custom_object(
            *ZONES[:2], self.namespace, ZONES[2], name, body, _content_type='application/merge-patch+json'
        )

    def delete_zone(self, name: str) -> None:
        self.objects.delete_namespaced_custom_object(*ZONES[:2], self.namespace, ZONES[2], name)

    def create_vm(self, name: str, *, unique_id: str = '', finalizers: list[str] | None = None) -> None:
        md: dict[str, Any] = {'name': name, 'namespace': self.namespace}
        if finalizers:
            md['finalizers'] = finalizers
        body = {'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine', 'metadata': md, 'spec': {}}
        self.objects.create_namespaced_custom_object(*VMS[:2], self.namespace, VMS[2], body)
        if unique_id:
            self.objects.patch_namespaced_custom_object_status(
                *VMS[:2], self.namespace, VMS[2], name, {'status': {'uniqueID': unique_id}}
            )

    def delete_vm(self, name: str) -> None:
        self.objects.delete_namespaced_custom_object(*VMS[:2], self.namespace, VMS[2], name)

    async def index_has(self, name: str, predicate: Callable[[tuple[str, bool, int]], bool] = lambda e: True) -> None:
        await until(lambda: (e := self.service.index.get(self.namespace, name)) is not None and predicate(e),
                    f'VM {name} in the index')  # fmt: skip

    # -- vSphere --------------------------------------------------------------------------------------
    async def vsphere(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, self.session, *args)

    # -- observing ------------------------------------------------------------------------------------
    async def settle(self) -> None:
        """Every change made so far has been processed by the watcher and the requests delivered."""
        await until(lambda: self.service.shard.slot.watcher is not None, 'a running watcher')
        watcher = self.service.shard.slot.watcher
        assert watcher is not None
        await watcher.sync(timeout_s=30)
        service = self.service
        await until(lambda: watcher.pending == 0 and service.validating == 0 and len(service.queue) == 0
                    and service.queue.in_flight == 0, 'the hand-off, validation and the queue to drain')  # fmt: skip

    async def expect_request(self, name: str, *, after: int = 0, timeout_s: float = 15.0) -> None:
        key = (self.namespace, name)
        await until(lambda: key in self.received[after:], f'a request for {key}', timeout_s=timeout_s)

    async def expect_none(self, name: str, *, after: int) -> None:
        await self.settle()
        assert (self.namespace, name) not in self.received[after:], self.received[after:]


async def until(predicate: Callable[[], bool], what: str, *, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout_s} s waiting for {what}')
        await asyncio.sleep(0.02)


def settings_for(vc: VcsimServer, **overrides: Any) -> ServiceSettings:
    base = ServiceSettings(
        vc_url=vc.url,
        vc_user=vc.user,
        vc_password_file=vc.password_file,
        vc_ca_file=vc.ca_file,
        leader_elect=False,
        max_wait_s=5,
        restart_initial_s=0.05,
        restart_max_s=0.5,
        restart_reset_s=5.0,
    )
    return replace(base, **overrides).validate()


@asynccontextmanager
async def service_env(
    api: client.ApiClient, vc: VcsimServer, *, zone_controller: bool = True, **overrides: Any
) -> AsyncIterator[ServiceEnv]:
    namespace = 'ns-' + uuid.uuid4().hex[:8]
    client.CoreV1Api(api).create_namespace({'metadata': {'name': namespace}})
    session = Session(Endpoint(url=vc.url, user=vc.user, password_file=vc.password_file, ca_file=vc.ca_file))
    await asyncio.to_thread(session.login)
    service = Service(settings_for(vc, **overrides), api=api, disabled=False, zone_controller=zone_controller)
    env = ServiceEnv(api=api, vc=vc, session=session, namespace=namespace, service=service)

    async def consume() -> None:
        async for key in service.queue:
            env.received.append(key)
            env.priorities.append((key, service.queue.priority_of(key)))
            service.queue.done(key)

    await service.start()
    consumer = asyncio.create_task(consume())
    try:
        yield env
    finally:
        await service.stop()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await asyncio.to_thread(session.logout)
        # the API server is shared by the session's tests and has no namespace controller: clean up by hand
        for group, version, plural in (ZONES, VMS):
            for obj in env.objects.list_namespaced_custom_object(group, version, namespace, plural)['items']:
                name = obj['metadata']['name']
                if obj['metadata'].get('finalizers'):
                    env.objects.patch_namespaced_custom_object(
                        group, version, namespace, plural, name, {'metadata': {'finalizers': None}},
                        _content_type='application/merge-patch+json',
                    )  # fmt: skip
                if not obj['metadata'].get('deletionTimestamp'):
                    env.objects.delete_namespaced_custom_object(group, version, namespace, plural, name)


async def named_vm_in_folder(env: ServiceEnv, folder: MoRef, name: str = 'my-vm-1') -> MoRef:
    """Spec 6.4 "named VM": a k8s VM without uniqueID, vSphere VM[0] moved into `folder`, named by extraConfig."""
    env.create_vm(name)
    await env.index_has(name)
    vm = (await env.vsphere(inv.vms_under, await env.vsphere(inv.vm_folder)))[0][0]
    await env.vsphere(inv.move_into, folder, [vm])
    await env.vsphere(inv.set_extra_config, vm, {'vmservice.namespacedName': f'{env.namespace}/{name}'})
    return vm


def has_only_our_finalizer(zone: dict[str, Any] | None) -> bool:
    return zone is not None and zone['metadata'].get('finalizers') == [FINALIZER]
