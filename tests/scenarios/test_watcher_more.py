# SPDX-License-Identifier: Apache-2.0
"""Watcher scenarios beyond the Go suite, against vcsim: paging, vanishing VMs, leave, scale, restarts.

See test_watcher.py for the conventions (sync() for negative assertions, VCSIM_REENTER).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from test_watcher_sim import Sim, extra_config, signals_of, take, wait_task

from vmwatch import Decider, Index
from vmwatch.devenv import VcsimServer
from vmwatch.settings import DEFAULT_WATCHED_PATHS, FilterSettings, WatchSettings
from vmwatch.vsphere import MoRef, TransportError
from vmwatch.watcher import Watcher

pytestmark = [pytest.mark.servers, pytest.mark.anyio]

NAME_KEY = 'vmservice.namespacedName'
# spec 6.1 (as tests/conftest.py WATCHER_TOPOLOGY)
WATCHER_TOPOLOGY = ('-cluster', '2', '-host', '3', '-standalone-host', '0', '-vm', '2', '-autostart=false')


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


async def connect(server: VcsimServer) -> Sim:
    return await asyncio.to_thread(Sim.connect, server)


async def nothing_more(w: Watcher) -> None:
    await w.sync()
    assert signals_of(w.drain()) == []
    assert w.error is None


def name_all(sim: Sim, name_of: Callable[[int, Any], str], *, threads: int = 8) -> dict[str, str]:
    """Write the name key on every VM (in parallel); moref -> 'ns/name'."""
    vms = sorted(sim.vms.values(), key=lambda vm: vm.name)
    names = {vm._moId: name_of(i, vm) for i, vm in enumerate(vms)}

    def one(vm: Any) -> None:
        wait_task(vm.ReconfigVM_Task(extra_config(**{NAME_KEY: names[vm._moId]})))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, vms))
    return names


def verified_index(names: dict[str, str]) -> Index:
    index = Index()
    for moref, namespaced in names.items():
        ns, name = namespaced.split('/')
        index.upsert(ns, name, unique_id=moref, deleting=False, priority=0)
    return index


def root(sim: Sim) -> MoRef:
    return MoRef('Folder', sim.session.content.rootFolder._moId)


# -- paging --------------------------------------------------------------------------------------------------


async def test_max_object_updates_3_with_50_vms_changing_at_once_loses_nothing(
    vcsim_factory: Callable[..., VcsimServer],
) -> None:
    sim = await connect(vcsim_factory('-cluster', '1', '-host', '1', '-standalone-host', '0', '-vm', '50'))
    names = await asyncio.to_thread(name_all, sim, lambda i, vm: f'ns-{i % 5}/vm-{i}')
    assert len(names) == 50
    index = verified_index(names)  # entering scope verified: no signals at start
    settings = WatchSettings(max_wait_s=60, max_object_updates=3)
    # vcsim re-collects the whole filter for every queued update (tasks included): with the 31 default paths
    # this burst takes it ~25 s to answer on 2 cores, with two paths ~1.5 s. Paging does not care which.
    fs = FilterSettings(watched_paths=('config.extraConfig', 'summary.runtime.powerState'))
    async with Watcher(
        endpoint=sim.endpoint, containers={root(sim): ['t']}, index=index, settings=settings, filter_settings=fs
    ) as w:
        await nothing_more(w)
        assert w.stats['skipped_verified_enter'] == 50
        assert w.stats['truncated'] >= 50 // 3  # the initial 50 enters came in pages of 3

        def change(vm: Any) -> None:
            wait_task(vm.ReconfigVM_Task(extra_config(**{'guestinfo.burst': '1'})))

        truncated_before = w.stats['truncated']
        with ThreadPoolExecutor(25) as pool:
            await asyncio.to_thread(lambda: list(pool.map(change, sim.vms.values())))
        got = await take(w, 50, timeout_s=60)
        assert sorted(s.moref for s in got) == sorted(names)
        assert all(s.verified and s.changed == ('config.extraConfig',) for s in got)
        await nothing_more(w)
        assert w.stats['truncated'] > truncated_before
    await asyncio.to_thread(sim.close)


# -- step G under fire ---------------------------------------------------------------------------------------


async def test_a_vm_destroyed_while_its_name_fetch_is_in_flight_does_not_stop_the_watcher(
    vcsim_factory: Callable[..., VcsimServer],
) -> None:
    # every RetrievePropertiesEx (only the name fetch uses it; pyVmomi reads use Fetch) takes 1.5 s
    sim = await connect(vcsim_factory(*WATCHER_TOPOLOGY, '-method-delay', 'RetrievePropertiesEx:1500'))
    c1 = MoRef('ClusterComputeResource', sim.clusters[0]._moId)
    async with Watcher(endpoint=sim.endpoint, containers={c1: ['id-0']}) as w:
        # both c1 VMs enter without a name: one batched fetch for the two of them starts
        async with asyncio.timeout(10):
            while w.stats['name_fetches'] < 1:
                await asyncio.sleep(0.02)
        await sim.destroy('c1vm1')  # ...and c1vm1 vanishes while it is in flight
        await nothing_more(w)
        assert w.stats['skipped_vanished'] == 1
        assert w.stats['name_fetch_vms'] == 2
        # the watcher goes on: c1vm2 (negative-cached as unnamed) gets a name with its bootstrap data
        await sim.reconfigure('c1vm2', **{NAME_KEY: 'ns-2/vm-2', 'guestinfo.userdata': 'e30='})
        assert signals_of(await take(w, 1)) == [('ns-2', 'vm-2', sim.moref('c1vm2'), False)]
        await nothing_more(w)
    await asyncio.to_thread(sim.close)


# -- leave ---------------------------------------------------------------------------------------------------


async def test_leave_evicts_and_can_signal(vcsim: VcsimServer) -> None:
    sim = await connect(vcsim)
    await sim.name('c1vm1', 'ns-1', 'vm-1')
    await sim.name('c1vm2', 'ns-2', 'vm-2')
    index = Index()
    index.upsert('ns-2', 'vm-2', unique_id='', deleting=False, priority=0)  # vm-2 has a Kubernetes object
    fs = FilterSettings(signal_on_leave=True)
    decider = Decider(
        index=index, watched_paths=fs.watched_paths, ignored_keys=fs.all_ignored_keys(), signal_on_leave=True
    )
    c1 = MoRef('ClusterComputeResource', sim.clusters[0]._moId)
    async with Watcher(endpoint=sim.endpoint, containers={c1: ['id-0']}, decider=decider, filter_settings=fs) as w:
        assert len(await take(w, 2)) == 2
        await nothing_more(w)
        items = decider.cache_stats()['items']
        await sim.destroy('c1vm1')  # no Kubernetes object: evicted, no signal
        await nothing_more(w)
        assert decider.cache_stats()['items'] == items - 1
        assert w.stats['skipped_left'] == 1
        await sim.destroy('c1vm2')  # has a Kubernetes object: evicted, signalled (opt-in)
        (s,) = await take(w, 1)
        assert (s.namespace, s.name, s.moref, s.reason) == ('ns-2', 'vm-2', sim.moref('c1vm2'), 'left')
        assert decider.cache_stats()['items'] == items - 2
        await nothing_more(w)
    await asyncio.to_thread(sim.close)


async def test_a_vm_moved_out_and_back_in(vcsim: VcsimServer) -> None:
    """Real vCenter: moving out of a watched folder sends `leave` (evicted), moving back in `enter`, which
    signals again. vcsim (spec 8.2) sends no `leave` on a move out and keeps the VM in the old view, so
    here the VM never left: nothing signals on the way back, and its changes keep signalling meanwhile."""
    sim = await connect(vcsim)
    vm_folder = sim.session.content.rootFolder.childEntity[0].vmFolder
    inside = await asyncio.to_thread(vm_folder.CreateFolder, 'inside')
    outside = await asyncio.to_thread(vm_folder.CreateFolder, 'outside')
    await sim.name('c1vm1', 'ns-1', 'vm-1')
    async with Watcher(endpoint=sim.endpoint, containers={MoRef('Folder', inside._moId): ['id-0']}) as w:
        await nothing_more(w)
        await sim.move('c1vm1', inside)  # moved in: enter, unverified, signals
        assert signals_of(await take(w, 1)) == [('ns-1', 'vm-1', sim.moref('c1vm1'), False)]
        await nothing_more(w)
        await sim.move('c1vm1', outside)
        await nothing_more(w)  # vcsim: no leave
        await sim.move('c1vm1', inside)
        await nothing_more(w)  # vcsim: no enter either (real vCenter: leave, then enter -> a signal)
        assert w.stats['skipped_left'] == 0
    await asyncio.to_thread(sim.close)


# -- scale ---------------------------------------------------------------------------------------------------


@pytest.fixture
def vcsim_2000(tmp_path: Path) -> Any:
    """2,000 VMs (1 cluster, 1 host). vcsim needs tens of seconds to build them on 2 busy cores, more
    than the factory's default start timeout, so this one is started here with a longer one."""
    server = VcsimServer(
        state_dir=tmp_path / 'vcsim2000', args=('-cluster', '1', '-host', '1', '-standalone-host', '0', '-vm', '2000')
    )
    server.start(timeout_s=300)
    yield server
    server.stop()


