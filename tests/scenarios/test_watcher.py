# SPDX-License-Identifier: Apache-2.0
"""The watcher against vcsim: every scenario of spec 6.1 (1-19) and 6.2 #22, numbered as there.

Topology (conftest `vcsim`): 1 datacenter, 2 clusters x 3 hosts, 2 VMs per cluster, powered off.
c1 / c2 are the clusters DC0_C0 / DC0_C1; c1vm1 is DC0_C0_RP0_VM0, and so on. The watcher starts with
{c1: ['id-0']} and the extra ignored keys ['ignoredKey1', 'ignoredKey1', 'ignoredKey2'].

Where the Go suite's fake lookup returned a name for c2vm1, vmwatch has the Kubernetes index
(namespace/name -> uniqueID, deleting): 'verified' means the index holds c2vm1's MoRef as uniqueID.
Negative assertions use `Watcher.sync()` (every change made so far has been processed), not sleeps.

VCSIM_REENTER (spec 8.2): after a ListView change vcsim re-sends `enter` for every VM still in scope,
on the next wait that has any update. A change arriving in that same response is coalesced into the
enter (spec 3 step A: the first kind wins), so a verified VM's first change after an add would be
swallowed. Real vCenter sends no such re-enter. The tests therefore let the watcher process the
re-enter (`sync()`) after each add/remove before making the next change, and make the first add only
after the first wait (vcsim registers the collector's listener there; a ListView change before it
defers the re-enter to the next unrelated update).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from test_watcher_sim import Sim, signals_of, take

from vmwatch import Index
from vmwatch.devenv import VcsimServer
from vmwatch.settings import FilterSettings, ServiceSettings, WatchSettings
from vmwatch.vsphere import MoRef, TransportError
from vmwatch.watcher import AsyncSignalDisabledError, NoWatcherError, Watcher, WatcherSlot

pytestmark = [pytest.mark.servers, pytest.mark.anyio]

EXTRA_IGNORED = ('ignoredKey1', 'ignoredKey1', 'ignoredKey2')


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


@pytest.fixture
async def sim(vcsim: VcsimServer) -> AsyncIterator[Sim]:
    sim = await asyncio.to_thread(Sim.connect, vcsim)
    yield sim
    await asyncio.to_thread(sim.close)


@asynccontextmanager
async def watching(sim: Sim, **kwargs: Any) -> AsyncIterator[Watcher]:
    kwargs.setdefault('containers', {sim.c1: ['id-0']})
    kwargs.setdefault('filter_settings', FilterSettings(additional_ignored_keys=EXTRA_IGNORED))
    kwargs.setdefault('settings', WatchSettings(max_wait_s=60))
    async with Watcher(endpoint=sim.endpoint, **kwargs) as w:
        yield w
        assert w.error is None


async def nothing_more(w: Watcher) -> None:
    """Every change made so far was processed, and none of them signalled."""
    await w.sync()
    assert signals_of(w.drain()) == []
    assert w.error is None


def result(ns: str, name: str, moref: str) -> tuple[str, str, str, bool]:
    return (ns, name, moref, False)  # the Go suite's {Namespace, Name, Ref}, Verified=false


# -- 1-4: stop right after start -----------------------------------------------------------------------------


@pytest.mark.parametrize('named', [False, True], ids=['1-no-names', '2-c1vm1-named'])
async def test_1_2_closed_right_after_start_ends_cleanly(sim: Sim, named: bool) -> None:
    if named:
        await sim.name('c1vm1', 'my-namespace-1', 'my-name-1')
    w = Watcher(endpoint=sim.endpoint, containers={sim.c1: ['id-0']})
    async with w:
        pass
    assert w.error is None
    leftovers = signals_of(w.drain())
    # the first response may already have been decided before close(): then only c1vm1's enter
    assert leftovers in ([], [result('my-namespace-1', 'my-name-1', sim.moref('c1vm1'))] if named else [])
    with pytest.raises(StopAsyncIteration):
        await anext(w)


@pytest.mark.parametrize('named', [False, True], ids=['3-no-names', '4-c1vm1-named'])
async def test_3_4_server_stopped_right_after_start_ends_with_a_transport_error(sim: Sim, named: bool) -> None:
    if named:
        await sim.name('c1vm1', 'my-namespace-1', 'my-name-1')
    w = Watcher(endpoint=sim.endpoint, containers={sim.c1: ['id-0']})
    await w.start()
    await asyncio.to_thread(sim.server.stop)
    got = []
    with pytest.raises(TransportError):
        async with asyncio.timeout(30):
            async for s in w:
                got.append(s)
    assert isinstance(w.error, TransportError)
    assert signals_of(got) in ([], [result('my-namespace-1', 'my-name-1', sim.moref('c1vm1'))] if named else [])
    await w.aclose()


# -- 5-16 ----------------------------------------------------------------------------------------------------


async def test_5_no_names_no_results(sim: Sim) -> None:
    async with watching(sim) as w:
        await nothing_more(w)


async def test_6_removing_a_bogus_ref_succeeds(sim: Sim) -> None:
    async with watching(sim) as w:
        await w.remove(MoRef('VirtualMachine', 'bogus'), 'id-0')
        await nothing_more(w)


@pytest.fixture
async def named_c1vm1(sim: Sim) -> Sim:
    await sim.name('c1vm1', 'my-namespace-1', 'my-name-1')
    return sim


@asynccontextmanager
async def after_7(sim: Sim, **kwargs: Any) -> AsyncIterator[Watcher]:
    """Scenario 7: c1vm1 is named, so it signals once when it enters scope (unverified)."""
    async with watching(sim, **kwargs) as w:
        assert signals_of(await take(w, 1)) == [result('my-namespace-1', 'my-name-1', sim.moref('c1vm1'))]
        await nothing_more(w)
        yield w


async def test_7_a_named_vm_entering_scope_signals_once(named_c1vm1: Sim) -> None:
    async with after_7(named_c1vm1):
        pass


async def test_8_power_on_signals_again(named_c1vm1: Sim) -> None:
    sim = named_c1vm1
    async with after_7(sim) as w:
        await sim.power_on('c1vm1')
        assert signals_of(await take(w, 1)) == [result('my-namespace-1', 'my-name-1', sim.moref('c1vm1'))]
        await nothing_more(w)


async def test_9_ignored_keys_only_do_not_signal(named_c1vm1: Sim) -> None:
    sim = named_c1vm1
    async with after_7(sim) as w:
        await sim.reconfigure('c1vm1', ignoredKey1='fake', ignoredKey2='fake')
        await nothing_more(w)


async def test_10_a_kept_key_among_ignored_ones_signals(named_c1vm1: Sim) -> None:
    sim = named_c1vm1
    async with after_7(sim) as w:
        await sim.reconfigure('c1vm1', ignoredKey1='fake', **{'guestinfo.fromTheGuest': '1.2.3.4'}, ignoredKey2='fake')
        (s,) = await take(w, 1)
        assert signals_of([s]) == [result('my-namespace-1', 'my-name-1', sim.moref('c1vm1'))]
        assert s.changed == ('config.extraConfig',)
        await nothing_more(w)


async def test_11_snapshots_and_revert_signal(named_c1vm1: Sim) -> None:
    sim = named_c1vm1
    expected = [result('my-namespace-1', 'my-name-1', sim.moref('c1vm1'))]
    async with after_7(sim) as w:
        await sim.snapshot('c1vm1', 'snap-1')
        assert signals_of(await take(w, 1)) == expected
        await nothing_more(w)
        await sim.snapshot('c1vm1', 'snap-2')
        assert signals_of(await take(w, 1)) == expected
        await nothing_more(w)
        await sim.revert('c1vm1', 'snap-1')
        assert signals_of(await take(w, 1)) == expected
        await nothing_more(w)


async def test_12_after_remove_no_more_signals(named_c1vm1: Sim) -> None:
    sim = named_c1vm1
    async with after_7(sim) as w:
        await w.remove(sim.c1, 'id-0')
        await sim.reconfigure('c1vm1', **{'guestinfo.fromTheGuest': '1.2.3.4'}, ignoredKey2='fake')
        await nothing_more(w)
        await w.remove(sim.c1, 'id-0')  # again: a no-op
        await nothing_more(w)
        assert w.owners() == {}


async def test_13_owners_are_reference_counted(named_c1vm1: Sim) -> None:
    sim = named_c1vm1
    expected = [result('my-namespace-1', 'my-name-1', sim.moref('c1vm1'))]
    async with after_7(sim) as w:
        await w.add(sim.c1, 'id-1')
        await w.add(sim.c1, 'id-2')
        await w.remove(sim.c1, 'id-0')
        await sim.reconfigure('c1vm1', **{'guestinfo.0': '0'})
        assert signals_of(await take(w, 1)) == expected
        await w.remove(sim.c1, 'id-1')
        await sim.reconfigure('c1vm1', **{'guestinfo.1': '1'})
        assert signals_of(await take(w, 1)) == expected
        await w.remove(sim.c1, 'id-1')  # unknown owner now: no-op
        await sim.reconfigure('c1vm1', **{'guestinfo.1': '2'})
        assert signals_of(await take(w, 1)) == expected
        await w.remove(sim.c1, 'id-2')  # the last owner
        await sim.reconfigure('c1vm1', **{'guestinfo.2': '1'})
        await nothing_more(w)


async def test_14_two_named_vms_signal_once_each(sim: Sim) -> None:
    await sim.name('c1vm1', 'my-namespace-1', 'my-name-1')
    await sim.name('c1vm2', 'my-namespace-2', 'my-name-2')
    async with watching(sim) as w:
        assert sorted(signals_of(await take(w, 2))) == [
            result('my-namespace-1', 'my-name-1', sim.moref('c1vm1')),
            result('my-namespace-2', 'my-name-2', sim.moref('c1vm2')),
        ]
        await nothing_more(w)


async def test_15_destroying_a_vm_does_not_signal(named_c1vm1: Sim) -> None:
    sim = named_c1vm1
    async with after_7(sim) as w:
        await sim.destroy('c1vm1')
        await nothing_more(w)
        assert w.stats['skipped_left'] == 1


async def test_16_a_vm_outside_the_watched_containers_does_not_signal(sim: Sim) -> None:
    await sim.name('c2vm1', 'my-namespace-4', 'my-name-1')
    async with watching(sim) as w:
        await nothing_more(w)
        await sim.reconfigure('c2vm1', **{'guestinfo.x': '1'})
        await nothing_more(w)


# -- 17-19: adding cluster 2, with the index standing in for the Go suite's lookup ----------------------------


async def test_17_added_container_unverified_vm_signals(sim: Sim) -> None:
    await sim.name('c2vm1', 'my-namespace-4', 'my-name-1')
    index = Index()
    index.upsert('my-namespace-4', 'my-name-1', unique_id='', deleting=False, priority=0)  # created, not verified
    async with watching(sim, index=index) as w:
        await nothing_more(w)
        await w.add(sim.c2, 'id-0')
        assert signals_of(await take(w, 1)) == [result('my-namespace-4', 'my-name-1', sim.moref('c2vm1'))]
        await nothing_more(w)


async def test_17b_name_from_the_index_not_from_extra_config(sim: Sim) -> None:
    """c2vm1 carries no name; the index knows it by uniqueID (verified): no enter signal (18), but a
    later change signals with the index's name."""
    index = Index()
    index.upsert('my-namespace-4', 'my-name-1', unique_id=sim.moref('c2vm1'), deleting=False, priority=1)
    async with watching(sim, index=index) as w:
        await nothing_more(w)  # vcsim: see VCSIM_REENTER
        await w.add(sim.c2, 'id-0')
        await nothing_more(w)
        await sim.power_on('c2vm1')
        (s,) = await take(w, 1)
        assert (s.namespace, s.name, s.moref, s.verified) == ('my-namespace-4', 'my-name-1', sim.moref('c2vm1'), True)
        await nothing_more(w)


