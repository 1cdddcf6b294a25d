# SPDX-License-Identifier: Apache-2.0
"""The vSphere side of vmwatch: session (pyVmomi), views and filter, the raw wait and the name fetch.

Only this package imports pyVmomi, and only when a session, view or collector is first used: the names
below load on first access, so MoRef and the errors cost no pyVmomi import.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

from vmwatch._lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(('Collector', 'NameFetch', 'fetch_names'), 'vmwatch.vsphere.collector'),
    **dict.fromkeys(
        (
            'CertificateError',
            'CredentialsError',
            'InvalidLoginError',
            'NotAuthenticatedError',
            'ProtocolError',
            'SessionError',
            'TransportError',
            'VsphereError',
            'VsphereFault',
        ),
        'vmwatch.vsphere.errors',
    ),
    **dict.fromkeys(('MoRef', 'RefLike'), 'vmwatch.vsphere.refs'),
    **dict.fromkeys(('Endpoint', 'Session'), 'vmwatch.vsphere.session'),
    'Views': 'vmwatch.vsphere.views',
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)


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
