# SPDX-License-Identifier: Apache-2.0
"""`vmwatch run` as users run it: a process against real vcsim + kube-apiserver, health, metrics, Lease failover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import pytest
from kubernetes import client
from probes import http_get, run_env_vars, wait_until

from vmwatch.devenv import KubeServer, VcsimServer, free_port
from vmwatch.vsphere import Endpoint, Session
from vmwatch.vsphere import inventory as inv


class RunProcess:
    """One `vmwatch run` child process; stdout (JSON lines) and stderr (logs) go to files."""

    def __init__(
        self, tmp: Path, name: str, env: dict[str, str], *, stdout: int | None = None, flags: list[str] | None = None
    ) -> None:
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.out_path = tmp / f'{name}.out'
        self.err_path = tmp / f'{name}.err'
        self._out: IO[bytes] = self.out_path.open('wb')
        self._err: IO[bytes] = self.err_path.open('wb')
        if flags is None:  # the probes and /metrics on ports of their own, as in a pod
            flags = [f'--health-probe-bind-address=127.0.0.1:{self.health_port}',
                     f'--metrics-bind-address=127.0.0.1:{self.metrics_port}']  # fmt: skip
        cmd = [sys.executable, '-m', 'vmwatch.cli', 'run', *flags]
        out = self._out if stdout is None else stdout  # e.g. the write end of a pipe the test reads (or not)
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=self._err)

    @property
    def base(self) -> str:
        """The probes: /healthz, /readyz."""
        return f'http://127.0.0.1:{self.health_port}'

    @property
    def metrics_base(self) -> str:
        return f'http://127.0.0.1:{self.metrics_port}'

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out_path.read_text().splitlines() if line.strip()]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()
        return self.proc.returncode


@pytest.fixture
def run_env(
    kube_server: KubeServer,
    kube_api: client.ApiClient,
    vcsim: VcsimServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Any]:
    namespace = 'run-' + uuid.uuid4().hex[:8]
    client.CoreV1Api(kube_api).create_namespace({'metadata': {'name': namespace}})
    objects: Any = client.CustomObjectsApi(kube_api)
    session = Session(Endpoint(url=vcsim.url, user=vcsim.user, password_file=vcsim.password_file,
                               ca_file=vcsim.ca_file))  # fmt: skip
    session.login()
    root = inv.vm_folder(session)
    folder = inv.create_folder(session, root, namespace)
    objects.create_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', namespace, 'zones', {
        'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone',
        'metadata': {'name': 'zone-a', 'namespace': namespace},
        'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'a'},
                 'managedVMs': {'folderMoID': folder.value}},
    })  # fmt: skip
    env = run_env_vars(vcsim, kube_server.kubeconfig, namespace)
    procs: list[RunProcess] = []

    def start(name: str, stdout: int | None = None, flags: list[str] | None = None, **extra: str) -> RunProcess:
        p = RunProcess(tmp_path, name, {**env, **extra}, stdout=stdout, flags=flags)
        procs.append(p)
        return p

    def named_vm(name: str) -> None:
        objects.create_namespaced_custom_object('vmoperator.vmware.com', 'v1alpha6', namespace, 'virtualmachines', {
            'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
            'metadata': {'name': name, 'namespace': namespace}, 'spec': {},
        })  # fmt: skip

    def vm_change(index: int, values: dict[str, str]) -> None:
        vm = inv.vms_under(session, root)[index][0]
        inv.move_into(session, folder, [vm])
        inv.set_extra_config(session, vm, values)

    yield SimpleNamespace(start=start, named_vm=named_vm, vm_change=vm_change, namespace=namespace, objects=objects,
                          session=session, vcsim=vcsim)  # fmt: skip
    for p in procs:
        p.stop()
    if any(getattr(request.node, f'rep_{when}', None) and getattr(request.node, f'rep_{when}').failed
           for when in ('setup', 'call')):  # fmt: skip
        for p in procs:  # CI shows only the output: print what each process logged and wrote
            print(f'\n--- {p.err_path.name} (last 200 lines)\n' + '\n'.join(p.err_path.read_text().splitlines()[-200:]))
            print(f'--- {p.out_path.name}\n' + p.out_path.read_text()[-4000:])
    session.logout()
    zone = objects.get_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', namespace, 'zones', 'zone-a')
    if zone['metadata'].get('finalizers'):
        objects.patch_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', namespace, 'zones', 'zone-a',
                                               {'metadata': {'finalizers': None}},
                                               _content_type='application/merge-patch+json')  # fmt: skip
    objects.delete_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', namespace, 'zones', 'zone-a')


def test_run_signals_to_stdout_with_health_and_metrics(run_env: Any) -> None:
    p = run_env.start('a', VMWATCH_LIVENESS_STALL_S='1s')
    wait_until(lambda: http_get(f'{p.base}/healthz')[0] == 200, 'healthz')
    wait_until(lambda: http_get(f'{p.base}/readyz') == (200, 'watching\n'), 'readyz: watching')
    time.sleep(1.5)  # longer than the stall limit: /healthz stays 200 only because the loop stamps its heartbeat
    assert http_get(f'{p.base}/healthz') == (200, 'ok\n')
    assert http_get(f'{p.base}/metrics')[0] == 404  # /metrics on its own port (--metrics-bind-address)
    assert http_get(f'{p.metrics_base}/healthz')[0] == 404
    run_env.named_vm('vm-a')
    run_env.vm_change(0, {'vmservice.namespacedName': f'{run_env.namespace}/vm-a'})
    wait_until(lambda: any(line['name'] == 'vm-a' for line in p.lines()), 'a JSON line for vm-a')
    line = next(line for line in p.lines() if line['name'] == 'vm-a')
    assert line['namespace'] == run_env.namespace and isinstance(line['priority'], int)
    code, metrics = http_get(f'{p.metrics_base}/metrics')
    assert code == 200
    assert 'vmwatch_signals_total' in metrics and 'leader_election_master_status{name="vmwatch"} 1.0' in metrics
    values = {ln.split(' ')[0]: float(ln.split(' ')[1]) for ln in metrics.splitlines() if ln and not ln.startswith('#')}
    vc = '{vcenter="default"}'  # the --vc-* flags' one vCenter: every per-vCenter series carries its name
    updates = values['vmwatch_object_updates_total{kind="enter",vcenter="default"}']  # by kind: enter, modify, leave
    assert values['vmwatch_batches_total' + vc] >= 1 and updates >= 1, metrics
    assert values['vmwatch_cache_items' + vc] >= 1 and values['vmwatch_index_size' + vc] >= 1
    assert values['vmwatch_last_successful_wait_timestamp_seconds' + vc] > 0
    assert values['vmwatch_shard_held' + vc] == 1
    assert values['vmwatch_batch_duration_seconds_count' + vc] >= values['vmwatch_batches_total' + vc]
    code, body = http_get(f'{p.base}/readyz?verbose')
    assert code == 200 and body.splitlines()[1:] == ['[+]vcenter default ok: watching', 'readyz check passed'], body
    assert values['workqueue_work_duration_seconds_count{name="virtualmachine"}'] >= 1
    assert p.stop() == 0  # SIGTERM: a clean stop


def _other_sessions(session: Session) -> set[str]:
    """Keys of every vCenter session but the test's own (vcsim's session cookie is the session key)."""
    manager = session.content.sessionManager
    own = manager.currentSession.key
    return {s.key for s in manager.sessionList if s.key != own}


def test_debug_logs_metrics_and_errors_never_show_a_secret(run_env: Any, tmp_path: Path) -> None:
    """A whole scenario at debug level: sessions killed, a wrong password, then the right one again."""
    vcsim, session = run_env.vcsim, run_env.session
    good = vcsim.password_file.read_text()
    wrong = 'wrong-' + uuid.uuid4().hex
    p = run_env.start('a', VMWATCH_LOG_LEVEL='DEBUG', VMWATCH_RESTART_INITIAL_S='0.1', VMWATCH_RESTART_MAX_S='0.5')
    wait_until(lambda: http_get(f'{p.base}/readyz') == (200, 'watching\n'), 'watching')
    run_env.named_vm('vm-a')
    run_env.vm_change(0, {'vmservice.namespacedName': f'{run_env.namespace}/vm-a'})
    wait_until(lambda: any(line['name'] == 'vm-a' for line in p.lines()), 'a JSON line for vm-a')
    cookies = _other_sessions(session)
    assert cookies, 'vmwatch holds a session'
    session.content.sessionManager.TerminateSession(sessionId=sorted(cookies))  # NotAuthenticated mid-wait
    wait_until(lambda: _other_sessions(session) - cookies, 'a new login')
    cookies |= _other_sessions(session)
    vcsim.password_file.write_text(wrong + '\n')  # InvalidLogin on the next attempt
    session.content.sessionManager.TerminateSession(sessionId=sorted(_other_sessions(session)))
    wait_until(lambda: 'login failed' in http_get(f'{p.base}/readyz')[1].lower() or
               'invalid' in http_get(f'{p.base}/readyz')[1].lower(), 'a failed login')  # fmt: skip
    vcsim.password_file.write_text(good)
    wait_until(lambda: http_get(f'{p.base}/readyz') == (200, 'watching\n'), 'watching again')
    cookies |= _other_sessions(session)
    _code, metrics = http_get(f'{p.metrics_base}/metrics')
    _code, ready = http_get(f'{p.base}/readyz')
    assert p.stop() == 0
    logs = p.err_path.read_text()
    assert ' DEBUG ' in logs, logs[-3000:]
    assert 'NotAuthenticated' in logs or 'not authenticated' in logs.lower(), logs[-3000:]
    assert cookies and good.strip() and wrong  # the secrets looked for are not empty
    for text in (logs, p.out_path.read_text(), metrics, ready):
        for secret in (good.strip(), wrong, *cookies):
            assert secret not in text, f'a secret ({secret[:4]}...) leaked'


def test_two_replicas_one_lease_failover(run_env: Any) -> None:
    a = run_env.start('a')
    wait_until(lambda: http_get(f'{a.base}/readyz') == (200, 'watching\n'), 'a leads')
    b = run_env.start('b')
    wait_until(lambda: http_get(f'{b.base}/readyz')[1].startswith('standby'), 'b stands by')
    a.stop(signal.SIGKILL)  # a crash: the Lease is not released and must expire
    wait_until(lambda: http_get(f'{b.base}/readyz') == (200, 'watching\n'), 'b takes over', timeout_s=30)
    run_env.named_vm('vm-b')
    run_env.vm_change(1, {'vmservice.namespacedName': f'{run_env.namespace}/vm-b'})
    wait_until(lambda: any(line['name'] == 'vm-b' for line in b.lines()), 'b signals vm-b')


@pytest.mark.parametrize(
    ('env', 'message'),
    [
        ({'VMWATCH_VC_URL': 'not-a-url'}, 'is not an http(s) URL'),
        ({'VMWATCH_WORKERS': 'many'}, "'many' is not a valid int"),
        ({'VMWATCH_VC_INSECURE': 'maybe'}, 'is not a boolean'),
        ({'ASYNC_SIGNAL_DISABLED': 'perhaps'}, 'is not a boolean'),
        ({'VMWATCH_KUBECONFIG': '/nonexistent/kubeconfig'}, 'cannot load the Kubernetes configuration'),
        ({'VMWATCH_KUBECONFIG': '{tmp}/garbage.yaml'}, 'cannot load the Kubernetes configuration'),
        ({'VMWATCH_KUBECONFIG': '{tmp}/no-context.yaml'}, 'cannot load the Kubernetes configuration'),
        ({'VMWATCH_VC_PASSWORD_FILE': ''}, 'VMWATCH_VC_PASSWORD_FILE is required'),
        (
            {'VMWATCH_LEADER_ELECT_LEASE_DURATION': '1s', 'VMWATCH_LEADER_ELECT_RENEW_DEADLINE': '2s'},
            'shorter than --leader-elect-lease-duration',
        ),  # fmt: skip
        ({'VMWATCH_SINK': 'kafka'}, "'kafka' is not one of"),
        ({'VMWATCH_HEALTH_PROBE_BIND_ADDRESS': '8081'}, '--health-probe-bind-address'),
        ({'VMWATCH_METRICS_BIND_ADDRESS': '8080'}, '--metrics-bind-address'),
        ({'VMWATCH_HEALTH_ADDR': '8081'}, '--health-probe-bind-address'),  # the former name, still read
        ({'VMWATCH_WATCHED_PATHS_REMOVE': 'guest.net'}, "--watched-paths-remove: 'guest.net' is not watched"),
        ({'VMWATCH_WATCHED_PATHS': 'guest.ipStack[0]'}, 'is not a property path'),
        ({'VMWATCH_IGNORED_EXTRA_CONFIG_KEYS_REMOVE': 'nvram'}, "'nvram' is not ignored"),
    ],
)
def test_bad_settings_exit_2_with_one_message(tmp_path: Path, env: dict[str, str], message: str) -> None:
    pw = tmp_path / 'pw'
    pw.write_text('x\n')
    (tmp_path / 'garbage.yaml').write_text('clusters: [\n  {{{ not yaml')
    (tmp_path / 'no-context.yaml').write_text('apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n')
    env = {k: v.replace('{tmp}', str(tmp_path)) for k, v in env.items()}
    base = {'VMWATCH_VC_URL': 'https://127.0.0.1:1/sdk', 'VMWATCH_VC_USER': 'u', 'VMWATCH_VC_PASSWORD_FILE': str(pw)}
    proc = subprocess.run([sys.executable, '-m', 'vmwatch.cli', 'run'], env={**os.environ, **base, **env},
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_former_flag_and_variable_names_still_work_and_each_warns_once(run_env: Any) -> None:
    """--health-addr and VMWATCH_LEASE_DURATION_S (renamed in issue 14): read, each logged once as deprecated;
    /metrics on the probes' address shares their listener."""
    port = free_port()
    p = run_env.start('old', flags=['--health-addr', f'127.0.0.1:{port}'], VMWATCH_LEADER_ELECT_LEASE_DURATION='',
                      VMWATCH_LEASE_DURATION_S='7', VMWATCH_METRICS_BIND_ADDRESS=f'127.0.0.1:{port}')  # fmt: skip
    base = f'http://127.0.0.1:{port}'
    wait_until(lambda: http_get(f'{base}/readyz') == (200, 'watching\n'), 'readyz: watching on --health-addr')
    code, metrics = http_get(f'{base}/metrics')
    assert code == 200 and 'leader_election_master_status{name="vmwatch"} 1.0' in metrics
    lease = client.CoordinationV1Api(run_env.objects.api_client).read_namespaced_lease('vmwatch', run_env.namespace)
    assert lease.spec.lease_duration_seconds == 7
    warnings = [ln for ln in p.err_path.read_text().splitlines() if 'is deprecated' in ln]
    assert len(warnings) == 2, warnings
    assert any('--health-addr is deprecated (issue 14): use --health-probe-bind-address' in w for w in warnings)
    assert any('VMWATCH_LEASE_DURATION_S is deprecated (issue 14): use VMWATCH_LEADER_ELECT_LEASE_DURATION' in w
               for w in warnings)  # fmt: skip


