# SPDX-License-Identifier: Apache-2.0
"""vCenter-side faults (issue 8, rows a-e, g-i): the service survives them and loses no signal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from rel_helpers import (
    counter,
    kill,
    make_fleet,
    new_login,
    record_delivered,
    relogin,
    set_session_timeout,
    terminate,
    topology,
)
from service_env import service_env, until

from conftest import Recorder
from vmwatch.devenv import VcsimServer
from vmwatch.vsphere import MoRef

pytestmark = pytest.mark.anyio

N = 4


@pytest.fixture
def vc(vcsim_factory: Any) -> VcsimServer:
    return vcsim_factory(*topology(N))  # type: ignore[no-any-return]


async def test_a_vcsim_killed_mid_wait_and_restarted(
    kube_api: client.ApiClient, vc: VcsimServer, recorder: Recorder
) -> None:
    async with service_env(kube_api, vc, max_wait_s=30) as env:
        fleet = await make_fleet(env, N)
        logins = env.service.shard.logins
        await env.service.shard.slot.watcher.sync()  # type: ignore[union-attr]  # a fresh 30 s wait is in flight
        await asyncio.to_thread(kill, vc)
        await asyncio.to_thread(vc.start)  # same port, same password, fresh inventory (same MoRefs)
        await relogin(env)
        await new_login(env, logins, timeout_s=60)
        await fleet.change_each()
        await record_delivered(
            recorder, 'a', fleet, test='test_vcenter_faults.py::test_a_vcsim_killed_mid_wait_and_restarted',
            did='the blocked wait fails (transport error); the service retries with backoff, logs in again once '
            'vcsim answers and signals every VM changed after the restart',
        )  # fmt: skip


async def test_b_session_terminated_by_another_client(
    kube_api: client.ApiClient, vc: VcsimServer, recorder: Recorder
) -> None:
    async with service_env(kube_api, vc, max_wait_s=2) as env:
        fleet = await make_fleet(env, N)
        logins = env.service.shard.logins
        victim = env.service.shard.session
        assert victim is not None
        await env.vsphere(terminate, victim)
        await fleet.change('vm-0')  # most likely in the gap between the two sessions
        await new_login(env, logins)
        await fleet.change_each(fleet.names[1:])
        await record_delivered(
            recorder, 'b', fleet, test='test_vcenter_faults.py::test_b_session_terminated_by_another_client',
            did='the next call fails NotAuthenticated; the service logs in again (restart cause `auth`), the new '
            'watcher re-reads every VM and signals the one changed in the gap and every later change',
        )  # fmt: skip
        assert counter(env.service.metrics.watcher_restarts, vcenter='default', cause='auth') >= 1


async def test_c_session_idle_timeout(kube_api: client.ApiClient, vc: VcsimServer, recorder: Recorder) -> None:
    async with service_env(kube_api, vc, max_wait_s=3) as env:
        await env.vsphere(set_session_timeout, '1s')  # sessions logged in from now on expire after 1 s idle
        fleet = await make_fleet(env, N)
        for name in fleet.names:
            logins = env.service.shard.logins
            # a blocked 3 s wait outlives the 1 s idle timeout: the session expires under it
            await new_login(env, logins, 'an expiry and a new login')
            await fleet.change(name)
        await record_delivered(
            recorder, 'c', fleet, test='test_vcenter_faults.py::test_c_session_idle_timeout',
            did='sessions expire under the long poll (1 s idle timeout, 3 s waits); each expiry ends the watcher '
            'with NotAuthenticated, the service logs in again and every change made between expiries is signalled',
        )  # fmt: skip
        assert counter(env.service.metrics.watcher_restarts, vcenter='default', cause='auth') >= N


async def test_d_password_rotated(
    kube_api: client.ApiClient, vc: VcsimServer, recorder: Recorder, tmp_path: Path
) -> None:
    service_password = tmp_path / 'service-password'  # the mounted secret, updated after the server rotated
    service_password.write_text(vc.password + '\n')
    async with service_env(kube_api, vc, vc_password_file=service_password) as env:
        fleet = await make_fleet(env, N)
        await asyncio.to_thread(vc.restart, password='rotated-' + vc.password)
        await relogin(env)
        await until(lambda: 'login failed' in env.service.shard.status, 'a refused login with the old password')
        await fleet.change_each(fleet.names[:2])  # changed while the service is locked out
        service_password.write_text(vc.password + '\n')
        await until(lambda: env.service.watching, 'a login with the rotated password')
        await record_delivered(
            recorder, 'd', fleet, test='test_vcenter_faults.py::test_d_password_rotated',
            did='logins fail (InvalidLogin, warning, rate-limited) with backoff until the password file changes; '
            'the file is re-read on every attempt, and the VMs changed while locked out are signalled',
        )  # fmt: skip


def login_bound(window_s: float, *, initial_s: float, max_s: float) -> int:
    """Most login attempts that fit in `window_s`: consecutive attempts are at least the jittered backoff
    delay apart, and the jitter keeps at least half of min(max_s, initial_s * 2**n) after the n-th failure."""
    attempts, elapsed, n = 1, 0.0, 0
    while True:
        elapsed += 0.5 * min(max_s, initial_s * 2**n)
        if elapsed > window_s:
            return attempts
        attempts += 1
        n += 1


WINDOW_S = 15.0


async def test_e_vcenter_unreachable_for_long(kube_api: client.ApiClient, vc: VcsimServer, recorder: Recorder) -> None:
    initial_s, max_s = 0.1, 2.0
    async with service_env(kube_api, vc, max_wait_s=2, restart_initial_s=initial_s, restart_max_s=max_s) as env:
        fleet = await make_fleet(env, N)
        await asyncio.to_thread(vc.stop)
        await until(lambda: not env.service.watching and 'unreachable' in env.service.shard.status, 'vCenter down')
        before = env.service.shard.logins
        await asyncio.sleep(WINDOW_S)  # the window counted: bounds on counts, not on timings
        attempts = env.service.shard.logins - before
        bound = login_bound(WINDOW_S, initial_s=initial_s, max_s=max_s)
        hourly = login_bound(3600, initial_s=1.0, max_s=300.0)
        await asyncio.to_thread(vc.start)
        await relogin(env)
        await until(lambda: env.service.watching, 'a watcher once vCenter is back', timeout_s=30)
        await fleet.change_each()
        await record_delivered(
            recorder, 'e', fleet, test='test_vcenter_faults.py::test_e_vcenter_unreachable_for_long',
            did=f'retries with capped exponential backoff and jitter: over {WINDOW_S:.0f} s with backoff '
            f'{initial_s} s doubling to {max_s} s, at most {bound} logins (bound computed from the settings; '
            f'with the defaults, 1 s to 300 s, at most {hourly} per hour); the process never exits, and once '
            'vCenter is back every change is signalled',
        )  # fmt: skip
        assert 2 <= attempts <= bound, (attempts, bound)


async def test_g_slow_consumer(kube_api: client.ApiClient, vc: VcsimServer, recorder: Recorder) -> None:
    from vmwatch.queue import WorkQueue

    async with service_env(kube_api, vc) as env:
        fleet = await make_fleet(env, N)
        queue = WorkQueue()  # the env's consumer keeps the old queue: nobody drains this one
        queue.on_idle = env.service.queue.on_idle
        env.service.queue = env.service.shard.intake.queue = queue
        watcher = env.service.shard.slot.watcher
        assert watcher is not None
        peak = 0
        rounds = 10
        for _ in range(rounds):
            for name in fleet.names:
                await fleet.change(name)
                peak = max(peak, queue.depth, watcher.pending)
        await watcher.sync()
        await until(lambda: watcher.pending == 0 and env.service.validating == 0, 'the hand-off into the queue')
        peak = max(peak, queue.depth)
        delivered: list[tuple[str, str]] = []
        while len(queue):
            key = await queue.get()
            assert key != 'shutdown'
            delivered.append(key)
            queue.done(key)
        expected = [(env.namespace, n) for n in fleet.names]
        lost = sorted(set(expected) - set(delivered))
        recorder.record(
            'g', lost=len(lost), test='test_vcenter_faults.py::test_g_slow_consumer',
            did=f'{rounds * N} watched changes to {N} VMs with nobody draining: the queue and the watcher hand-off '
            f'never hold more than {N} keys (one per VM, coalesced); draining then yields each VM exactly once',
        )  # fmt: skip
        assert lost == []
        assert peak <= N, peak
        assert sorted(delivered) == sorted(expected)  # each key once


async def test_h_latency_injected(kube_api: client.ApiClient, vcsim_factory: Any, recorder: Recorder) -> None:
    delays = 'WaitForUpdatesEx:300,RetrievePropertiesEx:200,CreateFilter:200,ModifyListView:200,Login:200'
    vc = vcsim_factory(*topology(N), '-delay', '20', '-method-delay', delays)
    async with service_env(kube_api, vc) as env:
        fleet = await make_fleet(env, N)
        for _ in range(2):
            await fleet.change_each()
        await record_delivered(
            recorder, 'h', fleet, timeout_s=60, test='test_vcenter_faults.py::test_h_latency_injected',
            did='every call 20 ms slower, WaitForUpdatesEx +300 ms, RetrievePropertiesEx, CreateFilter, '
            'ModifyListView and Login +200 ms: every change still arrives',
        )  # fmt: skip


async def test_i_zone_folder_missing(kube_api: client.ApiClient, vc: VcsimServer, recorder: Recorder) -> None:
    async with service_env(kube_api, vc, zone_controller=False) as env:
        env.create_zone('bogus', 'group-4242424242')
        fleet = await make_fleet(env, N)
        await fleet.change_each()
        await record_delivered(
            recorder, 'i', fleet, test='test_vcenter_faults.py::test_i_zone_folder_missing '
            '(and tests/scenarios/test_service.py::test_34)',
            did='the missing folder is filtered out (warning) and gets no finalizer; the watcher runs for the '
            "other Zones' folders and signals their VMs",
        )  # fmt: skip
        owners = env.service.shard.slot.watcher.owners()  # type: ignore[union-attr]
        bogus = env.zone('bogus')
        assert MoRef('Folder', 'group-4242424242') not in owners and fleet.folder in owners
        assert bogus is not None and not (bogus['metadata'].get('finalizers') or [])
