# SPDX-License-Identifier: Apache-2.0
"""The vSphere layer's pure parts: endpoints, references, the error mapping, the wait envelope."""

from __future__ import annotations

import http.client
import ssl
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vmwatch.vsphere import (
    CertificateError,
    Endpoint,
    InvalidLoginError,
    MoRef,
    NotAuthenticatedError,
    SessionError,
    TransportError,
    VsphereError,
    VsphereFault,
)
from vmwatch.vsphere._pyvmomi import vim, vmodl
from vmwatch.vsphere.collector import wait_envelope
from vmwatch.vsphere.errors import fault_error, translate

PW = Path('/run/secrets/vc-password')


def test_endpoint_parts_and_defaults() -> None:
    ep = Endpoint(url='vc.example.com', user='u', password_file=PW)
    assert (ep.tls, ep.host, ep.port, ep.path) == (True, 'vc.example.com', 443, '/sdk')
    ep = Endpoint(url='https://10.0.0.1:8443/sdk', user='u', password_file=PW, thumbprint='AB:' * 31 + 'AB')
    assert (ep.port, ep.display_url, ep.pin) == (8443, 'https://10.0.0.1:8443/sdk', bytes([0xAB]) * 32)


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'url': 'https://u:hunter2@vc/sdk'}, 'must not carry user info'),
        ({'url': 'ftp://vc/sdk'}, 'scheme'),
        ({'url': 'http://vc/sdk'}, 'insecure=True'),
        ({'url': 'https://vc/sdk', 'insecure': True, 'ca_file': Path('ca.pem')}, 'cannot be combined'),
        ({'url': 'https://vc/sdk', 'thumbprint': 'AA:BB'}, 'SHA-256'),
        ({'url': 'https://vc/sdk', 'user': ''}, 'user'),
    ],
)
def test_endpoint_refuses_unusable_settings(kwargs: dict[str, object], message: str) -> None:
    kwargs = {'user': 'u', 'password_file': PW, **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        Endpoint(**kwargs)  # type: ignore[arg-type]
    assert 'hunter2' not in str(info.value)


def test_moref_parse_and_str() -> None:
    assert MoRef.parse('Folder:group-v3') == MoRef('Folder', 'group-v3')
    assert str(MoRef('ClusterComputeResource', 'domain-c8')) == 'ClusterComputeResource:domain-c8'
    assert MoRef.parse('Folder:a:b') == MoRef('Folder', 'a:b')
    for bad in ('group-v3', ':x', 'Folder:'):
        with pytest.raises(ValueError):
            MoRef.parse(bad)


def test_faults_map_onto_typed_errors() -> None:
    assert isinstance(fault_error('NotAuthenticated'), NotAuthenticatedError)
    assert isinstance(fault_error('InvalidLogin', 'Login failure'), InvalidLoginError)
    other = fault_error('ManagedObjectNotFound', 'gone', call='CreateContainerView(Folder:x)')
    assert isinstance(other, VsphereFault) and not isinstance(other, SessionError)
    assert (other.fault_type, str(other)) == (
        'ManagedObjectNotFound',
        'CreateContainerView(Folder:x): ManagedObjectNotFound: gone',
    )
    for cls in (NotAuthenticatedError, InvalidLoginError):
        assert issubclass(cls, PermissionError) and issubclass(cls, SessionError) and issubclass(cls, VsphereError)
    assert issubclass(TransportError, ConnectionError)


def test_translate_pyvmomi_faults_and_socket_errors() -> None:
    assert isinstance(translate(vim.fault.InvalidLogin(msg='Login failure'), call='Login'), InvalidLoginError)
    assert isinstance(translate(vim.fault.NotAuthenticated(), call='x'), NotAuthenticatedError)
    fault = translate(vmodl.fault.ManagedObjectNotFound(msg='no'), call='x')
    assert isinstance(fault, VsphereFault) and fault.fault_type == 'ManagedObjectNotFound'
    assert isinstance(translate(ConnectionRefusedError(111, 'refused'), call='x'), TransportError)
    assert isinstance(translate(TimeoutError('timed out'), call='x'), TransportError)
    assert isinstance(translate(http.client.RemoteDisconnected('closed'), call='x'), TransportError)
    verify = ssl.SSLCertVerificationError(1, 'certificate verify failed')
    assert isinstance(translate(verify, call='x'), CertificateError)
    bug = KeyError('x')
    assert translate(bug, call='x') is bug  # not ours to map


def test_wait_envelope_is_well_formed_and_escaped() -> None:
    body = wait_envelope('session[1]<&>', 'v"1&2', max_wait_s=300, max_object_updates=100)
    root = ET.fromstring(body)
    ns = {'s': 'http://schemas.xmlsoap.org/soap/envelope/', 'v': 'urn:vim25'}
    call = root.find('s:Body/v:WaitForUpdatesEx', ns)
    assert call is not None
    assert call.findtext('v:_this', namespaces=ns) == 'session[1]<&>'
    assert call.find('v:_this', ns).get('type') == 'PropertyCollector'  # type: ignore[union-attr]
    assert call.findtext('v:version', namespaces=ns) == 'v"1&2'
    assert call.findtext('v:options/v:maxWaitSeconds', namespaces=ns) == '300'
    assert call.findtext('v:options/v:maxObjectUpdates', namespaces=ns) == '100'
