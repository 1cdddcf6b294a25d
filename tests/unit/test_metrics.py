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
    metrics.skipped.labels(reason='unchanged').inc(3)
    metrics.observe_cache({'hits': 5, 'misses': 2, 'evicted': 1, 'expired': 1, 'items': 7, 'bytes': 2100})
    metrics.set_lease_holder('replica-a')
    code, body = _get(f'{base}/metrics')
    assert code == 200
    assert 'vmwatch_skipped_total{reason="unchanged"} 3.0' in body
    assert 'vmwatch_cache_evictions 2.0' in body
    assert 'vmwatch_lease_holder{identity="replica-a"} 1.0' in body
    assert _get(f'{base}/nope')[0] == 404
