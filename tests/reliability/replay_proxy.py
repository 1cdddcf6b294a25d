# SPDX-License-Identifier: Apache-2.0
"""A plain-HTTP proxy on 127.0.0.1 in front of vcsim, rewriting WaitForUpdatesEx responses on their way back.

vcsim only ever answers well-formed XML, so the responses a broken or hostile vCenter would send are made by
editing vcsim's real ones: the watcher logs in, creates its views and filter and long-polls through the proxy
like it would against vCenter, over real HTTP; only the bytes of the bodies differ.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from vmwatch.devenv import VcsimServer
from vmwatch.vsphere import Endpoint

_HOP = {'connection', 'keep-alive', 'transfer-encoding', 'content-length', 'proxy-connection', 'te', 'upgrade'}

Tamper = Callable[[bytes], bytes | None]
"""A WaitForUpdatesEx response body -> the body to send instead (None: unchanged)."""


class ReplayProxy:
    """Forwards every request to `server`; WaitForUpdatesEx response bodies pass through `tamper` first."""

    def __init__(self, server: VcsimServer) -> None:
        parts = urlsplit(server.url)
        self._upstream = (str(parts.hostname), int(parts.port or 443))
        self._ctx = ssl.create_default_context(cafile=str(server.ca_file))
        self._vcsim = server
        self.tamper: Tamper | None = None
        self.chunked = False  # send bodies chunked instead of with a Content-Length
        self.tampered = 0  # responses the tamper function changed
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def do_POST(self) -> None:
                outer._forward(self)

            def do_GET(self) -> None:
                outer._forward(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name='replay-proxy', daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def endpoint(self) -> Endpoint:
        """The vcsim's credentials, reached through the proxy."""
        v = self._vcsim
        return Endpoint(
            url=f'http://127.0.0.1:{self.port}/sdk', user=v.user, password_file=v.password_file, insecure=True
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ReplayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get('Content-Length') or 0)
        request = h.rfile.read(length) if length else b''
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP and k.lower() != 'host'}
        conn = http.client.HTTPSConnection(*self._upstream, context=self._ctx, timeout=600)
        try:
            conn.request(h.command, h.path, body=request or None, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            status, reason, resp_headers = resp.status, resp.reason, resp.getheaders()
        finally:
            conn.close()
        if b'<WaitForUpdatesEx' in request and self.tamper is not None:
            changed = self.tamper(body)
            if changed is not None:
                body = changed
                with self._lock:
                    self.tampered += 1
        try:
            h.send_response(status, reason)
            for k, v in resp_headers:
                if k.lower() not in _HOP:
                    h.send_header(k, v)
            if self.chunked:
                h.send_header('Transfer-Encoding', 'chunked')
                h.end_headers()
                for i in range(0, len(body), 1 << 16):
                    part = body[i : i + (1 << 16)]
                    h.wfile.write(b'%x\r\n%s\r\n' % (len(part), part))
                h.wfile.write(b'0\r\n\r\n')
            else:
                h.send_header('Content-Length', str(len(body)))
                h.end_headers()
                h.wfile.write(body)
        except OSError:
            pass  # the client went away (a refused body, a closed watcher)


def object_set_of(body: bytes, moref: str) -> tuple[int, int] | None:
    """(start, end) of the objectSet of `moref` in a vcsim response body, or None."""
    m = re.search(rb'<obj type="VirtualMachine">' + re.escape(moref.encode()) + rb'</obj>', body)
    if m is None:
        return None
    start = body.rindex(b'<objectSet>', 0, m.start())
    return start, body.index(b'</objectSet>', m.end()) + len(b'</objectSet>')


def edit_object_set(moref: str, edit: Callable[[bytes], bytes], *, times: int = 1) -> Tamper:
    """A tamper function applying `edit` to the objectSet of `moref`, in the first `times` responses with one."""
    left = [times]

    def tamper(body: bytes) -> bytes | None:
        where = object_set_of(body, moref)
        if where is None or left[0] == 0:
            return None
        left[0] -= 1
        start, end = where
        return body[:start] + edit(body[start:end]) + body[end:]

    return tamper
