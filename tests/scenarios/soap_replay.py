# SPDX-License-Identifier: Apache-2.0
"""A small SOAP relay on 127.0.0.1 in front of vcsim, to put at the HTTP level what vcsim never says itself.

`SoapRelay` forwards every request (pyVmomi's login, views, filter, name fetch, and the Collector's raw
WaitForUpdatesEx posts) to vcsim over TLS, records the `<version>` of each WaitForUpdatesEx and keeps the
first full sync (the answer to version ""). Armed with `invalid_version_next()`, it answers the next
WaitForUpdatesEx itself with the SOAP fault real vCenter sends when it has dropped the collector's
history (vcsim never does): HTTP 500 with an `InvalidCollectorVersionFault` detail. Real vCenter then
answers version "" with the full state again; vcsim answers it with an empty update set, so the relay
replays the full sync it kept instead. Neither request reaches vcsim, whose collector stays at the
version the replayed sync carries: the next wait goes on from there against vcsim itself.

No tests here; the scenario modules use it.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vmwatch.devenv import VcsimServer

INVALID_COLLECTOR_VERSION = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    b' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    b'<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode>'
    b'<faultstring>The specified version is invalid.</faultstring>'
    b'<detail><InvalidCollectorVersionFault xmlns="urn:vim25" xsi:type="InvalidCollectorVersion"/></detail>'
    b'</soapenv:Fault></soapenv:Body></soapenv:Envelope>'
)
_WAIT = re.compile(rb'<WaitForUpdatesEx[ >].*?<version>([^<]*)</version>', re.S)
_ANSWER = re.compile(rb'<returnval>\s*<version>([^<]*)</version>')
_HOP = {'host', 'content-length', 'connection', 'keep-alive', 'transfer-encoding'}


class SoapRelay:
    """Plain HTTP on 127.0.0.1 -> vcsim over TLS. Use `url` with `insecure=True` (no TLS on the relay)."""

    def __init__(self, upstream: VcsimServer) -> None:
        self.upstream = upstream
        self.waits: list[str] = []  # the version of every WaitForUpdatesEx posted, in order
        self.answers: list[str | None] = []  # the version each of them was answered with (None: no UpdateSet)
        self.faults_sent = 0
        self.replayed = 0
        self.full_sync: bytes | None = None
        self._faults_left = 0
        self._replay_next = False
        self._upstreams: list[http.client.HTTPSConnection] = []
        self._lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'  # keep-alive, as the Collector's dedicated connection expects

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._relay(b'')

            def do_POST(self) -> None:
                self._relay(self.rfile.read(int(self.headers.get('Content-Length') or 0)))

            def _relay(self, body: bytes) -> None:
                wait = _WAIT.search(body)
                version = wait.group(1).decode() if wait is not None else None
                canned = relay._canned(version)
                if canned is not None:
                    status, reason, data = canned
                    headers = [('Content-Type', 'text/xml; charset=utf-8')]
                else:
                    status, reason, headers, data = relay._forward(self, body)
                    if version == '' and relay.full_sync is None and status == 200:
                        relay.full_sync = data
                if version is not None:
                    answered = _ANSWER.search(data)
                    relay.answers.append(answered.group(1).decode() if answered else None)
                self.send_response(status, reason)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._server.daemon_threads = True
        self._local = threading.local()  # one upstream connection per relay thread (per client connection)
        self._thread = threading.Thread(target=self._server.serve_forever, name='soap-relay', daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f'http://{host}:{port}/sdk'

    def start(self) -> SoapRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in self._upstreams:
                conn.close()

    def followed_versions(self) -> bool:
        """Every WaitForUpdatesEx after an answer with an UpdateSet posted that answer's version."""
        pairs = zip(self.answers, self.waits[1:], strict=False)
        return all(posted == answered for answered, posted in pairs if answered is not None)

    def invalid_version_next(self) -> None:
        """Answer the next WaitForUpdatesEx with InvalidCollectorVersion, and the "" after it with the full sync."""
        with self._lock:
            assert self.full_sync is not None, 'no full sync seen yet'
            self._faults_left = 1

    def _canned(self, version: str | None) -> tuple[int, str, bytes] | None:
        """The relay's own answer to a WaitForUpdatesEx of `version`, or None to forward it."""
        with self._lock:
            if version is not None:
                self.waits.append(version)
            if version and self._faults_left:
                self._faults_left -= 1
                self.faults_sent += 1
                self._replay_next = True
                return 500, 'Internal Server Error', INVALID_COLLECTOR_VERSION
            if version == '' and self._replay_next:
                self._replay_next = False
                self.replayed += 1
                assert self.full_sync is not None
                return 200, 'OK', self.full_sync
        return None

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn: http.client.HTTPSConnection | None = getattr(self._local, 'conn', None)
        if conn is None:
            ctx = ssl.create_default_context(cafile=str(self.upstream.ca_file))
            host, _, port = self.upstream.url.split('//', 1)[1].split('/', 1)[0].rpartition(':')
            conn = self._local.conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=600)
            with self._lock:
                self._upstreams.append(conn)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        try:
            conn.request(handler.command, handler.path, body or None, headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
        return resp.status, resp.reason, out, data
