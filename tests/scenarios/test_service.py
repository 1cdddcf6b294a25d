# SPDX-License-Identifier: Apache-2.0
"""Service and Zone controller scenarios (spec 6.4: 27-39, 6.5: 40-43) against real vcsim + kube-apiserver."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client
from service_env import ZONES, ServiceEnv, has_only_our_finalizer, named_vm_in_folder, service_env, until

from vmwatch.devenv import VcsimServer
from vmwatch.settings import FINALIZER
from vmwatch.vsphere import inventory as inv

pytestmark = pytest.mark.anyio

# spec 6.4: 3 clusters x 2 hosts, 2 VMs per cluster
SERVICE_TOPOLOGY = ('-cluster', '3', '-host', '2', '-standalone-host', '0', '-vm', '2', '-autostart=false')


@pytest.fixture
def vc(vcsim_factory: object) -> VcsimServer:
    return vcsim_factory(*SERVICE_TOPOLOGY)  # type: ignore[operator,no-any-return]


async def _ns_folder(env: ServiceEnv, zones: int = 3) -> str:
    """A workload namespace's own folder with `zones` Zones pointing at it (spec 6.4 setup)."""
    root = await env.vsphere(inv.vm_folder)
    folder = await env.vsphere(inv.create_folder, root, env.namespace)
    for i in range(zones):
        env.create_zone(f'zone-{i}', folder.value)
    return folder.value


async def _watching(env: ServiceEnv) -> None:
    """Start the watcher once the service's Zone cache holds every Zone created so far (as in spec 6.4,
    where the Zones exist before the service starts)."""
    listed = env.objects.list_namespaced_custom_object(*ZONES[:2], env.namespace, ZONES[2])['items']
    keys = [(env.namespace, z['metadata']['name']) for z in listed]
    await until(lambda: all(env.service.zones.cache.get(k) is not None for k in keys), 'the zone cache')
    env.service.start_watching()
    await until(lambda: env.service.watching, 'the watcher to start')


async def test_30_zones_get_exactly_our_finalizer(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc, zone_controller=False) as env:
        await _ns_folder(env)
        await _watching(env)
        await until(lambda: all(has_only_our_finalizer(env.zone(f'zone-{i}')) for i in range(3)), 'finalizers',
                    timeout_s=5)  # fmt: skip


async def test_31_35_named_vm_signals_and_changes_signal_again(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc) as env:
        folder = await _ns_folder(env)
        await _watching(env)
        vm = await named_vm_in_folder(env, inv.MoRef('Folder', folder))
        await env.expect_request('my-vm-1')
        before = len(env.received)
        await env.vsphere(inv.set_extra_config, vm, {'guestinfo.ipaddr': '1.2.3.4'})
        await env.expect_request('my-vm-1', after=before)  # 35


async def test_36_name_of_a_vm_not_in_this_cluster_is_dropped(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc) as env:
        folder = await _ns_folder(env)
        await _watching(env)
        vm = await named_vm_in_folder(env, inv.MoRef('Folder', folder))
        await env.expect_request('my-vm-1')
        before = len(env.received)
        await env.vsphere(inv.set_extra_config, vm,
                          {'guestinfo.ipaddr': '1.2.3.4', 'vmservice.namespacedName': 'invalid/my-vm-1'})  # fmt: skip
        await env.settle()
        assert env.received[before:] == []
        assert env.service.metrics.skipped.labels(vcenter='default', reason='unvalidated')._value.get() >= 1


async def test_34_bogus_folder_does_not_stop_the_watcher(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc, zone_controller=False) as env:
        folder = await _ns_folder(env)
        env.create_zone('bogus', 'group-4242424242')
        await _watching(env)
        await named_vm_in_folder(env, inv.MoRef('Folder', folder))
        await env.expect_request('my-vm-1')
        bogus = env.zone('bogus')
        assert bogus is not None and not bogus['metadata'].get('finalizers')


async def test_37_verified_vm_entering_scope_is_not_signalled(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc) as env:
        folder = await _ns_folder(env)
        await _watching(env)
        vm = (await env.vsphere(inv.vms_under, await env.vsphere(inv.vm_folder)))[0][0]
        env.create_vm('my-vm-1', unique_id=vm.value)
        await env.index_has('my-vm-1', lambda e: e[0] == vm.value)
        before = len(env.received)
        await env.vsphere(inv.move_into, inv.MoRef('Folder', folder), [vm])
        await env.expect_none('my-vm-1', after=before)