async def test_18_added_container_verified_vm_does_not_signal(sim: Sim) -> None:
    await sim.name('c2vm1', 'my-namespace-4', 'my-name-1')
    index = Index()
    index.upsert('my-namespace-4', 'my-name-1', unique_id=sim.moref('c2vm1'), deleting=False, priority=0)
    async with watching(sim, index=index) as w:
        await nothing_more(w)
        await w.add(sim.c2, 'id-0')
        await nothing_more(w)
        assert w.stats['skipped_verified_enter'] >= 1


async def test_19_added_container_deleting_vm_does_not_signal(sim: Sim) -> None:
    await sim.name('c2vm1', 'my-namespace-4', 'my-name-1')
    index = Index()
    index.upsert('my-namespace-4', 'my-name-1', unique_id='', deleting=True, priority=0)
    async with watching(sim, index=index) as w:
        await nothing_more(w)
        await w.add(sim.c2, 'id-0')
        await nothing_more(w)
        assert w.stats['skipped_deleting'] >= 1


# -- 6.2 #22: the slot ---------------------------------------------------------------------------------------


async def test_22_slot_without_watcher_or_disabled(sim: Sim) -> None:
    with pytest.raises(NoWatcherError, match='^no watcher$'):
        await WatcherSlot(disabled=False).add(sim.c2, 'id-0')
    with pytest.raises(NoWatcherError, match='^no watcher$'):
        await WatcherSlot(disabled=False).remove(sim.c2, 'id-0')
    with pytest.raises(AsyncSignalDisabledError, match='^async signal disabled$'):
        await WatcherSlot(disabled=True).add(sim.c2, 'id-0')
    with pytest.raises(AsyncSignalDisabledError, match='^async signal disabled$'):
        await WatcherSlot(disabled=True).remove(sim.c2, 'id-0')


