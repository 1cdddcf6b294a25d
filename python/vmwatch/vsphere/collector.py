# SPDX-License-Identifier: Apache-2.0
"""The raw long poll and the name fetch.

`Collector.wait` posts a small WaitForUpdatesEx envelope with the session cookie on its own HTTP
connection and returns the response body as bytes: decoding is the Rust core's job (pyVmomi's Python
deserializer is the bottleneck vmwatch removes). `fetch_names` reads the extraConfig name key of many
VMs in one RetrievePropertiesEx (spec step G, batched), skipping objects with faults.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from vmwatch.vsphere._pyvmomi import PC, vim, vmodl
from vmwatch.vsphere.errors import NotAuthenticatedError, ProtocolError, TransportError, VsphereError, translate
from vmwatch.vsphere.session import _STALE, Session

__all__ = ['DEFAULT_MAX_RESPONSE_BYTES', 'Collector', 'NameFetch', 'fetch_names', 'wait_envelope']

log = logging.getLogger('vmwatch.vsphere')


DEFAULT_MAX_RESPONSE_BYTES = 512 << 20
"""Largest WaitForUpdatesEx response body read (512 MiB). A page of 100 object updates from vCenter is
well under 10 MB even with megabytes of guestinfo per VM; the cap only stops a broken or hostile server
from making the process hold gigabytes (the core then needs ~1.4x the body again to decide it)."""

_READ_CHUNK = 16 << 20  # a page (~1 MB; 100 huge VMs: a few MB) in one read: the join below then copies nothing

_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    '<soapenv:Body><WaitForUpdatesEx xmlns="urn:vim25">'
    '<_this type="PropertyCollector">{this}</_this>'
    '<version>{version}</version>'
    '<options><maxWaitSeconds>{max_wait}</maxWaitSeconds><maxObjectUpdates>{max_objects}</maxObjectUpdates></options>'
    '</WaitForUpdatesEx></soapenv:Body></soapenv:Envelope>'
)


def wait_envelope(collector_id: str, version: str, *, max_wait_s: int, max_object_updates: int) -> bytes:
    """The SOAP request body of WaitForUpdatesEx."""
    return _ENVELOPE.format(
        this=escape(collector_id),
        version=escape(version),
        max_wait=int(max_wait_s),
        max_objects=int(max_object_updates),
    ).encode()


class Collector:
    """WaitForUpdatesEx on one PropertyCollector, over a dedicated connection. One waiter at a time."""

    def __init__(
        self,
        session: Session,
        collector_id: str,
        *,
        max_object_updates: int,
        read_timeout_s: float,
        max_response_bytes: int | None = None,
    ) -> None:
        self._session = session
        self._id = collector_id
        self._max_objects = max_object_updates
        self._timeout = read_timeout_s
        self._max_bytes = DEFAULT_MAX_RESPONSE_BYTES if max_response_bytes is None else max_response_bytes
        if self._max_bytes < 1:
            raise ValueError('max_response_bytes must be at least 1')
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # guards _conn against close() from another thread
        self._closed = False

    def wait(self, version: str, *, max_wait_s: int) -> bytes:
        """Post WaitForUpdatesEx and return the body (a result or a SOAP fault). Raises TransportError, or
        ProtocolError for a body larger than `max_response_bytes` (the connection is dropped unread).

        `read_timeout_s` must exceed `max_wait_s`, so the server always answers first.
        """
        s = self._session
        body = wait_envelope(self._id, version, max_wait_s=max_wait_s, max_object_updates=self._max_objects)
        headers = {
            'Cookie': s.cookie,
            'SOAPAction': s.soap_action,
            'Content-Type': 'text/xml; charset=utf-8',
            'Accept': 'text/xml',
        }
        for attempt in (1, 2):
            with self._lock:
                if self._closed:
                    raise TransportError('WaitForUpdatesEx: the collector connection is closed')
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = s.connection(timeout_s=self._timeout)
                conn = self._conn
            try:
                conn.request('POST', s.endpoint.path, body, headers)
                resp = conn.getresponse()
                data = self._read(resp)
            except ProtocolError:
                self._drop(conn)
                raise
            except Exception as e:
                self._drop(conn)
                if self._closed:
                    raise TransportError('WaitForUpdatesEx: interrupted by close') from e
                if reused and attempt == 1 and isinstance(e, _STALE):
                    log.debug('WaitForUpdatesEx: retrying on a fresh connection after %r', e)
                    continue  # the server closed the idle keep-alive connection; the request never ran
                mapped = translate(e, call=f'WaitForUpdatesEx on {s.endpoint.display_url}')
                if mapped is e:
                    raise
                # the frames of http.client hold the half-read response and so its socket; a watcher keeps
                # this error as its `error`, which must not keep the socket open
                traceback.clear_frames(e.__traceback__)
                raise mapped from e
            if resp.status not in (200, 500):
                self._drop(conn)
                raise TransportError(f'WaitForUpdatesEx on {s.endpoint.display_url}: HTTP {resp.status} {resp.reason}')
            if resp.will_close:
                self._drop(conn)
            return data
        raise AssertionError('unreachable')

    def _read(self, resp: http.client.HTTPResponse) -> bytes:
        """The body, refusing more than `max_response_bytes` (announced or actually sent)."""
        cap = self._max_bytes
        length = resp.getheader('Content-Length')
        if length is not None and length.strip().isdigit() and int(length) <= cap:
            return resp.read()
        if length is not None and length.strip().isdigit():
            raise self._too_large(f'{int(length)} bytes announced')
        chunks: list[bytes] = []
        size = 0
        while chunk := resp.read(_READ_CHUNK):
            size += len(chunk)
            if size > cap:
                raise self._too_large(f'more than {cap} bytes sent')
            chunks.append(chunk)
        return b''.join(chunks)

    def _too_large(self, what: str) -> ProtocolError:
        return ProtocolError(
            f'WaitForUpdatesEx on {self._session.endpoint.display_url}: response too large ({what}; '
            f'the limit is {self._max_bytes} bytes, max_response_bytes): not read'
        )

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def cancel(self) -> bool:
        """CancelWaitForUpdates (on a pooled session connection). True when vCenter accepted it."""
        s = self._session
        try:
            pc = vmodl.query.PropertyCollector(self._id, s.stub)
            s.call('CancelWaitForUpdates', pc.CancelWaitForUpdates)
            return True
        except VsphereError as e:
            log.debug('CancelWaitForUpdates: %s', e)
            return False

    def close(self) -> None:
        """Close the connection, interrupting a blocked wait in another thread. Idempotent."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if conn is not None:
            conn.close()


