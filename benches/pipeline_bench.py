# SPDX-License-Identifier: Apache-2.0
"""vmwatch as users run it vs a plain pyVmomi watcher (issue 6): replay ceiling, memory, startup.

* replay: recorded WaitForUpdatesEx responses (benches/data) served from 127.0.0.1 as fast as the
  client asks (a load generator pinned to the other CPU); the client, pinned to one CPU, does HTTP
  round trip -> decode -> decide -> index lookup -> WorkQueue.add. vmwatch: raw bytes into
  `Decider.decide`; baseline: pyVmomi's stub + deserializer + Python dedupe (benches/baseline_pyvmomi.py).
* memory: RSS growth of the fingerprint cache + index filled with N synthetic VMs, in a fresh process
  per (implementation, N); also the sizes vmwatch reports itself (cache_stats()['bytes'], Index.bytes()).
* startup: vcsim with N VMs; from "start" (login) to "initial sync processed" (the first response
  with truncated=false); CPU seconds of the watcher process; signals for verified VMs (must be 0) and
  unverified VMs with a name in extraConfig (exactly 1 each).

    python benches/pipeline_bench.py [--smoke] [--startup-vms 1000 ...] [--out benches/results]

Writes benches/results/pipeline-<date>.json and pipeline-<date>-*.png.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import datetime as dt
import gc
import gzip
import http.client
import importlib.metadata
import json
import multiprocessing
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyVmomi import SoapAdapter, VmomiSupport

import vmwatch
from baseline_pyvmomi import BaselineDecider, property_collector, wait_options
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
from machine_info import cpu_model
from vmwatch import _vmwatch
from vmwatch.queue import WorkQueue
from vmwatch.settings import FilterSettings
from vmwatch.vsphere.collector import wait_envelope
from vmwatch.watcher import make_decider

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'benches' / 'data'
GOVMOMI = 'v0.56.0'  # the vcsim/govmomi pin of vmwatch.devenv and benches/govmomi_decode
TARGETS = {'replay_updates_per_s': 100_000.0, 'memory_bytes_per_vm': 400.0}
NS = 'bench'
SETTINGS = FilterSettings(cache_max_entries=250_000)
# replay scenarios: URL path -> payloads served in turn (each response is one WaitForUpdatesEx answer)
SCENARIOS: dict[str, tuple[str, ...]] = {
    # 100 VMs powered on, then off, again and again: every object update is a real change (100 signals each)
    'power': ('power-on-100.xml.gz', 'power-off-100.xml.gz'),
    # the same recorded responses without the device list vcsim adds to every power change (synthetic): only
    # summary.runtime.powerState changes, the small update a real vCenter sends; measures the per-update ceiling
    'power-small': ('power-on-100.xml.gz#nodevice', 'power-off-100.xml.gz#nodevice'),
    # the same, 1,000 VMs per response (10 renumbered copies spliced; maxObjectUpdates=1000): the round trip
    # is shared by 10x more updates
    'power-small-x10': ('power-on-100.xml.gz#nodevice,x10', 'power-off-100.xml.gz#nodevice,x10'),
    # 100 VMs with 43 extraConfig keys, two changed: after the first round every update is a duplicate
    'extraconfig-dup': ('extraconfig-modify-100.xml.gz',),
    # 2,000 verified VMs entering scope (fresh fingerprint cache each response: all first sightings, 0 signals)
    'initial-sync': ('initial-sync-2000.xml.gz',),
}


def load(name: str | Path) -> bytes:
    """A payload of benches/data, with optional synthetic variants after '#', comma-separated.

    'nodevice' drops the config.hardware.device changes; 'xN' splices N renumbered copies of the object
    updates into one response (N times as many distinct VMs: what a wait with a larger maxObjectUpdates returns).
    """
    name, _, variants = str(name).partition('#')
    path = Path(name) if os.sep in name else DATA / name
    data = path.read_bytes()
    data = gzip.decompress(data) if path.suffix == '.gz' else data
    for variant in filter(None, variants.split(',')):
        if variant == 'nodevice':
            data = re.sub(rb'<changeSet><name>config\.hardware\.device</name>.*?</changeSet>', b'', data, flags=re.S)
        elif variant.startswith('x'):
            start, end = data.index(b'<objectSet>'), data.rindex(b'</objectSet>') + len(b'</objectSet>')
            objs, obj = data[start:end], b'<obj type="VirtualMachine">vm-'
            copies = [objs.replace(obj, obj + f'{k}x'.encode()) for k in range(1, int(variant[1:]))]
            data = data[:end] + b''.join(copies) + data[end:]
        else:
            raise ValueError(f'unknown payload variant {variant!r}')
    return data


# -- machine and versions -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = cpu_model()
    try:
        load_avg = list(os.getloadavg())
    except OSError:
        load_avg = []
    return {
        'nproc': os.cpu_count(),
        'cpu_model': model,
        'os': platform.platform(),
        'loadavg_at_start': load_avg,
    }


def versions() -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return ''

    return {
        'python': sys.version.split()[0],
        'vmwatch': vmwatch.__version__ if hasattr(vmwatch, '__version__') else _vmwatch.__version__,
        'vmwatch_build_info': _vmwatch.build_info,
        'pyvmomi': dist('pyvmomi'),
        'govmomi_pin': GOVMOMI,
        'matplotlib': dist('matplotlib'),
    }


def pin(cpu_from_end: int) -> int | None:
    """Pin this process to one CPU (counted from the end of the allowed set); None if not possible."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        cpu = cpus[-1 - cpu_from_end] if len(cpus) > cpu_from_end else cpus[-1]
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