def _series_sum(p: RunProcess, prefix: str) -> float:
    """The sum of every sample of the series named `prefix` (all labels) on p's /metrics."""
    _code, text = http_get(f'{p.metrics_base}/metrics')
    return sum(float(ln.rsplit(' ', 1)[1]) for ln in text.splitlines() if ln.startswith(prefix + '{'))


def test_an_added_ignored_key_reaches_the_decider(run_env: Any) -> None:
    """VMWATCH_IGNORED_EXTRA_CONFIG_KEYS_ADD (and a watched path removed) as a user sets them: a change of only the
    added key signals nothing, a change of a kept key next to it still does."""
    ns = run_env.namespace
    p = run_env.start('a', VMWATCH_IGNORED_EXTRA_CONFIG_KEYS_ADD='vmwatch.test.noise',
                      VMWATCH_WATCHED_PATHS_REMOVE='summary.overallStatus')  # fmt: skip
    wait_until(lambda: http_get(f'{p.base}/readyz') == (200, 'watching\n'), 'watching')
    run_env.named_vm('vm-a')
    run_env.vm_change(0, {'vmservice.namespacedName': f'{ns}/vm-a', 'vmwatch.test.noise': '1'})
    wait_until(lambda: any(line['name'] == 'vm-a' for line in p.lines()), 'a JSON line for vm-a')
    vm = inv.vms_under(run_env.session, inv.vm_folder(run_env.session))[0][0]
    signals = _series_sum(p, 'vmwatch_signals_total')
    skipped = _series_sum(p, 'vmwatch_skipped_total')
    inv.set_extra_config(run_env.session, vm, {'vmwatch.test.noise': '2'})
    wait_until(lambda: _series_sum(p, 'vmwatch_skipped_total') > skipped, 'the noise change decided (skipped)')
    assert _series_sum(p, 'vmwatch_signals_total') == signals
    inv.set_extra_config(run_env.session, vm, {'guestinfo.userdata': 'e30='})
    wait_until(lambda: _series_sum(p, 'vmwatch_signals_total') > signals, 'the kept key signals')
    assert p.stop() == 0
