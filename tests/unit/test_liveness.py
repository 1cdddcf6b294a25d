# SPDX-License-Identifier: Apache-2.0
"""/healthz fails while the event loop is stuck and recovers when it runs again (issue 14).

The servers are the ones `vmwatch run` binds (`run_cmd._listen`), probed over real HTTP from another thread while
the loop is blocked by a synchronous sleep, as a blocking call in a coroutine would block it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from scenarios.probes import http_get  # tests/ is on sys.path (its conftest)
from vmwatch.devenv import free_port
from vmwatch.liveness import Heartbeat
from vmwatch.metrics import Metrics
from vmwatch.run_cmd import _listen, _ListenError
from vmwatch.settings import ServiceSettings


def _settings(**kw: str | float) -> ServiceSettings:
    return ServiceSettings(health_probe_bind_address='127.0.0.1:0', metrics_bind_address='0', **kw)  # type: ignore[arg-type]


def test_healthz_is_500_while_the_loop_is_blocked_and_200_again_after() -> None:
    heartbeat = Heartbeat(stall_s=1.0)
    (server,) = _listen(_settings(liveness_stall_s=1.0), Metrics(), heartbeat)  # metrics off: one listener
    server.start()
    url = 'http://{}:{}/healthz'.format(*server.address)
    seen: dict[str, tuple[int, str]] = {}

    def probe_during_the_block() -> None:
        time.sleep(1.8)  # the loop has been blocked ~1.7 s by now
        seen['blocked'] = http_get(url)

    async def main() -> None:
        beating = asyncio.create_task(heartbeat.run())
        await asyncio.sleep(0.2)
        seen['before'] = await asyncio.to_thread(http_get, url)
        prober = threading.Thread(target=probe_during_the_block)
        prober.start()
        time.sleep(2.5)  # deliberately blocks the event loop
        prober.join()
        await asyncio.sleep(0.05)  # the loop runs again: the heartbeat stamps at once
        seen['after'] = await asyncio.to_thread(http_get, url)
        beating.cancel()

    try:
        asyncio.run(main())
    finally:
        server.close()
    assert seen['before'] == (200, 'ok\n')
    code, body = seen['blocked']
    assert code == 500 and body.startswith('event loop stalled: no heartbeat for '), seen['blocked']
    assert seen['after'] == (200, 'ok\n')


def test_metrics_get_their_own_listener_unless_they_share_the_probes_address() -> None:
    metrics = Metrics()
    probes, scrape = _listen(
        ServiceSettings(health_probe_bind_address='127.0.0.1:0', metrics_bind_address='127.0.0.1:0'),
        metrics,
        Heartbeat(stall_s=30),
    )
    try:
        for s in (probes, scrape):
            s.ready = lambda: (True, 'watching')
            s.start()
        p, m = ('http://{}:{}'.format(*s.address) for s in (probes, scrape))
        assert p != m
        assert http_get(f'{p}/healthz') == (200, 'ok\n') and http_get(f'{p}/readyz') == (200, 'watching\n')
        assert http_get(f'{p}/metrics')[0] == 404
        assert http_get(f'{m}/metrics')[0] == 200
        assert http_get(f'{m}/healthz')[0] == 404 and http_get(f'{m}/readyz')[0] == 404
    finally:
        probes.close()
        scrape.close()
    port = free_port()  # one address for both: one listener serving all three
    (both,) = _listen(
        ServiceSettings(health_probe_bind_address=f'127.0.0.1:{port}', metrics_bind_address=f'127.0.0.1:{port}'),
        metrics,
        Heartbeat(stall_s=30),
    )
    try:
        both.start()
        base = 'http://{}:{}'.format(*both.address)
        assert http_get(f'{base}/metrics')[0] == 200 and http_get(f'{base}/healthz') == (200, 'ok\n')
    finally:
        both.close()


@pytest.mark.timeout(20)
def test_a_busy_metrics_port_is_one_error_and_releases_the_probe_port() -> None:
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        taken = busy.getsockname()[1]
        probe_port = free_port()
        settings = ServiceSettings(
            health_probe_bind_address=f'127.0.0.1:{probe_port}', metrics_bind_address=f'127.0.0.1:{taken}'
        )
        with pytest.raises(_ListenError, match=f'cannot listen on --metrics-bind-address 127.0.0.1:{taken}'):
            _listen(settings, Metrics(), Heartbeat(stall_s=30))
    with socket.socket() as again:  # the probe server bound first was closed (it never served)
        again.bind(('127.0.0.1', probe_port))
