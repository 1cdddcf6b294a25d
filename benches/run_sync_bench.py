# SPDX-License-Identifier: Apache-2.0
"""`vmwatch run`, the whole service as a process, from exec to the end of its initial sync (issue 13).

Servers: vcsim with N VMs (4 clusters, `vcsim_bench.start_vcsim`), etcd + kube-apiserver on 127.0.0.1
(`vmwatch.devenv.KubeServer`, CRDs installed by `vmwatch.kube.crds.install_crds`, or `--kubeconfig` for a running
one), one Zone naming vcsim's VM folder and one VirtualMachine per VM, created by 16 threads
(`vcsim_bench.prepare_kube`). By default every VirtualMachine has status.uniqueID = its VM's MoRef: the run is
*verified*, and its initial sync requests nothing. With `--unverified-every K` every K-th VirtualMachine has no
uniqueID and its VM carries vmservice.namespacedName: one request each. Preparing is timed apart and never counted;
the API server gets `--settle-s` after the writes.

Each sample is a fresh `vmwatch run` process: the console script of this venv, configured as the Deployment is
(deploy/base/settings.env: leader election, checkpoints every 30 s, JSON logs, ...) except for the vCenter
(vcsim), the kubeconfig, the stdout sink instead of annotate (its JSON lines are the deliveries, counted), the
probe and metrics listeners on free 127.0.0.1 ports, and a fresh Lease namespace (no Lease to wait for, no
checkpoint left by the previous sample: a cold start).

End of the initial sync: the first /metrics scrape where `vmwatch_batches_total` exceeds
`vmwatch_truncated_pages_total`, i.e. the response that completed the initial sync has been decoded, decided and its
signals handed on (what `Watcher.synced` means; /readyz turns 200 earlier, as soon as the watcher runs). At that
moment the parent reads the child's CPU (utime + stime of all threads, /proc/<pid>/stat) and peak RSS (VmHWM), then
sends SIGTERM. Requests of unverified VMs may still be on their way to the sink at the end (`deliveries_at_sync`);
each must have been written once the process has drained its queue on SIGTERM (`deliveries`). /readyz is polled
every 50 ms until 200 (`ready_seconds`, `ready_cpu_s`), then /metrics at half the predicted time to the last VM
entered (0.05-2 s apart, from the rate of `vmwatch_object_updates_total{kind="enter"}`). The scrapes are part of the
figure: their count and the CPU of one (20 more scrapes after the end) are in each sample. One warm-up run is not
counted; medians of `--runs`. `import_floor`: a fresh interpreter importing only the modules `vmwatch run` loads,
the share of each sample that does not grow with the inventory. `--profile`: one more run per size under py-spy,
stopped at the same end; its top frames go to run-sync-<date>-<vms>-profile.txt.

    python benches/run_sync_bench.py [--vms 1000 10000] [--runs 3] [--unverified-every 0] [--out benches/results]

Writes benches/results/run-sync-<date>[-<label>].json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import last_json_line, write_result
from pipeline_bench import machine, versions
from vcenters_bench import ZONES, remove
from vcsim_bench import cpu_s, inventory, name_unverified, prepare_kube, start_vcsim
from vmwatch.devenv import ETCD_VERSION, KUBERNETES_VERSION
from watch_sync_bench import peak_rss_bytes, profile_summary

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_ENV = ROOT / 'deploy' / 'base' / 'settings.env'
VCENTER = 'default'  # the metric label of the one vCenter given by the --vc-* settings
READY_POLL_S, MIN_POLL_S, MAX_POLL_S = 0.05, 0.05, 2.0
SCRAPE_PROBES = 20
IMPORTS = ('import vmwatch.cli, vmwatch.run_cmd, vmwatch.service, vmwatch.kube.crds, vmwatch.kube.leader, '
           'vmwatch.kube.shards, vmwatch.kube.sinks, vmwatch.kube.zones, vmwatch.liveness, vmwatch.logs, '
           'vmwatch.metrics, uvloop; from vmwatch.vsphere import Session; '
           'from kubernetes.client import CoordinationV1Api, CoreV1Api, CustomObjectsApi')  # fmt: skip
END = 'first /metrics scrape with vmwatch_batches_total > vmwatch_truncated_pages_total (the initial sync processed)'


def commit() -> str:
    """The checkout's commit (+dirty when it has changes), '' outside git."""
    git = ['git', '-C', str(ROOT)]
    head = subprocess.run([*git, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=False)
    dirty = subprocess.run([*git, 'status', '--porcelain', '--untracked-files=no'], capture_output=True, text=True,
                           check=False).stdout.strip()  # fmt: skip
    return head.stdout.strip() + ('+dirty' if dirty else '') if head.returncode == 0 else ''


def deploy_settings() -> dict[str, str]:
    """Every setting as the Deployment has it: deploy/base/settings.env (an empty value leaves the default)."""
    env = {}
    for line in SETTINGS_ENV.read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            key, _, value = line.partition('=')
            env[key] = value
    return env


def run_env(vc: Any, kubeconfig: Path, lease_ns: str, health_port: int, metrics_port: int) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(('VMWATCH_', 'ASYNC_SIGNAL_'))}
    return {
        **inherited,
        **deploy_settings(),
        'VMWATCH_VC_URL': vc.url,
        'VMWATCH_VC_USER': vc.user,
        'VMWATCH_VC_USER_FILE': '',
        'VMWATCH_VC_PASSWORD_FILE': str(vc.password_file),
        'VMWATCH_VC_CA_FILE': str(vc.ca_file),
        'VMWATCH_KUBECONFIG': str(kubeconfig),
        'VMWATCH_SINK': 'stdout',  # the Deployment's annotate PATCHes VMs; these lines are counted instead
        'VMWATCH_LEASE_NAMESPACE': lease_ns,
        'VMWATCH_HEALTH_PROBE_BIND_ADDRESS': f'127.0.0.1:{health_port}',
        'VMWATCH_METRICS_BIND_ADDRESS': f'127.0.0.1:{metrics_port}',
    }


