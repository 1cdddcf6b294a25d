# SPDX-License-Identifier: Apache-2.0
"""Typed errors of the vSphere side, and the one place that maps pyVmomi / socket errors onto them.

`SessionError` and its subclasses mean the session or the connection is gone: a watcher that hits one
stops and says so. `VsphereFault` is a fault for one call on a healthy session (a missing folder, a
bad argument): the caller decides. Messages name the server, the user and the fault; never a password.
"""

from __future__ import annotations

import http.client
import ssl
from typing import Any

from vmwatch._vmwatch import VmwatchError

__all__ = [
    'CertificateError',
    'CredentialsError',
    'InvalidLoginError',
    'NotAuthenticatedError',
    'ProtocolError',
    'SessionError',
    'TransportError',
    'VsphereError',
    'VsphereFault',
    'fault_error',
    'translate',
]


class VsphereError(VmwatchError):
    """Something vCenter, or the connection to it, reported."""


class VsphereFault(VsphereError):
    """A SOAP fault for one call on a working session, e.g. ManagedObjectNotFound for a missing folder."""

    def __init__(self, fault_type: str, message: str = '', *, call: str = '') -> None:
        self.fault_type = fault_type
        self.message = message
        self.call = call
        where = f'{call}: ' if call else ''
        detail = f': {message}' if message else ''
        super().__init__(f'{where}{fault_type}{detail}')


class SessionError(VsphereError, ConnectionError):
    """The session or the connection to vCenter is gone. A watcher that hits this stops with it."""


class TransportError(SessionError):
    """HTTP, TLS or socket failure talking to vCenter (refused, reset, timed out, unexpected HTTP status)."""


class CertificateError(TransportError):
    """vCenter's TLS certificate did not verify against the CA file or the pinned SHA-256 thumbprint."""


class ProtocolError(SessionError):
    """vCenter answered with something that is neither a result nor a SOAP fault."""


class NotAuthenticatedError(SessionError, PermissionError):
    """The session is no longer valid (logged out, expired, or vCenter restarted)."""


class InvalidLoginError(SessionError, PermissionError):
    """vCenter rejected the user name or password."""


class CredentialsError(SessionError):
    """The password file cannot be read or is empty."""


def fault_error(fault_type: str, message: str = '', *, call: str = '') -> VsphereError:
    """The typed error for a SOAP fault named `fault_type` (its xsi:type, e.g. 'NotAuthenticated')."""
    where = f'{call}: ' if call else ''
    if fault_type == 'NotAuthenticated':
        return NotAuthenticatedError(f'{where}the vCenter session is not authenticated (logged out or expired)')
    if fault_type == 'InvalidLogin':
        return InvalidLoginError(f'{where}vCenter rejected the login: {message or "Login failure"}')
    return VsphereFault(fault_type, message, call=call)


def _fault_name(exc: Any) -> str | None:
    """The WSDL name of a pyVmomi fault object ('ManagedObjectNotFound'), or None for other exceptions."""
    name = getattr(type(exc), '_wsdlName', None)
    return name if isinstance(name, str) else None


def translate(exc: BaseException, *, call: str) -> BaseException:
    """Map an exception raised by a pyVmomi call or a socket onto the typed errors above.

    Returns `exc` unchanged when it is not a vCenter, TLS, HTTP or socket error (a bug stays a bug).
    """
    if isinstance(exc, VsphereError):
        return exc
    fault = _fault_name(exc)
    if fault is not None:
        message = getattr(exc, 'msg', None) or ''
        return fault_error(fault, message if isinstance(message, str) else '', call=call)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateError(
            f'{call}: TLS certificate verification failed: {getattr(exc, "verify_message", None) or exc}'
        )
    if isinstance(exc, ssl.SSLError):
        return TransportError(f'{call}: TLS error: {exc}')
    if isinstance(exc, TimeoutError):
        return TransportError(f'{call}: timed out')
    if isinstance(exc, OSError | http.client.HTTPException):
        return TransportError(f'{call}: {type(exc).__name__}: {exc}')
    return exc