async def test_22_slot_with_a_running_watcher_adds_and_clears_itself(sim: Sim) -> None:
    await sim.name('c2vm1', 'my-namespace-4', 'my-name-1')
    slot = WatcherSlot(disabled=False)
    async with watching(sim, slot=slot) as w:
        assert slot.watcher is w
        await slot.add(sim.c2, 'ns/zone')
        assert signals_of(await take(w, 1)) == [result('my-namespace-4', 'my-name-1', sim.moref('c2vm1'))]
        await slot.remove(sim.c2, 'ns/zone')
        await nothing_more(w)
    assert slot.watcher is None
    with pytest.raises(NoWatcherError):
        await slot.add(sim.c2, 'ns/zone')


# -- issue 14: the lists as settings -------------------------------------------------------------------------


async def test_settings_lists_reach_the_property_filter_and_the_decider(named_c1vm1: Sim) -> None:
    """`--watched-paths config.extraConfig` leaves power state out of vCenter's filter (a power-on, which signals
    with the defaults as in scenario 8, is not even reported), and `--ignored-extra-config-keys-add myNoise`
    reaches the Decider (a change of that key alone is noise, a kept key next to it still signals)."""
    sim = named_c1vm1
    fs = ServiceSettings(watched_paths=('config.extraConfig',), ignored_extra_config_keys_add=('myNoise',))
    async with after_7(sim, filter_settings=fs.filter_settings()) as w:
        await sim.power_on('c1vm1')
        await nothing_more(w)
        await sim.reconfigure('c1vm1', myNoise='1')
        await nothing_more(w)
        await sim.reconfigure('c1vm1', myNoise='2', **{'guestinfo.fromTheGuest': '1.2.3.4'})
        (s,) = await take(w, 1)
        assert signals_of([s]) == [result('my-namespace-1', 'my-name-1', sim.moref('c1vm1'))]
        assert s.changed == ('config.extraConfig',)
        await nothing_more(w)