async def test_2000_vms_entering_at_start_signal_once_each_unless_verified(vcsim_2000: VcsimServer) -> None:
    sim = await connect(vcsim_2000)
    names = await asyncio.to_thread(name_all, sim, lambda i, vm: f'ns-{i % 20}/vm-{i}')
    assert len(names) == 2000 and len(set(names.values())) == 2000
    containers = {root(sim): ['t']}

    started = time.monotonic()
    async with Watcher(endpoint=sim.endpoint, containers=containers) as w:  # unverified: one signal each
        got = await take(w, 2000, timeout_s=240)
        unverified_s = time.monotonic() - started
        await nothing_more(w)
    assert sorted(f'{s.namespace}/{s.name}' for s in got) == sorted(names.values())
    assert {s.moref for s in got} == set(names)
    assert w.stats['name_fetches'] == 0  # names came with the enter updates

    started = time.monotonic()
    async with Watcher(endpoint=sim.endpoint, containers=containers, index=verified_index(names)) as w:
        await nothing_more(w)
        verified_s = time.monotonic() - started
    assert w.stats['skipped_verified_enter'] == 2000
    assert w.stats['objects'] == 2000
    print(f'\n2000 VMs: unverified {unverified_s:.1f} s to 2000 signals, verified {verified_s:.1f} s to none')
    await asyncio.to_thread(sim.close)


