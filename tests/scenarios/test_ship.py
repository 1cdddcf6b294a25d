# SPDX-License-Identifier: Apache-2.0
"""What a platform team installs: the manifests under RBAC, the shipped ServiceAccount's identity, the wheel.

An API server with `--authorization-mode RBAC` of its own (the session's one allows everything) gets the
CRDs, a server-side dry-run of every manifest in deploy/base, then the Namespace and RBAC for real. A token
minted for the `vmwatch` ServiceAccount (TokenRequest API) then proves what the ClusterRole allows and
refuses, and runs `vmwatch run --sink annotate` end to end. The wheel test builds the release wheel,
installs it into a fresh virtual environment outside the source tree and runs the CLI from there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kustomize_lite import build
from probes import http_get, wait_until

from vmwatch.devenv import KubeServer, VcsimServer, free_port
from vmwatch.kube.crds import crd_manifests, install_crds
from vmwatch.vsphere import Endpoint, Session
from vmwatch.vsphere import inventory as inv

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / 'deploy' / 'base'
NAMESPACE = 'vmwatch-system'
SERVICE_ACCOUNT = 'vmwatch'
ZONES = ('topology.tanzu.vmware.com', 'v1alpha1', 'zones')
VMS = ('vmoperator.vmware.com', 'v1alpha6', 'virtualmachines')
FIELD_MANAGER = 'vmwatch-test'


def base_manifests() -> list[dict[str, Any]]:
    """Every object `kustomize build deploy/base` makes (kustomize_lite: the resources in kustomization.yaml's
    order, then the generated ConfigMap, with the image tag set)."""
    return build(BASE)


def apply(dyn: DynamicClient, manifest: dict[str, Any], *, dry_run: bool) -> Any:
    """Server-side apply of one manifest; `dry_run` asks the API server to validate, admit and not persist."""
    resource = dyn.resources.get(api_version=manifest['apiVersion'], kind=manifest['kind'])
    extra = {'dry_run': 'All'} if dry_run else {}
    return resource.server_side_apply(
        body=manifest,
        namespace=manifest['metadata'].get('namespace'),
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
        **extra,
    )


class RbacCluster:
    """The RBAC-enforcing API server with deploy/base's Namespace and RBAC applied."""

    def __init__(self, server: KubeServer, tmp: Path) -> None:
        self.server = server
        self.admin = kconfig.new_client_from_config(config_file=str(server.kubeconfig))
        self.dry_run_results: list[tuple[str, str]] = []
        self.sa_kubeconfig = tmp / 'vmwatch-sa.kubeconfig'

    def install(self) -> None:
        install_crds(self.admin)
        dyn = DynamicClient(self.admin)
        manifests = base_manifests()
        # the Namespace first: namespaced objects can only be admitted into an existing namespace
        namespace = [m for m in manifests if m['kind'] == 'Namespace']
        rest = [m for m in manifests if m['kind'] != 'Namespace']
        for m in namespace:
            self._dry_run(dyn, m)
            apply(dyn, m, dry_run=False)
        for m in [*rest, *crd_manifests()]:
            self._dry_run(dyn, m)
        for m in yaml.safe_load_all((BASE / 'rbac.yaml').read_text()):
            if m:
                apply(dyn, m, dry_run=False)
        self._write_sa_kubeconfig(self._mint_token())

    def _dry_run(self, dyn: DynamicClient, manifest: dict[str, Any]) -> None:
        result = apply(dyn, manifest, dry_run=True)
        assert result.kind == manifest['kind'] and result.metadata.name == manifest['metadata']['name']
        self.dry_run_results.append((manifest['kind'], manifest['metadata']['name']))

    def _mint_token(self) -> str:
        core: Any = client.CoreV1Api(self.admin)
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                  expiration_seconds=3600))  # fmt: skip
        response = core.create_namespaced_service_account_token(SERVICE_ACCOUNT, NAMESPACE, request)
        token: str = response.status.token
        assert token
        return token

    def _write_sa_kubeconfig(self, token: str) -> None:
        config = {
            'apiVersion': 'v1',
            'kind': 'Config',
            'clusters': [{'name': 'rbac', 'cluster': {'server': self.server.url,
                                                      'certificate-authority': str(self.server.ca_file)}}],
            'users': [{'name': SERVICE_ACCOUNT, 'user': {'token': token}}],
            'contexts': [{'name': 'sa', 'context': {'cluster': 'rbac', 'user': SERVICE_ACCOUNT}}],
            'current-context': 'sa',
        }  # fmt: skip
        self.sa_kubeconfig.write_text(json.dumps(config))

    def sa_client(self) -> client.ApiClient:
        return kconfig.new_client_from_config(config_file=str(self.sa_kubeconfig))

    def new_namespace(self) -> str:
        name = 'ship-' + uuid.uuid4().hex[:8]
        client.CoreV1Api(self.admin).create_namespace({'metadata': {'name': name}})
        return name