async def test_38_deleting_vm_is_not_signalled(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc) as env:
        folder = await _ns_folder(env)
        await _watching(env)
        vm = (await env.vsphere(inv.vms_under, await env.vsphere(inv.vm_folder)))[0][0]
        env.create_vm('my-vm-1', unique_id=vm.value, finalizers=['fake/finalizer'])
        env.delete_vm('my-vm-1')
        await env.index_has('my-vm-1', lambda e: e[1])
        before = len(env.received)
        await env.vsphere(inv.move_into, inv.MoRef('Folder', folder), [vm])
        await env.vsphere(inv.set_extra_config, vm, {'vmservice.namespacedName': f'{env.namespace}/my-vm-1'})
        await env.expect_none('my-vm-1', after=before)
        env.objects.patch_namespaced_custom_object(
            'vmoperator.vmware.com', 'v1alpha6', env.namespace, 'virtualmachines', 'my-vm-1',
            {'metadata': {'finalizers': None}}, _content_type='application/merge-patch+json',
        )  # fmt: skip


async def test_39_unnamed_unverified_vm_is_not_signalled(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc) as env:
        folder = await _ns_folder(env)
        await _watching(env)
        env.create_vm('my-vm-1')
        await env.index_has('my-vm-1')
        vm = (await env.vsphere(inv.vms_under, await env.vsphere(inv.vm_folder)))[0][0]
        before = len(env.received)
        await env.vsphere(inv.move_into, inv.MoRef('Folder', folder), [vm])
        await env.expect_none('my-vm-1', after=before)


@pytest.mark.parametrize('keep_our_finalizer', [True, False], ids=['32-kept', '33-removed'])
async def test_32_33_deleting_zones_after_a_restart(
    kube_api: client.ApiClient, vc: VcsimServer, keep_our_finalizer: bool
) -> None:
    async with service_env(kube_api, vc, zone_controller=False) as env:
        folder = await _ns_folder(env)
        await _watching(env)
        vm = await named_vm_in_folder(env, inv.MoRef('Folder', folder))
        await env.expect_request('my-vm-1')
        await until(lambda: all(has_only_our_finalizer(env.zone(f'zone-{i}')) for i in range(3)), 'finalizers')
        for i in range(3):
            kept = [FINALIZER, 'foo/bar'] if keep_our_finalizer else ['foo/bar']
            env.patch_zone(f'zone-{i}', {'metadata': {'finalizers': kept}})
            env.delete_zone(f'zone-{i}')

        def deleting_in_cache(i: int) -> bool:
            zone = env.service.zones.cache.get((env.namespace, f'zone-{i}'))
            return zone is not None and bool(zone['metadata'].get('deletionTimestamp'))

        await until(lambda: all(deleting_in_cache(i) for i in range(3)), 'deleting zones in the cache')
        restarts = env.service.shard.restarts
        await env.service.shard.slot.close()
        await until(lambda: env.service.shard.restarts > restarts and env.service.watching, 'the restart')
        before = len(env.received)
        await env.vsphere(inv.set_extra_config, vm, {'guestinfo.ipaddr': '1.2.3.4'})
        if keep_our_finalizer:
            await env.expect_request('my-vm-1', after=before)
        else:
            await env.expect_none('my-vm-1', after=before)


async def test_27_logged_out_session_restarts_with_a_new_login(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc, max_wait_s=1) as env:
        await _watching(env)
        assert env.service.shard.logins == 1
        session = env.service.shard.session
        assert session is not None
        await asyncio.to_thread(session.logout)  # from outside the watcher, as another client would
        await until(lambda: env.service.shard.logins >= 2 and env.service.watching, 'a new login')
        restarts = env.service.metrics.watcher_restarts
        assert restarts.labels(vcenter='default', cause='auth')._value.get() >= 1 or \
            restarts.labels(vcenter='default', cause='transport')._value.get() >= 1  # fmt: skip