@dataclass
class NameFetch:
    """Outcome of `fetch_names`: raw name values per VM, and the VMs skipped because of a fault."""

    values: dict[str, str | None] = field(default_factory=dict)
    """moref -> the extraConfig value (None: no such key, or not a string)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """moref -> fault type (ManagedObjectNotFound when the VM vanished between event and fetch)."""


def fetch_names(session: Session, morefs: Sequence[str], *, name_key: str, batch: int = 500) -> NameFetch:
    """Read config.extraConfig["<name_key>"] of every VM in `morefs`, `batch` VMs per round trip.

    Per-object faults skip the object (recorded in `skipped`); NotAuthenticated ends the session
    (NotAuthenticatedError), as do transport failures. Other whole-call faults raise VsphereFault.
    """
    out = NameFetch()
    if not morefs:
        return out
    stub = session.stub
    pc = session.content.propertyCollector
    path = f'config.extraConfig["{name_key}"]'
    prop = PC.PropertySpec(type=vim.VirtualMachine, pathSet=[path])
    for start in range(0, len(morefs), max(1, batch)):
        chunk = morefs[start : start + max(1, batch)]
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=vim.VirtualMachine(m, stub), skip=False) for m in chunk],
            propSet=[prop],
            reportMissingObjectsInResults=True,
        )
        result = session.read('RetrievePropertiesEx(name)', pc.RetrievePropertiesEx, [spec], PC.RetrieveOptions())
        seen: set[str] = set()
        while result is not None:
            for oc in result.objects or ():
                _read_object(oc, path, out, seen)
            token = result.token
            result = (
                session.call('ContinueRetrievePropertiesEx', pc.ContinueRetrievePropertiesEx, token) if token else None
            )
        for m in chunk:
            if m not in seen:
                out.skipped[m] = 'ManagedObjectNotFound'  # vanished: missing objects are left out of the result
    return out


def _read_object(oc: Any, path: str, out: NameFetch, seen: set[str]) -> None:
    moref = str(oc.obj._moId)
    seen.add(moref)
    for missing in oc.missingSet or ():
        fault = getattr(type(missing.fault), '_wsdlName', 'Fault')
        if fault == 'NotAuthenticated':
            raise NotAuthenticatedError('RetrievePropertiesEx(name): the vCenter session is not authenticated')
        out.skipped[moref] = str(fault)
        return
    value: str | None = None
    for prop in oc.propSet or ():
        if prop.name == path:
            raw = getattr(prop.val, 'value', None)
            value = raw if isinstance(raw, str) else None
    out.values[moref] = value