def http_get(url: str) -> tuple[int, str]:
    """(status, body); 0 while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def scrape(port: int) -> dict[str, float]:
    """The samples of /metrics as {'name{label="v",...}': value} (labels in exposition order), {} if it fails."""
    status, text = http_get(f'http://127.0.0.1:{port}/metrics')
    if status != 200:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith('#'):
            key, _, value = line.rpartition(' ')
            out[key] = float(value)
    return out


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for key, v in samples.items()
               if key.partition('{')[0] == name and all(w in key.partition('{')[2] for w in want))  # fmt: skip


def next_poll_s(progress: list[tuple[float, float]], now: float, entered: float, vms: int) -> float:
    """Half the predicted time to the last VM entered (from the rate since the first one), 0.05-2 s: few scrapes
    while the pages come in, and the end seen within 50 ms of the prediction (the process is idle by then)."""
    if entered > 0:
        progress.append((now, entered))
    if len(progress) < 2 or progress[-1][1] <= progress[0][1]:
        return MIN_POLL_S if entered else MAX_POLL_S / 4
    (t0, n0), (t1, n1) = progress[0], progress[-1]
    remaining_s = (vms - n1) * (t1 - t0) / (n1 - n0)
    return min(MAX_POLL_S, max(MIN_POLL_S, remaining_s / 2))


def count_lines(path: Path) -> int:
    """The JSON lines (requests) in the sink's output so far (under --profile py-spy writes there too)."""
    with path.open('rb') as f:
        return sum(1 for line in f if line.startswith(b'{') and line.endswith(b'\n'))


