# SPDX-License-Identifier: Apache-2.0
"""The vSphere layer against vcsim: login, TLS, credentials, keep-alive, views and filter, the raw wait,
the name fetch. No mocks: a real simulator per test (tests/conftest.py)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from vmwatch.devenv import VcsimServer
from vmwatch.settings import DEFAULT_WATCHED_PATHS
from vmwatch.vsphere import (
    CertificateError,
    Collector,
    CredentialsError,
    Endpoint,
    InvalidLoginError,
    MoRef,
    NotAuthenticatedError,
    Session,
    TransportError,
    Views,
    VsphereFault,
    fetch_names,
)
from vmwatch.vsphere._pyvmomi import vim

pytestmark = pytest.mark.servers


def endpoint(server: VcsimServer, **kwargs: Any) -> Endpoint:
    kwargs.setdefault('ca_file', server.ca_file)
    kwargs.setdefault('password_file', server.password_file)
    return Endpoint(url=server.url, user=server.user, **kwargs)


def inventory(session: Session) -> dict[str, Any]:
    """Clusters and VMs of the spec 6.1 topology, by name."""
    content = session.content
    dc = content.rootFolder.childEntity[0]
    clusters = sorted(dc.hostFolder.childEntity, key=lambda c: c.name)
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    vms = {vm.name: vm for vm in view.view}
    view.DestroyView()
    return {'dc': dc, 'clusters': clusters, 'vms': vms}


def ref_of(obj: Any) -> MoRef:
    return MoRef(obj._wsdlName, obj._moId)


def assert_gone(obj: Any) -> None:
    with pytest.raises(Exception) as info:
        obj.view if hasattr(obj, 'view') else obj.filter
    assert type(info.value).__name__.endswith('ManagedObjectNotFound'), info.value


# -- login and TLS -------------------------------------------------------------------------------------------


def test_login_with_ca_file_and_with_thumbprint(vcsim: VcsimServer) -> None:
    with Session(endpoint(vcsim)) as s:
        assert s.logged_in
        s.keepalive()
    with Session(endpoint(vcsim, ca_file=None, thumbprint=vcsim.thumbprint)) as s:
        s.keepalive()


def test_tls_is_verified_by_default(vcsim: VcsimServer) -> None:
    # the system store does not know vcsim's self-signed certificate
    with pytest.raises(CertificateError):
        Session(endpoint(vcsim, ca_file=None)).login()


def test_a_wrong_thumbprint_is_refused_on_every_connection(vcsim: VcsimServer) -> None:
    with pytest.raises(CertificateError, match='SHA-256'):
        Session(endpoint(vcsim, ca_file=None, thumbprint='00' * 32)).login()


def test_insecure_logs_a_warning(vcsim: VcsimServer, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger='vmwatch.vsphere'),
        Session(endpoint(vcsim, ca_file=None, insecure=True)),
    ):
        pass
    assert any('TLS verification is off' in r.getMessage() for r in caplog.records)


def test_invalid_login_is_typed_and_never_shows_the_password(
    vcsim: VcsimServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = 'Sup3r-secret-pw'
    bad = tmp_path / 'pw'
    bad.write_text(secret + '\n')
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidLoginError) as info:
        Session(endpoint(vcsim, password_file=bad)).login()
    assert isinstance(info.value, PermissionError)
    text = ''.join(traceback.format_exception(info.value)) + repr(info.value) + caplog.text
    assert vcsim.user in str(info.value)
    assert secret not in text
    assert vcsim.password not in text


def test_password_file_problems_are_credentials_errors(vcsim: VcsimServer, tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match='cannot read'):
        Session(endpoint(vcsim, password_file=tmp_path / 'missing')).login()
    (tmp_path / 'empty').write_text('\n')
    with pytest.raises(CredentialsError, match='empty'):
        Session(endpoint(vcsim, password_file=tmp_path / 'empty')).login()


def test_a_rotated_password_file_is_used_on_the_next_login(vcsim: VcsimServer, tmp_path: Path) -> None:
    pw = tmp_path / 'pw'
    pw.write_text(vcsim.password)
    session = Session(endpoint(vcsim, password_file=pw))
    session.login()
    vcsim.restart(password='rotated-' + vcsim.password)  # the server's secret rotates...
    with pytest.raises(NotAuthenticatedError):
        session.keepalive()  # (a restart also ends every session)
    with pytest.raises(InvalidLoginError):
        session.login()  # ...the file still holds the old one
    pw.write_text(vcsim.password + '\n')  # the secret is rotated in the file
    session.login()  # read again: no restart of anything needed
    session.keepalive()
    session.logout()


def test_keepalive_notices_a_logout(vcsim: VcsimServer) -> None:
    s = Session(endpoint(vcsim))
    s.login()
    s.content.sessionManager.Logout()
    with pytest.raises(NotAuthenticatedError):
        s.keepalive()
    s.logout()  # best-effort, quiet


def test_a_stopped_server_is_a_transport_error(vcsim: VcsimServer) -> None:
    vcsim.stop()
    with pytest.raises(TransportError):
        Session(endpoint(vcsim)).login()


# -- views, filter, raw wait ---------------------------------------------------------------------------------


@pytest.fixture
def session(vcsim: VcsimServer) -> Any:
    with Session(endpoint(vcsim)) as s:
        yield s


def test_views_refcount_per_owner_and_destroy_everything(session: Session) -> None:
    inv = inventory(session)
    c1, c2 = (ref_of(c) for c in inv['clusters'])
    views = Views(session, watched_paths=DEFAULT_WATCHED_PATHS)
    views.open({c1: ['id-0']})
    assert views.owners() == {c1: frozenset({'id-0'})}
    assert views.add(c1, 'id-1') is False  # known container: bookkeeping only
    assert views.add(c2, 'id-0') is True
    assert views.remove(c1, 'id-0') is False  # id-1 still owns it
    assert views.remove(c1, 'nobody') is False
    assert views.remove(MoRef('VirtualMachine', 'bogus'), 'id-0') is False  # spec 6.1 #6
    c2_view = views._views[c2]
    assert views.remove(c2, 'id-0') is True  # last owner: ModifyListView + DestroyView
    assert_gone(c2_view)
    assert views.owners() == {c1: frozenset({'id-1'})}
    kept = [views._views[c1], views._list_view]
    collector = views._collector
    views.close()
    views.close()  # idempotent
    for obj in kept:
        assert_gone(obj)
    with pytest.raises(Exception) as info:
        collector.filter  # noqa: B018
    assert 'ManagedObjectNotFound' in type(info.value).__name__


def test_a_failed_add_destroys_its_new_view(session: Session) -> None:
    views = Views(session, watched_paths=DEFAULT_WATCHED_PATHS)
    views.open({})
    with pytest.raises(VsphereFault, match='ManagedObjectNotFound'):
        views.add(MoRef('Folder', 'group-404'), 'ns/z')
    assert views.owners() == {}
    views.close()


def test_a_half_built_construction_is_destroyed(session: Session) -> None:
    inv = inventory(session)
    created: list[Any] = []
    real_call = session.call

    def recording_call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        out = real_call(what, fn, *args, **kwargs)
        if hasattr(out, '_moId'):
            created.append(out)
        return out

    session.call = recording_call  # type: ignore[method-assign]
    views = Views(session, watched_paths=DEFAULT_WATCHED_PATHS)
    good = ref_of(inv['clusters'][0])
    with pytest.raises(VsphereFault, match='ManagedObjectNotFound'):
        views.open({good: ['a'], MoRef('Folder', 'group-404'): ['b']})
    kinds = sorted(o._wsdlName for o in created)
    assert kinds == ['ContainerView', 'PropertyCollector']
    for obj in created:
        assert_gone(obj)


def test_raw_wait_returns_bytes_and_cancel_interrupts_it(session: Session) -> None:
    inv = inventory(session)
    views = Views(session, watched_paths=DEFAULT_WATCHED_PATHS)
    views.open({ref_of(inv['clusters'][0]): ['id-0']})
    collector = Collector(session, views.collector_id, max_object_updates=100, read_timeout_s=40)
    first = collector.wait('', max_wait_s=30)
    assert first.count(b'<kind>enter</kind>') == 2  # the 2 VMs of cluster 1
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault('body', collector.wait('-', max_wait_s=30)))
    started = time.monotonic()
    t.start()
    time.sleep(0.3)
    assert collector.cancel()
    t.join(10)
    assert b'RequestCanceled' in out['body']
    assert time.monotonic() - started < 5
    assert collector.wait('-', max_wait_s=0).count(b'objectSet') == 0  # a zero wait returns at once
    collector.close()
    views.close()


def test_name_fetch_batches_and_skips_vanished_vms(session: Session) -> None:
    vms = inventory(session)['vms']
    named, plain = vms['DC0_C0_RP0_VM0'], vms['DC0_C0_RP0_VM1']
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key='vmservice.namespacedName', value='ns-1/vm-1')])
    wait_task(named.ReconfigVM_Task(spec))
    morefs = [named._moId, plain._moId, 'vm-424242']
    got = fetch_names(session, morefs, name_key='vmservice.namespacedName', batch=2)
    assert got.values == {named._moId: 'ns-1/vm-1', plain._moId: None}
    assert got.skipped == {'vm-424242': 'ManagedObjectNotFound'}


def wait_task(task: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while task.info.state not in ('success', 'error'):
        if time.monotonic() > deadline:
            raise TimeoutError(task)
        time.sleep(0.02)
    if task.info.state == 'error':
        raise task.info.error
    return task.info.result
