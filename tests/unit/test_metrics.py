# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from vmwatch.metrics import HealthServer, Metrics


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def health() -> object:
    state = {'ready': (False, 'starting')}
    metrics = Metrics()
    server = HealthServer(host='127.0.0.1', port=0, metrics=metrics, ready=lambda: state['ready']).start()
    yield server, metrics, state
    server.close()


def test_health_ready_and_metrics(health: tuple[HealthServer, Metrics, dict[str, tuple[bool, str]]]) -> None:
    server, metrics, state = health
    host, port = server.address
    base = f'http://{host}:{port}'
    assert _get(f'{base}/healthz') == (200, 'ok\n')
    assert _get(f'{base}/readyz') == (503, 'starting\n')
    state['ready'] = (True, 'standby: not the leader')
    assert _get(f'{base}/readyz') == (200, 'standby: not the leader\n')
    metrics.skipped.labels(vcenter='vc-a', reason='unchanged').inc(3)
    metrics.shard('vc-a').observe_cache({'hits': 5, 'misses': 2, 'evicted': 1, 'expired': 1, 'items': 7, 'bytes': 2100})
    metrics.set_lease_holder('vmwatch-vc-a', 'replica-a')
    code, body = _get(f'{base}/metrics')
    assert code == 200
    assert 'vmwatch_skipped_total{reason="unchanged",vcenter="vc-a"} 3.0' in body
    assert 'vmwatch_cache_evictions{vcenter="vc-a"} 2.0' in body
    assert 'vmwatch_lease_holder{identity="replica-a",name="vmwatch-vc-a"} 1.0' in body
    assert _get(f'{base}/nope')[0] == 404
    server.detail = lambda: [('vcenter-a', True, 'watching'), ('vcenter-b', False, 'vCenter unreachable')]
    state['ready'] = (False, 'vcenter-b: vCenter unreachable')
    code, body = _get(f'{base}/readyz?verbose')
    assert code == 503
    assert body.splitlines() == [
        '[+]vcenter-a ok: watching',
        '[-]vcenter-b failed: vCenter unreachable',
        'readyz check failed: vcenter-b: vCenter unreachable',
    ]
    assert _get(f'{base}/readyz') == (503, 'vcenter-b: vCenter unreachable\n')  # terse without ?verbose


@pytest.mark.anyio
async def test_each_queue_is_exported_under_its_own_name() -> None:
    from vmwatch.queue import WorkQueue

    metrics = Metrics()
    vms, zones = WorkQueue(), WorkQueue()
    metrics.watch_queue('virtualmachine', vms)
    metrics.watch_queue('zone', zones)
    vms.add(('ns', 'a'))
    vms.add(('ns', 'a'))  # coalesced, still an add (client-go counts every Add)
    vms.add(('ns', 'b'))
    zones.add(('ns', 'zone-a'))
    key = await zones.get()
    zones.add_rate_limited(key)
    zones.done(key)
    metrics.observe_queues()
    metrics.observe_queues()  # a second scrape adds nothing
    value = metrics.registry.get_sample_value
    assert value('workqueue_adds_total', {'name': 'virtualmachine'}) == 3
    assert value('workqueue_depth', {'name': 'virtualmachine'}) == 2
    assert value('workqueue_adds_total', {'name': 'zone'}) == 2
    assert value('workqueue_retries_total', {'name': 'zone'}) == 1
    assert value('workqueue_retries_total', {'name': 'virtualmachine'}) == 0
    assert value('workqueue_work_duration_seconds_count', {'name': 'zone'}) == 1
    assert value('workqueue_queue_duration_seconds_count', {'name': 'zone'}) == 1
