# SPDX-License-Identifier: Apache-2.0
"""Only the Lease holder writes (issue 11 B4): two replicas of `vmwatch run` (its Replica, as the process
builds it) against the real kube-apiserver and vcsim, every write of each counted on its own ApiClient.

The standby keeps its Zone cache and VirtualMachine index warm and sends no PATCH/PUT/POST/DELETE, reconciles
no Zone (so no "no watcher" retries), and nobody sees a 409. When the holder dies, the standby takes over and
its Zone controller reconciles every Zone, also one created while nobody led.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException
from service_env import ZONES, settings_for, until

from vmwatch.devenv import KubeServer, VcsimServer
from vmwatch.kube.sinks import SIGNAL_ANNOTATION
from vmwatch.metrics import Metrics
from vmwatch.run_cmd import Replica
from vmwatch.settings import FINALIZER
from vmwatch.vsphere import Endpoint, MoRef, Session
from vmwatch.vsphere import inventory as inv

if TYPE_CHECKING:
    from conftest import Recorder

VMS = ('vmoperator.vmware.com', 'v1alpha6', 'virtualmachines')


class Writes:
    """Every request but GET an ApiClient sends, with the status it got: an observation of its real traffic."""

    def __init__(self, api: client.ApiClient) -> None:
        self.log: list[tuple[str, str, int]] = []
        rest: Any = api.rest_client  # every call of the client (typed APIs, call_api, watches) goes through it
        send: Callable[..., Any] = rest.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            try:
                response = send(method, url, *args, **kwargs)
            except ApiException as e:
                if method != 'GET':
                    self.log.append((method, url.split('?')[0], int(e.status or 0)))
                raise
            if method != 'GET':
                self.log.append((method, url.split('?')[0], int(response.status)))
            return response

        rest.request = request

    def conflicts(self) -> list[tuple[str, str, int]]:
        return [w for w in self.log if w[2] == 409]


def _zone(objects: Any, ns: str, name: str, folder: str) -> None:
    objects.create_namespaced_custom_object(*ZONES[:2], ns, ZONES[2], {
        'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone', 'metadata': {'name': name, 'namespace': ns},
        'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': name}, 'managedVMs': {'folderMoID': folder}},
    })  # fmt: skip


def _get(objects: Any, ns: str, kind: tuple[str, str, str], name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = objects.get_namespaced_custom_object(*kind[:2], ns, kind[2], name)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return obj


async def _until(predicate: Callable[[], bool], what: str, *, timeout_s: float = 30.0) -> None:
    """Poll a blocking predicate (it asks the API server) in a thread: the replicas share this event loop."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout_s} s waiting for {what}')
        await asyncio.sleep(0.05)


