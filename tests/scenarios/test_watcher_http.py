# SPDX-License-Identifier: Apache-2.0
"""The real Watcher and Collector over HTTP on what vcsim does not say by itself (see soap_replay.py).

* InvalidCollectorVersion (vCenter dropped the collector's history): the watcher starts again from version
  "" and goes on; the change carried by the response it never got is not lost.
* Truncated pages (MaxObjectUpdates 3 with 12 VMs): the watcher follows every page to the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from soap_replay import SoapRelay
from test_watcher_sim import Sim, signals_of, take

from vmwatch.devenv import VcsimServer
from vmwatch.settings import FilterSettings, WatchSettings
from vmwatch.vsphere import Endpoint, MoRef
from vmwatch.watcher import Watcher

pytestmark = [pytest.mark.servers, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


@pytest.fixture
async def sim(vcsim: VcsimServer) -> AsyncIterator[Sim]:
    sim = await asyncio.to_thread(Sim.connect, vcsim)
    yield sim
    await asyncio.to_thread(sim.close)


@pytest.fixture
def relay(vcsim: VcsimServer) -> Iterator[SoapRelay]:
    r = SoapRelay(vcsim).start()
    yield r
    r.stop()


def through(relay: SoapRelay, server: VcsimServer) -> Endpoint:
    return Endpoint(url=relay.url, user=server.user, password_file=server.password_file, insecure=True)


async def nothing_more(w: Watcher) -> None:
    await w.sync()
    assert signals_of(w.drain()) == []
    assert w.error is None


async def test_invalid_collector_version_resyncs_from_scratch_and_goes_on(sim: Sim, relay: SoapRelay) -> None:
    await sim.name('c1vm1', 'ns-1', 'vm-1')
    expected = [('ns-1', 'vm-1', sim.moref('c1vm1'), False)]
    async with Watcher(
        endpoint=through(relay, sim.server), containers={sim.c1: ['id-0']}, settings=WatchSettings(max_wait_s=60)
    ) as w:
        assert signals_of(await take(w, 1)) == expected  # c1vm1 enters scope (named, unverified)
        await nothing_more(w)
        assert w.stats['resyncs'] == 0
        objects, unchanged, waits = w.stats['objects'], w.stats['skipped_unchanged'], len(relay.waits)
        relay.invalid_version_next()
        await nothing_more(w)  # sync(): its zero-wait poll gets the fault, the resync the full state again
        assert (relay.faults_sent, relay.replayed, w.stats['resyncs']) == (1, 1, 1)
        later = relay.waits[waits:]
        assert later.count('') == 1 and later.index('') >= 1, relay.waits  # started again from version "" once
        # every VM came again as enter; the fingerprint cache absorbed them (nothing changed meanwhile)
        assert w.stats['objects'] - objects == 2 and w.stats['skipped_unchanged'] - unchanged == 2, w.stats
        # ...and it keeps going, from the replayed sync's version, against vcsim again
        await sim.reconfigure('c1vm1', **{'guestinfo.userdata': 'e30='})
        (s,) = await take(w, 1)
        assert signals_of([s]) == expected and s.changed == ('config.extraConfig',)
        await nothing_more(w)
        await sim.power_on('c1vm1')
        assert signals_of(await take(w, 1)) == expected
        await nothing_more(w)
        assert relay.waits[-1] != '' and w.stats['resyncs'] == 1
        assert relay.followed_versions(), list(zip(relay.waits, relay.answers, strict=True))
        assert w.error is None


async def test_truncated_pages_are_followed_to_the_end(vcsim_factory: Callable[..., VcsimServer]) -> None:
    server = vcsim_factory('-cluster', '1', '-host', '1', '-standalone-host', '0', '-vm', '12', '-autostart=false')
    sim = await asyncio.to_thread(Sim.connect, server)
    relay = SoapRelay(server).start()
    try:
        vms = sorted(sim.vms.values(), key=lambda vm: vm.name)
        for i, vm in enumerate(vms):
            await sim.name(vm.name, 'ns-p', f'vm-{i}')
        root = MoRef('Folder', sim.session.content.rootFolder._moId)
        # two paths keep vcsim quick (it re-collects the filter for every page); paging does not care
        fs = FilterSettings(watched_paths=('config.extraConfig', 'summary.runtime.powerState'))
        settings = WatchSettings(max_wait_s=60, max_object_updates=3)
        endpoint = through(relay, server)
        async with Watcher(endpoint=endpoint, containers={root: ['t']}, settings=settings, filter_settings=fs) as w:
            await w.sync()  # a flush ends only on a page that is not truncated
            got = w.drain()
            assert sorted(s.moref for s in got) == sorted(vm._moId for vm in vms)  # every VM, once
            assert {s.reason for s in got} == {'entered'}
            assert w.stats['truncated'] >= 12 // 3 - 1, w.stats
            assert w.stats['objects'] == 12
            await nothing_more(w)
        assert relay.waits.count('') == 1, relay.waits  # one initial sync, its pages followed by version
        assert relay.followed_versions(), list(zip(relay.waits, relay.answers, strict=True))
    finally:
        relay.stop()
        await asyncio.to_thread(sim.close)