def child_of(pid: int, timeout_s: float = 10.0) -> int:
    """The first child process of `pid` (py-spy's profiled command)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = Path(f'/proc/{pid}/task/{pid}/children').read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.01)
    raise RuntimeError(f'process {pid} started no child')


def run_once(
    vc: Any, kubeconfig: Path, vms: int, unverified: int, tmp: Path, timeout_s: float, spy: list[str] | None = None
) -> dict[str, Any]:
    """One fresh `vmwatch run` process up to the end of its initial sync; then SIGTERM. With `spy` (a py-spy
    command line ending in '--') it runs under py-spy, which is stopped (and writes its profile) at the end."""
    from kubernetes import client

    from vmwatch.devenv import free_port
    from vmwatch.kube.crds import api_client

    lease_ns = f'bench-lease-{os.urandom(3).hex()}'
    with client.ApiClient(api_client(kubeconfig).configuration) as api:
        client.CoreV1Api(api).create_namespace({'metadata': {'name': lease_ns}})
    health_port, metrics_port = free_port(), free_port()
    env = run_env(vc, kubeconfig, lease_ns, health_port, metrics_port)
    out_path, err_path = tmp / f'{lease_ns}.out', tmp / f'{lease_ns}.err'
    vmwatch = Path(sys.executable).with_name('vmwatch')  # the console script (vmwatch.cli:main)
    with out_path.open('wb') as out, err_path.open('wb') as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*(spy or []), str(vmwatch), 'run'], env=env, stdout=out, stderr=err, cwd=tmp)
    pid = child_of(proc.pid) if spy else proc.pid
    sample: dict[str, Any] = {}
    scrapes = 0
    progress: list[tuple[float, float]] = []
    entered = 0.0
    try:
        m: dict[str, float] = {}
        while True:
            if time.perf_counter() - t0 > timeout_s or proc.poll() is not None:
                tail = err_path.read_text(errors='replace')[-3000:]
                state = 'exited' if proc.poll() is not None else f'timed out after {timeout_s:.0f} s'
                raise RuntimeError(f'vmwatch run {state} before the end of its initial sync ({scrapes} scrapes, '
                                   f'{entered:.0f} of {vms} VMs entered):\n{tail}')  # fmt: skip
            if 'ready_seconds' not in sample:
                if http_get(f'http://127.0.0.1:{health_port}/readyz')[0] != 200:
                    time.sleep(READY_POLL_S)
                    continue
                sample.update(ready_seconds=time.perf_counter() - t0, ready_cpu_s=cpu_s(pid))
            m = scrape(metrics_port)
            scrapes += 1
            batches = metric(m, 'vmwatch_batches_total', vcenter=VCENTER)
            synced = batches > metric(m, 'vmwatch_truncated_pages_total', vcenter=VCENTER)
            if synced:
                wall, cpu, rss = time.perf_counter() - t0, cpu_s(pid), peak_rss_bytes(pid)
                break
            entered = metric(m, 'vmwatch_object_updates_total', vcenter=VCENTER, kind='enter')
            time.sleep(next_poll_s(progress, time.perf_counter(), entered, vms))
        deliveries_at_sync = count_lines(out_path)
        c0 = cpu_s(pid)
        for _ in range(SCRAPE_PROBES):
            scrape(metrics_port)
        scrape_cpu_ms = 1000 * (cpu_s(pid) - c0) / SCRAPE_PROBES
    finally:
        exit_code = stop(proc, pid if spy else None)
    deliveries = count_lines(out_path)
    sample.update(
        loadavg=[round(x, 2) for x in os.getloadavg()],
        seconds=wall,
        cpu_s=cpu,
        peak_rss_bytes=rss,
        scrapes=scrapes,
        scrape_cpu_ms=round(scrape_cpu_ms, 2),
        objects_entered=int(metric(m, 'vmwatch_object_updates_total', vcenter=VCENTER, kind='enter')),
        verified_enters=int(metric(m, 'vmwatch_skipped_total', vcenter=VCENTER, reason='verified_enter')),
        index_size=int(metric(m, 'vmwatch_index_size', vcenter=VCENTER)),
        batches=int(batches),
        validation_gets=int(metric(m, 'vmwatch_validation_gets_total')),
        deliveries_at_sync=deliveries_at_sync,
        deliveries=deliveries,
        exit_code=exit_code,
    )
    if sample['objects_entered'] != vms:  # the end was seen too early: no figure
        raise RuntimeError(f'vmwatch run entered {sample["objects_entered"]} of {vms} VMs at the end: {sample}')
    sample['as_expected'] = deliveries == unverified and sample['verified_enters'] == vms - unverified
    if not sample['as_expected']:  # kept (and said): a finding about vmwatch run, not a broken measurement
        print(f'vmwatch run delivered {deliveries} requests for {unverified} unverified VMs and skipped '
              f'{sample["verified_enters"]} of {vms - unverified} verified ones; the first requests:\n'
              + ''.join(out_path.read_text().splitlines(keepends=True)[:5]), file=sys.stderr)  # fmt: skip
    return sample


def import_floor(runs: int) -> dict[str, Any]:
    """CPU s and peak RSS of a fresh interpreter that only imports what `vmwatch run` loads (medians of `runs`): the
    part of each sample that does not depend on the inventory. The child reports its own VmHWM: a child's ru_maxrss
    would count the parent's pages at the fork."""
    report = ('; import json, time; print(json.dumps({"cpu_s": time.process_time(), "hwm": '
              '[l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]}))')  # fmt: skip
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, '-c', IMPORTS + report], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        res = last_json_line(out)
        samples.append({'cpu_s': res['cpu_s'], 'peak_rss_bytes': int(res['hwm']) * 1024})
    return {
        'code': IMPORTS,
        'median_cpu_s': round(statistics.median(x['cpu_s'] for x in samples), 3),
        'median_peak_rss_mib': round(statistics.median(x['peak_rss_bytes'] for x in samples) / 2**20, 1),
        'samples': samples,
    }


