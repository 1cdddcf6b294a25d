# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

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
    assert 'vmwatch_cache_evictions_total{vcenter="vc-a"} 2.0' in body
    assert '# TYPE vmwatch_cache_hits_total counter' in body  # cumulative: a counter, not a gauge
    assert 'process_resident_memory_bytes' in body and 'python_info{' in body  # the default registry's collectors
    assert '_created' not in body
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


def test_cache_counters_follow_the_deciders_totals() -> None:
    """Decider.cache_stats() is cumulative: each scrape adds the difference; a new Decider (0 again) counts on."""
    metrics = Metrics()
    shard = metrics.shard('vc-a')
    value = metrics.registry.get_sample_value
    shard.observe_cache({'hits': 5, 'misses': 2, 'evicted': 1, 'expired': 1})
    shard.observe_cache({'hits': 7, 'misses': 2, 'evicted': 1, 'expired': 1})
    assert value('vmwatch_cache_hits_total', {'vcenter': 'vc-a'}) == 7
    assert value('vmwatch_cache_misses_total', {'vcenter': 'vc-a'}) == 2
    assert value('vmwatch_cache_evictions_total', {'vcenter': 'vc-a'}) == 2
    shard.observe_cache({'hits': 3})
    assert value('vmwatch_cache_hits_total', {'vcenter': 'vc-a'}) == 10


def test_no_created_series_and_no_global_change() -> None:
    """The exposition drops every *_created sample of vmwatch's registry, and only there: prometheus_client's
    own default (an embedding operator's registry) keeps them."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    metrics = Metrics()
    metrics.shard('vc-a').restart('closed')
    metrics.queue_latency.labels(name='x').observe(0.1)
    text = metrics.exposition().decode()
    assert 'vmwatch_watcher_restarts_total{cause="closed",vcenter="vc-a"} 1.0' in text
    assert 'workqueue_queue_duration_seconds_count{name="x"} 1.0' in text
    assert '_created' not in text
    other = CollectorRegistry()
    Counter('theirs', "an embedding application's counter", registry=other).inc()
    assert b'theirs_created' in generate_latest(other)


@pytest.mark.anyio
async def test_unfinished_work_and_longest_running_processor() -> None:
    """client-go semantics: the sum of the ages of the items being processed, and the oldest one; 0 when idle."""
    import asyncio

    from vmwatch.queue import WorkQueue

    metrics = Metrics()
    queue = WorkQueue()
    metrics.watch_queue('virtualmachine', queue)
    value = metrics.registry.get_sample_value
    labels = {'name': 'virtualmachine'}
    queue.add(('ns', 'a'))
    queue.add(('ns', 'b'))
    a = await queue.get()
    await asyncio.sleep(0.2)
    b = await queue.get()
    await asyncio.sleep(0.1)
    metrics.observe_queues()
    longest = value('workqueue_longest_running_processor_seconds', labels)
    unfinished = value('workqueue_unfinished_work_seconds', labels)
    assert longest is not None and unfinished is not None
    assert 0.3 <= longest < 5
    assert longest + 0.1 <= unfinished < 2 * longest  # a (~0.3 s) + b (~0.1 s)
    queue.done(a)
    queue.done(b)
    metrics.observe_queues()
    assert value('workqueue_longest_running_processor_seconds', labels) == 0
    assert value('workqueue_unfinished_work_seconds', labels) == 0


def test_object_update_kinds_come_from_the_core_and_reach_the_stats() -> None:
    from collections import Counter

    from vmwatch._vmwatch import Index
    from vmwatch.responses import ResponseLog
    from vmwatch.settings import FilterSettings
    from vmwatch.watcher import make_decider

    data = Path(__file__).parent.parent / 'data'
    decider = make_decider(FilterSettings(), Index())
    sync = decider.decide((data / 'initial-sync.xml').read_bytes())
    power_on = decider.decide((data / 'power-on.xml').read_bytes())
    destroy = decider.decide((data / 'destroy.xml').read_bytes())
    assert sync.kinds == (sync.objects, 0, 0) and sync.objects > 1
    assert power_on.kinds == (0, 1, 0)
    assert destroy.kinds == (0, 0, 1)
    stats: Counter[str] = Counter()
    log = ResponseLog()
    body = (data / 'power-on.xml').read_bytes()
    log.responded(body, stats)
    for batch in (sync, power_on, destroy):
        log.decided(batch.kinds, stats)
    assert stats['decoded_bytes'] == len(body)
    assert (stats['objects_enter'], stats['objects_modify'], stats['objects_leave']) == tuple(
        map(sum, zip(sync.kinds, power_on.kinds, destroy.kinds, strict=True))
    )
    assert log.last_response_at is not None
    log.put(('ns', 'a'))
    first = log.last_response_at
    log.responded(b'', stats)
    log.put(('ns', 'a'))  # coalesced: the older arrival stands
    assert log.take(('ns', 'a')) == first == log.taken_at
    assert log.take(('ns', 'a')) is None