# -- replay server (a load generator, not a vCenter double) ----------------------------------------------


def _serve_connection(conn: socket.socket, responses: dict[str, list[bytes]]) -> None:
    counters: Counter[str] = Counter()
    buf = b''
    with conn:
        while True:
            while b'\r\n\r\n' not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b'\r\n\r\n')
            lines = head.split(b'\r\n')
            path = lines[0].split(b' ')[1].decode()
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(b':')
                if k.strip().lower() == b'content-length':
                    length = int(v)
            while len(buf) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            buf = buf[length:]
            cycle = responses.get(path)
            if cycle is None:
                conn.sendall(b'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n')
                continue
            conn.sendall(cycle[counters[path] % len(cycle)])
            counters[path] += 1


def _serve(sock: socket.socket, scenarios: dict[str, tuple[str, ...]], ready: Any) -> None:
    pin(1)
    responses: dict[str, list[bytes]] = {}
    for name, files in scenarios.items():
        out = []
        for f in files:
            body = load(f)
            head = f'HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n'
            out.append(head.encode() + body)
        responses[f'/sdk/{name}'] = out
    ready.set()
    while True:
        conn, _ = sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_connection, args=(conn, responses), daemon=True).start()


class ReplayServer:
    """Serves the scenarios' payloads in turn on 127.0.0.1 from a separate process (pinned to another CPU)."""

    def __init__(self, scenarios: dict[str, tuple[str, ...]]) -> None:
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        ctx = multiprocessing.get_context('fork')
        ready = ctx.Event()
        self.proc = ctx.Process(target=_serve, args=(self.sock, scenarios, ready), daemon=True)
        self.proc.start()
        if not ready.wait(60):
            self.close()
            raise RuntimeError('replay server did not start')

    def close(self) -> None:
        self.proc.terminate()
        self.proc.join(5)
        self.sock.close()

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- replay clients ------------------------------------------------------------------------------------------


def scenario_morefs(files: tuple[str, ...]) -> list[str]:
    seen: dict[str, None] = {}
    for f in files:
        for u in _vmwatch.decode(load(f))[2]:
            seen[u[0]] = None
    return list(seen)


def fill_vmwatch_index(morefs: list[str]) -> _vmwatch.Index:
    index = _vmwatch.Index()
    for m in morefs:
        index.upsert(NS, m, unique_id=m, deleting=False, priority=0)
    return index


