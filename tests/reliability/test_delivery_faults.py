# SPDX-License-Identifier: Apache-2.0
"""A change decided but never handed on is not lost when the watcher restarts (issue 11, A2).

The fingerprint cache is updated when the core decides; the request reaches the queue later. When the watcher
ends in between (here: its session terminated by another client while the signal waits in the hand-off, and the
consumer never takes it), the next watcher sees the VM enter with fingerprints the cache already holds. It must
signal it again (reason 'undelivered') instead of skipping it as unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rel_helpers import WATCHED_KEY, terminate, topology

from conftest import Recorder
from vmwatch import Index
from vmwatch.devenv import VcsimServer
from vmwatch.settings import FilterSettings, WatchSettings
from vmwatch.vsphere import Endpoint, Session
from vmwatch.vsphere import inventory as inv
from vmwatch.watcher import Watcher, make_decider

pytestmark = [pytest.mark.servers, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


async def test_a_signal_never_handed_on_is_signalled_by_the_next_watcher(
    vcsim_factory: Any, recorder: Recorder
) -> None:
    vc: VcsimServer = vcsim_factory(*topology(2))
    endpoint = Endpoint(url=vc.url, user=vc.user, password_file=vc.password_file, ca_file=vc.ca_file)
    admin = Session(endpoint)
    await asyncio.to_thread(admin.login)
    folder = await asyncio.to_thread(inv.vm_folder, admin)
    [(vm, _), *_] = await asyncio.to_thread(inv.vms_under, admin, folder)
    await asyncio.to_thread(inv.set_extra_config, admin, vm, {'vmservice.namespacedName': 'ns-a/vm-a'})
    decider = make_decider(FilterSettings(), Index())  # process-global: shared by both watchers
    kw: dict[str, Any] = dict(containers={folder: ['zone']}, decider=decider, deliver_on_take=False,
                              settings=WatchSettings(max_wait_s=5))  # fmt: skip

    session = Session(endpoint)
    await asyncio.to_thread(session.login)
    w1 = Watcher(session=session, **kw)
    async with w1:
        await w1.sync()
        for s in w1.drain():  # the first request (vm-a entered unverified) is delivered
            decider.delivered(s.moref, s.digest)
        await asyncio.to_thread(inv.set_extra_config, admin, vm, {WATCHED_KEY: '1'})
        await w1.sync()
        assert w1.pending == 1  # decided: the cache holds the new fingerprint; nobody took the signal
        await asyncio.to_thread(terminate, admin, session)
        await asyncio.wait_for(w1.wait_closed(), 30)
    assert w1.error is not None  # NotAuthenticated: the watcher is gone with its undelivered signal
    await asyncio.to_thread(session.logout)  # the terminated session's connections are closed all the same

    session2 = Session(endpoint)
    await asyncio.to_thread(session2.login)
    async with Watcher(session=session2, **kw) as w2:
        await w2.sync()
        got = [(s.namespace, s.name, s.reason) for s in w2.drain()]
    await asyncio.to_thread(session2.logout)
    await asyncio.to_thread(admin.logout)
    lost = 0 if got == [('ns-a', 'vm-a', 'undelivered')] else 1
    recorder.record(
        'A2', lost=lost, test='test_delivery_faults.py::test_a_signal_never_handed_on_is_signalled_by_the_next_watcher',
        did="a VM's change is decided (cached) but its signal never reaches the queue: the watcher's session is "
        'terminated by another client first; the next watcher sees the VM enter with unchanged fingerprints and '
        "signals it again (reason 'undelivered'), since no delivery of that state was recorded",
    )  # fmt: skip
    assert got == [('ns-a', 'vm-a', 'undelivered')]
