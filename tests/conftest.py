# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: real test servers (vcsim, etcd + kube-apiserver) on 127.0.0.1.

Tests that use them are marked `servers` and run last. `--no-servers` skips them for a quick local
loop; it is refused under CI (CI=true), where every test runs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmwatch import devenv

# the topology of vm-operator's watcher tests (spec.md 6.1): 2 clusters x 3 hosts, 2 VMs per cluster
WATCHER_TOPOLOGY = ('-cluster', '2', '-host', '3', '-standalone-host', '0', '-vm', '2', '-autostart=false')

SERVER_FIXTURES = {'vcsim', 'vcsim_factory', 'kube_server', 'kube_api', 'servers'}
LOG_DIR = Path(os.environ.get('VMWATCH_TEST_LOGS', 'test-logs'))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption('--no-servers', action='store_true', help='skip tests that need vcsim / kube-apiserver')


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption('--no-servers') and os.environ.get('CI', '').lower() == 'true':
        raise pytest.UsageError('--no-servers is for local loops only: CI runs every test')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.servers)
    if config.getoption('--no-servers'):
        skip = pytest.mark.skip(reason='--no-servers')
        for item in items:
            if item.get_closest_marker('servers'):
                item.add_marker(skip)
    # integration tests run last (their servers are the slow part)
    items.sort(key=lambda item: item.get_closest_marker('servers') is not None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f'rep_{report.when}', report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(request.node, f'rep_{when}', None) and getattr(request.node, f'rep_{when}').failed
        for when in ('setup', 'call')
    )


def _keep_logs(request: pytest.FixtureRequest, *paths: Path) -> None:
    """Copy server logs next to the test results when the test failed, and say where."""
    dest = LOG_DIR / request.node.name.replace('/', '_')
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        if p.exists():
            shutil.copy(p, dest / p.name)
    print(f'\nserver logs kept in {dest}')


@pytest.fixture(scope='session')
def kube_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devenv.KubeServer]:
    from kubernetes import config as kconfig

    from vmwatch.kube.crds import install_crds

    server = devenv.KubeServer(state_dir=tmp_path_factory.mktemp('kube'))
    try:
        server.start()
        api = kconfig.new_client_from_config(config_file=str(server.kubeconfig))
        with api:
            install_crds(api)
        yield server
    except BaseException:
        _copy_session_logs(server)
        raise
    finally:
        server.stop()


def _copy_session_logs(server: devenv.KubeServer) -> None:
    dest = LOG_DIR / 'kube-session'
    dest.mkdir(parents=True, exist_ok=True)
    for p in (server.etcd_log, server.apiserver_log):
        if p.exists():
            shutil.copy(p, dest / p.name)


@pytest.fixture
def kube_api(kube_server: devenv.KubeServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A kubernetes.client.ApiClient for the session's kube-apiserver (admin token)."""
    from kubernetes import config as kconfig

    api = kconfig.new_client_from_config(config_file=str(kube_server.kubeconfig))
    with api:
        yield api
    if _failed(request):
        _keep_logs(request, kube_server.etcd_log, kube_server.apiserver_log)


@pytest.fixture
def namespace(kube_api: Any) -> Iterator[str]:
    """A fresh namespace on the session's kube-apiserver for one test, deleted after it."""
    import uuid

    from kubernetes import client

    name = f'test-{uuid.uuid4().hex[:8]}'
    core = client.CoreV1Api(kube_api)
    core.create_namespace({'metadata': {'name': name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def vcsim_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., devenv.VcsimServer]]:
    """Start vcsim with the given flags; each call starts another one. Stopped after the test."""
    started: list[devenv.VcsimServer] = []

    def start(*args: str) -> devenv.VcsimServer:
        server = devenv.VcsimServer(state_dir=tmp_path / f'vcsim{len(started)}', args=tuple(args))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    if _failed(request):
        _keep_logs(request, *(s.log_path for s in started))


@pytest.fixture
def vcsim(vcsim_factory: Callable[..., devenv.VcsimServer]) -> devenv.VcsimServer:
    """A fresh vcsim with the topology of vm-operator's watcher tests (spec.md 6.1)."""
    return vcsim_factory(*WATCHER_TOPOLOGY)
