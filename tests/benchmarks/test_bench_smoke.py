# SPDX-License-Identifier: Apache-2.0
"""Seconds-long runs of benches/pipeline_bench.py and benches/vcsim_bench.py with tiny sizes, so the harnesses
cannot rot.

Benchmarks are not tests: nothing here looks at a time or a rate. It checks that every scenario runs
for both implementations, that they agree on what must be signalled, and that the JSON has the fields
reports rely on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / 'benches' / 'pipeline_bench.py'


def run_harness(out: Path, *args: str, timeout_s: float = 240) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, str(HARNESS), '--smoke', '--out', str(out), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    (path,) = out.glob('pipeline-*-smoke.json')
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def test_replay_and_memory_smoke(tmp_path: Path) -> None:
    result = run_harness(tmp_path)
    assert result['machine']['nproc'] >= 1
    assert {'python', 'vmwatch', 'vmwatch_build_info', 'pyvmomi', 'govmomi_pin'} <= set(result['versions'])
    scenarios = result['replay']['scenarios']
    assert {'power', 'power-small', 'extraconfig-dup'} <= set(scenarios)
    for name, row in scenarios.items():
        for impl in ('vmwatch', 'baseline'):
            assert row[impl]['median_updates_per_s'] > 0, (name, impl)
            for sample in row[impl]['samples']:
                assert sample['objects'] == sample['responses'] * row['vms'], (name, impl)
                assert sample['queue_depth'] <= row['vms']
        # the same decision on the same bytes: power changes signal every VM, duplicates signal none
        expected = 0 if name == 'extraconfig-dup' else row['vms']
        assert row['vmwatch']['signals_per_response'] == row['baseline']['signals_per_response'] == expected, name
        assert all(s['pending'] == 0 for s in row['vmwatch']['samples'])
    rows = {(r['impl'], r['vms']) for r in result['memory']['rows']}
    assert rows == {('vmwatch', 2000), ('baseline', 2000)}
    vm_row = next(r for r in result['memory']['rows'] if r['impl'] == 'vmwatch')
    assert vm_row['self_reported']['cache_items'] == vm_row['self_reported']['index_len'] == 2000


@pytest.mark.servers
def test_startup_smoke(tmp_path: Path) -> None:
    result = run_harness(tmp_path, '--skip', 'replay', 'memory', '--startup-vms', '8')
    (row,) = result['startup']['rows']
    assert row['vms'] == 8
    for impl in ('vmwatch', 'baseline'):
        (sample,) = row[impl]['samples']
        assert sample['objects'] == 8
        assert sample['signals_verified'] == 0, impl
        assert sample['unverified_signalled_exactly_once'] == sample['unverified'] == 2, impl


VCSIM_HARNESS = ROOT / 'benches' / 'vcsim_bench.py'


@pytest.mark.servers
def test_steady_and_kube_startup_smoke(tmp_path: Path, kube_server: Any) -> None:
    """benches/vcsim_bench.py --smoke: one steady-state window per implementation (8 VMs, 5 changes/s for
    1.6 s: one extraConfig change per VM; driver and watchers in their own processes) and a startup with 8
    VirtualMachines in the session's kube-apiserver."""
    subprocess.run(
        [
            sys.executable,
            str(VCSIM_HARNESS),
            '--smoke',
            '--out',
            str(tmp_path),
            '--kubeconfig',
            str(kube_server.kubeconfig),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    (path,) = tmp_path.glob('vcsim-*-smoke.json')
    result = json.loads(path.read_text())
    assert {'python', 'vmwatch', 'pyvmomi', 'govmomi_pin'} <= set(result['versions'])
    steady = result['steady']
    assert steady['vms'] == 8
    for impl in ('vmwatch', 'baseline'):
        (row,) = steady[impl]['rates']
        assert row['changes'] == 8 and row['failed_calls'] == 0, (impl, row)
        assert row['ops'] == {'extraconfig': 8}
        # every change reached the enqueue (no timing is judged: the window is too short to mean anything)
        assert row['matched_fraction'] == 1.0, (impl, row)
        assert row['enqueues'] >= 1 and row['watcher_cpu_s'] >= 0 and row['vcsim_cpu_s'] > 0
        assert len(row['latencies_ms']) == row['changes']
        assert {'p50_ms', 'p99_ms', 'lag_slope_ms_per_s', 'watcher_cpu_s_per_1000', 'sustained'} <= set(row)
    (row,) = result['startup_kube']['rows']
    assert row['vms'] == 8
    for impl in ('vmwatch', 'baseline'):
        (sample,) = row[impl]['samples']
        assert sample['index_len'] >= 8
        assert sample['requests_verified'] == 0, impl
        assert sample['unverified_requested_exactly_once'] == sample['unverified'] == 2, impl
        assert sample['peak_rss_bytes'] > 0
    assert set(result['summary']) >= {'steady_vmwatch_max_sustained_rate', 'startup_kube_vmwatch_8'}
    # the session's API server is shared: no VirtualMachine may be left claiming one of vcsim's MoRefs
    from kubernetes import client
    from kubernetes import config as kconfig

    with kconfig.new_client_from_config(config_file=str(kube_server.kubeconfig)) as api:
        left = client.CustomObjectsApi(api).list_cluster_custom_object('vmoperator.vmware.com', 'v1alpha6',
                                                                       'virtualmachines')['items']  # fmt: skip
    assert not [vm for vm in left if vm['metadata']['namespace'].startswith('bench-')], 'left behind'


def test_vcenters_smoke(tmp_path: Path, kube_server: Any) -> None:
    """benches/vcenters_bench.py with 3 vCenters x 16 VMs (it starts its own servers; kube_server only marks the
    test as one that needs them)."""
    subprocess.run(
        [sys.executable, str(ROOT / 'benches' / 'vcenters_bench.py'), '--smoke', '--vms', '48', '--runs', '1',
         '--settle-s', '0', '--out', str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (path,) = tmp_path.glob('vcenters-*-smoke.json')
    result = json.loads(path.read_text())
    rows = result['rows']
    assert set(rows) == {'one vCenter', '3 vCenters'}
    for name, row in rows.items():
        (sample,) = row['samples']
        assert row['vms'] == 48 and sample['indexed'] == 48, (name, row)  # vcsim: 4 clusters of 12 or 4
        assert sample['shards'] == row['vcenters'] and sample['queued'] == 0  # verified VMs: no request at start
        assert row['median_cpu_s'] > 0 and row['median_peak_rss_bytes'] > 0 and row['cache_index_bytes_per_vm'] > 0
    assert {'cpu_ratio', 'extra_cpu_s_per_vcenter', 'extra_rss_mib_per_vcenter'} <= set(result['summary']['overhead'])


@pytest.mark.servers  # it starts its own vcsim
def test_watch_sync_smoke(tmp_path: Path) -> None:
    """benches/watch_sync_bench.py with 40 VMs, one run: a fresh `vmwatch watch` process up to its 40th signal."""
    subprocess.run(
        [sys.executable, str(ROOT / 'benches' / 'watch_sync_bench.py'), '--vms', '40', '--runs', '1',
         '--label', 'smoke', '--out', str(tmp_path)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (path,) = tmp_path.glob('watch-sync-*-smoke.json')
    row = json.loads(path.read_text())['rows']['40']
    (sample,) = row['samples']
    assert row['vms'] == 40 and sample['signals'] >= 40
    assert 0 < row['median_cpu_s'] and row['median_peak_rss_mib'] > 8 and row['median_seconds'] > 0


def test_run_sync_smoke(tmp_path: Path, kube_server: Any) -> None:
    """benches/run_sync_bench.py with 200 VMs, no warm-up, one run, against the session's kube-apiserver: a fresh
    `vmwatch run` process to the end of its initial sync (three pages: the end must not be seen before the last);
    150 VirtualMachines verified, 50 named by their VMs (one request each, counted on stdout)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'benches' / 'run_sync_bench.py'), '--vms', '200', '--runs', '1', '--warmups', '0',
         '--unverified-every', '4', '--settle-s', '0', '--timeout-s', '60', '--kubeconfig', str(kube_server.kubeconfig),
         '--label', 'smoke', '--out', str(tmp_path)],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob('run-sync-*-smoke.json')
    result = json.loads(path.read_text())
    assert {'python', 'vmwatch', 'vmwatch_build_info', 'pyvmomi'} <= set(result['versions'])
    assert result['layout'] == 'every 4th VM unverified' and 'vmwatch_batches_total' in result['end_of_initial_sync']
    row = result['rows']['200']
    assert (row['vms'], row['verified'], row['unverified']) == (200, 150, 50)
    (sample,) = row['samples']
    # the whole initial sync was seen: every VM entered, the verified ones skipped, one request per unverified VM
    assert sample['objects_entered'] == 200 and sample['verified_enters'] == 150 and sample['index_size'] >= 200
    assert sample['deliveries_at_sync'] <= sample['deliveries'] == 50 and sample['batches'] >= 2
    assert sample['exit_code'] == 0 and sample['scrapes'] >= 1 and sample['as_expected']
    assert 0 < sample['ready_cpu_s'] <= sample['cpu_s'] and 0 < sample['ready_seconds'] <= sample['seconds']
    assert row['median_cpu_s'] > 0 and row['median_peak_rss_mib'] > 8
    assert 0 < result['import_floor']['median_cpu_s'] and result['import_floor']['median_peak_rss_mib'] > 8
    # the session's API server is shared: the bench removed its VirtualMachines and Zone
    from kubernetes import client
    from kubernetes import config as kconfig

    with kconfig.new_client_from_config(config_file=str(kube_server.kubeconfig)) as api:
        objects = client.CustomObjectsApi(api)
        left = [o for group, version, plural in (('vmoperator.vmware.com', 'v1alpha6', 'virtualmachines'),
                                                 ('topology.tanzu.vmware.com', 'v1alpha1', 'zones'))
                for o in objects.list_cluster_custom_object(group, version, plural)['items']
                if o['metadata']['namespace'].startswith('bench-run-')]  # fmt: skip
    assert not left, 'left behind'
