# SPDX-License-Identifier: Apache-2.0
"""The vSphere side of vmwatch: session (pyVmomi), views and filter, the raw wait and the name fetch.

Only this package imports pyVmomi.
"""

from vmwatch.vsphere.collector import Collector, NameFetch, fetch_names
from vmwatch.vsphere.errors import (
    CertificateError,
    CredentialsError,
    InvalidLoginError,
    NotAuthenticatedError,
    ProtocolError,
    SessionError,
    TransportError,
    VsphereError,
    VsphereFault,
)
from vmwatch.vsphere.refs import MoRef, RefLike
from vmwatch.vsphere.session import Endpoint, Session
from vmwatch.vsphere.views import Views

__all__ = [
    'CertificateError',
    'Collector',
    'CredentialsError',
    'Endpoint',
    'InvalidLoginError',
    'MoRef',
    'NameFetch',
    'NotAuthenticatedError',
    'ProtocolError',
    'RefLike',
    'Session',
    'SessionError',
    'TransportError',
    'Views',
    'VsphereError',
    'VsphereFault',
    'fetch_names',
]