@pytest.mark.anyio
async def test_b4_only_the_lease_holder_writes(
    kube_server: KubeServer, kube_api: client.ApiClient, vcsim: VcsimServer, recorder: Recorder
) -> None:
    ns = 'b4-' + uuid.uuid4().hex[:8]
    client.CoreV1Api(kube_api).create_namespace({'metadata': {'name': ns}})
    objects: Any = client.CustomObjectsApi(kube_api)
    session = Session(Endpoint(url=vcsim.url, user=vcsim.user, password_file=vcsim.password_file,
                               ca_file=vcsim.ca_file))  # fmt: skip
    session.login()
    root = inv.vm_folder(session)
    folder = inv.create_folder(session, root, ns).value
    vm = inv.vms_under(session, root)[0][0]
    settings = settings_for(vcsim, leader_elect=True, sink='annotate', lease_namespace=ns, lease_duration_s=2.0,
                            renew_deadline_s=1.5, retry_period_s=0.25)  # fmt: skip
    apis = [kconfig.new_client_from_config(config_file=str(kube_server.kubeconfig)) for _ in range(2)]
    writes_a, writes_b = Writes(apis[0]), Writes(apis[1])
    a = Replica(settings, apis[0], metrics=Metrics(), disabled=False, identity='replica-a')
    b = Replica(settings, apis[1], metrics=Metrics(), disabled=False, identity='replica-b')

    def finalized(name: str) -> bool:
        zone = _get(objects, ns, ZONES, name)
        return zone is not None and FINALIZER in (zone['metadata'].get('finalizers') or [])

    def annotation() -> str:
        obj = _get(objects, ns, VMS, 'vm-1') or {}
        return str((obj.get('metadata', {}).get('annotations') or {}).get(SIGNAL_ANNOTATION, ''))

    try:
        _zone(objects, ns, 'zone-a', folder)
        await a.start(release=False)  # release=False: stopping it below is a crash (the Lease must expire)
        await until(lambda: a.service.watching, 'a leads and watches')
        await _until(lambda: finalized('zone-a'), 'a adds the finalizer')
        await b.start(release=False)
        await until(lambda: b.service.zones.cache.get((ns, 'zone-a')) is not None, "b's Zone cache is warm")
        # while both run: a Zone comes and goes, a VM is signalled through the annotate sink
        await asyncio.to_thread(_zone, objects, ns, 'zone-b', folder)
        await _until(lambda: finalized('zone-b'), 'the finalizer on zone-b')
        await asyncio.to_thread(objects.delete_namespaced_custom_object, *ZONES[:2], ns, ZONES[2], 'zone-b')
        await _until(lambda: _get(objects, ns, ZONES, 'zone-b') is None, 'zone-b deleted (finalizer removed)')
        await asyncio.to_thread(objects.create_namespaced_custom_object, *VMS[:2], ns, VMS[2], {
            'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
            'metadata': {'name': 'vm-1', 'namespace': ns}, 'spec': {},
        })  # fmt: skip
        await asyncio.to_thread(inv.move_into, session, MoRef.parse(f'Folder:{folder}'), [vm])
        await asyncio.to_thread(inv.set_extra_config, session, vm, {'vmservice.namespacedName': f'{ns}/vm-1'})
        await _until(lambda: annotation() != '', 'the leader signals vm-1')
        await until(lambda: b.service.index.get(ns, 'vm-1') is not None, "b's VirtualMachine index is warm")
        assert b.elector is not None and not b.elector.is_leader
        standby_writes = list(writes_b.log)
        standby_reconciles = b.service.zones.stats.reconciles
        assert standby_writes == [], standby_writes
        assert standby_reconciles == 0  # no Zone reconcile, so no "no watcher" retry storm either
        leader_writes = len(writes_a.log)
        assert leader_writes > 0 and writes_a.conflicts() == [], writes_a.log

        # the holder dies; a Zone is created while nobody leads; the standby takes over and reconciles it
        await a.stop()
        died = time.monotonic()
        await asyncio.to_thread(_zone, objects, ns, 'zone-c', folder)
        await until(lambda: b.elector is not None and b.elector.is_leader, 'b takes over', timeout_s=20)
        takeover_s = time.monotonic() - died
        await _until(lambda: finalized('zone-c'), "b's Zone controller reconciles every Zone", timeout_s=20)
        await until(lambda: b.service.watching, 'b watches')
        before = await asyncio.to_thread(annotation)
        await asyncio.to_thread(inv.set_extra_config, session, vm, {'guestinfo.b4': str(time.time_ns())})
        await _until(lambda: annotation() not in ('', before), 'b signals vm-1 through its sink')
        assert writes_a.conflicts() == [] and writes_b.conflicts() == [], (writes_a.log, writes_b.log)
        assert takeover_s < settings.lease_duration_s + 2.0, takeover_s
        print(f'\nB4: holder wrote {leader_writes} times, standby 0; takeover {takeover_s:.2f} s after the holder died')
    finally:
        await a.stop()
        await b.stop()
        for api in apis:
            api.close()  # type: ignore[no-untyped-call]
        session.logout()
        for kind in (ZONES, VMS):
            for obj in objects.list_namespaced_custom_object(*kind[:2], ns, kind[2])['items']:
                name = obj['metadata']['name']
                if obj['metadata'].get('finalizers'):
                    objects.patch_namespaced_custom_object(*kind[:2], ns, kind[2], name, {'metadata': {
                        'finalizers': None}}, _content_type='application/merge-patch+json')  # fmt: skip
                if not obj['metadata'].get('deletionTimestamp'):
                    objects.delete_namespaced_custom_object(*kind[:2], ns, kind[2], name)
    recorder.record(
        'B4',
        did='two replicas of `vmwatch run` (annotate sink): while one holds the Lease, the standby keeps its Zone '
        'cache and VirtualMachine index warm and sends no write (0 PATCH/PUT/POST/DELETE counted on its client), '
        'reconciles no Zone (no "no watcher" retries), no 409 anywhere; after the holder dies the standby takes '
        f'over within the {settings.lease_duration_s:g} s Lease + 2 s, reconciles every Zone (one created while '
        'nobody led gets its finalizer) and its sink signals',
        lost=0,
        test='test_leader_writes.py::test_b4_only_the_lease_holder_writes',
    )
