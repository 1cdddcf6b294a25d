# SPDX-License-Identifier: Apache-2.0
"""vmwatch vs a plain pyVmomi watcher against live servers (issue 6): steady state and startup with Kubernetes.

* steady: vcsim with N VMs; a load driver (its own process, raw SOAP over several sessions) reconfigures VMs at
  increasing target rates (extraConfig edits of a non-ignored key carrying a sequence number, power on/off,
  snapshot create), each rate for a bounded window, and records when each call returned. The watcher under test
  (vmwatch's `Watcher`, or the baseline pyVmomi loop of baseline_pyvmomi.py) runs in its own process, one after
  the other against the same vcsim, and appends (VM, wall time) each time it enqueues a reconcile request. The
  parent matches every change to the first enqueue of that VM at or after the call was issued, and samples the
  CPU time of the watcher, vcsim and the driver from /proc.
* vcsim scaling: the same light load (2 changes/s) against more and more watched VMs, vmwatch only: shows that
  vcsim's cost per change grows with the watched inventory (the steady state's limit).
* startup-kube: vcsim with N VMs plus N VirtualMachine objects created through kube-apiserver (3 of 4 with
  status.uniqueID = MoRef: verified; 1 of 4 with the name in extraConfig only: unverified). Each implementation,
  in its own process, lists the VirtualMachines (vmwatch: the real `VirtualMachineIndex`; baseline: the kubernetes
  client into dicts), logs in, and processes the initial sync. Reports wall and CPU time, peak RSS, and the
  requests for verified VMs (must be 0) and unverified VMs (exactly 1 each).

    python benches/vcsim_bench.py [--smoke] [--rates 5 10 ...] [--window-s 10] [--startup-vms 1000 5000 10000]
    python benches/vcsim_bench.py --merge A.json B.json ...   # one result from runs made at different times
    python benches/vcsim_bench.py --tables results/vcsim-<date>.json   # the README's markdown tables

Writes benches/results/vcsim-<date>.json and vcsim-<date>-*.png.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime as dt
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (
    COLORS,
    cpu_s_between,
    last_json_line,
    peak_rss_bytes,
    plot_startup,
    pyplot,
    save_figure,
    write_result,
)
from pipeline_bench import machine, versions

ROOT = Path(__file__).resolve().parent.parent
NS = 'bench'
ZONE = 'bench-zone'
SEQ_KEY = 'bench.seq'  # not in the ignore set: every write is a real change
CLK_TCK = os.sysconf('SC_CLK_TCK')
RATES = (5, 10, 20, 50, 100, 200)

_SOAP = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    '<soapenv:Body><{op} xmlns="urn:vim25"><_this type="VirtualMachine">{vm}</_this>{args}</{op}>'
    '</soapenv:Body></soapenv:Envelope>'
)


def soap_body(op: str, vm: str, seq: int) -> bytes:
    """The request body of one driver change: `op` is extraconfig, power-on, power-off or snapshot."""
    if op == 'extraconfig':
        method = 'ReconfigVM_Task'
        args = f'<spec><extraConfig><key>{SEQ_KEY}</key><value xsi:type="xsd:string">{seq}</value></extraConfig></spec>'
    elif op == 'power-on':
        method, args = 'PowerOnVM_Task', ''
    elif op == 'power-off':
        method, args = 'PowerOffVM_Task', ''
    elif op == 'snapshot':
        method, args = 'CreateSnapshot_Task', f'<name>s{seq}</name><memory>false</memory><quiesce>false</quiesce>'
    else:
        raise ValueError(op)
    return _SOAP.format(op=method, vm=escape(vm), args=args).encode()


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc, in seconds."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def endpoint(vc: dict[str, str]) -> Any:
    from vmwatch.vsphere import Endpoint

    return Endpoint(
        url=vc['url'], user=vc['user'], password_file=Path(vc['password_file']), ca_file=Path(vc['ca_file'])
    )


# -- the load driver (child process) -----------------------------------------------------------------------------


def op_for(visit: int) -> str:
    """The change a VM gets on its n-th visit: 70 % extraConfig, 20 % power (alternating on/off), 10 % snapshot."""
    r = visit % 10
    if r in (4, 9):
        return 'power-on' if (visit // 5) % 2 == 0 else 'power-off'
    if r == 7:
        return 'snapshot'
    return 'extraconfig'


def driver_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Issue `rate` changes/s for `duration_s` (open loop: change i is due at t0 + i/rate) from several sessions.

    VMs are visited round-robin from `first` on, so changes to one VM are len(vms)/rate seconds apart. Calls do
    not wait for the task: the time recorded is when vCenter accepted the call (the task is created and runs).
    """
    from vmwatch.vsphere import Session

    vms: list[str] = spec['vms']
    rate, duration, first = float(spec['rate']), float(spec['duration_s']), int(spec['first'])
    total = max(1, round(rate * duration))
    threads = max(2, min(8, int(rate // 20) + 2))
    sessions = [Session(endpoint(spec['vc'])) for _ in range(threads)]
    for s in sessions:
        s.login()
    records: list[tuple[int, str, str, float, float, bool]] = []
    lock = threading.Lock()
    counter = iter(range(total))
    t0 = time.time() + 0.2

    def work(session: Any) -> None:
        conn = session.connection(timeout_s=30)
        headers = {
            'Cookie': session.cookie,
            'SOAPAction': session.soap_action,
            'Content-Type': 'text/xml; charset=utf-8',
        }
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            n = first + i
            vm = vms[n % len(vms)]
            op = op_for(n // len(vms))
            due = t0 + i / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            ts = time.time()
            conn.request('POST', session.endpoint.path, soap_body(op, vm, n), headers)
            resp = conn.getresponse()
            body = resp.read()
            tr = time.time()
            ok = resp.status == 200 and b'returnval' in body
            with lock:
                records.append((n, vm, op, ts, tr, ok))
        conn.close()

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    pool = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    for s in sessions:
        s.logout()
    records.sort()
    return {
        'records': records,
        't0': t0,
        'threads': threads,
        'cpu_s': cpu_s_between(r0, r1),
    }


# -- the watchers (child processes) -------------------------------------------------------------------------------


class EventLog:
    """Appends 'key wall_time' per enqueue to a file the parent reads while the run goes on."""

    def __init__(self, path: Path) -> None:
        self.f = path.open('a', buffering=1)

    def __call__(self, key: str) -> None:
        self.f.write(f'{key} {time.time():.6f}\n')


def _ready(path: Path, info: dict[str, Any]) -> None:
    partial = path.with_name(path.name + '.partial')
    partial.write_text(json.dumps(info))
    partial.replace(path)  # the parent polls for `path`: it must never see half a file


def watch_vmwatch(spec: dict[str, Any]) -> None:
    """vmwatch's Watcher over the folder; every signal -> WorkQueue.add; runs until SIGTERM."""
    from vmwatch import _vmwatch
    from vmwatch.queue import WorkQueue
    from vmwatch.vsphere import MoRef
    from vmwatch.watcher import Watcher

    log = EventLog(Path(spec['events']))

    async def run() -> None:
        index = _vmwatch.Index()
        for m in spec['vms']:
            index.upsert(NS, m, unique_id=m, deleting=False, priority=0)
        queue: WorkQueue = WorkQueue(max_depth=10_000_000)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        t0 = time.perf_counter()
        async with Watcher(endpoint=endpoint(spec['vc']), containers={MoRef.parse(spec['folder']): [ZONE]},
                           index=index) as w:  # fmt: skip

            async def consume() -> None:
                async for s in w:
                    queue.add((s.namespace, s.name), priority=s.priority)
                    log(s.name)

            task = asyncio.create_task(consume())
            while w.stats['batches'] <= w.stats['truncated']:
                await asyncio.sleep(0.01)
            _ready(Path(spec['ready']), {'initial_sync_s': time.perf_counter() - t0, 'pid': os.getpid()})
            await stop.wait()
            await w.aclose()
            await task

    asyncio.run(run())


def watch_baseline(spec: dict[str, Any]) -> None:
    """The plain pyVmomi loop: WaitForUpdatesEx through pyVmomi, BaselineDecider, WorkQueue.add; until SIGTERM."""
    from baseline_pyvmomi import BaselineDecider, property_collector, wait_options
    from vmwatch.queue import WorkQueue
    from vmwatch.settings import FilterSettings
    from vmwatch.vsphere import MoRef, Session, Views

    log = EventLog(Path(spec['events']))
    settings = FilterSettings()

    class Stop(Exception):
        pass

    def on_term(*_: object) -> None:
        raise Stop

    async def run() -> None:
        queue: WorkQueue = WorkQueue(max_depth=10_000_000)

        def enqueue(key: tuple[str, str]) -> None:
            queue.add(key)
            log(key[1])

        t0 = time.perf_counter()
        session = Session(endpoint(spec['vc']))
        session.login()
        views = Views(session, watched_paths=settings.watched_paths)
        views.open({MoRef.parse(spec['folder']): [ZONE]})
        decider = BaselineDecider(
            watched_paths=settings.watched_paths,
            ignored_keys=settings.all_ignored_keys(),
            index={m: (NS, m, False) for m in spec['vms']},
        )
        pc = property_collector(views.collector_id, session.stub)
        opts = wait_options(max_wait_s=300, max_object_updates=100)
        version, ready = '', False
        signal.signal(signal.SIGTERM, on_term)
        try:
            while True:
                us = pc.WaitForUpdatesEx(version, opts)
                decider.decide(us, enqueue)
                if us is not None:
                    version = us.version
                if not ready and (us is None or not us.truncated):
                    ready = True
                    _ready(Path(spec['ready']), {'initial_sync_s': time.perf_counter() - t0, 'pid': os.getpid()})
        except Stop:
            pass
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            session.stub.DropConnections()
            views.close()
            session.logout()

    asyncio.run(run())


# -- steady state (parent) ------------------------------------------------------------------------------------------


def start_vcsim(vms: int, state_dir: Path) -> Any:
    from vmwatch.devenv import VcsimServer

    clusters = 4 if vms >= 4 else 1
    args = ('-cluster', str(clusters), '-host', '1', '-standalone-host', '0', '-vm', str(max(1, vms // clusters)),
            '-autostart=false')  # fmt: skip
    return VcsimServer(state_dir=state_dir, args=args).start(timeout_s=1800)


def inventory(vc: Any) -> tuple[str, list[tuple[str, str]]]:
    """The VM folder and (MoRef value, name) of every VM below it."""
    from vmwatch.vsphere import Session
    from vmwatch.vsphere.inventory import vm_folder, vms_under

    with Session(endpoint(vc_info(vc))) as s:
        folder = vm_folder(s)
        return str(folder), [(ref.value, name) for ref, name in vms_under(s, folder)]


def vc_info(vc: Any) -> dict[str, str]:
    return {'url': vc.url, 'user': vc.user, 'password_file': str(vc.password_file), 'ca_file': str(vc.ca_file)}


def child(mode: str, spec: dict[str, Any], tmp: Path) -> subprocess.Popen[bytes]:
    spec_path = tmp / f'{mode}-{time.monotonic_ns()}.json'
    spec_path.write_text(json.dumps(spec))
    return subprocess.Popen([sys.executable, __file__, '--child', mode, str(spec_path)], stdout=subprocess.PIPE)


def read_events(path: Path) -> list[tuple[str, float]]:
    out = []
    for line in path.read_text().splitlines():
        key, _, t = line.partition(' ')
        if t:
            out.append((key, float(t)))
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float('nan')
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def analyse(records: list[list[Any]], events: list[tuple[str, float]], window: tuple[float, float]) -> dict[str, Any]:
    """Match each change to the first enqueue of its VM at or after the call was issued."""
    by_vm: dict[str, list[float]] = defaultdict(list)
    for key, t in events:
        by_vm[key].append(t)
    for ts in by_vm.values():
        ts.sort()
    lat: list[tuple[float, float]] = []  # (call returned, latency s)
    unmatched = failed = 0
    for _n, vm, _op, t_sub, t_ret, ok in records:
        if not ok:
            failed += 1
            continue
        ts = by_vm.get(vm, [])
        i = bisect.bisect_left(ts, t_sub)
        if i == len(ts):
            unmatched += 1
            continue
        lat.append((t_ret, ts[i] - t_ret))
    start, end = window
    ok_records = [r for r in records if r[5]]
    achieved = len(records) / max(1e-9, (max(r[4] for r in records) - start)) if records else 0.0
    in_window = [t for _, t in events if start <= t <= end]
    lats = [x for _, x in lat]
    third = max(1, len(lat) // 3)
    lat_sorted = sorted(lat)
    first_third = statistics.median(x for _, x in lat_sorted[:third]) if lat else float('nan')
    last_third = statistics.median(x for _, x in lat_sorted[-third:]) if lat else float('nan')
    slope = 0.0
    if len(lat) >= 3:
        xs = [t - start for t, _ in lat]
        mx, my = statistics.fmean(xs), statistics.fmean(lats)
        var = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, lats, strict=True)) / var if var else 0.0
    matched = len(lat) / max(1, len(ok_records))
    return {
        'changes': len(records),
        'failed_calls': failed,
        'achieved_rate': achieved,
        'received_rate': len(in_window) / max(1e-9, end - start),
        'enqueues': len(events),
        'matched_fraction': matched,
        'unmatched': unmatched,
        'p50_ms': 1e3 * percentile(lats, 0.5),
        'p99_ms': 1e3 * percentile(lats, 0.99),
        'max_ms': 1e3 * max(lats) if lats else float('nan'),
        'first_third_p50_ms': 1e3 * first_third,
        'last_third_p50_ms': 1e3 * last_third,
        'lag_slope_ms_per_s': 1e3 * slope,
        'latencies_ms': [round(1e3 * x, 2) for x in lats],
    }


SUSTAINED_P99_MS = 2000.0


def sustained(row: dict[str, Any], target: float) -> bool:
    """Kept up: the driver achieved >= 90 % of the target, >= 99 % of changes reached the enqueue, p99 under 2 s,
    and the latency at the end of the window is not above the start's by more than 50 ms (no growing backlog)."""
    return bool(
        row['achieved_rate'] >= 0.9 * target
        and row['matched_fraction'] >= 0.99
        and row['p99_ms'] <= SUSTAINED_P99_MS
        and row['last_third_p50_ms'] <= row['first_third_p50_ms'] + 50
    )


def steady_impl(
    impl: str,
    vc: Any,
    folder: str,
    vms: list[str],
    rates: list[float],
    window_s: float,
    first: int,
    tmp: Path,
    drain_s: float = 15.0,
) -> tuple[dict[str, Any], int]:
    events_path = tmp / f'events-{impl}-{first}.txt'
    ready_path = tmp / f'ready-{impl}-{first}.json'
    spec = {'vc': vc_info(vc), 'folder': folder, 'vms': vms, 'events': str(events_path), 'ready': str(ready_path)}
    proc = child(f'watch-{impl}', spec, tmp)
    deadline = time.monotonic() + 600
    while not ready_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f'{impl} watcher did not start (exit {proc.returncode})')
        time.sleep(0.05)
    ready = json.loads(ready_path.read_text())
    out: dict[str, Any] = {'initial_sync_s': ready['initial_sync_s'], 'rates': []}
    try:
        for rate in rates:
            before_events = len(read_events(events_path)) if events_path.exists() else 0
            c_w0, c_v0, t_start = cpu_s(proc.pid), cpu_s(vc.pid), time.time()
            dspec = {'vc': vc_info(vc), 'vms': vms, 'rate': rate, 'duration_s': window_s, 'first': first}
            drv = child('driver', dspec, tmp)
            stdout, _ = drv.communicate(timeout=window_s * 10 + 120)
            if drv.returncode != 0:
                raise RuntimeError(f'driver failed at {rate}/s')
            d = last_json_line(stdout)
            t_end = max(r[4] for r in d['records'])
            first += len(d['records'])
            # drain: until every change is matched, or nothing new arrived for 5 s (at most `drain_s`)
            last_n, last_change = -1, time.monotonic()
            drain_deadline = time.monotonic() + drain_s
            while time.monotonic() < drain_deadline:
                evs = read_events(events_path)[before_events:]
                if analyse(d['records'], evs, (d['t0'], t_end))['unmatched'] == 0:
                    break
                if len(evs) != last_n:
                    last_n, last_change = len(evs), time.monotonic()
                elif time.monotonic() - last_change > min(5.0, drain_s / 2):
                    break
                time.sleep(0.25)
            c_w1, c_v1, t_stop = cpu_s(proc.pid), cpu_s(vc.pid), time.time()
            evs = read_events(events_path)[before_events:]
            row = analyse(d['records'], evs, (d['t0'], t_end))
            row.update(
                target_rate=rate,
                window_s=window_s,
                driver_threads=d['threads'],
                watcher_cpu_s=c_w1 - c_w0,
                vcsim_cpu_s=c_v1 - c_v0,
                driver_cpu_s=d['cpu_s'],
                wall_s=t_stop - t_start,
                ops=dict(Counter(r[2] for r in d['records'])),
            )
            row['watcher_cpu_s_per_1000'] = 1000 * row['watcher_cpu_s'] / max(1, len(evs))
            row['vcsim_cpu_share'] = row['vcsim_cpu_s'] / row['wall_s']
            row['watcher_cpu_share'] = row['watcher_cpu_s'] / row['wall_s']
            row['driver_cpu_share'] = row['driver_cpu_s'] / row['wall_s']
            row['sustained'] = sustained(row, rate)
            out['rates'].append(row)
            print(
                f'steady {impl} {rate:g}/s: achieved {row["achieved_rate"]:.1f}/s '
                f'received {row["received_rate"]:.1f}/s '
                f'p50 {row["p50_ms"]:.0f} ms p99 {row["p99_ms"]:.0f} ms matched {row["matched_fraction"]:.3f} '
                f'cpu watcher {row["watcher_cpu_share"]:.2f} vcsim {row["vcsim_cpu_share"]:.2f} '
                f'driver {row["driver_cpu_share"]:.2f} sustained={row["sustained"]}',
                file=sys.stderr,
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    ok = [r['target_rate'] for r in out['rates'] if r['sustained']]
    out['max_sustained_rate'] = max(ok) if ok else 0
    return out, first


def bench_steady(vms: int, rates: list[float], window_s: float, drain_s: float = 10.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix='vmwatch-steady-') as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        vc = start_vcsim(vms, tmp / 'vcsim')
        try:
            start_s = time.perf_counter() - t0
            folder, listed = inventory(vc)
            morefs = [m for m, _ in listed]
            out: dict[str, Any] = {
                'vms': len(morefs),
                'vcsim_start_s': start_s,
                'window_s': window_s,
                'drain_s_max': drain_s,
                'op_mix': {'extraconfig': 0.7, 'power-on/off': 0.2, 'snapshot': 0.1},
            }
            first = 0
            for impl in ('vmwatch', 'baseline'):
                out[impl] = {'initial_sync_s': [], 'rates': []}
            for k, rate in enumerate(rates):
                # a fresh watcher process per window, the order alternating: neither implementation always
                # meets the vcsim that the other has just loaded with tasks and snapshots
                for impl in ('vmwatch', 'baseline') if k % 2 == 0 else ('baseline', 'vmwatch'):
                    res, first = steady_impl(impl, vc, folder, morefs, [rate], window_s, first, tmp, drain_s)
                    out[impl]['initial_sync_s'].append(res['initial_sync_s'])
                    out[impl]['rates'].append(res['rates'][0])
            for impl in ('vmwatch', 'baseline'):
                ok = [r['target_rate'] for r in out[impl]['rates'] if r['sustained']]
                out[impl]['max_sustained_rate'] = max(ok) if ok else 0
        finally:
            vc.stop()
    return out


def bench_vcsim_scaling(sizes: list[int], rate: float, window_s: float) -> dict[str, Any]:
    """Where the time goes: the same light load (`rate` changes/s) against vcsim with more and more watched VMs.

    vcsim v0.56.0 re-collects every property of every VM the filter covers on each modification of any managed
    object (PropertyCollector.WaitForUpdatesEx -> apply -> PropertyFilter.collect, simulator/property_collector.go),
    and one VM change modifies several objects (the VM, its task, the task manager). So its cost per change grows
    with the watched inventory. vmwatch only (the baseline sees the same vcsim)."""
    rows = []
    for vms in sizes:
        with tempfile.TemporaryDirectory(prefix='vmwatch-scaling-') as tmp_s:
            tmp = Path(tmp_s)
            t0 = time.perf_counter()
            vc = start_vcsim(vms, tmp / 'vcsim')
            try:
                start_s = time.perf_counter() - t0
                folder, listed = inventory(vc)
                res, _ = steady_impl('vmwatch', vc, folder, [m for m, _ in listed], [rate], window_s, 0, tmp, 30.0)
                row = res['rates'][0]
                row.pop('latencies_ms')
                rows.append({'vms': len(listed), 'vcsim_start_s': start_s, **row})
            finally:
                vc.stop()
    return {'rate': rate, 'window_s': window_s, 'rows': rows}


# -- startup with kube-apiserver ---------------------------------------------------------------------------------------


def k8s_name(vm_name: str) -> str:
    return vm_name.lower().replace('_', '-')


def pooled_namespace(kubeconfig: Path, ns: str) -> Any:
    """An API client with connections for 16 threads, the CRDs installed and the namespace `ns` created."""
    from kubernetes import client

    from vmwatch.kube.crds import api_client, install_crds

    api = api_client(kubeconfig)
    api.configuration.connection_pool_maxsize = 16
    api = client.ApiClient(api.configuration)
    install_crds(api)
    client.CoreV1Api(api).create_namespace({'metadata': {'name': ns}})
    return api


def prepare_kube(kubeconfig: Path, ns: str, listed: list[tuple[str, str]], unverified_every: int) -> float:
    """Create one VirtualMachine per VM through the API (a thread pool of creates and status patches): every
    `unverified_every`-th without a uniqueID, the others verified (0: all verified)."""
    from kubernetes import client

    t0 = time.perf_counter()
    api = pooled_namespace(kubeconfig, ns)
    objects = client.CustomObjectsApi(api)
    group, version, plural = 'vmoperator.vmware.com', 'v1alpha6', 'virtualmachines'

    def create(i: int) -> None:
        moref, vm_name = listed[i]
        name = k8s_name(vm_name)
        body = {'apiVersion': f'{group}/{version}', 'kind': 'VirtualMachine', 'metadata': {'name': name}, 'spec': {}}
        objects.create_namespaced_custom_object(group, version, ns, plural, body)
        if not unverified_every or i % unverified_every != 0:
            objects.patch_namespaced_custom_object_status(
                group, version, ns, plural, name, {'status': {'uniqueID': moref}}
            )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(len(listed))))
    api.close()
    return time.perf_counter() - t0


def remove_kube(kubeconfig: Path, ns: str) -> None:
    """Delete the VirtualMachines `prepare_kube` made (the test servers have no namespace controller)."""
    from kubernetes import client

    from vmwatch.kube.crds import api_client

    with client.ApiClient(api_client(kubeconfig).configuration) as api:
        client.CustomObjectsApi(api).delete_collection_namespaced_custom_object(
            'vmoperator.vmware.com', 'v1alpha6', ns, 'virtualmachines'
        )


def name_unverified(vc: Any, ns: str, listed: list[tuple[str, str]], unverified_every: int) -> None:
    """Put vmservice.namespacedName into the extraConfig of every `unverified_every`-th VM (raw SOAP, 4 sessions;
    0: none)."""
    from vmwatch.vsphere import Session

    targets = [(m, n) for i, (m, n) in enumerate(listed) if unverified_every and i % unverified_every == 0]
    if not targets:
        return
    body_t = _SOAP.replace('{args}', '<spec><extraConfig><key>vmservice.namespacedName</key>'
                           '<value xsi:type="xsd:string">{value}</value></extraConfig></spec>')  # fmt: skip

    def work(chunk: list[tuple[str, str]]) -> None:
        with Session(endpoint(vc_info(vc))) as s:
            conn = s.connection(timeout_s=60)
            headers = {'Cookie': s.cookie, 'SOAPAction': s.soap_action, 'Content-Type': 'text/xml; charset=utf-8'}
            for moref, name in chunk:
                body = body_t.format(op='ReconfigVM_Task', vm=moref, value=f'{ns}/{k8s_name(name)}')
                conn.request('POST', s.endpoint.path, body.encode(), headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(data[:500])
            conn.close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, [targets[k::4] for k in range(4)]))
    time.sleep(1.0)  # the tasks run asynchronously in vcsim; they take milliseconds


def startup_vmwatch(spec: dict[str, Any]) -> dict[str, Any]:
    """VirtualMachineIndex (list + watch) -> Watcher -> validate against the index -> WorkQueue.add."""
    from vmwatch.kube.crds import api_client
    from vmwatch.kube.index import VirtualMachineIndex
    from vmwatch.queue import WorkQueue
    from vmwatch.settings import FilterSettings
    from vmwatch.vsphere import MoRef
    from vmwatch.watcher import Watcher, make_decider

    requests: Counter[str] = Counter()

    async def run() -> dict[str, Any]:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        api = api_client(Path(spec['kubeconfig']))
        vmi = VirtualMachineIndex(api).start()
        await vmi.wait_synced_async(600)
        t_index = time.perf_counter()
        decider = make_decider(FilterSettings(cache_max_entries=250_000), vmi.index)
        queue: WorkQueue = WorkQueue(max_depth=1_000_000)
        async with Watcher(endpoint=endpoint(spec['vc']), containers={MoRef.parse(spec['folder']): [ZONE]},
                           decider=decider, keepalive_s=0) as w:  # fmt: skip
            while w.stats['batches'] <= w.stats['truncated'] or w.pending:
                for s in w.drain():
                    entry = vmi.get(s.namespace, s.name)  # the service's validation (spec 4.5)
                    if entry is not None and not entry[1]:
                        queue.add((s.namespace, s.name), priority=entry[2])
                        requests[f'{s.namespace}/{s.name}'] += 1
                await asyncio.sleep(0.005)
            t_sync = time.perf_counter()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
        vmi.stop()
        api.close()
        return {**startup_times(t0, t_index, t_sync, r0, r1), 'index_len': len(vmi)}

    res = asyncio.run(run())
    return startup_counts(res, requests, spec)


def startup_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    """kubernetes client list (paginated) into dicts -> pyVmomi WaitForUpdatesEx -> BaselineDecider -> enqueue."""
    from kubernetes import client

    from baseline_pyvmomi import BaselineDecider, property_collector, wait_options
    from vmwatch.kube.crds import api_client
    from vmwatch.queue import WorkQueue
    from vmwatch.settings import FilterSettings
    from vmwatch.vsphere import MoRef, Session, Views

    requests: Counter[str] = Counter()
    settings = FilterSettings()

    async def run() -> dict[str, Any]:
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        api = api_client(Path(spec['kubeconfig']))
        objects = client.CustomObjectsApi(api)
        index: dict[str, tuple[str, str, bool]] = {}
        by_name: dict[tuple[str, str], tuple[str, bool]] = {}
        cont = None
        while True:
            kw = {'limit': 500, **({'_continue': cont} if cont else {})}
            page = objects.list_cluster_custom_object('vmoperator.vmware.com', 'v1alpha6', 'virtualmachines', **kw)
            for obj in page['items']:
                md, uid = obj['metadata'], (obj.get('status') or {}).get('uniqueID', '')
                deleting = bool(md.get('deletionTimestamp'))
                by_name[(md['namespace'], md['name'])] = (uid, deleting)
                if uid:
                    index[uid] = (md['namespace'], md['name'], deleting)
            cont = page['metadata'].get('continue')
            if not cont:
                break
        t_index = time.perf_counter()
        queue: WorkQueue = WorkQueue(max_depth=1_000_000)

        def enqueue(key: tuple[str, str]) -> None:
            entry = by_name.get(key)
            if entry is not None and not entry[1]:
                queue.add(key)
                requests[f'{key[0]}/{key[1]}'] += 1

        session = Session(endpoint(spec['vc']))
        session.login()
        views = Views(session, watched_paths=settings.watched_paths)
        try:
            views.open({MoRef.parse(spec['folder']): [ZONE]})
            decider = BaselineDecider(watched_paths=settings.watched_paths, ignored_keys=settings.all_ignored_keys(),
                                      index=index, by_name=by_name)  # fmt: skip
            pc = property_collector(views.collector_id, session.stub)
            opts = wait_options(max_wait_s=10, max_object_updates=100)
            version = ''
            while True:
                us = pc.WaitForUpdatesEx(version, opts)
                decider.decide(us, enqueue)
                if us is None or not us.truncated:
                    break
                version = us.version
            t_sync = time.perf_counter()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            views.close()
            session.logout()
        api.close()
        return {**startup_times(t0, t_index, t_sync, r0, r1), 'index_len': len(by_name)}

    res = asyncio.run(run())
    return startup_counts(res, requests, spec)


def startup_times(
    t0: float, t_index: float, t_sync: float, r0: resource.struct_rusage, r1: resource.struct_rusage
) -> dict[str, float]:
    """A startup child's phases: start -> VirtualMachines listed (index) -> initial sync processed (vSphere)."""
    return {
        'seconds': t_sync - t0,
        'index_s': t_index - t0,
        'vsphere_s': t_sync - t_index,
        'cpu_s': cpu_s_between(r0, r1),
    }


def startup_counts(res: dict[str, Any], requests: Counter[str], spec: dict[str, Any]) -> dict[str, Any]:
    unverified = {f'{spec["namespace"]}/{n}' for n in spec['unverified']}
    res['requests_verified'] = sum(c for n, c in requests.items() if n not in unverified)
    res['unverified'] = len(unverified)
    res['unverified_requested_exactly_once'] = sum(1 for n in unverified if requests.get(n) == 1)
    res['peak_rss_bytes'] = peak_rss_bytes()
    return res


def bench_startup_kube(
    sizes: list[int], runs: int, kubeconfig: Path | None = None, unverified_every: int = 4
) -> dict[str, Any]:
    """`kubeconfig`: an existing kube-apiserver (a fresh namespace per size); else one is started per size."""
    from vmwatch.devenv import KubeServer

    rows = []
    for vms in sizes:
        with tempfile.TemporaryDirectory(prefix='vmwatch-startup-') as tmp_s:
            tmp = Path(tmp_s)
            t0 = time.perf_counter()
            vc = start_vcsim(vms, tmp / 'vcsim')
            vcsim_start_s = time.perf_counter() - t0
            kube = None
            ns: str | None = None
            try:
                folder, listed = inventory(vc)
                t1 = time.perf_counter()
                ns = f'{NS}-{os.urandom(3).hex()}'
                name_unverified(vc, ns, listed, unverified_every)
                vcsim_names_s = time.perf_counter() - t1
                if kubeconfig is None:
                    kube = KubeServer(state_dir=tmp / 'kube').start()
                kc = kubeconfig or kube.kubeconfig
                kube_prepare_s = prepare_kube(kc, ns, listed, unverified_every)
                unverified = [k8s_name(n) for i, (_, n) in enumerate(listed) if i % unverified_every == 0]
                spec = {'vc': vc_info(vc), 'folder': folder, 'kubeconfig': str(kc), 'namespace': ns,
                        'unverified': unverified}  # fmt: skip
                row: dict[str, Any] = {
                    'vms': len(listed),
                    'vcsim_start_s': vcsim_start_s,
                    'vcsim_name_unverified_s': vcsim_names_s,
                    'kube_create_s': kube_prepare_s,
                }
                samples: dict[str, list[dict[str, Any]]] = {'vmwatch': [], 'baseline': []}
                for _ in range(runs):
                    for impl in ('vmwatch', 'baseline'):  # alternate, each in a fresh process
                        proc = child(f'startup-{impl}', spec, tmp)
                        stdout, _ = proc.communicate(timeout=3600)
                        if proc.returncode != 0:
                            raise RuntimeError(f'startup {impl} failed')
                        samples[impl].append(last_json_line(stdout))
                for impl, ss in samples.items():
                    row[impl] = {
                        'median_seconds': statistics.median(s['seconds'] for s in ss),
                        'median_cpu_s': statistics.median(s['cpu_s'] for s in ss),
                        'median_peak_rss_bytes': statistics.median(s['peak_rss_bytes'] for s in ss),
                        'samples': ss,
                    }
                    r = row[impl]
                    print(f'startup-kube {impl} {len(listed)} VMs: {r["median_seconds"]:.2f} s, '
                          f'{r["median_cpu_s"]:.2f} CPU s, {r["median_peak_rss_bytes"] / 2**20:.0f} MiB',
                          file=sys.stderr)  # fmt: skip
                rows.append(row)
            finally:
                if kube is not None:
                    kube.stop()
                elif kubeconfig is not None and ns is not None:
                    remove_kube(kubeconfig, ns)  # a shared API server: leave no uniqueID claiming a MoRef
                vc.stop()
    return {'rows': rows, 'unverified_every': unverified_every, 'runs': runs}


# -- plots ----------------------------------------------------------------------------------------------------------


def plot(result: dict[str, Any], prefix: Path) -> list[str]:
    plt = pyplot()
    written = []
    labels = {'vmwatch': 'vmwatch', 'baseline': 'baseline (pyVmomi)'}
    st = result.get('steady')
    if st:
        fig, ax = plt.subplots(figsize=(6, 4))
        targets = [r['target_rate'] for r in st['vmwatch']['rates']]
        ax.plot(targets, targets, ':', color='grey', label='target')
        for impl in ('vmwatch', 'baseline'):
            rows = st[impl]['rates']
            ax.plot(targets, [r['received_rate'] for r in rows], 'o-', color=COLORS[impl],
                    label=f'{labels[impl]} enqueued')  # fmt: skip
        ax.plot(targets, [r['achieved_rate'] for r in st['vmwatch']['rates']], 'x--', color='grey',
                label='driver achieved (vmwatch run)')  # fmt: skip
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('target changes / s')
        ax.set_ylabel('changes / s')
        ax.set_title(f'Steady state against vcsim ({st["vms"]} VMs)')
        ax.legend()
        written.append(save_figure(fig, prefix, 'steady-throughput'))

        fig, ax = plt.subplots(figsize=(6, 4))
        styles = ['-', '--', '-.', ':', (0, (3, 1, 1, 1)), (0, (5, 2))]
        for impl in ('vmwatch', 'baseline'):
            for k, r in enumerate(st[impl]['rates']):
                xs = sorted(r['latencies_ms'])
                if not xs:
                    continue
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.plot(xs, ys, color=COLORS[impl], ls=styles[k % len(styles)],
                        label=f'{impl} {r["target_rate"]:g}/s')  # fmt: skip
        ax.set_xscale('log')
        ax.set_xlabel('change -> enqueue latency (ms, log)')
        ax.set_ylabel('fraction of the changes that reached the enqueue')
        ax.legend(fontsize=7, ncol=2)
        written.append(save_figure(fig, prefix, 'latency-cdf'))
    sc = result.get('vcsim_scaling', {}).get('rows', [])
    if sc:
        fig, ax = plt.subplots(figsize=(6, 4))
        vms = [r['vms'] for r in sc]
        ax.plot(vms, [r['p50_ms'] for r in sc], 'o-', color=COLORS['vmwatch'], label='vmwatch p50 latency (ms)')
        ax.plot(vms, [r['p99_ms'] for r in sc], 'o:', color=COLORS['vmwatch'], label='vmwatch p99 latency (ms)')
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('VMs watched in vcsim')
        ax.set_ylabel('change -> enqueue latency (ms, log)')
        ax2 = ax.twinx()
        ax2.plot(vms, [r['vcsim_cpu_share'] for r in sc], 's--', color='grey', label='vcsim CPU (cores)')
        ax2.plot(vms, [r['watcher_cpu_share'] for r in sc], 'x--', color=COLORS['vmwatch'], label='watcher CPU (cores)')
        ax2.set_ylabel('CPU cores')
        ax2.set_ylim(bottom=0)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8)
        ax.set_title(f'{result["vcsim_scaling"]["rate"]:g} changes/s: vcsim cost grows with watched VMs')
        written.append(save_figure(fig, prefix, 'vcsim-scaling'))
    rows = result.get('startup_kube', {}).get('rows', [])
    if rows:
        written.append(plot_startup(rows, prefix, 'VMs in vcsim (and VirtualMachines in kube-apiserver)', labels))
    return written


# -- main -------------------------------------------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    st = result.get('steady')
    if st:
        for impl in ('vmwatch', 'baseline'):
            s[f'steady_{impl}_max_sustained_rate'] = st[impl]['max_sustained_rate']
            for r in st[impl]['rates']:
                s[f'steady_{impl}_{r["target_rate"]:g}'] = {
                    k: round(r[k], 3)
                    for k in ('achieved_rate', 'received_rate', 'p50_ms', 'p99_ms', 'lag_slope_ms_per_s',
                              'watcher_cpu_s_per_1000', 'vcsim_cpu_share', 'watcher_cpu_share', 'matched_fraction')
                } | {'sustained': r['sustained']}  # fmt: skip
    for row in result.get('startup_kube', {}).get('rows', []):
        for impl in ('vmwatch', 'baseline'):
            last = row[impl]['samples'][-1]
            s[f'startup_kube_{impl}_{row["vms"]}'] = {
                'median_seconds': round(row[impl]['median_seconds'], 2),
                'median_cpu_s': round(row[impl]['median_cpu_s'], 2),
                'peak_rss_mib': round(row[impl]['median_peak_rss_bytes'] / 2**20, 1),
                'requests_for_verified': last['requests_verified'],
                'unverified_requested_exactly_once': '{}/{}'.format(
                    last['unverified_requested_exactly_once'], last['unverified']
                ),
            }
    return s


SECTIONS = ('steady', 'vcsim_scaling', 'startup_kube')


def tables(result: dict[str, Any]) -> str:
    """The README's markdown tables from a result file."""

    def n(x: float, digits: int = 0) -> str:
        return f'{x:,.{digits}f}'

    out = []
    st = result.get('steady')
    if st:
        out.append(
            '| target /s | driver achieved /s | vmwatch enqueued /s | vmwatch p50 / p99 ms | matched '
            '| baseline enqueued /s | baseline p50 / p99 ms | matched | vcsim CPU (cores) | watchers CPU (cores) |'
        )
        out.append('|---|---|---|---|---|---|---|---|---|---|')
        for v, b in zip(st['vmwatch']['rates'], st['baseline']['rates'], strict=True):
            out.append(
                f'| {v["target_rate"]:g} | {n(v["achieved_rate"], 1)} | {n(v["received_rate"], 1)} '
                f'| {n(v["p50_ms"])} / {n(v["p99_ms"])} | {v["matched_fraction"]:.0%} | {n(b["received_rate"], 1)} '
                f'| {n(b["p50_ms"])} / {n(b["p99_ms"])} | {b["matched_fraction"]:.0%} '
                f'| {v["vcsim_cpu_share"]:.2f} / {b["vcsim_cpu_share"]:.2f} '
                f'| {v["watcher_cpu_share"]:.3f} / {b["watcher_cpu_share"]:.3f} |'
            )
        out.append('')
        out.append(
            'max sustained: vmwatch {} /s, baseline {} /s; watcher CPU s per 1,000 enqueues at the lowest rate: '
            'vmwatch {:.2f}, baseline {:.2f}'.format(
                st['vmwatch']['max_sustained_rate'],
                st['baseline']['max_sustained_rate'],
                st['vmwatch']['rates'][0]['watcher_cpu_s_per_1000'],
                st['baseline']['rates'][0]['watcher_cpu_s_per_1000'],
            )
        )
        out.append('')
    sc = result.get('vcsim_scaling', {}).get('rows', [])
    if sc:
        out.append(
            '| VMs watched | p50 / p99 ms | changes that reached the enqueue | vcsim CPU (cores) '
            '| watcher CPU (cores) |'
        )
        out.append('|---|---|---|---|---|')
        for r in sc:
            got = round(r['matched_fraction'] * (r['changes'] - r['failed_calls']))
            out.append(
                f'| {r["vms"]} | {n(r["p50_ms"])} / {n(r["p99_ms"])} | {got} / {r["changes"]} '
                f'| {r["vcsim_cpu_share"]:.2f} | {r["watcher_cpu_share"]:.3f} |'
            )
        out.append('')
    rows = result.get('startup_kube', {}).get('rows', [])
    if rows:
        out.append(
            '| VMs | vmwatch s (CPU s) | baseline s (CPU s) | wall ratio | peak RSS vmwatch / baseline '
            '| requests for verified VMs | unverified requested exactly once |'
        )
        out.append('|---|---|---|---|---|---|---|')
        for r in rows:
            v, b = r['vmwatch'], r['baseline']
            sv, sb = v['samples'][-1], b['samples'][-1]
            out.append(
                f'| {r["vms"]:,} | {v["median_seconds"]:.2f} ({v["median_cpu_s"]:.2f}) '
                f'| {b["median_seconds"]:.2f} ({b["median_cpu_s"]:.2f}) '
                f'| {b["median_seconds"] / v["median_seconds"]:.1f}x '
                f'| {v["median_peak_rss_bytes"] / 2**20:.0f} / {b["median_peak_rss_bytes"] / 2**20:.0f} MiB '
                f'| {sv["requests_verified"]} / {sb["requests_verified"]} '
                f'| {sv["unverified_requested_exactly_once"]:,}/{sv["unverified"]:,}, '
                f'{sb["unverified_requested_exactly_once"]:,}/{sb["unverified"]:,} |'
            )
    return '\n'.join(out)


def merge(paths: list[Path], out_dir: Path) -> int:
    """One result from runs made separately (e.g. startup earlier, steady state once the machine was quiet)."""
    parts = [json.loads(p.read_text()) for p in paths]
    result: dict[str, Any] = {
        'date': max(x['date'] for x in parts),
        'command': [x['command'] for x in parts],
        'machine': parts[0]['machine'],
        'parts': [
            {'date': x['date'], 'sections': [s for s in SECTIONS if s in x], 'machine': x['machine']} for x in parts
        ],  # fmt: skip
        'versions': parts[0]['versions'],
    }
    for x in parts:
        for section in SECTIONS:
            if section == 'startup_kube' and section in x and section in result:
                rows = [*result[section]['rows'], *x[section]['rows']]
                result[section] = {**x[section], 'rows': sorted(rows, key=lambda r: r['vms'])}
            elif section in x:
                result[section] = x[section]
    result['summary'] = summary(result)
    stem = f'vcsim-{result["date"][:10]}'
    out_dir.mkdir(parents=True, exist_ok=True)
    result['plots'] = plot(result, out_dir / stem)
    write_result(out_dir, stem, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or '').split('\n')[0])
    p.add_argument('--out', type=Path, default=ROOT / 'benches' / 'results')
    p.add_argument('--smoke', action='store_true', help='tiny sizes, seconds, no plots')
    p.add_argument('--steady-vms', type=int, default=8, help='VMs in vcsim (a multiple of 4)')
    p.add_argument('--rates', type=float, nargs='*', default=list(RATES))
    p.add_argument('--window-s', type=float, default=10.0)
    p.add_argument('--scaling-vms', type=int, nargs='*', default=[8, 40, 100, 400])
    p.add_argument('--startup-vms', type=int, nargs='*', default=[1000, 5000, 10_000])
    p.add_argument('--startup-runs', type=int, default=1)
    p.add_argument('--kubeconfig', type=Path, help='use this kube-apiserver for startup (default: start one)')
    p.add_argument('--skip', nargs='*', default=[], choices=['steady', 'scaling', 'startup', 'plots'])
    p.add_argument('--merge', type=Path, nargs='+', help='combine the sections of earlier result files (and plot)')
    p.add_argument('--tables', type=Path, help="print a result file's markdown tables (for README.md)")
    p.add_argument('--child', nargs=2, metavar=('MODE', 'SPEC'), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.merge:
        return merge(a.merge, a.out)
    if a.tables:
        print(tables(json.loads(a.tables.read_text())))
        return 0
    if a.child:
        mode, spec = a.child[0], json.loads(Path(a.child[1]).read_text())
        if mode == 'driver':
            print(json.dumps(driver_child(spec)))
        elif mode == 'watch-vmwatch':
            watch_vmwatch(spec)
        elif mode == 'watch-baseline':
            watch_baseline(spec)
        elif mode == 'startup-vmwatch':
            print(json.dumps(startup_vmwatch(spec)))
        elif mode == 'startup-baseline':
            print(json.dumps(startup_baseline(spec)))
        else:
            raise SystemExit(f'unknown child {mode}')
        return 0
    if a.smoke:
        a.steady_vms, a.rates, a.window_s, a.startup_runs = 8, [5.0], 1.6, 1
        a.startup_vms, a.scaling_vms = [8], []
        a.skip = [*a.skip, 'plots']
    now = dt.datetime.now(dt.UTC)
    result: dict[str, Any] = {
        'date': now.isoformat(timespec='seconds'),
        'command': ' '.join(['python', 'benches/vcsim_bench.py', *(argv if argv is not None else sys.argv[1:])]),
        'machine': machine(),
        'versions': versions(),
    }
    if 'steady' not in a.skip and a.rates:
        result['steady'] = bench_steady(a.steady_vms, a.rates, a.window_s, 10.0)
    if 'scaling' not in a.skip and a.scaling_vms:
        result['vcsim_scaling'] = bench_vcsim_scaling(a.scaling_vms, rate=2.0, window_s=5.0)
    if 'startup' not in a.skip and a.startup_vms:
        result['startup_kube'] = bench_startup_kube(a.startup_vms, a.startup_runs, a.kubeconfig)
    result['machine']['loadavg_at_end'] = list(os.getloadavg())
    result['summary'] = summary(result)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = f'vcsim-{now.date().isoformat()}{"-smoke" if a.smoke else ""}'
    if 'plots' not in a.skip:
        result['plots'] = plot(result, a.out / stem)
    write_result(a.out, stem, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