@pytest.fixture(scope='module')
def rbac_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RbacCluster]:
    tmp = tmp_path_factory.mktemp('kube-rbac')
    server = KubeServer(state_dir=tmp / 'state', authorization_mode='RBAC')
    try:
        server.start()
        cluster = RbacCluster(server, tmp)
        cluster.install()
        yield cluster
    except BaseException:
        dest = Path(os.environ.get('VMWATCH_TEST_LOGS', 'test-logs')) / 'kube-rbac'
        dest.mkdir(parents=True, exist_ok=True)
        for p in (server.etcd_log, server.apiserver_log):
            if p.exists():
                shutil.copy(p, dest / p.name)
        raise
    finally:
        server.stop()


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


@pytest.mark.servers
def test_every_manifest_passes_server_side_dry_run(rbac_cluster: RbacCluster) -> None:
    kinds = {kind for kind, _ in rbac_cluster.dry_run_results}
    assert {'Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'ConfigMap',
            'Deployment', 'PodDisruptionBudget', 'Service', 'CustomResourceDefinition'} <= kinds  # fmt: skip
    # dry-run persisted nothing: the Deployment and the ConfigMap were never created for real
    apps: Any = client.AppsV1Api(rbac_cluster.admin)
    assert _status(lambda: apps.read_namespaced_deployment('vmwatch', NAMESPACE)) == 404
    (configmap,) = [name for kind, name in rbac_cluster.dry_run_results if kind == 'ConfigMap']
    assert configmap.startswith('vmwatch-')  # the generator's name, with its content hash
    core: Any = client.CoreV1Api(rbac_cluster.admin)
    assert _status(lambda: core.read_namespaced_config_map(configmap, NAMESPACE)) == 404


