# SPDX-License-Identifier: Apache-2.0
"""Several vCenters in one process against the same VMs in one vCenter (issue 12).

    python benches/vcenters_bench.py [--vms 6000] [--vcenters 3] [--runs 3] [--out benches/results]

One kube-apiserver and vcsim processes: one with all the VMs, and `--vcenters` with a share each (they number
their VMs alike, so the MoRefs collide across them). For each layout the same number of VirtualMachine objects
exists (verified: status.uniqueID is the MoRef; labelled vmwatch.dev/vcenter in the sharded layout), and one
Zone per vCenter names its VM folder. Each run is a fresh process embedding `vmwatch.Service` (the code
`vmwatch run` runs, without leader election and checkpoints): from the interpreter's start to the initial sync
of every vCenter processed, then it reports and exits at once. The objects are written first, then the bench
waits 15 s, so that the API server's own work on thousands of writes does not land in the figure. Wall time is
measured by the parent from the spawn; CPU seconds and peak RSS come from the child's rusage (os.wait4), so
imports are included. The runs of the two layouts alternate. Memory per VM is the fingerprint caches' and the
indexes' own byte counts over the VMs. Writes benches/results/vcenters-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import last_json_line, write_result
from pipeline_bench import machine, versions
from vcsim_bench import inventory, k8s_name, pooled_namespace, start_vcsim, vc_info

VMS = ('vmoperator.vmware.com', 'v1alpha6', 'virtualmachines')
ZONES = ('topology.tanzu.vmware.com', 'v1alpha1', 'zones')
SETTLE_S = 15.0


def child(spec_path: str) -> int:
    """Embed the Service for the layout in `spec_path`; print one JSON line once every vCenter synced."""
    spec = json.loads(Path(spec_path).read_text())

    async def run() -> dict[str, Any]:
        from vmwatch.kube.crds import api_client
        from vmwatch.service import Service
        from vmwatch.settings import ServiceSettings

        flags: dict[str, Any] = {}
        if spec.get('vcenters_file'):
            flags['vcenters_file'] = Path(spec['vcenters_file'])
        else:
            vc = spec['vc']
            flags.update(vc_url=vc['url'], vc_user=vc['user'], vc_password_file=Path(vc['password_file']),
                         vc_ca_file=Path(vc['ca_file']))  # fmt: skip
        settings = ServiceSettings(**flags, kubeconfig=Path(spec['kubeconfig']), sink='queue', leader_elect=False,
                                   checkpoint_interval_s=0, cache_max_entries=250_000)  # fmt: skip
        api = api_client(settings.kubeconfig)
        service = Service(settings.validate(), api=api)
        await service.start()
        service.start_watching()
        shards = list(service.shards.values())
        while not all(s.slot.watcher is not None and s.slot.watcher.synced for s in shards):
            await asyncio.sleep(0.005)
        cache = sum(s.decider.cache_stats().get('bytes', 0) for s in shards)
        index = sum(i.bytes() for i in service.index.indexes.values())
        return {'shards': len(shards), 'cache_bytes': cache, 'index_bytes': index, 'indexed': len(service.index),
                'queued': service.queue.depth}  # fmt: skip

    out = asyncio.run(asyncio.wait_for(run(), 1800))
    sys.stdout.write(json.dumps(out) + '\n')
    sys.stdout.flush()
    os._exit(0)  # the figure is to the initial sync: no teardown


def prepare(kubeconfig: Path, ns: str, vcenters: list[tuple[str, str, list[tuple[str, str]]]], label: bool) -> float:
    """Zones and VirtualMachine objects for one layout: (vCenter name, folder, [(MoRef, VM name)]) each."""
    from kubernetes import client

    t0 = time.perf_counter()
    api = pooled_namespace(kubeconfig, ns)
    objects: Any = client.CustomObjectsApi(api)
    jobs = []
    for name, folder, listed in vcenters:
        labels = {'vmwatch.dev/vcenter': name} if label else {}
        objects.create_namespaced_custom_object(*ZONES[:2], ns, ZONES[2], {
            'apiVersion': f'{ZONES[0]}/{ZONES[1]}', 'kind': 'Zone',
            'metadata': {'name': f'zone-{name}', 'labels': labels},
            'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': name},
                     'managedVMs': {'folderMoID': folder.split(':', 1)[-1]}}})  # fmt: skip
        jobs += [(f'{name}-{k8s_name(vm)}', moref, labels) for moref, vm in listed]

    def create(job: tuple[str, str, dict[str, str]]) -> None:
        vm_name, moref, labels = job
        body = {'apiVersion': f'{VMS[0]}/{VMS[1]}', 'kind': 'VirtualMachine',
                'metadata': {'name': vm_name, 'labels': labels}, 'spec': {}}  # fmt: skip
        objects.create_namespaced_custom_object(*VMS[:2], ns, VMS[2], body)
        objects.patch_namespaced_custom_object_status(*VMS[:2], ns, VMS[2], vm_name, {'status': {'uniqueID': moref}})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, jobs))
    api.close()
    return time.perf_counter() - t0


def remove(kubeconfig: Path, ns: str, timeout_s: float = 600.0) -> None:
    """Delete a layout's objects (the test servers have no namespace controller; Zones carry our finalizer). A
    loaded API server may answer the collection delete with a 504 while it goes on deleting: ask again until the
    namespace is empty."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from vmwatch.kube.crds import api_client

    with client.ApiClient(api_client(kubeconfig).configuration) as api:
        objects: Any = client.CustomObjectsApi(api)
        for zone in objects.list_namespaced_custom_object(*ZONES[:2], ns, ZONES[2])['items']:
            name = zone['metadata']['name']
            objects.patch_namespaced_custom_object(*ZONES[:2], ns, ZONES[2], name, {'metadata': {'finalizers': None}},
                                                   _content_type='application/merge-patch+json')  # fmt: skip
            objects.delete_namespaced_custom_object(*ZONES[:2], ns, ZONES[2], name)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                objects.delete_collection_namespaced_custom_object(*VMS[:2], ns, VMS[2], _request_timeout=120)
            except (ApiException, OSError) as e:  # urllib3's timeouts are OSErrors
                print(f'deleting the VirtualMachines of {ns}: {getattr(e, "status", type(e).__name__)}; again',
                      file=sys.stderr)  # fmt: skip
            left = objects.list_namespaced_custom_object(*VMS[:2], ns, VMS[2], limit=1)['items']
            if not left:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f'the VirtualMachines of {ns} are still there after {timeout_s:.0f} s')
            time.sleep(5)