def vmwatch_replay(port: int, scenario: str, morefs: list[str], *, budget_s: float, fresh: bool) -> dict[str, Any]:
    """HTTP POST -> bytes -> Decider.decide -> WorkQueue.add, until the budget is spent (>= 2 responses)."""

    async def run() -> dict[str, Any]:
        index = fill_vmwatch_index(morefs)
        decider = make_decider(SETTINGS, index)
        queue: WorkQueue = WorkQueue(max_depth=1_000_000)
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
        env = wait_envelope('session[bench]propertyCollector', '', max_wait_s=0, max_object_updates=100)
        headers = {
            'Cookie': 'vmware_soap_session="bench"',
            'SOAPAction': 'urn:vim25/8.0.3.0',
            'Content-Type': 'text/xml; charset=utf-8',
            'Accept': 'text/xml',
        }
        conn.request('POST', f'/sdk/{scenario}', env, headers)  # prime: connection + first sightings untimed
        decider.decide(conn.getresponse().read())
        responses = objects = signals = pending = 0
        http_s = decide_s = enqueue_s = 0.0
        clock = time.perf_counter
        gc.collect()
        cpu0, t0 = time.process_time(), time.perf_counter()
        while True:
            ta = clock()
            conn.request('POST', f'/sdk/{scenario}', env, headers)
            body = conn.getresponse().read()
            tb = clock()
            if fresh:
                decider = make_decider(SETTINGS, index)
            batch = decider.decide(body)
            assert isinstance(batch, _vmwatch.Batch), batch
            tc = clock()
            for s in batch.signals:
                queue.add((s.namespace, s.name), priority=s.priority)
            td = clock()
            http_s += tb - ta
            decide_s += tc - tb
            enqueue_s += td - tc
            objects += batch.objects
            signals += len(batch.signals)
            pending += len(batch.pending)
            responses += 1
            elapsed = time.perf_counter() - t0
            if responses >= 2 and elapsed >= budget_s:
                break
        cpu = time.process_time() - cpu0
        conn.close()
        return {
            'responses': responses,
            'objects': objects,
            'signals': signals,
            'pending': pending,
            'seconds': elapsed,
            'cpu_s': cpu,
            'queue_depth': queue.depth,
            'bytes': len(body),
            'split_s': {'http': http_s, 'decide': decide_s, 'enqueue': enqueue_s},
        }

    return asyncio.run(run())


def _api_version() -> str:
    return str(next(iter(VmomiSupport.GetServiceVersions('vim25'))))


def baseline_replay(port: int, scenario: str, morefs: list[str], *, budget_s: float, fresh: bool) -> dict[str, Any]:
    """pyVmomi stub (POST + SoapResponseDeserializer) -> Python dedupe -> WorkQueue.add."""

    async def run() -> dict[str, Any]:
        index = {m: (NS, m, False) for m in morefs}
        stub = SoapAdapter.SoapStubAdapter(
            host='127.0.0.1',
            port=-port,
            path=f'/sdk/{scenario}',
            version=_api_version(),
            acceptCompressedResponses=False,
        )
        pc = property_collector('session[bench]propertyCollector', stub)
        opts = wait_options(max_wait_s=0, max_object_updates=100)
        queue: WorkQueue = WorkQueue(max_depth=1_000_000)

        def new() -> BaselineDecider:
            return BaselineDecider(
                watched_paths=SETTINGS.watched_paths, ignored_keys=SETTINGS.all_ignored_keys(), index=index
            )

        decider = new()
        decider.decide(pc.WaitForUpdatesEx('', opts), lambda key: None)  # prime: connection + first sightings
        responses = objects = signals = 0
        gc.collect()
        cpu0, t0 = time.process_time(), time.perf_counter()
        wait_s = dedupe_s = 0.0
        clock = time.perf_counter
        while True:
            ta = clock()
            update_set = pc.WaitForUpdatesEx('', opts)
            tb = clock()
            if fresh:
                decider = new()
            o, s = decider.decide(update_set, queue.add)
            wait_s += tb - ta
            dedupe_s += clock() - tb
            objects += o
            signals += s
            responses += 1
            elapsed = time.perf_counter() - t0
            if responses >= 2 and elapsed >= budget_s:
                break
        cpu = time.process_time() - cpu0
        stub.DropConnections()
        return {
            'responses': responses,
            'objects': objects,
            'signals': signals,
            'pending': 0,
            'seconds': elapsed,
            'cpu_s': cpu,
            'queue_depth': queue.depth,
            'split_s': {'http_and_deserialize': wait_s, 'dedupe_and_enqueue': dedupe_s},
        }

    return asyncio.run(run())