@pytest.mark.servers
def test_service_account_is_allowed_what_the_role_grants_and_refused_the_rest(rbac_cluster: RbacCluster) -> None:
    namespace = rbac_cluster.new_namespace()
    admin_objects: Any = client.CustomObjectsApi(rbac_cluster.admin)
    vm = {'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
          'metadata': {'name': 'vm-1', 'namespace': namespace}, 'spec': {}}  # fmt: skip
    admin_objects.create_namespaced_custom_object(*VMS[:2], namespace, VMS[2], vm)
    with rbac_cluster.sa_client() as sa:
        objects: Any = client.CustomObjectsApi(sa)
        core: Any = client.CoreV1Api(sa)
        leases: Any = client.CoordinationV1Api(sa)
        lease = {'metadata': {'name': 'probe', 'namespace': NAMESPACE}, 'spec': {'holderIdentity': 'test'}}
        allowed = {
            'list zones': lambda: objects.list_cluster_custom_object(*ZONES),
            'list virtualmachines': lambda: objects.list_cluster_custom_object(*VMS),
            'get virtualmachine': lambda: objects.get_namespaced_custom_object(*VMS[:2], namespace, VMS[2], 'vm-1'),
            'patch virtualmachine': lambda: objects.patch_namespaced_custom_object(
                *VMS[:2], namespace, VMS[2], 'vm-1', {'metadata': {'annotations': {'vmwatch.dev/async-signal': 'x'}}}
            ),
            'create lease in vmwatch-system': lambda: leases.create_namespaced_lease(NAMESPACE, lease),
            'list leases in vmwatch-system': lambda: leases.list_namespaced_lease(NAMESPACE),
            'delete lease in vmwatch-system': lambda: leases.delete_namespaced_lease('probe', NAMESPACE),
            'create checkpoint configmap in vmwatch-system': lambda: core.create_namespaced_config_map(
                NAMESPACE, {'metadata': {'name': 'vmwatch-checkpoint-probe'}}),
            'list configmaps in vmwatch-system': lambda: core.list_namespaced_config_map(NAMESPACE),
            'create event': lambda: core.create_namespaced_event(namespace, {
                'metadata': {'generateName': 'vmwatch-'}, 'involvedObject': {'kind': 'Zone', 'namespace': namespace},
                'reason': 'Test', 'message': 'rbac probe', 'type': 'Normal'}),
        }  # fmt: skip
        refused = {
            'delete virtualmachine': lambda: objects.delete_namespaced_custom_object(
                *VMS[:2], namespace, VMS[2], 'vm-1'
            ),
            'create virtualmachine': lambda: objects.create_namespaced_custom_object(
                *VMS[:2], namespace, VMS[2], {**vm, 'metadata': {'name': 'vm-2', 'namespace': namespace}}
            ),
            'list secrets': lambda: core.list_secret_for_all_namespaces(),
            'get secrets in vmwatch-system': lambda: core.list_namespaced_secret(NAMESPACE),
            'create zone': lambda: objects.create_namespaced_custom_object(*ZONES[:2], namespace, ZONES[2], {
                'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone',
                'metadata': {'name': 'z', 'namespace': namespace}, 'spec': {}}),
            'delete zones': lambda: objects.delete_collection_namespaced_custom_object(*ZONES[:2], namespace, ZONES[2]),
            'list leases in another namespace': lambda: leases.list_namespaced_lease(namespace),
            'list configmaps in another namespace': lambda: core.list_namespaced_config_map(namespace),
            'list namespaces': lambda: core.list_namespace(),
            'list pods': lambda: core.list_pod_for_all_namespaces(),
            'replace zone (finalizers are patched)': lambda: objects.replace_namespaced_custom_object(
                *ZONES[:2], namespace, ZONES[2], 'z', {'metadata': {'name': 'z'}}),
        }  # fmt: skip
        got_allowed = {what: _status(call) for what, call in allowed.items()}
        got_refused = {what: _status(call) for what, call in refused.items()}
    assert got_allowed == dict.fromkeys(allowed, 200), got_allowed
    assert got_refused == dict.fromkeys(refused, 403), got_refused
    # the VM survived the refused delete, and carries the annotation the allowed patch wrote
    obj = admin_objects.get_namespaced_custom_object(*VMS[:2], namespace, VMS[2], 'vm-1')
    assert obj['metadata']['annotations']['vmwatch.dev/async-signal'] == 'x'


