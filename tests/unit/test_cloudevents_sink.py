# SPDX-License-Identifier: Apache-2.0
"""The CloudEvents sink's parts: event building (parsed back with the cloudevents SDK), the source, the settings
checks, and delivery against a local HTTP server (2xx delivered and forgotten, 4xx retried per key, down)."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import from_http

from vmwatch.cloudevents_sink import (
    EVENT_TYPE,
    CloudEventsSink,
    ReceiverDownError,
    build_event,
    event_source,
    safe_url,
)
from vmwatch.queue import WorkQueue
from vmwatch.settings import ServiceSettings, SettingsError


@dataclass(frozen=True)
class FakeSignal:
    moref: str
    changed: tuple[str, ...] = ('config.extraConfig',)
    reason: str = 'changed'
    kind: int = 0
    verified: bool = True
    priority: int = 0


def test_event_in_binary_mode_parses_with_the_sdk() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    signals = [FakeSignal('vm-9', ('runtime.powerState',)), FakeSignal('vm-2')]
    event = build_event(('ns', 'web'), 7, signals, source='//vc.example.com', event_id='id-1', now=when)
    parsed = from_http(event.headers, event.body)
    assert parsed['specversion'] == '1.0' and parsed['id'] == 'id-1' and parsed['type'] == EVENT_TYPE
    assert parsed['source'] == '//vc.example.com' and parsed['subject'] == 'ns/web'
    assert parsed['time'] == '2026-01-02T03:04:05.678901Z' and parsed['datacontenttype'] == 'application/json'
    data = parsed.data
    assert data['morefs'] == ['vm-2', 'vm-9'] and data['changed'] == ['config.extraConfig', 'runtime.powerState']
    assert data['priority'] == 7 and data['reason'] == 'changed' and data['vms'][1]['changed'] == ['runtime.powerState']
    mixed = build_event(('ns', 'web'), 0, [FakeSignal('a'), FakeSignal('b', reason='entered')], source='//x')
    assert from_http(mixed.headers, mixed.body).data['reason'] == 'mixed'
    bare = build_event(('ns', 'web'), 0, [], source='//x')
    assert from_http(bare.headers, bare.body).data == {
        'namespace': 'ns', 'name': 'web', 'priority': 0, 'reason': 'requested', 'morefs': [], 'changed': [], 'vms': [],
    }  # fmt: skip
    assert bare.id != mixed.id


@pytest.mark.parametrize(
    ('url', 'source'),
    [
        ('https://VC.Example.com/sdk', '//vc.example.com'),
        ('https://vc.example.com:8443/sdk', '//vc.example.com:8443'),
        ('https://[fd00::1]:443/sdk', '//[fd00::1]:443'),
    ],
)
def test_source_is_the_vcenter_host(url: str, source: str) -> None:
    assert event_source(url) == source


_VC = {'vc_url': 'https://vc/sdk', 'vc_user': 'u', 'vc_password_file': Path('/pw')}


@pytest.mark.parametrize(
    ('extra', 'message'),
    [
        ({'sink': 'cloudevents'}, '--sink cloudevents needs --sink-url'),
        ({'sink': 'cloudevents', 'sink_url': 'http://r/e'}, 'needs --sink-allow-http'),
        ({'sink': 'cloudevents', 'sink_url': 'https://u:secret@r/e'}, 'must not carry user info'),
        ({'sink': 'cloudevents', 'sink_url': 'ftp://r/e'}, 'is not an http(s) URL'),
        ({'sink': 'cloudevents', 'sink_url': 'https:///e'}, 'is not an http(s) URL'),
        (
            {'sink': 'cloudevents', 'sink_url': 'http://r/e', 'sink_allow_http': True, 'sink_ca_file': Path('/ca')},
            '--sink-ca-file is for an https://',
        ),  # fmt: skip
        ({'sink': 'stdout', 'sink_url': 'https://r/e'}, 'only for --sink cloudevents'),
    ],
)
def test_sink_settings_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace('(', r'\(').replace(')', r'\)')) as info:
        ServiceSettings(**_VC, **extra).validate()
    assert 'secret' not in str(info.value)


def test_sink_settings_accepted() -> None:
    ServiceSettings(**_VC, sink='cloudevents', sink_url='https://r:8443/e').validate()
    ServiceSettings(**_VC, sink='cloudevents', sink_url='http://r/e', sink_allow_http=True).validate()


class _Server:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses  # answered in turn, the last one forever
        self.bodies: list[bytes] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.bodies.append(self.rfile.read(int(self.headers['Content-Length'])))
                status = owner.statuses.pop(0) if len(owner.statuses) > 1 else owner.statuses[0]
                self.send_response(status)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/e'
        threading.Thread(target=self.server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    s = _Server(list(request.param))
    yield s
    s.server.shutdown()
    s.server.server_close()


def _sink(url: str) -> CloudEventsSink:
    return CloudEventsSink(url, source='//vc', workers=1, backoff_initial_s=0.01)


@pytest.mark.parametrize('server', [[503, 202]], indirect=True)
def test_a_5xx_is_retried_in_the_run_and_delivered_once_accepted(server: _Server) -> None:
    async def main() -> WorkQueue:
        q = WorkQueue()
        q.add(('ns', 'a'), priority=3)
        sink = _sink(server.url)
        task = asyncio.ensure_future(sink.run(q))
        await asyncio.wait_for(q.shutdown(drain=True), 5)
        await asyncio.wait_for(task, 5)
        assert sink.delivered == 1 and sink.failed_attempts == 1
        return q

    q = asyncio.run(main())
    assert len(server.bodies) == 2 and server.bodies[0] == server.bodies[1]  # the same event, retried
    assert q.metrics.retries == 0 and q.depth == 0 and q.in_flight == 0


@pytest.mark.parametrize('server', [[503]], indirect=True)
def test_a_receiver_that_keeps_failing_is_down_and_the_request_stays_queued(server: _Server) -> None:
    async def main() -> None:
        q = WorkQueue()
        q.add(('ns', 'a'), priority=3)
        sink = _sink(server.url)
        with pytest.raises(ReceiverDownError, match='HTTP 503 after 3 attempts'):
            await asyncio.wait_for(sink.run(q), 5)
        assert q.depth == 1 and q.in_flight == 0 and q.metrics.retries == 0  # back, unpenalised
        key = await asyncio.wait_for(q.get(), 1)  # at once: no backoff
        assert key == ('ns', 'a') and q.priority_of(key) == 3

    asyncio.run(main())
    assert len(server.bodies) == 3


@pytest.mark.parametrize('server', [[400]], indirect=True)
def test_refusals_are_retried_per_key_and_three_in_a_row_mean_down(server: _Server) -> None:
    async def main() -> None:
        q = WorkQueue()
        for name in 'abc':
            q.add(('ns', name))
        sink = _sink(server.url)
        with pytest.raises(ReceiverDownError, match='HTTP 400 for 3 events in a row'):
            await asyncio.wait_for(sink.run(q), 5)
        assert sink.refused == 3 and q.metrics.retries == 3  # each refused event: the queue's per-key backoff

    asyncio.run(main())


def test_any_error_of_the_http_stack_is_a_failed_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = _sink('https://127.0.0.1:1/e')

    def broken(event: Any) -> int:
        raise ValueError('Cannot set verify_mode')  # e.g. an ssl setting urllib3 refuses

    monkeypatch.setattr(sink, '_post', broken)

    async def main() -> None:
        q = WorkQueue()
        q.add(('ns', 'a'))
        with pytest.raises(ReceiverDownError, match='ValueError: Cannot set verify_mode after 3 attempts'):
            await asyncio.wait_for(sink.run(q), 5)
        assert q.depth == 1 and q.metrics.retries == 0

    asyncio.run(main())


def test_the_logged_url_has_no_query_or_user_info() -> None:
    assert safe_url('https://u:pw@receiver.example:8443/in?token=s3cret#x') == 'https://receiver.example:8443/in'