def bench_replay(*, runs: int, budget_s: float, scenarios: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    cpu = pin(0)
    out: dict[str, Any] = {'client_cpu': cpu, 'runs': runs, 'budget_s_per_run': budget_s, 'scenarios': {}}
    with ReplayServer(scenarios) as server:
        for name, files in scenarios.items():
            morefs = scenario_morefs(files)
            fresh = name == 'initial-sync'
            row: dict[str, Any] = {'payloads': list(files), 'vms': len(morefs)}
            for impl, fn in (('vmwatch', vmwatch_replay), ('baseline', baseline_replay)):
                # baseline gets the same wall budget; it completes fewer responses
                fn(server.port, name, morefs, budget_s=0.0, fresh=fresh)  # warm up (connection, first sightings)
                samples = [fn(server.port, name, morefs, budget_s=budget_s, fresh=fresh) for _ in range(runs)]
                rates = [s['objects'] / s['seconds'] for s in samples]
                row[impl] = {
                    'median_updates_per_s': statistics.median(rates),
                    'median_cpu_us_per_update': statistics.median(1e6 * s['cpu_s'] / s['objects'] for s in samples),
                    'signals_per_response': samples[-1]['signals'] / samples[-1]['responses'],
                    'median_split_share': {
                        k: statistics.median(x['split_s'][k] / x['seconds'] for x in samples)
                        for k in samples[0]['split_s']
                    },
                    'samples': samples,
                }
            row['ratio'] = row['vmwatch']['median_updates_per_s'] / row['baseline']['median_updates_per_s']
            out['scenarios'][name] = row
            print(
                f'replay {name}: vmwatch {row["vmwatch"]["median_updates_per_s"]:,.0f}/s, '
                f'baseline {row["baseline"]["median_updates_per_s"]:,.0f}/s, x{row["ratio"]:.1f}',
                file=sys.stderr,
            )
    return out


# -- memory ----------------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_child(impl: str, vms: int) -> dict[str, Any]:
    """Fill cache + index with `vms` synthetic VMs (renumbered copies of the 2,000-VM initial sync)."""
    template = load('initial-sync-2000.xml.gz')
    per_chunk = len(_vmwatch.decode(template)[2])
    chunks = -(-vms // per_chunk)
    obj = b'<obj type="VirtualMachine">vm-'
    trim()
    before = rss_bytes()
    out: dict[str, Any] = {'impl': impl, 'vms': chunks * per_chunk}
    if impl == 'vmwatch':
        index = _vmwatch.Index()
        decider = make_decider(SETTINGS, index)
        for c in range(chunks):
            body = template.replace(obj, obj + f'{c}x'.encode())
            for u in _vmwatch.decode(body, ignored_keys=())[2]:
                index.upsert(NS, u[0], unique_id=u[0], deleting=False, priority=0)
            decider.decide(body)
            del body
        trim()
        out['self_reported'] = {
            'cache_bytes': decider.cache_stats()['bytes'],
            'index_bytes': index.bytes(),
            'cache_items': decider.cache_stats()['items'],
            'index_len': len(index),
        }
    else:
        # the baseline's dicts with synthetic entries shaped as BaselineDecider builds them: moref -> {path:
        # 16-byte digest} for every watched path (all 31 are present on first sighting), uniqueID -> (ns, name,
        # deleting); deserializing 100k VMs with pyVmomi would take minutes and leave nothing else behind
        paths = SETTINGS.watched_paths
        b = BaselineDecider(watched_paths=paths, ignored_keys=SETTINGS.all_ignored_keys())
        import hashlib

        for c in range(chunks):
            for i in range(per_chunk):
                m = f'vm-{c}x{i}'
                b.index[m] = (NS, f'vm-{c}x{i}', False)
                b.cache[m] = {p: hashlib.blake2b(f'{m}{p}'.encode(), digest_size=16).digest() for p in paths}
        trim()
    after = rss_bytes()
    out['rss_before'] = before
    out['rss_after'] = after
    out['rss_bytes_per_vm'] = (after - before) / out['vms']
    if impl == 'vmwatch':
        sr = out['self_reported']
        out['self_reported_bytes_per_vm'] = (sr['cache_bytes'] + sr['index_bytes']) / out['vms']
    return out


def bench_memory(sizes: list[int]) -> dict[str, Any]:
    rows = []
    for vms in sizes:
        for impl in ('vmwatch', 'baseline'):
            cmd = [sys.executable, __file__, '--memory-child', impl, str(vms)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
            row = last_json_line(res.stdout)
            rows.append(row)
            print(f'memory {impl} {row["vms"]}: {row["rss_bytes_per_vm"]:.0f} B/VM RSS', file=sys.stderr)
    return {'method': 'RSS growth (after malloc_trim) in a fresh process per row', 'rows': rows}


# -- startup against vcsim ------------------------------------------------------------------------------------


def _prepare_vcsim(vms: int, state_dir: Path, unverified_every: int) -> tuple[Any, Any, list[tuple[Any, str]]]:
    from vmwatch.devenv import VcsimServer
    from vmwatch.vsphere import Endpoint, Session
    from vmwatch.vsphere.inventory import set_extra_config, vm_folder, vms_under

    per_cluster = max(1, vms // 4)
    args = ('-cluster', '4', '-host', '1', '-standalone-host', '0', '-vm', str(per_cluster), '-autostart=false')
    vc = VcsimServer(state_dir=state_dir, args=args).start(timeout_s=300)
    ep = Endpoint(url=vc.url, user=vc.user, password_file=vc.password_file, insecure=True)
    with Session(ep) as s:
        folder = vm_folder(s)
        listed = vms_under(s, folder)
        for i, (ref, name) in enumerate(listed):
            if i % unverified_every == 0:
                set_extra_config(s, ref, {'vmservice.namespacedName': f'{NS}/{name}'})
    return vc, ep, [(folder, 'bench-zone'), *((ref, name) for ref, name in listed)]


def _startup_once(
    impl: str, ep: Any, folder: Any, listed: list[tuple[Any, str]], unverified_every: int
) -> dict[str, Any]:
    from vmwatch.vsphere import Session, Views
    from vmwatch.vsphere.collector import Collector

    verified = {ref.value: name for i, (ref, name) in enumerate(listed) if i % unverified_every != 0}
    unverified = {name for i, (ref, name) in enumerate(listed) if i % unverified_every == 0}
    signals: Counter[tuple[str, str]] = Counter()

    async def run() -> dict[str, Any]:
        queue: WorkQueue = WorkQueue(max_depth=1_000_000)

        def enqueue(key: tuple[str, str]) -> None:
            signals[key] += 1
            queue.add(key)

        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        session = Session(ep)
        session.login()
        views = Views(session, watched_paths=SETTINGS.watched_paths)
        responses = objects = 0
        try:
            views.open({folder: ['bench-zone']})
            if impl == 'vmwatch':
                index = _vmwatch.Index()
                for i, (ref, name) in enumerate(listed):
                    index.upsert(
                        NS, name, unique_id='' if i % unverified_every == 0 else ref.value, deleting=False, priority=0
                    )
                decider = make_decider(SETTINGS, index)
                col = Collector(session, views.collector_id, max_object_updates=100, read_timeout_s=120)
                version = ''
                try:
                    while True:
                        batch = decider.decide(col.wait(version, max_wait_s=10))
                        assert isinstance(batch, _vmwatch.Batch), batch
                        for s in batch.signals:
                            enqueue((s.namespace, s.name))
                        assert not batch.pending, batch.pending
                        responses += 1
                        objects += batch.objects
                        version = batch.version or version
                        if not batch.truncated:
                            break
                finally:
                    col.close()
            else:
                index_d = {m: (NS, name, False) for m, name in verified.items()}
                by_name = {(NS, n): ('', False) for n in unverified}
                b = BaselineDecider(
                    watched_paths=SETTINGS.watched_paths,
                    ignored_keys=SETTINGS.all_ignored_keys(),
                    index=index_d,
                    by_name=by_name,
                )
                pc = property_collector(views.collector_id, session.stub)
                opts = wait_options(max_wait_s=10, max_object_updates=100)
                version = ''
                while True:
                    us = pc.WaitForUpdatesEx(version, opts)
                    o, _ = b.decide(us, enqueue)
                    responses += 1
                    objects += o
                    version = us.version if us is not None else version
                    if us is None or not us.truncated:
                        break
            seconds = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            views.close()
            session.logout()
        return {
            'seconds': seconds,
            'cpu_s': cpu_s_between(r0, r1),
            'responses': responses,
            'objects': objects,
        }

    res = asyncio.run(run())
    res['signals_verified'] = sum(c for (_, n), c in signals.items() if n not in unverified)
    res['unverified'] = len(unverified)
    res['unverified_signalled_exactly_once'] = sum(1 for n in unverified if signals.get((NS, n)) == 1)
    res['peak_rss_bytes'] = peak_rss_bytes()
    return res


def bench_startup(sizes: list[int], runs: int, unverified_every: int = 4) -> dict[str, Any]:
    rows = []
    for vms in sizes:
        with tempfile.TemporaryDirectory(prefix='vmwatch-bench-') as tmp:
            t0 = time.perf_counter()
            vc, ep, listed = _prepare_vcsim(vms, Path(tmp), unverified_every)
            prepare_s = time.perf_counter() - t0
            try:
                folder, vm_list = listed[0][0], listed[1:]
                row: dict[str, Any] = {'vms': len(vm_list), 'vcsim_prepare_s': prepare_s}
                for impl in ('vmwatch', 'baseline'):
                    samples = []
                    for _ in range(runs):
                        samples.append(_startup_once(impl, ep, folder, vm_list, unverified_every))
                    row[impl] = {
                        'median_seconds': statistics.median(s['seconds'] for s in samples),
                        'median_cpu_s': statistics.median(s['cpu_s'] for s in samples),
                        'samples': samples,
                    }
                    print(f'startup {impl} {len(vm_list)} VMs: {row[impl]["median_seconds"]:.2f} s', file=sys.stderr)
                rows.append(row)
            finally:
                vc.stop()
    return {
        'rows': rows,
        'unverified_every': unverified_every,
        'note': 'peak_rss_bytes is the process peak (both implementations run in the same process, in turn)',
    }


# -- plots ------------------------------------------------------------------------------------------------------


def plot(result: dict[str, Any], prefix: Path) -> list[str]:
    plt = pyplot()
    written = []
    rep = result.get('replay', {}).get('scenarios', {})
    if rep:
        fig, ax = plt.subplots(figsize=(7, 4))
        names = list(rep)
        for k, impl in enumerate(('vmwatch', 'baseline')):
            vals = [rep[n][impl]['median_updates_per_s'] for n in names]
            xs = [i + (k - 0.5) * 0.38 for i in range(len(names))]
            ax.bar(xs, vals, width=0.38, label=impl if impl == 'vmwatch' else 'baseline (pyVmomi)', color=COLORS[impl])
        ax.axhline(TARGETS['replay_updates_per_s'], color='grey', ls='--', lw=1, label='target 100k/s')
        ax.set_xticks(range(len(names)), names)
        ax.set_yscale('log')
        ax.set_ylabel('object updates / s (one core, log)')
        ax.set_title('Replay ceiling: HTTP + decode + decide + lookup + enqueue')
        ax.legend()
        written.append(save_figure(fig, prefix, 'throughput'))
    mem = result.get('memory', {}).get('rows', [])
    if mem:
        fig, ax = plt.subplots(figsize=(6, 4))
        for impl in ('vmwatch', 'baseline'):
            rows = [r for r in mem if r['impl'] == impl]
            ax.plot(
                [r['vms'] for r in rows],
                [r['rss_bytes_per_vm'] for r in rows],
                'o-',
                color=COLORS[impl],
                label=f'{impl} (RSS growth)',
            )
        rows = [r for r in mem if r['impl'] == 'vmwatch']
        ax.plot(
            [r['vms'] for r in rows],
            [r['self_reported_bytes_per_vm'] for r in rows],
            'x:',
            color=COLORS['vmwatch'],
            label='vmwatch (self-reported)',
        )
        ax.axhline(TARGETS['memory_bytes_per_vm'], color='grey', ls='--', lw=1, label='target 400 B/VM')
        ax.set_xscale('log')
        ax.set_xlabel('VMs')
        ax.set_ylabel('bytes / VM (fingerprint cache + index)')
        ax.set_ylim(bottom=0)
        ax.legend()
        written.append(save_figure(fig, prefix, 'memory'))
    st = result.get('startup', {}).get('rows', [])
    if st:
        written.append(plot_startup(st, prefix, 'VMs in vcsim'))
    return written


# -- main ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=ROOT / 'benches' / 'results')
    p.add_argument('--smoke', action='store_true', help='tiny sizes, a few seconds, no vcsim, no plots')
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--budget-s', type=float, default=2.0, help='wall seconds per replay run')
    p.add_argument('--memory-vms', type=int, nargs='*', default=[10_000, 100_000])
    p.add_argument('--startup-vms', type=int, nargs='*', default=None, help='default 1000 (none with --smoke)')
    p.add_argument('--startup-runs', type=int, default=3)
    p.add_argument('--skip', nargs='*', default=[], choices=['replay', 'memory', 'startup', 'plots'])
    p.add_argument('--merge', action='store_true',
                   help="keep the sections of today's result file that this run skips (re-run one part)")  # fmt: skip
    p.add_argument('--memory-child', nargs=2, metavar=('IMPL', 'VMS'), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.memory_child:
        print(json.dumps(memory_child(a.memory_child[0], int(a.memory_child[1]))))
        return 0
    scenarios = SCENARIOS
    if a.smoke:
        a.runs, a.budget_s, a.memory_vms, a.startup_runs = 1, 0.05, [2000], 1
        a.startup_vms = a.startup_vms or []
        scenarios = {k: v for k, v in SCENARIOS.items() if k != 'initial-sync'}
        a.skip = [*a.skip, 'plots']
    if a.startup_vms is None:
        a.startup_vms = [1000]
    now = dt.datetime.now(dt.UTC)
    result: dict[str, Any] = {
        'date': now.isoformat(timespec='seconds'),
        'command': ' '.join(['python', 'benches/pipeline_bench.py', *(argv if argv is not None else sys.argv[1:])]),
        'machine': machine(),
        'versions': versions(),
        'targets': TARGETS,
    }
    if 'replay' not in a.skip:
        result['replay'] = bench_replay(runs=a.runs, budget_s=a.budget_s, scenarios=scenarios)
    if 'memory' not in a.skip and a.memory_vms:
        result['memory'] = bench_memory(a.memory_vms)
    if 'startup' not in a.skip and a.startup_vms:
        os.sched_setaffinity(0, os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
        result['startup'] = bench_startup(a.startup_vms, a.startup_runs)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = f'pipeline-{now.date().isoformat()}{"-smoke" if a.smoke else ""}'
    previous = a.out / f'{stem}.json'
    if a.merge and previous.exists():
        kept = json.loads(previous.read_text())
        for section in ('replay', 'memory', 'startup'):
            if section not in result and section in kept:
                result[section] = {**kept[section], 'run': {k: kept.get(k) for k in ('date', 'command', 'machine')}}
    result['summary'] = summary(result)
    if 'plots' not in a.skip:
        result['plots'] = plot(result, a.out / stem)
    write_result(a.out, stem, result)
    return 0


def summary(result: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for name, row in result.get('replay', {}).get('scenarios', {}).items():
        s[f'replay_{name}'] = {
            'vmwatch_updates_per_s': round(row['vmwatch']['median_updates_per_s']),
            'baseline_updates_per_s': round(row['baseline']['median_updates_per_s']),
            'ratio': round(row['ratio'], 1),
            'target_met': row['vmwatch']['median_updates_per_s'] >= TARGETS['replay_updates_per_s'],
        }
    for row in result.get('memory', {}).get('rows', []):
        entry = {'rss_bytes_per_vm': round(row['rss_bytes_per_vm'])}
        if row['impl'] == 'vmwatch':
            entry['self_reported_bytes_per_vm'] = round(row['self_reported_bytes_per_vm'])
            entry['target_met'] = row['rss_bytes_per_vm'] <= TARGETS['memory_bytes_per_vm']
        s[f'memory_{row["impl"]}_{row["vms"]}'] = entry
    for row in result.get('startup', {}).get('rows', []):
        for impl in ('vmwatch', 'baseline'):
            last = row[impl]['samples'][-1]
            s[f'startup_{impl}_{row["vms"]}'] = {
                'median_seconds': round(row[impl]['median_seconds'], 2),
                'median_cpu_s': round(row[impl]['median_cpu_s'], 2),
                'signals_for_verified': last['signals_verified'],
                'unverified_signalled_exactly_once': '{}/{}'.format(
                    last['unverified_signalled_exactly_once'], last['unverified']
                ),
            }
    return s


if __name__ == '__main__':
    sys.exit(main())
