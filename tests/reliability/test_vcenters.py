# SPDX-License-Identifier: Apache-2.0
"""Several vCenters in one deployment, sharded across replicas by Leases (issue 12).

Three vcsim processes (each numbers its VMs alike: `vm-N` exists in all three, and so does the folder MoRef),
one kube-apiserver, `vmwatch run` processes with a `--vcenters-file`. Every VirtualMachine is verified (its
status.uniqueID is its MoRef), so a core that keyed VMs by MoRef value alone would signal, verify or suppress
the wrong one. Site a's VMs name their vCenter by their own label, sites b and c by their Zone.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from probes import http_get, run_env_vars, wait_until
from rel_helpers import WATCHED_KEY, ChangeStream, topology
from test_failover import lost, metric, requests
from test_run_cmd import RunProcess

from conftest import Recorder
from vmwatch.devenv import KubeServer, VcsimServer
from vmwatch.vsphere import Endpoint, MoRef, Session
from vmwatch.vsphere import inventory as inv

SITES = ('site-a', 'site-b', 'site-c')
N_VMS = 3
VMS = ('vmoperator.vmware.com', 'v1alpha6', 'virtualmachines')
ZONES = ('topology.tanzu.vmware.com', 'v1alpha1', 'zones')
LEASE_S = 3.0
VCENTER_LABEL = 'vmwatch.dev/vcenter'


@dataclass(kw_only=True)
class Changes(ChangeStream):
    """Watched changes made on several vcsims: VM name -> (the session of its vcsim, its MoRef)."""

    vms: dict[str, tuple[Session, MoRef]]

    def write(self, name: str, value: str) -> None:
        session, ref = self.vms[name]
        inv.set_extra_config(session, ref, {WATCHED_KEY: value})


@pytest.fixture(scope='module')
def vcsims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, VcsimServer]]:
    """Three vCenters, shared by the tests of this module (each test uses its own namespace)."""
    root = tmp_path_factory.mktemp('vcenters')
    servers = {site: VcsimServer(state_dir=root / site, args=topology(N_VMS)) for site in SITES}
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@dataclass
class Sites:
    namespace: str
    objects: Any
    env: dict[str, str]
    changes: Changes
    vcsims: dict[str, VcsimServer]
    folders: dict[str, MoRef]
    tmp: Path
    sessions: list[Session]
    procs: list[RunProcess] = field(default_factory=list)

    def start(self, name: str) -> RunProcess:
        p = RunProcess(self.tmp, name, self.env)
        self.procs.append(p)
        return p

    def zone(self, name: str, folder: str, labels: dict[str, str]) -> None:
        self.objects.create_namespaced_custom_object(*ZONES[:2], self.namespace, ZONES[2], {
            'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone',
            'metadata': {'name': name, 'namespace': self.namespace, 'labels': labels},
            'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': name},
                     'managedVMs': {'folderMoID': folder}},
        })  # fmt: skip

    def transitions(self) -> int:
        """Holder changes of the shard Leases so far (leaseTransitions, summed)."""
        leases: Any = client.CoordinationV1Api(self.objects.api_client)
        return sum(
            leases.read_namespaced_lease(f'vmwatch-{site}', self.namespace).spec.lease_transitions or 0
            for site in SITES
        )

    def holders(self) -> dict[str, str | None]:
        """vCenter -> the identity holding its shard Lease (None: free or expired)."""
        leases: Any = client.CoordinationV1Api(self.objects.api_client)
        out: dict[str, str | None] = {}
        now = time.time()
        for site in SITES:
            try:
                spec = leases.read_namespaced_lease(f'vmwatch-{site}', self.namespace).spec
            except client.exceptions.ApiException:
                out[site] = None
                continue
            fresh = spec.renew_time is not None and spec.renew_time.timestamp() + spec.lease_duration_seconds > now
            out[site] = spec.holder_identity if fresh and spec.holder_identity else None
        return out


def vm_name(site: str, i: int) -> str:
    return f'{site.removeprefix("site-")}-vm-{i}'


@pytest.fixture
def sites(
    kube_server: KubeServer, kube_api: client.ApiClient, vcsims: dict[str, VcsimServer], tmp_path: Path
) -> Iterator[Sites]:
    namespace = 'vcs-' + uuid.uuid4().hex[:8]
    client.CoreV1Api(kube_api).create_namespace({'metadata': {'name': namespace}})
    objects: Any = client.CustomObjectsApi(kube_api)
    sessions, vms, folders = [], {}, {}
    entries = []
    for site, vc in vcsims.items():
        session = Session(Endpoint(url=vc.url, user=vc.user, password_file=vc.password_file, ca_file=vc.ca_file))
        session.login()
        sessions.append(session)
        folders[site] = inv.vm_folder(session)
        refs = [ref for ref, _ in inv.vms_under(session, folders[site])][:N_VMS]
        for i, ref in enumerate(refs):
            vms[vm_name(site, i)] = (session, ref)
        entries.append({'name': site, 'url': vc.url, 'user': vc.user, 'passwordFile': str(vc.password_file),
                        'caFile': str(vc.ca_file)})  # fmt: skip
    assert len({ref.value for _, ref in vms.values()}) == N_VMS, 'the vcsims number their VMs alike'
    for name, (_session, ref) in vms.items():
        site = 'site-' + name.split('-', 1)[0]
        # site a's VMs name their vCenter; the others are routed by the Zone their zone label names
        labels = {VCENTER_LABEL: site} if site == 'site-a' else {'topology.kubernetes.io/zone': f'zone-{site}'}
        objects.create_namespaced_custom_object(*VMS[:2], namespace, VMS[2], {
            'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
            'metadata': {'name': name, 'namespace': namespace, 'labels': labels}, 'spec': {}})  # fmt: skip
        objects.patch_namespaced_custom_object_status(
            *VMS[:2], namespace, VMS[2], name, {'status': {'uniqueID': ref.value}}
        )
    vcenters_file = tmp_path / 'vcenters.yaml'
    vcenters_file.write_text(yaml.safe_dump({'vcenters': entries}))
    env = run_env_vars(next(iter(vcsims.values())), kube_server.kubeconfig, namespace,
                       VMWATCH_LEADER_ELECT_LEASE_DURATION=str(LEASE_S), VMWATCH_CHECKPOINT_INTERVAL_S='1',
                       VMWATCH_VCENTERS_FILE=str(vcenters_file))  # fmt: skip
    for key in [k for k in env if k.startswith('VMWATCH_VC_')]:
        del env[key]
    s = Sites(namespace, objects, env, Changes(vms=vms), dict(vcsims), folders, tmp_path, sessions)
    for site in SITES:
        s.zone(f'zone-{site}', folders[site].value, {VCENTER_LABEL: site})
    yield s
    s.changes.stop()
    for p in s.procs:
        p.stop()
    for p in s.procs:
        print(f'\n--- {p.err_path.name} (last 60 lines)\n' + '\n'.join(p.err_path.read_text().splitlines()[-60:]))
    for name in vms:  # VirtualMachines claiming vcsim MoRefs must not outlive the test
        objects.delete_namespaced_custom_object(*VMS[:2], namespace, VMS[2], name)
    for zone in objects.list_namespaced_custom_object(*ZONES[:2], namespace, ZONES[2])['items']:
        name = zone['metadata']['name']
        if zone['metadata'].get('finalizers'):
            objects.patch_namespaced_custom_object(*ZONES[:2], namespace, ZONES[2], name,
                                                   {'metadata': {'finalizers': None}},
                                                   _content_type='application/merge-patch+json')  # fmt: skip
        objects.delete_namespaced_custom_object(*ZONES[:2], namespace, ZONES[2], name)
    for session in sessions:
        with contextlib.suppress(Exception):  # a session of a vcsim restarted by the test is gone already
            session.logout()


def verbose(p: RunProcess) -> tuple[int, list[str]]:
    code, body = http_get(f'{p.base}/readyz?verbose')
    return code, body.splitlines()


def held_by(p: RunProcess) -> list[str]:
    """The vCenters whose shard `p` says it holds (none when it does not answer)."""
    return [site for site in SITES if metric(p, f'vmwatch_shard_held{{vcenter="{site}"}}') == 1]


def all_watching(p: RunProcess) -> bool:
    return http_get(f'{p.base}/readyz') == (200, 'watching\n')


def synced(*procs: RunProcess) -> bool:
    """Every vCenter is held by one of `procs` and its holder has had a WaitForUpdatesEx answered (the initial
    sync: a change made before it would be a verified VM's first sighting, skipped without a checkpoint)."""
    held = {site: p for p in procs for site in held_by(p)}
    wait = 'vmwatch_last_successful_wait_timestamp_seconds{{vcenter="{}"}}'
    return set(held) == set(SITES) and all(metric(p, wait.format(site)) > 0 for site, p in held.items())


def test_three_vcenters_two_replicas_spread_and_kill_9(sites: Sites, recorder: Recorder) -> None:
    a = sites.start('a')
    wait_until(lambda: len(held_by(a)) == 3 and all_watching(a), 'a holds and watches every vCenter')
    b = sites.start('b')
    # b joins: a is over its share of ceil(3/2) = 2 and hands one shard over; b takes it
    wait_until(lambda: len(held_by(a)) == 2 and len(held_by(b)) == 1, 'shards spread 2/1', 30)
    wait_until(lambda: all_watching(a) and all_watching(b) and synced(a, b), 'both watch what they hold', 30)
    assert metric(a, 'vmwatch_replicas') == 2
    changes = sites.changes
    names = sorted(changes.vms)
    for name in names:  # every vCenter's changes are signalled, each by the holder of its shard
        changes.change(name)
    wait_until(lambda: not lost(changes, requests(a, b)), 'every VM of every vCenter signalled', timeout_s=30)
    site_of_b = held_by(b)[0]
    by = {n: {w for _, w in rs} for n, rs in requests(a, b).items()}
    assert all(by[n] == ({'b'} if n.startswith(site_of_b.removeprefix('site-') + '-') else {'a'}) for n in names), by
    assert len(set(sites.holders().values())) == 2 and None not in sites.holders().values(), sites.holders()
    # one hand-over and nothing else: a replica at its share never takes a freed shard back (no thrash)
    assert sites.transitions() == 1

    # MoRef collision: vm-1 exists in every vcsim; a change on site a signals a-vm-1 only
    before = {n: len(rs) for n, rs in requests(a, b).items()}
    changes.change('a-vm-1')
    wait_until(lambda: len(requests(a, b).get('a-vm-1', [])) > before['a-vm-1'], 'a-vm-1 signalled')
    time.sleep(1.5)
    after = {n: len(rs) for n, rs in requests(a, b).items()}
    assert {n for n in after if after[n] != before.get(n, 0)} == {'a-vm-1'}, (before, after)

    written = sum(metric(p, 'vmwatch_checkpoint_writes_total{result="ok",vcenter="' + site + '"}')
                  for p in (a, b) for site in SITES)  # fmt: skip
    wait_until(lambda: sum(metric(p, 'vmwatch_checkpoint_writes_total{result="ok",vcenter="' + site + '"}')
                           for p in (a, b) for site in SITES) >= written + 6, 'checkpoints after them', 30)  # fmt: skip
    changes.start(seed=12, names=names)  # every VM of every vCenter keeps changing, through the kill and after
    time.sleep(1.5)
    victim, survivor = a, b  # a holds two shards: both move
    moved = held_by(victim)
    victim.stop(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: len(held_by(survivor)) == 3 and all_watching(survivor), 'b takes every shard', 30)
    took = time.monotonic() - killed
    assert len(set(sites.holders().values())) == 1, sites.holders()
    assert sites.transitions() == 1 + len(moved)
    time.sleep(2)
    changes.stop()
    wait_until(lambda: not lost(changes, requests(a, b)), 'every change delivered', timeout_s=30)
    n_lost = len(lost(changes, requests(a, b)))
    print(f'shards {moved} moved {took:.2f} s after the kill (Lease {LEASE_S:g} s); '
          f'changes: {sum(map(len, changes.at.values()))}')  # fmt: skip
    recorder.record(
        'S1', lost=n_lost, test='test_vcenters.py::test_three_vcenters_two_replicas_spread_and_kill_9',
        did=f'three vCenters (vcsims numbering their VMs alike), two `vmwatch run` replicas, {N_VMS} verified VMs '
        'each: the shards spread 2/1, every vCenter is signalled by its holder, a change of vm-1 on one vCenter '
        'signals only its own VirtualMachine; the replica holding two shards is killed (SIGKILL) while every VM '
        'changes: the other takes both within about one Lease duration and signals every VM changed since the '
        'checkpoint',
    )  # fmt: skip
    assert n_lost == 0
    assert took < 2 * LEASE_S + 2, took


def test_one_vcenter_down_affects_its_own_signals_only(sites: Sites, recorder: Recorder) -> None:
    p = sites.start('p')
    wait_until(lambda: all_watching(p) and synced(p), 'p watches every vCenter', timeout_s=30)
    down = sites.vcsims['site-c']
    down.stop()
    try:
        wait_until(lambda: verbose(p)[0] == 503, 'not ready once site-c is down', timeout_s=30)
        changes = sites.changes
        flowing = [n for n in changes.vms if not n.startswith('c-')]
        for name in flowing:
            changes.change(name)
        wait_until(lambda: not lost(changes, requests(p)), 'the other vCenters still signalled', timeout_s=30)
        code, lines = verbose(p)
        assert code == 503
        assert '[+]vcenter site-a ok: watching' in lines and '[+]vcenter site-b ok: watching' in lines, lines
        assert any(ln.startswith('[-]vcenter site-c failed: ') for ln in lines), lines
        assert lines[-1].startswith('readyz check failed: vcenter site-c: '), lines
        assert metric(p, 'vmwatch_shard_held{vcenter="site-c"}') == 1  # held and retried, not given up
    finally:
        down.start()
    wait_until(lambda: all_watching(p), 'site-c watched again once it is back', timeout_s=60)
    session = Session(Endpoint(url=down.url, user=down.user, password_file=down.password_file, ca_file=down.ca_file))
    session.login()  # the test's own session died with that vcsim too
    sites.sessions.append(session)
    for name in [n for n in sites.changes.vms if n.startswith('c-')]:
        sites.changes.vms[name] = (session, sites.changes.vms[name][1])  # a fresh inventory numbers them alike
    sites.changes.change('c-vm-2')
    wait_until(lambda: not lost(sites.changes, requests(p)), 'site-c signalled again', timeout_s=30)
    recorder.record(
        'S2', lost=len(lost(sites.changes, requests(p))),
        test='test_vcenters.py::test_one_vcenter_down_affects_its_own_signals_only',
        did='one of three vCenters stopped: the two others keep signalling, the pod is not ready and '
        '`/readyz?verbose` names the one down; it is watched again when it comes back',
    )  # fmt: skip


def test_a_zone_naming_an_unknown_vcenter_is_reported_and_not_watched(sites: Sites, recorder: Recorder) -> None:
    sites.zone('zone-typo', sites.folders['site-b'].value, {VCENTER_LABEL: 'site-x'})
    p = sites.start('p')
    wait_until(lambda: all_watching(p) and synced(p), 'p watches every vCenter', timeout_s=30)
    core = client.CoreV1Api(sites.objects.api_client)

    def events() -> list[Any]:
        listed = core.list_namespaced_event(sites.namespace, field_selector='involvedObject.name=zone-typo')
        return [e for e in listed.items if e.reason == 'UnknownVCenter']

    wait_until(lambda: bool(events()), 'an Event on the Zone', timeout_s=30)
    event = events()[0]
    assert event.type == 'Warning' and 'site-x' in event.message, event
    everywhere = sites.objects.list_cluster_custom_object(*ZONES)['items']  # the controller sees every namespace
    unrouted = [z for z in everywhere if (z['metadata'].get('labels') or {}).get(VCENTER_LABEL) not in SITES]
    assert metric(p, 'vmwatch_zones_unrouted') == len(unrouted) >= 1
    assert 'zone-typo' in p.err_path.read_text() and 'site-x' in p.err_path.read_text()
    zone = sites.objects.get_namespaced_custom_object(*ZONES[:2], sites.namespace, ZONES[2], 'zone-typo')
    assert not zone['metadata'].get('finalizers'), zone['metadata']  # not watched: no finalizer of ours
    for name in sites.changes.vms:  # nothing else disturbed
        sites.changes.change(name)
    wait_until(lambda: not lost(sites.changes, requests(p)), 'every vCenter signalled', timeout_s=30)
    for site in SITES:  # the core's decisions reach Prometheus per vCenter: no checkpoint yet, verified VMs entered
        assert metric(p, f'vmwatch_skipped_total{{reason="verified_enter",vcenter="{site}"}}') == N_VMS
        assert metric(p, f'vmwatch_batch_duration_seconds_count{{vcenter="{site}"}}') >= 2
    recorder.record(
        'S3', lost=len(lost(sites.changes, requests(p))),
        test='test_vcenters.py::test_a_zone_naming_an_unknown_vcenter_is_reported_and_not_watched',
        did='a Zone labelled with a vCenter that is not configured: a Warning Event UnknownVCenter on the Zone, '
        '`vmwatch_zones_unrouted` 1 and a log line; no finalizer, nothing watched for it; the other Zones and '
        'vCenters go on',
    )  # fmt: skip