def stop(proc: subprocess.Popen[bytes], spied: int | None) -> int:
    """SIGTERM to `vmwatch run` and its exit code; when `proc` is py-spy around it (`spied` is its pid), SIGINT
    py-spy first (the profile ends at the initial sync, without the shutdown)."""
    if spied is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        os.kill(spied, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f'/proc/{spied}').exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return 0  # not our child: its exit code is py-spy's to collect
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def create_zone(kubeconfig: Path, ns: str, folder: str) -> None:
    from kubernetes import client

    from vmwatch.kube.crds import api_client

    with client.ApiClient(api_client(kubeconfig).configuration) as api:
        client.CustomObjectsApi(api).create_namespaced_custom_object(*ZONES[:2], ns, ZONES[2], {
            'apiVersion': f'{ZONES[0]}/{ZONES[1]}', 'kind': 'Zone', 'metadata': {'name': 'bench-zone'},
            'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'bench'},
                     'managedVMs': {'folderMoID': folder.split(':', 1)[-1]}}})  # fmt: skip


def medians(samples: list[dict[str, Any]]) -> dict[str, Any]:
    med = {k: statistics.median(s[k] for s in samples) for k in ('seconds', 'cpu_s', 'peak_rss_bytes',
                                                                 'ready_seconds', 'ready_cpu_s')}  # fmt: skip
    return {
        'median_seconds': round(med['seconds'], 3),
        'median_cpu_s': round(med['cpu_s'], 3),
        'median_peak_rss_mib': round(med['peak_rss_bytes'] / 2**20, 1),
        'median_ready_seconds': round(med['ready_seconds'], 3),
        'median_ready_cpu_s': round(med['ready_cpu_s'], 3),
        'samples': samples,
    }


def profile(vc: Any, kubeconfig: Path, vms: int, unverified: int, tmp: Path, opts: argparse.Namespace) -> str:
    """One more run under py-spy (250 Hz, Python frames of running threads); its top frames go to
    <out>/run-sync-<date>-<vms>-profile.txt, whose name is returned."""
    spy = shutil.which('py-spy') or str(Path(sys.executable).with_name('py-spy'))
    raw = tmp / f'profile-{vms}.txt'
    run_once(vc, kubeconfig, vms, unverified, tmp, opts.timeout_s,
             spy=[spy, 'record', '--format', 'raw', '-r', '250', '-o', str(raw), '--'])  # fmt: skip
    title = f'py-spy record -r 250 (running threads), {{n}} samples, vmwatch run from exec to the initial sync of {vms}'
    path = opts.out / f'run-sync-{opts.date}-{vms}-profile.txt'
    path.write_text(profile_summary(raw, title))
    return path.name