@pytest.mark.servers
def test_run_under_the_service_account_annotates_a_named_vm(
    rbac_cluster: RbacCluster, vcsim: VcsimServer, tmp_path: Path
) -> None:
    namespace = rbac_cluster.new_namespace()
    admin_objects: Any = client.CustomObjectsApi(rbac_cluster.admin)
    session = Session(Endpoint(url=vcsim.url, user=vcsim.user, password_file=vcsim.password_file,
                               ca_file=vcsim.ca_file))  # fmt: skip
    session.login()
    root = inv.vm_folder(session)
    folder = inv.create_folder(session, root, namespace)
    admin_objects.create_namespaced_custom_object(*ZONES[:2], namespace, ZONES[2], {
        'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone',
        'metadata': {'name': 'zone-a', 'namespace': namespace},
        'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'a'},
                 'managedVMs': {'folderMoID': folder.value}},
    })  # fmt: skip
    admin_objects.create_namespaced_custom_object(*VMS[:2], namespace, VMS[2], {
        'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
        'metadata': {'name': 'vm-a', 'namespace': namespace}, 'spec': {},
    })  # fmt: skip
    port = free_port()
    env = {
        **os.environ,
        'VMWATCH_VC_URL': vcsim.url,
        'VMWATCH_VC_USER': vcsim.user,
        'VMWATCH_VC_PASSWORD_FILE': str(vcsim.password_file),
        'VMWATCH_VC_CA_FILE': str(vcsim.ca_file),
        'VMWATCH_KUBECONFIG': str(rbac_cluster.sa_kubeconfig),
        'VMWATCH_LEASE_NAMESPACE': NAMESPACE,
        'VMWATCH_SINK': 'annotate',
        'VMWATCH_MAX_WAIT_S': '5',
        'VMWATCH_LEADER_ELECT_LEASE_DURATION': '3s',
        'VMWATCH_LEADER_ELECT_RENEW_DEADLINE': '2s',
        'VMWATCH_LEADER_ELECT_RETRY_PERIOD': '250ms',
        'VMWATCH_HEALTH_PROBE_BIND_ADDRESS': f'127.0.0.1:{port}',
        'VMWATCH_METRICS_BIND_ADDRESS': '0',
    }
    env.pop('KUBECONFIG', None)
    err_path = tmp_path / 'run.err'
    base = f'http://127.0.0.1:{port}'
    with err_path.open('wb') as err:
        proc = subprocess.Popen([sys.executable, '-m', 'vmwatch.cli', 'run'], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            wait_until(lambda: http_get(f'{base}/readyz') == (200, 'watching\n'), 'readyz: watching', timeout_s=60)
            vm = inv.vms_under(session, root)[0][0]
            inv.move_into(session, folder, [vm])
            inv.set_extra_config(session, vm, {'vmservice.namespacedName': f'{namespace}/vm-a'})

            def annotated() -> bool:
                obj = admin_objects.get_namespaced_custom_object(*VMS[:2], namespace, VMS[2], 'vm-a')
                return 'vmwatch.dev/async-signal' in (obj['metadata'].get('annotations') or {})

            wait_until(annotated, 'the async-signal annotation on vm-a', timeout_s=60)
            assert http_get(f'{base}/readyz') == (200, 'watching\n')
            lease = client.CoordinationV1Api(rbac_cluster.admin).read_namespaced_lease('vmwatch', NAMESPACE)
            assert lease.spec.holder_identity
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            session.logout()
    log = err_path.read_text()
    assert proc.returncode == 0, log[-4000:]
    assert '403' not in log and 'forbidden' not in log.lower(), log[-4000:]


@pytest.mark.timeout(1800)
def test_release_wheel_installs_and_runs_outside_the_tree(tmp_path: Path) -> None:
    maturin = shutil.which('maturin', path=str(Path(sys.executable).parent)) or shutil.which('maturin')
    assert maturin, 'maturin is a development dependency: install it into the test environment'
    out = tmp_path / 'wheels'
    started = time.monotonic()
    subprocess.run([maturin, 'build', '--release', '-o', str(out)], cwd=ROOT, check=True, timeout=1700)
    build_s = time.monotonic() - started
    (wheel,) = out.glob('vmwatch-*.whl')
    print(f'\nwheel {wheel.name}: {wheel.stat().st_size} bytes, built in {build_s:.1f} s')
    assert '-abi3-' in wheel.name and 'manylinux' in wheel.name

    # package data needed at run time: the Go sources devenv builds the test servers from, and the CRDs
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(['git', 'ls-files', 'python/vmwatch/devenv/go', 'python/vmwatch/kube/crds'],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
    assert tracked
    missing = [p for p in tracked if p.removeprefix('python/') not in names]
    assert not missing, f'left out of the wheel: {missing}'
    assert 'vmwatch/py.typed' in names and 'vmwatch/_vmwatch.pyi' in names

    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300)
    py = venv / 'bin' / 'python'
    subprocess.run([str(py), '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', str(wheel)],
                   check=True, timeout=900, cwd=tmp_path)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    where = subprocess.run([str(py), '-c', 'import vmwatch, sys; print(vmwatch.__file__)'], cwd=tmp_path, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(venv), where

    cli = venv / 'bin' / 'vmwatch'
    helped = subprocess.run([str(cli), '--help'], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    for command in ('run', 'decode', 'watch', 'devenv'):
        assert command in helped.stdout
    decoded = subprocess.run([str(cli), 'decode', str(ROOT / 'tests' / 'data' / 'initial-sync.xml')], cwd=tmp_path,
                             env=env, check=True, capture_output=True, text=True)  # fmt: skip
    lines = [json.loads(line) for line in decoded.stdout.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert {'version', 'truncated', 'obj', 'type', 'kind', 'props', 'namespaced_name'} <= set(line)
        assert line['kind'] in ('enter', 'modify', 'leave')
        assert line['props'] == sorted(line['props'])
    assert any(line['type'] == 'VirtualMachine' and line['kind'] == 'enter' for line in lines)
    assert 'my-namespace-1/my-name-1' in {line['namespaced_name'] for line in lines}
