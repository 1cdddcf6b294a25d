# SPDX-License-Identifier: Apache-2.0
"""A vCenter session over pyVmomi: login from a password file, verified TLS, keep-alive, typed errors.

The password is read from its file on every login, so a rotated secret is picked up by the next login
without a restart. It is never stored on the session, logged, or put into an exception message.

TLS is verified by default, against the system store or `ca_file`. `thumbprint` pins the server
certificate by its SHA-256 fingerprint instead; every new connection is checked (pyVmomi's own
thumbprint option falls back to an unverified context once and then stops checking, so it is not
used). `insecure=True` turns verification off and is logged as a warning on every login.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import ssl
import threading
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from vmwatch.vsphere._pyvmomi import SoapStubAdapter, VmomiSupport, vim
from vmwatch.vsphere.errors import (
    CertificateError,
    CredentialsError,
    NotAuthenticatedError,
    ProtocolError,
    TransportError,
    VsphereFault,
    translate,
)
from vmwatch.vsphere.refs import MoRef

__all__ = ['Endpoint', 'Session']

log = logging.getLogger('vmwatch.vsphere')

T = TypeVar('T')

_HEX64 = re.compile(r'[0-9a-f]{64}')

# what a pooled connection that the server closed while idle looks like on reuse
_STALE = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ConnectionResetError,
    BrokenPipeError,
    http.client.RemoteDisconnected,
)


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where vCenter is and how to log in. Holds the password file's path, never the password."""

    url: str
    """https://HOST[:PORT]/sdk (a bare host means https://HOST/sdk). No user info: use `user` and `password_file`."""
    user: str
    password_file: Path
    """Read on every login (trailing newline stripped), so rotating the secret needs no restart."""
    ca_file: Path | None = None
    """PEM bundle to verify vCenter's certificate with (default: the system store)."""
    thumbprint: str | None = None
    """SHA-256 fingerprint of vCenter's certificate ('AB:CD:...' or plain hex): pins it instead of a CA."""
    insecure: bool = False
    """Skip TLS verification. Only when asked; logged as a warning on every login."""
    call_timeout_s: float = 60.0
    """Socket timeout of every pyVmomi call (login, views, name fetch, destroy), so none can hang."""

    def __post_init__(self) -> None:
        parts = self._split()
        if parts.username is not None or parts.password is not None:
            # do not echo the URL: it carries a secret
            raise ValueError('the vCenter URL must not carry user info: pass user and password_file instead')
        if parts.scheme not in ('https', 'http'):
            raise ValueError(f'vCenter URL scheme must be https, not {parts.scheme!r}')
        if parts.scheme == 'http' and not self.insecure:
            raise ValueError('a plain http:// vCenter URL needs insecure=True')
        if not parts.hostname:
            raise ValueError(f'vCenter URL {self.url!r} has no host')
        if self.insecure and (self.ca_file is not None or self.thumbprint):
            raise ValueError('insecure cannot be combined with ca_file or thumbprint')
        if self.thumbprint is not None and not _HEX64.fullmatch(self.thumbprint.replace(':', '').lower()):
            raise ValueError('thumbprint must be a SHA-256 fingerprint: 64 hex digits, colons optional')
        if not self.user:
            raise ValueError('user must not be empty')

    def _split(self) -> Any:
        return urlsplit(self.url if '://' in self.url else f'https://{self.url}')

    @property
    def tls(self) -> bool:
        return bool(self._split().scheme == 'https')

    @property
    def host(self) -> str:
        return str(self._split().hostname)

    @property
    def port(self) -> int:
        port = self._split().port
        return int(port) if port else (443 if self.tls else 80)

    @property
    def path(self) -> str:
        path = str(self._split().path)
        return path if path not in ('', '/') else '/sdk'

    @property
    def display_url(self) -> str:
        return f'{"https" if self.tls else "http"}://{self.host}:{self.port}{self.path}'

    @property
    def pin(self) -> bytes | None:
        """The pinned SHA-256 digest, or None."""
        return bytes.fromhex(self.thumbprint.replace(':', '')) if self.thumbprint else None


