# SPDX-License-Identifier: Apache-2.0
"""examples/kopf-operator runs as `kopf run` against real vcsim + kube-apiserver: kopf's handlers and
vmwatch.Service's queue drive one reconcile, and a vSphere change reaches it for that VM only."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from probes import http_get, run_env_vars, wait_until

from vmwatch.devenv import KubeServer, VcsimServer, free_port
from vmwatch.queue import WorkQueue
from vmwatch.vsphere import Endpoint, MoRef, Session
from vmwatch.vsphere import inventory as inv

EXAMPLE = Path(__file__).resolve().parents[2] / 'examples' / 'kopf-operator' / 'example.py'
ZONES = ('topology.tanzu.vmware.com', 'v1alpha1', 'zones')
VMS = ('vmoperator.vmware.com', 'v1alpha6', 'virtualmachines')
LAST_RECONCILE = 'example.vmwatch.dev/last-reconcile'
LAST_VSPHERE_CHANGE = 'example.vmwatch.dev/last-vsphere-change'


class Cluster:
    """The test's namespace, its Zone and VirtualMachines, and its own vSphere session."""

    def __init__(self, api: client.ApiClient, vc: VcsimServer) -> None:
        self.namespace = 'kopf-' + uuid.uuid4().hex[:8]
        client.CoreV1Api(api).create_namespace({'metadata': {'name': self.namespace}})
        self.objects: Any = client.CustomObjectsApi(api)
        self.session = Session(Endpoint(url=vc.url, user=vc.user, password_file=vc.password_file,
                                        ca_file=vc.ca_file))  # fmt: skip
        self.session.login()

    def create_zone(self, folder: MoRef) -> None:
        self.objects.create_namespaced_custom_object(*ZONES[:2], self.namespace, ZONES[2], {
            'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone',
            'metadata': {'name': 'zone-a', 'namespace': self.namespace},
            'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'a'},
                     'managedVMs': {'folderMoID': folder.value}},
        })  # fmt: skip

    def create_vm(self, name: str, unique_id: str = '') -> None:
        self.objects.create_namespaced_custom_object(*VMS[:2], self.namespace, VMS[2], {
            'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
            'metadata': {'name': name, 'namespace': self.namespace}, 'spec': {},
        })  # fmt: skip
        if unique_id:  # bound to its vSphere VM, as vm-operator leaves it: entering scope is no change
            self.objects.patch_namespaced_custom_object_status(*VMS[:2], self.namespace, VMS[2], name,
                                                               {'status': {'uniqueID': unique_id}})  # fmt: skip

    def annotation(self, vm: str, key: str) -> Any:
        obj = self.objects.get_namespaced_custom_object(*VMS[:2], self.namespace, VMS[2], vm)
        value = (obj['metadata'].get('annotations') or {}).get(key)
        return json.loads(value) if value is not None else None

    def close(self) -> None:
        self.session.logout()
        # no namespace controller on the shared API server: drop the finalizers and delete by hand
        for group, version, plural in (ZONES, VMS):
            for obj in self.objects.list_namespaced_custom_object(group, version, self.namespace, plural)['items']:
                name = obj['metadata']['name']
                if obj['metadata'].get('finalizers'):
                    self.objects.patch_namespaced_custom_object(
                        group, version, self.namespace, plural, name, {'metadata': {'finalizers': None}},
                        _content_type='application/merge-patch+json',
                    )  # fmt: skip
                self.objects.delete_namespaced_custom_object(group, version, self.namespace, plural, name)


@pytest.fixture
def cluster(kube_api: client.ApiClient, vcsim: VcsimServer) -> Iterator[Cluster]:
    c = Cluster(kube_api, vcsim)
    yield c
    c.close()