async def test_28_bad_credentials_keep_retrying_with_backoff(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    good = vc.password_file.read_text()
    async with service_env(kube_api, vc, max_wait_s=1) as env:
        vc.password_file.write_text('wrong\n')
        env.service.start_watching()
        await until(lambda: env.service.shard.logins >= 3, 'retries')
        assert not env.service.watching
        assert 'login failed' in env.service.shard.status
        vc.password_file.write_text(good)  # the rotated secret is read on the next attempt
        await until(lambda: env.service.watching, 'a watcher with the restored credentials')


async def test_29_unreachable_vcenter_never_ends_the_service(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc, max_wait_s=1) as env:
        await _watching(env)
        vc.stop()
        await until(lambda: env.service.shard.restarts >= 3, 'restarts while vCenter is down')
        assert not env.service.watching and 'unreachable' in env.service.shard.status
        task = env.service.shard._watch_task
        assert task is not None and not task.done()  # the service never exits because vCenter is down
        vc.start()
        await until(lambda: env.service.watching, 'a watcher once vCenter is back', timeout_s=30)


# -- Zone controller (spec 6.5) ---------------------------------------------------------------------------------


async def test_40_43_zone_controller_adds_and_removes_folders(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc) as env:
        await _watching(env)
        folder = await _ns_folder(env)
        await until(lambda: all(has_only_our_finalizer(env.zone(f'zone-{i}')) for i in range(3)), 'finalizers')
        env.create_vm('my-vm-1')
        await env.index_has('my-vm-1')
        vm = (await env.vsphere(inv.vms_under, await env.vsphere(inv.vm_folder)))[0][0]
        await env.vsphere(inv.set_extra_config, vm, {'vmservice.namespacedName': f'{env.namespace}/my-vm-1'})
        await env.expect_none('my-vm-1', after=0)  # 40: outside every zone folder
        await until(lambda: len(env.service.shard.slot.watcher.owners().get(inv.MoRef('Folder', folder), ())) == 3,  # type: ignore[union-attr]
                    'three owners of the folder')  # fmt: skip
        await env.vsphere(inv.move_into, inv.MoRef('Folder', folder), [vm])
        await env.expect_request('my-vm-1')  # 41
        env.delete_zone('zone-0')
        await until(lambda: env.zone('zone-0') is None, 'zone-0 gone')
        before = len(env.received)
        await env.vsphere(inv.set_extra_config, vm, {'guestinfo.ipaddr': '1.2.3.4'})
        await env.expect_request('my-vm-1', after=before)  # 42: two owners remain
        env.delete_zone('zone-1')
        env.delete_zone('zone-2')
        await until(lambda: env.zone('zone-1') is None and env.zone('zone-2') is None, 'all zones gone')
        before = len(env.received)
        await env.vsphere(inv.set_extra_config, vm, {'guestinfo.ipaddr': '5.6.7.8'})
        await env.expect_none('my-vm-1', after=before)  # 43: nobody watches the folder


async def test_zone_folder_change_removes_the_old_folder(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    async with service_env(kube_api, vc) as env:
        await _watching(env)
        root = await env.vsphere(inv.vm_folder)
        old = await env.vsphere(inv.create_folder, root, 'old')
        new = await env.vsphere(inv.create_folder, root, 'new')
        env.create_zone('zone-a', old.value)
        owners = lambda: env.service.shard.slot.watcher.owners() if env.service.shard.slot.watcher else {}  # noqa: E731
        await until(lambda: old in owners(), 'the old folder watched')
        env.patch_zone('zone-a', {'spec': {'managedVMs': {'folderMoID': new.value}}})
        await until(lambda: new in owners() and old not in owners(), 'the folder swapped')


async def test_deleting_zone_waits_for_a_watcher(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    """The ErrNoWatcher interlock (spec 5): no watcher -> the finalizer stays; once a watcher runs, the folder
    is removed from it (the new watcher counted the deleting Zone as an owner) and only then is it released."""
    async with service_env(kube_api, vc) as env:
        folder = await _ns_folder(env, zones=1)
        await until(lambda: has_only_our_finalizer(env.zone('zone-0')), 'finalizer')
        errors = env.service.zones.stats.errors
        env.delete_zone('zone-0')
        await until(lambda: env.service.zones.stats.errors >= errors + 2, 'refused removes')
        held = env.zone('zone-0')  # still held: no watcher to remove the folder from
        assert held is not None and held['metadata'].get('deletionTimestamp'), held
        assert held['metadata']['finalizers'] == [FINALIZER]
        assert env.service.zones.stats.removed == 0
        await _watching(env)
        await until(lambda: env.zone('zone-0') is None, 'the zone released once a watcher runs')
        assert env.service.zones.stats.removed == 1
        watcher = env.service.shard.slot.watcher
        assert watcher is not None and watcher.error is None
        assert inv.MoRef('Folder', folder) not in watcher.owners()  # the deleting zone's owner entry is gone


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


async def test_48_verified_named_vm_one_request_per_real_change(kube_api: client.ApiClient, vc: VcsimServer) -> None:
    """Spec 6.6: uniqueID = MoRef and the name in extraConfig, moved into the zone folder: the start brings no
    request (the controller's own start reconciles it), one reconfigure brings exactly one."""
    async with service_env(kube_api, vc) as env:
        folder = await _ns_folder(env, zones=1)
        vm = (await env.vsphere(inv.vms_under, await env.vsphere(inv.vm_folder)))[0][0]
        env.create_vm('my-vm-1', unique_id=vm.value)
        await env.index_has('my-vm-1', lambda e: e[0] == vm.value)
        await env.vsphere(inv.set_extra_config, vm, {'vmservice.namespacedName': f'{env.namespace}/my-vm-1'})
        await env.vsphere(inv.move_into, inv.MoRef('Folder', folder), [vm])
        await _watching(env)
        await env.settle()
        assert env.received.count((env.namespace, 'my-vm-1')) == 0
        await env.vsphere(inv.set_extra_config, vm, {'guestinfo.ipaddr': '1.2.3.4'})
        await env.expect_request('my-vm-1')
        await env.settle()
        assert env.received.count((env.namespace, 'my-vm-1')) == 1
