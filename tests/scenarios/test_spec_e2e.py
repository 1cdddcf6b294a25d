# SPDX-License-Identifier: Apache-2.0
"""Spec behaviours end to end against the real servers, each one a test that fails when its code is mutated.

* spec 2.6: the legacy finalizer `vmoperator.vmware.com/finalizer` is replaced on live Zones and released on
  deleting ones (the Zone controller against the real kube-apiserver);
* spec 1.2: a folder with two owners stays watched until its last owner leaves (the watcher against vcsim);
* spec 1.5: a VM in a lifecycle phase reaches the queue with its lifecycle priority (Service, both servers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client
from service_env import VMS, ServiceEnv, has_only_our_finalizer, service_env, until
from test_watcher import nothing_more, sim, watching  # noqa: F401  (`sim` is a fixture)
from test_watcher_sim import Sim, signals_of, take

from vmwatch.devenv import VcsimServer
from vmwatch.kube.priority import PRIORITY_CREATING, PRIORITY_GENERIC, PRIORITY_POWER_STATE_CHANGE
from vmwatch.settings import FINALIZER, LEGACY_FINALIZER
from vmwatch.vsphere import MoRef
from vmwatch.vsphere import inventory as inv

pytestmark = [pytest.mark.servers, pytest.mark.anyio]

TOPOLOGY = ('-cluster', '1', '-host', '1', '-standalone-host', '0', '-vm', '3', '-autostart=false')


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


@pytest.fixture
def vc(vcsim_factory: Any) -> VcsimServer:
    return vcsim_factory(*TOPOLOGY)  # type: ignore[no-any-return]


async def ns_folder(env: ServiceEnv) -> MoRef:
    root = await env.vsphere(inv.vm_folder)
    return await env.vsphere(inv.create_folder, root, env.namespace)  # type: ignore[no-any-return]


async def start_watching(env: ServiceEnv, zones: int) -> None:
    """Start the watcher once the Zone cache holds the `zones` Zones created so far."""
    await until(lambda: len([z for z in env.service.zones.cache.zones()
                             if z['metadata']['namespace'] == env.namespace]) == zones, 'the zone cache')  # fmt: skip
    env.service.start_watching()
    await until(lambda: env.service.watching, 'the watcher to start')


def owners(env: ServiceEnv) -> dict[MoRef, frozenset[str]]:
    w = env.service.shard.slot.watcher
    return w.owners() if w is not None else {}


# -- spec 2.6: the legacy finalizer --------------------------------------------------------------------------


async def test_the_legacy_finalizer_is_replaced_on_live_zones_and_released_on_deleting_ones(
    kube_api: client.ApiClient, vc: VcsimServer
) -> None:
    # no reconcile workers: each reconcile is driven below, so nothing else touches the finalizers
    async with service_env(kube_api, vc, zone_controller=False) as env:
        folder = await ns_folder(env)
        env.create_zone('live-legacy', folder.value, finalizers=[LEGACY_FINALIZER])
        env.create_zone('live-both', folder.value, finalizers=['example.com/keep', LEGACY_FINALIZER])
        env.create_zone('deleting-legacy', folder.value, finalizers=[LEGACY_FINALIZER])
        env.delete_zone('deleting-legacy')  # held by the legacy finalizer
        await start_watching(env, zones=3)
        ns = env.namespace
        # a Zone that still carries the legacy name is ours: the new watcher counted it as an owner
        assert owners(env) == {folder: frozenset({f'{ns}/live-legacy', f'{ns}/live-both', f'{ns}/deleting-legacy'})}
        zones = env.service.zones
        await zones.reconcile((ns, 'live-legacy'))
        await zones.reconcile((ns, 'live-both'))
        assert has_only_our_finalizer(env.zone('live-legacy')), env.zone('live-legacy')
        assert (env.zone('live-both') or {})['metadata']['finalizers'] == ['example.com/keep', FINALIZER]
        await zones.reconcile((ns, 'deleting-legacy'))
        assert env.zone('deleting-legacy') is None  # released: not stuck on a finalizer nobody else removes
        assert owners(env) == {folder: frozenset({f'{ns}/live-legacy', f'{ns}/live-both'})}


async def test_the_running_zone_controller_replaces_the_legacy_finalizer(
    kube_api: client.ApiClient, vc: VcsimServer
) -> None:
    async with service_env(kube_api, vc) as env:
        folder = await ns_folder(env)
        env.create_zone('zone-old', folder.value, finalizers=[LEGACY_FINALIZER])
        await start_watching(env, zones=1)
        await until(lambda: has_only_our_finalizer(env.zone('zone-old')), 'the legacy finalizer replaced')
        await until(lambda: folder in owners(env), 'the zone folder watched')
        env.delete_zone('zone-old')
        await until(lambda: env.zone('zone-old') is None, 'the zone released')
        await until(lambda: folder not in owners(env), 'the folder no longer watched')


# -- spec 1.5: lifecycle priorities reach the queue ---------------------------------------------------------

CREATED = {'type': 'VirtualMachineCreated', 'status': 'True'}
PHASES = {
    # name: (spec, status, priority)
    'vm-creating': ({}, {}, PRIORITY_CREATING),
    'vm-powering-on': ({'powerState': 'PoweredOn'}, {'powerState': 'PoweredOff', 'conditions': [CREATED]},
                       PRIORITY_POWER_STATE_CHANGE),
    'vm-stable': ({'powerState': 'PoweredOff', 'promoteDisksMode': 'Disabled'},
                  {'powerState': 'PoweredOff', 'conditions': [CREATED]}, PRIORITY_GENERIC),
}  # fmt: skip


async def test_lifecycle_priorities_reach_the_queue(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc) as env:
        folder = await ns_folder(env)
        env.create_zone('zone-0', folder.value)
        await start_watching(env, zones=1)
        await until(lambda: folder in owners(env), 'the zone folder watched')
        vms = [vm for vm, _ in await env.vsphere(inv.vms_under, await env.vsphere(inv.vm_folder))]
        for (name, (spec, status, priority)), vm in zip(PHASES.items(), vms, strict=False):
            body = {'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
                    'metadata': {'name': name, 'namespace': env.namespace}, 'spec': spec}  # fmt: skip
            env.objects.create_namespaced_custom_object(*VMS[:2], env.namespace, VMS[2], body)
            if status:
                env.objects.patch_namespaced_custom_object_status(
                    *VMS[:2], env.namespace, VMS[2], name, {'status': status}
                )
            await env.index_has(name, lambda e, p=priority: e[2] == p)  # type: ignore[misc]
            await env.vsphere(inv.set_extra_config, vm, {'vmservice.namespacedName': f'{env.namespace}/{name}'})
        await env.vsphere(inv.move_into, folder, vms[: len(PHASES)])  # they enter the watched folder: signals
        for name in PHASES:
            await env.expect_request(name)
        await env.settle()
        got = {key[1]: p for key, p in env.priorities}
        assert got == {name: priority for name, (_, _, priority) in PHASES.items()}


# -- spec 1.2: a folder with two owners ---------------------------------------------------------------------


def dc_vm_folder(target: Sim) -> MoRef:
    return MoRef('Folder', target.session.content.rootFolder.childEntity[0].vmFolder._moId)


@pytest.fixture
async def named(sim: Sim) -> AsyncIterator[Sim]:  # noqa: F811
    await sim.name('c1vm1', 'ns-1', 'vm-1')
    yield sim


@pytest.mark.parametrize('initial', [False, True], ids=['added', 'initial'])
@pytest.mark.parametrize('first', ['zone-a', 'zone-b'])
async def test_a_folder_with_two_owners_is_watched_until_the_last_one_leaves(
    named: Sim, initial: bool, first: str
) -> None:
    folder = dc_vm_folder(named)
    expected = [('ns-1', 'vm-1', named.moref('c1vm1'), False)]
    last = 'zone-a' if first == 'zone-b' else 'zone-b'
    containers = {folder: ['zone-a', 'zone-b']} if initial else {}
    async with watching(named, containers=containers) as w:
        if not initial:
            await nothing_more(w)  # the first wait has run (VCSIM_REENTER in test_watcher.py)
            await w.add(folder, 'zone-a')
            await w.add(folder, 'zone-b')
        assert signals_of(await take(w, 1)) == expected  # c1vm1 enters scope, named, unverified
        await nothing_more(w)
        assert w.owners() == {folder: frozenset({'zone-a', 'zone-b'})}

        await w.remove(folder, first)
        assert w.owners() == {folder: frozenset({last})}
        await named.reconfigure('c1vm1', **{'guestinfo.owners': 'one left'})
        assert signals_of(await take(w, 1)) == expected  # still watched
        await nothing_more(w)

        await w.remove(folder, last)
        assert w.owners() == {}
        await nothing_more(w)  # the VMs leave scope
        await named.reconfigure('c1vm1', **{'guestinfo.owners': 'none left'})
        await nothing_more(w)  # no longer watched

        await w.add(folder, first)
        assert signals_of(await take(w, 1)) == expected  # re-enters: a first sighting (the leave evicted it)
        await nothing_more(w)
        await named.reconfigure('c1vm1', **{'guestinfo.owners': 'back'})
        assert signals_of(await take(w, 1)) == expected
        await nothing_more(w)