def bench(vms: int, opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from vmwatch.devenv import KubeServer

    runs, unverified_every, kubeconfig = opts.runs, opts.unverified_every, opts.kubeconfig
    prepare: dict[str, float] = {}
    ns = f'bench-run-{os.urandom(3).hex()}'
    kube = None
    t = time.perf_counter()
    if kubeconfig is None:
        kube = KubeServer(state_dir=tmp / f'kube-{vms}').start()
        kubeconfig = kube.kubeconfig
        prepare['kube_start_s'] = time.perf_counter() - t
    vc = None
    try:
        t = time.perf_counter()
        vc = start_vcsim(vms, tmp / f'vcsim-{vms}')
        folder, listed = inventory(vc)
        prepare['vcsim_start_s'] = time.perf_counter() - t
        t = time.perf_counter()
        name_unverified(vc, ns, listed, unverified_every)
        prepare['name_unverified_s'] = time.perf_counter() - t
        prepare['kube_objects_s'] = prepare_kube(kubeconfig, ns, listed, unverified_every)  # namespace, CRDs, VMs
        create_zone(kubeconfig, ns, folder)
        unverified = len(range(0, len(listed), unverified_every)) if unverified_every else 0
        time.sleep(opts.settle_s)  # the API server and etcd digest thousands of writes: not in the figure
        samples = []
        for i in range(opts.warmups + runs):  # the first warms vcsim and the API server; not counted
            s = run_once(vc, kubeconfig, len(listed), unverified, tmp, opts.timeout_s)
            print(f'{len(listed)} VMs, run {i + 1}{" (warm-up)" if i < opts.warmups else ""}: {s["seconds"]:.2f} s, '
                  f'{s["cpu_s"]:.2f} CPU s, {s["peak_rss_bytes"] / 2**20:.1f} MiB', file=sys.stderr)  # fmt: skip
            samples.append(s)
        if opts.profile:
            profiled = profile(vc, kubeconfig, len(listed), unverified, tmp, opts)
        if kube is None:  # a shared API server: leave it as it was (a fresh one is simply stopped)
            remove(kubeconfig, ns)
    finally:
        if vc is not None:
            vc.stop()
        if kube is not None:
            kube.stop()
    return {
        'vms': len(listed),
        'verified': len(listed) - unverified,
        'unverified': unverified,
        **medians(samples[opts.warmups :]),
        'warmups': samples[: opts.warmups],
        'prepare_s': {k: round(v, 1) for k, v in prepare.items()},
        'settle_s': opts.settle_s,
        **({'profile': profiled} if opts.profile else {}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--vms', type=int, nargs='*', default=[1000, 10_000])
    p.add_argument('--runs', type=int, default=3)
    p.add_argument(
        '--unverified-every', type=int, default=0, metavar='K',
        help='every K-th VirtualMachine without uniqueID, named by its VM (a request each); 0: none',
    )  # fmt: skip
    p.add_argument('--warmups', type=int, default=1, help='runs before the counted ones (default 1)')
    p.add_argument('--timeout-s', type=float, default=900.0, help='limit of one run (default 900)')
    p.add_argument('--settle-s', type=float, default=15.0, help='pause after writing the objects (default 15)')
    p.add_argument('--kubeconfig', type=Path, help='a running kube-apiserver instead of a fresh one per size')
    p.add_argument('--out', type=Path, default=ROOT / 'benches' / 'results')
    p.add_argument('--profile', action='store_true', help='one more run per size under py-spy (pip install py-spy)')
    p.add_argument('--label', default='', help='suffix of the result file, e.g. "smoke"')
    opts = p.parse_args(argv)
    if opts.runs < 1 or opts.unverified_every < 0 or opts.warmups < 0 or any(n < 1 for n in opts.vms):
        p.error('--runs and --vms must be at least 1, --unverified-every and --warmups at least 0')
    date = opts.date = dt.datetime.now(dt.UTC).strftime('%Y-%m-%d')
    opts.out.mkdir(parents=True, exist_ok=True)
    started = {'started': dt.datetime.now(dt.UTC).isoformat(timespec='seconds'), 'machine': machine()}
    rows = {}
    with tempfile.TemporaryDirectory(prefix='vmwatch-run-sync-') as tmp:
        for n in opts.vms:
            rows[str(n)] = bench(n, opts, Path(tmp))
    floor = import_floor(opts.runs)
    result = {
        'date': date,
        **started,
        'finished': dt.datetime.now(dt.UTC).isoformat(timespec='seconds'),
        'loadavg_at_end': list(os.getloadavg()),
        'versions': {**versions(), 'commit': commit(), 'kube_apiserver': KUBERNETES_VERSION, 'etcd': ETCD_VERSION},
        'runs': opts.runs,
        'end_of_initial_sync': END,
        'layout': 'verified' if not opts.unverified_every else f'every {opts.unverified_every}th VM unverified',
        'rows': rows,
        'import_floor': floor,
        'summary': {
            **{n: {k: v for k, v in r.items() if k not in ('samples', 'warmups')} for n, r in rows.items()},
            'import_floor': {k: v for k, v in floor.items() if k.startswith('median')},
        },
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    write_result(opts.out, f'run-sync-{date}{"-" + opts.label if opts.label else ""}', result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