def test_kopf_example_reconciles_a_vm_that_changed_on_vsphere(
    kube_server: KubeServer, vcsim: VcsimServer, cluster: Cluster, tmp_path: Path
) -> None:
    session = cluster.session
    root = inv.vm_folder(session)
    changed, unrelated, canary = 'changed', 'unrelated', 'canary'
    (changed_ref, _), (unrelated_ref, _), (canary_ref, _) = inv.vms_under(session, root)[:3]
    folder = inv.create_folder(session, root, cluster.namespace)
    inv.move_into(session, folder, [changed_ref, unrelated_ref, canary_ref])
    # the canary is named by its extraConfig and not bound yet: the initial sync requests it ('entered')
    inv.set_extra_config(session, canary_ref, {'vmservice.namespacedName': f'{cluster.namespace}/{canary}'})
    cluster.create_zone(folder)
    cluster.create_vm(changed, changed_ref.value)
    cluster.create_vm(unrelated, unrelated_ref.value)
    cluster.create_vm(canary)

    port = free_port()
    env = {
        **os.environ,
        'KUBECONFIG': str(kube_server.kubeconfig),
        **run_env_vars(vcsim, kube_server.kubeconfig, cluster.namespace),
    }  # checkpoints in our namespace
    log_path = tmp_path / 'kopf.log'
    cmd = [sys.executable, '-m', 'kopf', 'run', '--standalone', f'--namespace={cluster.namespace}',
           f'--liveness=http://127.0.0.1:{port}/healthz', str(EXAMPLE)]  # fmt: skip
    with log_path.open('wb') as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # kopf's handlers reconcile every VirtualMachine (it sees them for the first time)
        for vm in (changed, unrelated, canary):
            wait_until(lambda vm=vm: cluster.annotation(vm, LAST_RECONCILE) is not None, f'kopf to reconcile {vm}')
        first = cluster.annotation(unrelated, LAST_RECONCILE)
        wait_until(lambda: 'watching' in http_get(f'http://127.0.0.1:{port}/healthz')[1], 'the vmwatch probe')
        # vmwatch's initial sync requests the canary: the queue is drained into the same reconcile
        wait_until(lambda: 'entered' in (cluster.annotation(canary, LAST_VSPHERE_CHANGE) or {}).get('reasons', ()),
                   'the initial sync to reach the reconcile')  # fmt: skip
        assert cluster.annotation(changed, LAST_VSPHERE_CHANGE) is None  # bound VMs entering scope: no request

        inv.power_on(session, changed_ref)
        wait_until(lambda: (cluster.annotation(changed, LAST_VSPHERE_CHANGE) or {}).get('reasons') == ['changed'],
                   'the power-on to reach the reconcile')  # fmt: skip
        record = cluster.annotation(changed, LAST_VSPHERE_CHANGE)
        assert record is not None and 'summary.runtime.powerState' in record['changed'], record
        assert cluster.annotation(changed, LAST_RECONCILE)['by'] == 'vsphere'

        # a later vSphere change of the canary gets through as well: the unrelated VM had every chance
        inv.set_extra_config(session, canary_ref, {'guestinfo.example': '1'})
        wait_until(lambda: (cluster.annotation(canary, LAST_VSPHERE_CHANGE) or {}).get('reasons') == ['changed'],
                   'the canary change to reach the reconcile')  # fmt: skip
        assert cluster.annotation(canary, LAST_VSPHERE_CHANGE)['changed'] == ['config.extraConfig']
        assert cluster.annotation(unrelated, LAST_VSPHERE_CHANGE) is None
        assert cluster.annotation(unrelated, LAST_RECONCILE) == first  # and its own annotation writes start no loop

        # a spec change is kopf's to report, through the same reconcile
        cluster.objects.patch_namespaced_custom_object(*VMS[:2], cluster.namespace, VMS[2], unrelated,
                                                       {'spec': {'powerState': 'PoweredOn'}})  # fmt: skip
        wait_until(lambda: cluster.annotation(unrelated, LAST_RECONCILE) != first, 'kopf to reconcile the spec')
        assert cluster.annotation(unrelated, LAST_RECONCILE)['by'] == 'kubernetes'
    except BaseException:
        print('\n--- kopf run (last 200 lines)\n' + '\n'.join(log_path.read_text().splitlines()[-200:]))
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # kopf runs the cleanup handler: vmwatch stops
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    output = log_path.read_text()
    assert proc.returncode == 0, output[-4000:]
    assert 'Traceback' not in output, output[-4000:]


def test_kopf_example_bad_settings_stop_it_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith('VMWATCH_')}
    env.update(KUBECONFIG=str(tmp_path / 'none'), VMWATCH_VC_URL='https://vc.example.com/sdk', VMWATCH_MAX_WAIT_S='x')
    proc = subprocess.run([sys.executable, '-m', 'kopf', 'run', '--standalone', '-A', str(EXAMPLE)], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("vmwatch: VMWATCH_MAX_WAIT_S / --max-wait-s: 'x' is not a valid")
    assert 'Traceback' not in proc.stderr


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location('kopf_operator_example', EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.anyio
async def test_kopf_example_drain_retries_a_failed_reconcile_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    example = _load_example()
    calls: list[tuple[str, str]] = []

    def reconcile(api: object, namespace: str, name: str, *, signals: object = ()) -> None:
        calls.append((namespace, name))
        if len(calls) == 1:
            raise RuntimeError('the API server said no')

    monkeypatch.setattr(example, 'reconcile', reconcile)
    queue = WorkQueue()
    service = SimpleNamespace(queue=queue, signals=lambda key: [])
    drain = asyncio.create_task(example.drain(service, None, logging.getLogger('test')))
    try:
        queue.add(('ns', 'vm-a'))
        async with asyncio.timeout(10):
            while len(calls) < 2 or queue.in_flight:  # retried after the rate limiter's delay, then done
                await asyncio.sleep(0.01)
        assert calls == [('ns', 'vm-a'), ('ns', 'vm-a')]
        assert queue.num_requeues(('ns', 'vm-a')) == 0  # the success forgot the failure
        assert queue.metrics.retries == 1
    finally:
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