def _connection_class(pin: bytes | None) -> type[http.client.HTTPSConnection]:
    """An HTTPSConnection that, with a pin, checks the peer certificate's SHA-256 on every connect."""

    class VerifiedHTTPSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            if pin is None:
                return
            der = self.sock.getpeercert(binary_form=True) if isinstance(self.sock, ssl.SSLSocket) else None
            got = hashlib.sha256(der).hexdigest() if der else 'no certificate'
            if got != pin.hex():
                self.close()
                raise CertificateError(
                    f'certificate of {self.host}:{self.port} has SHA-256 {got}, expected {pin.hex()}'
                )

    return VerifiedHTTPSConnection


class Session:
    """One logged-in vCenter session. Blocking; safe to share between threads (pyVmomi pools connections).

    `login()` may be called again to re-login (the password file is read again); the old session is
    logged out best-effort.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._stub: Any = None
        self._content: Any = None
        if endpoint.tls:
            self._ssl = self._ssl_context()
            self._conn_class: type[http.client.HTTPConnection] = _connection_class(endpoint.pin)
        else:
            self._conn_class = http.client.HTTPConnection

    def __repr__(self) -> str:
        return f'<Session {self.endpoint.user}@{self.endpoint.display_url} logged_in={self.logged_in}>'

    def __enter__(self) -> Session:
        self.login()
        return self

    def __exit__(self, *exc: object) -> None:
        self.logout()

    # -- TLS and connections ---------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ep = self.endpoint
        if ep.insecure or ep.thumbprint:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # a pin is checked on connect instead (see _connection_class)
            return ctx
        return ssl.create_default_context(cafile=str(ep.ca_file) if ep.ca_file else None)

    def connection(self, *, timeout_s: float) -> http.client.HTTPConnection:
        """A new HTTP(S) connection to vCenter, verified like the session's own (for the raw wait)."""
        ep = self.endpoint
        if ep.tls:
            return self._conn_class(ep.host, ep.port, timeout=timeout_s, context=self._ssl)  # type: ignore[call-arg]
        return self._conn_class(ep.host, ep.port, timeout=timeout_s)

    # -- calls -----------------------------------------------------------------------------------------------

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one pyVmomi call; vCenter faults and socket errors come out as the typed errors of errors.py."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            mapped = translate(e, call=what)
            if mapped is e:
                raise
            traceback.clear_frames(e.__traceback__)  # pyVmomi's frames hold its connection (see collector)
            raise mapped from e

    def read(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call` for a read-only call: retried once on a connection that died while idle in the pool.

        vCenter (or a proxy in front of it) closes idle keep-alive connections; pyVmomi only finds out
        when it reuses one, and then drops its whole pool. A second attempt uses a fresh connection.
        """
        try:
            return self.call(what, fn, *args, **kwargs)
        except TransportError as e:
            if isinstance(e, CertificateError) or not isinstance(e.__cause__, _STALE):
                raise
            log.debug('%s: retrying on a fresh connection after %r', what, e.__cause__)
            return self.call(what, fn, *args, **kwargs)

    @property
    def logged_in(self) -> bool:
        return self._content is not None

    @property
    def stub(self) -> Any:
        if self._stub is None or self._content is None:
            raise NotAuthenticatedError(f'not logged in to {self.endpoint.display_url}')
        return self._stub

    @property
    def content(self) -> Any:
        """The ServiceContent (vim.ServiceInstanceContent)."""
        if self._content is None:
            raise NotAuthenticatedError(f'not logged in to {self.endpoint.display_url}')
        return self._content

    @property
    def cookie(self) -> str:
        """The session cookie header value, for requests made outside pyVmomi."""
        return str(self.stub.cookie)

    @property
    def soap_action(self) -> str:
        """The SOAPAction header of the negotiated API version, e.g. 'urn:vim25/8.0.3.0'."""
        return str(self.stub.versionId)

    def managed_object(self, ref: MoRef) -> Any:
        """The pyVmomi managed object for `ref`, bound to this session."""
        try:
            cls = VmomiSupport.GetWsdlType('urn:vim25', ref.type)
        except KeyError:
            raise VsphereFault('InvalidArgument', f'unknown managed object type {ref.type!r}') from None
        return cls(ref.value, self.stub)

    # -- login, keep-alive, logout ---------------------------------------------------------------------------

    def _read_password(self) -> str:
        path = self.endpoint.password_file
        try:
            password = path.read_text(encoding='utf-8').rstrip('\r\n')
        except OSError as e:
            raise CredentialsError(f'cannot read the vCenter password file {path}: {e.strerror or e}') from None
        if not password:
            raise CredentialsError(f'the vCenter password file {path} is empty')
        return password

    def _negotiate_version(self) -> str:
        """The newest vim25 API version both pyVmomi and the server know (from /sdk/vimServiceVersions.xml)."""
        ep = self.endpoint
        what = f'GET {ep.path}/vimServiceVersions.xml'
        conn = self.connection(timeout_s=ep.call_timeout_s)
        try:
            conn.request('GET', f'{ep.path}/vimServiceVersions.xml')
            resp = conn.getresponse()
            body = resp.read()
        except Exception as e:
            mapped = translate(e, call=f'{ep.display_url}: {what}')
            if mapped is e:
                raise
            raise mapped from e
        finally:
            conn.close()
        if resp.status != 200:
            raise ProtocolError(f'{ep.display_url}: {what}: HTTP {resp.status} {resp.reason}: is this a vCenter?')
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            raise ProtocolError(f'{ep.display_url}: {what}: not XML ({e})') from None
        offered: set[str] = set()
        for ns in root.iter('namespace'):
            if (ns.findtext('name') or '').strip() == 'urn:vim25':
                offered.update((v.text or '').strip() for v in ns.iter('version'))
        for version in VmomiSupport.GetServiceVersions('vim25'):
            if VmomiSupport.versionIdMap.get(version) in offered:
                return str(version)
        raise ProtocolError(f'{ep.display_url}: no vim25 API version in common (server offers {sorted(offered)})')

    def login(self) -> None:
        """Log in (again). Raises InvalidLoginError, CredentialsError, CertificateError or TransportError."""
        ep = self.endpoint
        password = self._read_password()
        if ep.insecure:
            log.warning('TLS verification is off for %s (insecure): the session can be intercepted', ep.display_url)
        version = self._negotiate_version()
        kwargs: dict[str, Any] = {'host': ep.host, 'path': ep.path, 'version': version}
        kwargs['httpConnectionTimeout'] = ep.call_timeout_s
        if ep.tls:
            kwargs.update(port=ep.port, sslContext=self._ssl)
        else:
            kwargs.update(port=-ep.port)  # pyVmomi's spelling of plain HTTP
        stub = SoapStubAdapter(**kwargs)
        if ep.tls:
            stub.scheme = self._conn_class  # verify the pin on every pooled connection
        try:
            content = self.call(
                f'{ep.display_url}: RetrieveServiceContent',
                vim.ServiceInstance('ServiceInstance', stub).RetrieveContent,
            )
            self.call(f'{ep.display_url}: Login as {ep.user!r}', content.sessionManager.Login, ep.user, password)
        except BaseException:
            stub.poolSize = 0
            stub.DropConnections()  # a failed login must not leave its pooled socket behind
            raise
        finally:
            del password
        with self._lock:
            old_stub, old_content = self._stub, self._content
            self._stub, self._content = stub, content
        log.info('logged in to %s as %s (API %s)', ep.display_url, ep.user, stub.versionId.strip('"'))
        if old_content is not None:
            self._logout(old_stub, old_content)

    def keepalive(self) -> None:
        """Touch the session and check it is still valid; NotAuthenticatedError when it is gone."""
        current = self.read('SessionManager.currentSession', lambda: self.content.sessionManager.currentSession)
        if current is None:
            raise NotAuthenticatedError(f'the vCenter session on {self.endpoint.display_url} is gone')

    def logout(self) -> None:
        """Log out, best-effort and idempotent: a dead server or an expired session is not an error."""
        with self._lock:
            stub, content = self._stub, self._content
            self._stub = self._content = None
        if content is not None:
            self._logout(stub, content)

    def _logout(self, stub: Any, content: Any) -> None:
        try:
            self.call('Logout', content.sessionManager.Logout)
        except (NotAuthenticatedError, TransportError) as e:
            log.debug('logout from %s: %s', self.endpoint.display_url, e)
        except VsphereFault as e:
            log.warning('logout from %s failed: %s', self.endpoint.display_url, e)
        finally:
            stub.poolSize = 0  # a call still in flight on this stub (e.g. a view's cleanup) closes its socket
            stub.DropConnections()