def run_child(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    spec_path = tmp / f'spec-{time.monotonic_ns()}.json'
    spec_path.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, '--child', str(spec_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = 0
    if status != 0:
        raise RuntimeError(f'the child failed ({status}): {out[-500:]!r}')
    res = last_json_line(out)
    return {**res, 'seconds': wall, 'cpu_s': usage.ru_utime + usage.ru_stime, 'peak_rss_bytes': usage.ru_maxrss * 1024}


def bench(total: int, n_vcenters: int, runs: int, settle_s: float = SETTLE_S) -> dict[str, Any]:
    from vmwatch.devenv import KubeServer

    with tempfile.TemporaryDirectory(prefix='vmwatch-vcenters-') as tmp_s:
        tmp = Path(tmp_s)
        kube = KubeServer(state_dir=tmp / 'kube').start()
        servers = []
        try:
            one = start_vcsim(total, tmp / 'one')
            servers.append(one)
            shards = [start_vcsim(total // n_vcenters, tmp / f'vc{i}') for i in range(n_vcenters)]
            servers += shards
            layouts: dict[str, dict[str, Any]] = {}
            folder, listed = inventory(one)
            layouts['one vCenter'] = {'vcenters': [('default', folder, listed)], 'spec': {'vc': vc_info(one)}}
            entries, sharded = [], []
            for i, vc in enumerate(shards):
                name = f'site-{i}'
                f, ls = inventory(vc)
                sharded.append((name, f, ls))
                info = vc_info(vc)
                entries.append({'name': name, 'url': info['url'], 'user': info['user'],
                                'passwordFile': info['password_file'], 'caFile': info['ca_file']})  # fmt: skip
            vcenters_file = tmp / 'vcenters.json'  # JSON is YAML
            vcenters_file.write_text(json.dumps({'vcenters': entries}))
            layouts[f'{n_vcenters} vCenters'] = {'vcenters': sharded, 'spec': {'vcenters_file': str(vcenters_file)}}
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in layouts}
            prepared: dict[str, float] = {}
            for run in range(runs):
                for name, layout in layouts.items():  # alternate: one process per run and layout
                    ns = f'bench-{os.urandom(3).hex()}'
                    prepared[name] = prepare(kube.kubeconfig, ns, layout['vcenters'], label=len(layout['vcenters']) > 1)
                    time.sleep(settle_s)  # the API server and etcd digest thousands of writes: not in the figure
                    try:
                        s = run_child({**layout['spec'], 'kubeconfig': str(kube.kubeconfig)}, tmp)
                    finally:
                        remove(kube.kubeconfig, ns)
                    samples[name].append(s)
                    mib = s['peak_rss_bytes'] / 2**20
                    print(f'run {run + 1}/{runs} {name}: {s["seconds"]:.2f} s, {s["cpu_s"]:.2f} CPU s, {mib:.0f} MiB, '
                          f'{s["indexed"]} indexed', file=sys.stderr)  # fmt: skip
        finally:
            for vc in servers:
                vc.stop()
            kube.stop()
    rows = {}
    for name, ss in samples.items():
        vms = sum(len(ls) for _, _, ls in layouts[name]['vcenters'])
        rows[name] = {
            'vcenters': len(layouts[name]['vcenters']),
            'vms': vms,
            'median_seconds': statistics.median(s['seconds'] for s in ss),
            'median_cpu_s': statistics.median(s['cpu_s'] for s in ss),
            'median_peak_rss_bytes': statistics.median(s['peak_rss_bytes'] for s in ss),
            'cache_index_bytes_per_vm': statistics.median((s['cache_bytes'] + s['index_bytes']) / vms for s in ss),
            'kube_prepare_s': prepared[name],
            'samples': ss,
        }
    base, multi = rows['one vCenter'], rows[f'{n_vcenters} vCenters']
    summary = {
        name: {'vms': r['vms'], 'seconds': round(r['median_seconds'], 2), 'cpu_s': round(r['median_cpu_s'], 2),
               'peak_rss_mib': round(r['median_peak_rss_bytes'] / 2**20, 1),
               'cache_index_bytes_per_vm': round(r['cache_index_bytes_per_vm'], 1)}
        for name, r in rows.items()
    }  # fmt: skip
    summary['overhead'] = {
        'cpu_ratio': round(multi['median_cpu_s'] / base['median_cpu_s'], 3),
        'seconds_ratio': round(multi['median_seconds'] / base['median_seconds'], 3),
        'extra_cpu_s_per_vcenter': round((multi['median_cpu_s'] - base['median_cpu_s']) / (n_vcenters - 1), 3),
        'extra_rss_mib_per_vcenter': round(
            (multi['median_peak_rss_bytes'] - base['median_peak_rss_bytes']) / 2**20 / (n_vcenters - 1), 1
        ),
    }
    return {'rows': rows, 'runs': runs, 'summary': summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    p.add_argument('--child', help=argparse.SUPPRESS)
    p.add_argument('--vms', type=int, default=6000, help='VMs in all (default 6000)')
    p.add_argument('--vcenters', type=int, default=3, help='vCenters sharing them (default 3)')
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--settle-s', type=float, default=SETTLE_S, help='pause after writing the objects (default 15)')
    p.add_argument('--smoke', action='store_true', help='a tiny run that checks the harness (results-*-smoke.json)')
    p.add_argument('--out', type=Path, default=Path(__file__).resolve().parent / 'results')
    args = p.parse_args(argv)
    if args.child:
        return child(args.child)
    if args.vcenters < 2 or args.vms < args.vcenters:
        p.error('--vcenters must be at least 2 and --vms at least --vcenters')
    result = {'date': dt.date.today().isoformat(), 'machine': machine(), 'versions': versions(),
              **bench(args.vms, args.vcenters, args.runs, args.settle_s)}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_result(args.out, f'vcenters-{result["date"]}{"-smoke" if args.smoke else ""}', result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