# -- restarts ------------------------------------------------------------------------------------------------

# A fresh vcsim inventory regenerates the CD-ROM deviceName (from a pointer) and places VMs on a random
# host, so those two paths differ for every VM after a restart although nothing was changed by anyone.
# Real vCenter keeps its inventory; the restart test leaves those two paths out to compare like with like.
STABLE_PATHS = tuple(p for p in DEFAULT_WATCHED_PATHS if p not in ('config.hardware.device', 'summary.runtime.host'))


async def test_server_restart_ends_the_watcher_and_a_new_one_resyncs_quietly(vcsim: VcsimServer) -> None:
    sim = await connect(vcsim)
    before = {alias: sim.moref(alias) for alias in ('c1vm1', 'c1vm2', 'c2vm1', 'c2vm2')}
    fs = FilterSettings(watched_paths=STABLE_PATHS)
    decider = Decider(index=Index(), watched_paths=fs.watched_paths, ignored_keys=fs.all_ignored_keys())
    names = {'c1vm1': ('ns-1', 'vm-1'), 'c1vm2': ('ns-2', 'vm-2')}
    for alias, (ns, name) in names.items():
        await sim.name(alias, ns, name)
    c1 = MoRef('ClusterComputeResource', sim.clusters[0]._moId)
    w = Watcher(endpoint=sim.endpoint, containers={c1: ['id-0']}, decider=decider, filter_settings=fs)
    async with w:
        assert len(await take(w, 2)) == 2
        await nothing_more(w)
        await asyncio.to_thread(vcsim.restart)  # same port, fresh inventory
        async with asyncio.timeout(30):
            error = await w.wait_closed()
    assert isinstance(error, TransportError)

    await asyncio.to_thread(sim.close)
    sim = await connect(vcsim)
    assert {alias: sim.moref(alias) for alias in before} == before
    for alias, (ns, name) in names.items():
        await sim.name(alias, ns, name)  # the same state as before the restart
    await sim.reconfigure('c1vm2', **{'guestinfo.changed-while-away': '1'})  # ...except one change
    async with Watcher(endpoint=sim.endpoint, containers={c1: ['id-0']}, decider=decider, filter_settings=fs) as w2:
        (s,) = await take(w2, 1)
        assert (s.namespace, s.name, s.moref) == ('ns-2', 'vm-2', sim.moref('c1vm2'))
        await nothing_more(w2)
        assert w2.stats['skipped_unchanged'] >= 1  # c1vm1 re-entered unchanged
    await asyncio.to_thread(sim.close)


async def test_a_new_watcher_reads_a_rotated_password_file(vcsim: VcsimServer) -> None:
    sim = await connect(vcsim)
    await asyncio.to_thread(sim.close)
    await asyncio.to_thread(vcsim.restart, password='rotated-' + vcsim.password)  # rewrites the file
    c1 = MoRef('ClusterComputeResource', sim.clusters[0]._moId)
    async with Watcher(endpoint=sim.endpoint, containers={c1: ['id-0']}) as w:
        await nothing_more(w)


async def test_a_logout_is_noticed_by_the_keepalive(vcsim: VcsimServer) -> None:
    """vcsim's Logout does not wake a WaitForUpdatesEx already blocked on that session (spec 8.2), so a dead
    session would only be noticed after MaxWaitSeconds; the keep-alive probe notices it within its period
    and ends the watcher with NotAuthenticatedError (spec 7.2 #16)."""
    from vmwatch.vsphere import NotAuthenticatedError, Session

    sim = await connect(vcsim)
    session = Session(sim.endpoint)
    await asyncio.to_thread(session.login)
    c1 = MoRef('ClusterComputeResource', sim.clusters[0]._moId)
    # vcsim keeps the orphaned wait until MaxWaitSeconds (and its shutdown waits for it): keep that short
    settings = WatchSettings(max_wait_s=6)
    async with Watcher(session=session, containers={c1: ['id-0']}, keepalive_s=0.5, settings=settings) as w:
        await nothing_more(w)
        await w.sync()  # a fresh long wait is in flight now
        await asyncio.to_thread(session.content.sessionManager.Logout)
        started = time.monotonic()
        async with asyncio.timeout(20):
            error = await w.wait_closed()
        assert isinstance(error, NotAuthenticatedError)
        assert time.monotonic() - started < 4  # the keep-alive, not the end of the 6 s wait
    await asyncio.to_thread(session.logout)  # borrowed: the watcher leaves it to us (drops its connections)
    await asyncio.to_thread(sim.close)
