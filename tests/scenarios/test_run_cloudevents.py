# SPDX-License-Identifier: Apache-2.0
"""`vmwatch run --sink cloudevents` against vcsim + kube-apiserver and a real receiver: a small HTTP(S) server that
parses what arrives with the `cloudevents` SDK. Well-formed events, a receiver down for a while, TLS."""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cloudevents.http import from_http
from probes import http_get, wait_until
from test_run_cmd import run_env  # noqa: F401  (the fixture: a namespace, a Zone, helpers to start `vmwatch run`)

from vmwatch.devenv import free_port


class Receiver:
    """A CloudEvents receiver on 127.0.0.1: `mode` 'ok' answers 202 and keeps each parsed event, '503' refuses;
    `stop()` closes the port (nothing listens), `start()` opens it again on the same port."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        self.mode = 'ok'
        self.events: list[Any] = []
        self.attempts: list[tuple[float, int]] = []  # (monotonic time, status) of every POST
        self.errors: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f'{"https" if self.tls else "http"}://127.0.0.1:{self.port}/events'

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get('Content-Length', '0')))
                status = 503 if receiver.mode == '503' else 202
                if status == 202:
                    try:
                        event = from_http(dict(self.headers.items()), body)
                    except Exception as e:  # a malformed event is the test's failure, not the server's
                        receiver.errors.append(f'{type(e).__name__}: {e}')
                        status = 400
                    else:
                        with receiver._lock:
                            receiver.events.append(event)
                receiver.attempts.append((time.monotonic(), status))
                self.send_response(status)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(('127.0.0.1', self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def subjects(self) -> list[str]:
        with self._lock:
            return [e['subject'] for e in self.events]


def _ce_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    env = {'VMWATCH_SINK': 'cloudevents', 'VMWATCH_SINK_URL': receiver.url, 'VMWATCH_WORKERS': '2'}
    if receiver.tls is None:
        env['VMWATCH_SINK_ALLOW_HTTP'] = 'true'
    return {**env, **extra}


def test_a_vm_change_arrives_as_a_well_formed_cloudevent(run_env: Any) -> None:  # noqa: F811
    receiver = Receiver().start()
    try:
        p = run_env.start('ce', **_ce_env(receiver))
        wait_until(lambda: http_get(f'{p.base}/readyz') == (200, 'watching\n'), 'readyz: watching')
        run_env.named_vm('vm-a')
        run_env.vm_change(0, {'vmservice.namespacedName': f'{run_env.namespace}/vm-a'})
        subject = f'{run_env.namespace}/vm-a'
        wait_until(lambda: subject in receiver.subjects(), 'a CloudEvent for vm-a')
        event = next(e for e in receiver.events if e['subject'] == subject)
        assert event['specversion'] == '1.0'
        assert event['type'] == 'dev.vmwatch.virtualmachine.changed'
        assert event['source'] == f'//{urlsplit(run_env.vcsim.url).netloc}'
        assert event['datacontenttype'] == 'application/json'
        assert datetime.fromisoformat(event['time'].replace('Z', '+00:00')).tzinfo is not None
        ids = [e['id'] for e in receiver.events]
        assert len(set(ids)) == len(ids) and all(ids)
        data = event.data
        assert (data['namespace'], data['name']) == (run_env.namespace, 'vm-a')
        assert isinstance(data['priority'], int)
        assert data['reason'] in ('changed', 'entered') and len(data['morefs']) == 1
        assert data['morefs'][0].startswith('vm-') and data['vms'][0]['moref'] == data['morefs'][0]
        assert data['changed'] and data['changed'] == sorted(data['changed']), data
        assert receiver.errors == []
        assert p.stop() == 0
    finally:
        receiver.stop()


def test_receiver_down_makes_the_process_not_ready_and_loses_nothing(run_env: Any) -> None:  # noqa: F811
    receiver = Receiver().start()
    try:
        p = run_env.start('ce', **_ce_env(receiver))
        wait_until(lambda: http_get(f'{p.base}/readyz') == (200, 'watching\n'), 'readyz: watching')
        receiver.stop()  # nothing listens on the port
        names = [f'vm-d{i}' for i in range(3)]
        for i, name in enumerate(names):
            run_env.named_vm(name)
            run_env.vm_change(i, {'vmservice.namespacedName': f'{run_env.namespace}/{name}'})
        wait_until(lambda: http_get(f'{p.base}/readyz')[0] == 503, 'readyz: not ready while the receiver is down')
        code, reason = http_get(f'{p.base}/readyz')
        assert 'CloudEvents receiver' in reason and 'not accepting events' in reason, reason
        receiver.mode = '503'
        receiver.start()  # back, but refusing
        wait_until(lambda: len(_restart_gaps(receiver)) >= 2, 'the sink retries against a 503', timeout_s=40)
        assert http_get(f'{p.base}/readyz')[0] == 503
        gaps = _restart_gaps(receiver)
        assert gaps[-1] > 1.5 * gaps[0], gaps  # each restart waits longer: backoff, not a busy loop
        assert all(status == 503 for _t, status in receiver.attempts)
        receiver.mode = 'ok'
        subjects = {f'{run_env.namespace}/{name}' for name in names}
        wait_until(lambda: subjects <= set(receiver.subjects()), 'every change delivered', timeout_s=45)
        wait_until(lambda: http_get(f'{p.base}/readyz') == (200, 'watching\n'), 'ready again', timeout_s=45)
        assert receiver.errors == []
        assert p.stop() == 0
    finally:
        receiver.stop()


def _restart_gaps(receiver: Receiver) -> list[float]:
    """The pauses between the sink's restarts, as the receiver saw them: a run retries an event after 0.2 s and
    0.4 s (each +-20 %), then the sink restarts after 0.5 s, 1 s, 2 s ...: gaps over 0.5 s are restarts."""
    times = [t for t, _status in list(receiver.attempts)]
    return [b - a for a, b in zip(times, times[1:], strict=False) if b - a > 0.5]


def _self_signed_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA (self-signed) and a certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""

    def openssl(*args: str) -> None:
        subprocess.run(['openssl', *args], check=True, capture_output=True, cwd=tmp)

    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
    openssl('req', '-x509', *ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=test ce ca')
    openssl('req', *ec, '-keyout', 'key.pem', '-out', 'srv.csr', '-subj', '/CN=127.0.0.1')
    (tmp / 'ext.cnf').write_text('subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n')
    openssl('x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
            '-out', 'cert.pem', '-days', '2', '-extfile', 'ext.cnf')  # fmt: skip
    return tmp / 'ca.pem', tmp / 'cert.pem', tmp / 'key.pem'


def test_tls_receiver_refused_without_its_ca_and_delivered_with_it(run_env: Any, tmp_path: Path) -> None:  # noqa: F811
    ca, cert, key = _self_signed_ca(tmp_path)
    receiver = Receiver(tls=(cert, key)).start()
    try:
        p = run_env.start('untrusted', **_ce_env(receiver, VMWATCH_SHUTDOWN_GRACE_S='0.5'))
        wait_until(lambda: http_get(f'{p.base}/readyz') == (200, 'watching\n'), 'readyz: watching')
        run_env.named_vm('vm-t')
        run_env.vm_change(0, {'vmservice.namespacedName': f'{run_env.namespace}/vm-t'})
        wait_until(lambda: http_get(f'{p.base}/readyz')[0] == 503, 'readyz: not ready (certificate refused)')
        reason = http_get(f'{p.base}/readyz')[1]
        assert 'CERTIFICATE_VERIFY_FAILED' in reason, reason
        assert receiver.events == []
        p.stop()
        q = run_env.start('trusted', **_ce_env(receiver, VMWATCH_SINK_CA_FILE=str(ca)))
        wait_until(lambda: http_get(f'{q.base}/readyz') == (200, 'watching\n'), 'readyz: watching', timeout_s=45)
        run_env.vm_change(0, {'vmservice.namespacedName': f'{run_env.namespace}/vm-t', 'guestinfo.tls': 'on'})
        wait_until(lambda: f'{run_env.namespace}/vm-t' in receiver.subjects(), 'the CloudEvent over verified TLS')
        assert receiver.errors == []
        assert q.stop() == 0
    finally:
        receiver.stop()


@pytest.mark.parametrize(
    ('env', 'message'),
    [
        ({'VMWATCH_SINK': 'cloudevents'}, '--sink cloudevents needs --sink-url / VMWATCH_SINK_URL'),
        ({'VMWATCH_SINK': 'cloudevents', 'VMWATCH_SINK_URL': 'http://receiver/'}, 'needs --sink-allow-http'),
        (
            {'VMWATCH_SINK': 'cloudevents', 'VMWATCH_SINK_URL': 'https://receiver/', 'VMWATCH_SINK_CA_FILE': '/nope'},
            "--sink-ca-file '/nope': cannot load the CA bundle",
        ),  # fmt: skip
    ],
)
def test_bad_sink_settings_exit_2_with_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    pw = tmp_path / 'pw'
    pw.write_text('x\n')
    base = {'VMWATCH_VC_URL': 'https://127.0.0.1:1/sdk', 'VMWATCH_VC_USER': 'u', 'VMWATCH_VC_PASSWORD_FILE': str(pw)}
    proc = subprocess.run([sys.executable, '-m', 'vmwatch.cli', 'run'], env={**os.environ, **base, **env},
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f'vmwatch run: {proc.stderr.split(": ", 1)[1].strip()}']
    assert message in proc.stderr
