# SPDX-License-Identifier: Apache-2.0
"""Leader election on a real Lease: one leader, take-over on lost renewal, release on stop, loss on theft."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kubernetes import client

from vmwatch.kube.leader import LeaderElector, LeaseSettings

FAST = LeaseSettings(lease_duration_s=3.0, renew_deadline_s=2.0, retry_period_s=0.25)


class Candidate:
    """An elector plus the work it runs while leading, with a log of what happened when."""

    def __init__(self, api: Any, ns: str, identity: str) -> None:
        self.events: list[tuple[float, str]] = []
        self.working = False
        self.elector = LeaderElector(
            api,
            namespace=ns,
            name='vmwatch',
            identity=identity,
            settings=FAST,
            on_started_leading=lambda: self.events.append((time.monotonic(), 'started')),
            on_stopped_leading=lambda: self.events.append((time.monotonic(), 'stopped')),
            on_new_leader=lambda who: self.events.append((time.monotonic(), f'leader={who}')),
        )

    async def work(self) -> None:
        self.working = True
        try:
            await asyncio.Event().wait()  # runs until cancelled
        finally:
            self.working = False
            self.events.append((time.monotonic(), 'work-cancelled'))

    def start(self, *, release: bool = True) -> asyncio.Task[None]:
        return asyncio.ensure_future(self.elector.run(self.work, release=release))


async def wait_for(predicate: Any, timeout_s: float, what: str, *, poll_s: float = 0.02) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f'timed out after {timeout_s} s waiting for {what}')
        await asyncio.sleep(poll_s)
    return time.monotonic() - t0


def only_one_leader(a: Candidate, b: Candidate) -> None:
    assert not (a.elector.is_leader and b.elector.is_leader), 'two leaders'
    assert not (a.working and b.working), 'two leaders working'


def test_one_leads_and_the_other_takes_over_when_renewal_stops(kube_api: Any, namespace: str) -> None:
    async def main() -> None:
        a, b = Candidate(kube_api, namespace, 'a'), Candidate(kube_api, namespace, 'b')
        tasks = [a.start(), b.start()]
        await wait_for(lambda: a.elector.is_leader or b.elector.is_leader, 10, 'a leader')
        leader, other = (a, b) if a.elector.is_leader else (b, a)
        for _ in range(20):  # a while with both campaigning: exactly one leads
            only_one_leader(a, b)
            await asyncio.sleep(0.05)
        assert leader.working and not other.working
        assert other.elector.leader == leader.elector.identity

        leader.elector.renewal_paused = True
        paused_at = time.monotonic()
        # the leader stops its work within the renew deadline, before anyone may take over
        await wait_for(lambda: not leader.working, FAST.renew_deadline_s + 1, 'the old leader to stop')
        await wait_for(lambda: other.elector.is_leader, FAST.lease_duration_s + 1, 'the take-over')
        took = time.monotonic() - paused_at
        assert took <= FAST.lease_duration_s + 2 * FAST.retry_period_s + 0.5
        stopped = [t for t, e in leader.events if e == 'work-cancelled'][0]
        started = [t for t, e in other.events if e == 'started'][0]
        assert stopped < started  # never two leaders at once
        await wait_for(lambda: other.working, 1, 'the new leader to work')

        for candidate in (a, b):
            candidate.elector.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert not a.working and not b.working

    asyncio.run(main())


def test_clean_stop_releases_the_lease_for_a_quick_take_over(kube_api: Any, namespace: str) -> None:
    async def main() -> None:
        a = Candidate(kube_api, namespace, 'a')
        task_a = a.start()
        await wait_for(lambda: a.elector.is_leader, 10, 'a to lead')
        b = Candidate(kube_api, namespace, 'b')
        task_b = b.start()
        await asyncio.sleep(0.5)
        assert not b.elector.is_leader
        a.elector.stop()
        await asyncio.wait_for(task_a, 10)
        assert [e for _, e in a.events if e in ('started', 'stopped', 'work-cancelled')] == [
            'started',
            'work-cancelled',
            'stopped',
        ]
        lease: Any = client.CoordinationV1Api(kube_api).read_namespaced_lease('vmwatch', namespace)
        assert lease.spec.holder_identity in (None, 'b')
        took = await wait_for(lambda: b.elector.is_leader, FAST.lease_duration_s, 'b to take over')
        assert took < FAST.lease_duration_s - 1  # released, not expired
        b.elector.stop()
        await asyncio.wait_for(task_b, 10)

    asyncio.run(main())


def test_losing_the_lease_stops_the_work_at_once(kube_api: Any, namespace: str) -> None:
    async def main() -> None:
        a = Candidate(kube_api, namespace, 'a')
        task = a.start()
        await wait_for(lambda: a.working, 10, 'a to lead')
        leases = client.CoordinationV1Api(kube_api)
        lease: Any = leases.read_namespaced_lease('vmwatch', namespace)
        lease.spec.holder_identity = 'thief'
        leases.replace_namespaced_lease('vmwatch', namespace, lease)  # another replica took it over
        took = await wait_for(lambda: not a.working, 5, 'the work to stop')
        assert took < FAST.retry_period_s + 1.0
        assert not a.elector.is_leader and a.elector.leader == 'thief'
        assert 'leader=thief' in [e for _, e in a.events]
        a.elector.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        LeaseSettings(lease_duration_s=10, renew_deadline_s=10, retry_period_s=2)
    assert LeaseSettings() == LeaseSettings(lease_duration_s=15, renew_deadline_s=10, retry_period_s=2)
