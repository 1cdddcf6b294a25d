# SPDX-License-Identifier: Apache-2.0
"""`vmwatch watch` from exec to the initial sync, as a user runs it (issue 13's headline figure).

vcsim with N VMs (4 clusters), every VM named "bench/<vm>" in its extraConfig (vmservice.namespacedName), so
without Kubernetes each VM is one unverified `enter` signal of the initial sync. For each run a fresh
`vmwatch watch --container <vm folder>` process (the console script's code path, interpreter start included)
prints its JSON lines into a pipe; the parent counts them and, at the N-th, samples the child's CPU
(utime + stime from /proc/<pid>/stat, all threads) and peak RSS (VmHWM), then stops it. Medians of `--runs`.

    python benches/watch_sync_bench.py [--vms 1000 10000] [--runs 3] [--out benches/results]
    python benches/watch_sync_bench.py --profile 10000    # py-spy profile of one run (needs py-spy)
    python benches/watch_sync_bench.py --breakdown 10000  # CPU split: HTTP read, decode + decide, output lines

Writes benches/results/watch-sync-<date>.json (and watch-sync-<date>-profile.txt with --profile).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import write_result
from pipeline_bench import machine, versions
from vcsim_bench import NS, cpu_s, inventory, name_unverified, start_vcsim

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = 'import sys; from vmwatch.cli import main; sys.exit(main(sys.argv[1:]))'


def peak_rss_bytes(pid: int) -> int:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    return 0


def watch_args(vc: Any, folder: str, python: str = sys.executable) -> list[str]:
    """`vmwatch watch`'s flags; a build from before issue 14 calls them --server, --user, ..."""
    helps = subprocess.run([python, '-c', LAUNCH, 'watch', '--help'], capture_output=True, text=True, check=False)
    if '--vc-url' in helps.stdout:
        names = ('--vc-url', '--vc-user', '--vc-password-file', '--vc-ca-file')
    else:
        names = ('--server', '--user', '--password-file', '--ca-file')
    values = (vc.url, vc.user, str(vc.password_file), str(vc.ca_file))
    return ['watch', *(x for pair in zip(names, values, strict=True) for x in pair), '--container', folder]


def run_once(
    vc: Any,
    folder: str,
    vms: int,
    timeout_s: float = 600.0,
    prefix: list[str] | None = None,
    python: str = sys.executable,
) -> dict[str, Any]:
    """One fresh `vmwatch watch` process (of the vmwatch `python` imports) up to its `vms`-th signal line."""
    args = watch_args(vc, folder, python)
    t0 = time.perf_counter()
    cmd = [*(prefix or []), python, '-c', LAUNCH, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    pid = proc.pid
    lines = 0
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    cpu = rss = 0.0
    try:
        while lines < vms:
            if time.perf_counter() - t0 > timeout_s or proc.poll() is not None:
                err = proc.stderr.read().decode(errors='replace')[-2000:] if proc.stderr else ''
                raise RuntimeError(f'vmwatch watch gave {lines} of {vms} signals: {err}')
            if not sel.select(timeout=1.0):
                continue
            lines += os.read(proc.stdout.fileno(), 1 << 20).count(b'\n')
        wall = time.perf_counter() - t0
        if prefix is None:  # under py-spy the child is py-spy itself
            cpu, rss = cpu_s(pid), peak_rss_bytes(pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {'seconds': wall, 'cpu_s': cpu, 'peak_rss_bytes': rss, 'signals': lines}


def medians(samples: list[dict[str, Any]]) -> dict[str, Any]:
    med = {k: statistics.median(s[k] for s in samples) for k in ('seconds', 'cpu_s', 'peak_rss_bytes')}
    return {
        'median_seconds': round(med['seconds'], 3),
        'median_cpu_s': round(med['cpu_s'], 3),
        'median_peak_rss_mib': round(med['peak_rss_bytes'] / 2**20, 1),
        'samples': samples,
    }


def bench(vms: int, runs: int, tmp: Path, baseline: str | None = None) -> dict[str, Any]:
    """Medians of `runs` fresh processes; with `baseline` (another venv's python), its runs alternate with ours."""
    vc = start_vcsim(vms, tmp / f'vcsim-{vms}')
    try:
        folder, listed = inventory(vc)
        t = time.perf_counter()
        name_unverified(vc, NS, listed, 1)
        prepare_s = time.perf_counter() - t
        run_once(vc, folder, len(listed))  # warm vcsim's own caches once; not counted
        ours, theirs = [], []
        for _ in range(runs):
            ours.append(run_once(vc, folder, len(listed)))
            if baseline:
                theirs.append(run_once(vc, folder, len(listed), python=baseline))
    finally:
        vc.stop()
    row = {'vms': len(listed), **medians(ours), 'prepare_s': round(prepare_s, 1)}
    if baseline:
        row['baseline'] = {'python': baseline, **medians(theirs)}
        row['cpu_ratio_baseline_over_ours'] = round(row['baseline']['median_cpu_s'] / row['median_cpu_s'], 3)
    return row


def profile(vms: int, tmp: Path, out: Path) -> Path:
    """py-spy (sampling, native frames off) over one run; the top lines by own and total time."""
    spy = shutil.which('py-spy') or str(Path(sys.executable).with_name('py-spy'))
    vc = start_vcsim(vms, tmp / f'vcsim-{vms}')
    try:
        folder, listed = inventory(vc)
        name_unverified(vc, NS, listed, 1)
        run_once(vc, folder, len(listed))
        raw = tmp / 'profile.txt'
        spy_args = [spy, 'record', '--gil', '--format', 'raw', '-r', '250', '-o', str(raw), '--']
        run_once(vc, folder, len(listed), prefix=spy_args)
        time.sleep(1.0)  # py-spy writes its file when the child exits
    finally:
        vc.stop()
    title = 'py-spy record --gil -r 250 (Python holding the GIL only), {n} samples, vmwatch watch to the initial '
    out.write_text(profile_summary(raw, title + f'sync of {len(listed)} VMs'))
    return out


def profile_summary(raw: Path, title: str) -> str:
    """The top frames of a py-spy raw profile by own and total samples; `title` may name {n}, the samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    n = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(' ')
        c = int(count)
        n += c
        frames = stack.split(';')
        own[frames[-1]] = own.get(frames[-1], 0) + c
        for f in set(frames):
            total[f] = total.get(f, 0) + c
    lines = [title.format(n=n), '', 'own %   frame']
    lines += [f'{100 * c / n:5.1f}   {f}' for f, c in sorted(own.items(), key=lambda x: -x[1])[:25]]
    lines += ['', 'total % frame']
    lines += [f'{100 * c / n:5.1f}   {f}' for f, c in sorted(total.items(), key=lambda x: -x[1])[:40]]
    return '\n'.join(lines) + '\n'


def breakdown_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In this process: the Watcher to the initial sync, with the poll thread's CPU split into the HTTP read of
    each response and the core's decode + decide, and the event loop's CPU for the output lines."""
    import asyncio

    from vmwatch.vsphere import Endpoint, MoRef
    from vmwatch.watch_cmd import signal_json
    from vmwatch.watcher import Watcher

    acc = {'read_cpu_s': 0.0, 'decide_cpu_s': 0.0, 'bytes': 0, 'output_cpu_s': 0.0}

    class Timed(Watcher):
        def _poll(self, version: str, max_wait_s: int) -> Any:
            assert self._collector is not None
            t0 = time.thread_time()
            body = self._collector.wait(version, max_wait_s=max_wait_s)
            t1 = time.thread_time()
            out = self.decider.decide(body)
            acc['read_cpu_s'] += t1 - t0
            acc['decide_cpu_s'] += time.thread_time() - t1
            acc['bytes'] += len(body)
            return out

    async def run() -> dict[str, Any]:
        ep = Endpoint(url=spec['url'], user=spec['user'], password_file=Path(spec['password_file']),
                      ca_file=Path(spec['ca_file']))  # fmt: skip
        c0 = time.process_time()
        n = 0
        async with Timed(endpoint=ep, containers={MoRef.parse(spec['folder']): ['bench']}) as w:
            c1 = time.process_time()
            async for s in w:
                t = time.thread_time()
                lines = [signal_json(s), *(signal_json(x) for x in w.drain())]
                n += len(lines)
                acc['output_cpu_s'] += time.thread_time() - t
                if n >= spec['vms']:
                    break
            c2 = time.process_time()
        return {'login_cpu_s': c1 - c0, 'sync_cpu_s': c2 - c1, **acc}

    return asyncio.run(run())


def breakdown(vms: int, runs: int, tmp: Path) -> dict[str, Any]:
    vc = start_vcsim(vms, tmp / f'vcsim-{vms}')
    try:
        folder, listed = inventory(vc)
        name_unverified(vc, NS, listed, 1)
        spec = {'url': vc.url, 'user': vc.user, 'password_file': str(vc.password_file), 'ca_file': str(vc.ca_file),
                'folder': folder, 'vms': len(listed)}  # fmt: skip
        path = tmp / 'spec.json'
        path.write_text(json.dumps(spec))
        samples = []
        for _ in range(runs + 1):  # the first warms vcsim; not counted
            out = subprocess.run([sys.executable, __file__, '--breakdown-child', str(path)], check=True,
                                 capture_output=True, text=True, timeout=900).stdout  # fmt: skip
            samples.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        vc.stop()
    samples = samples[1:]
    med = {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]}
    med['decide_mb_per_s'] = round(med['bytes'] / 1e6 / med['decide_cpu_s'], 1)
    return {'vms': len(listed), 'median': med, 'samples': samples}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--vms', type=int, nargs='*', default=[1000, 10_000])
    p.add_argument('--runs', type=int, default=3)
    p.add_argument('--out', type=Path, default=ROOT / 'benches' / 'results')
    p.add_argument('--label', default='', help='suffix of the result file, e.g. "before"')
    p.add_argument(
        '--baseline-python', help="another build's venv python: its `vmwatch watch` runs alternate with ours"
    )
    p.add_argument('--profile', type=int, metavar='VMS', help='profile one run with py-spy instead')
    p.add_argument('--breakdown', type=int, metavar='VMS', help='split the CPU of in-process runs instead')
    p.add_argument('--breakdown-child', type=Path, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.breakdown_child:
        print(json.dumps(breakdown_child(json.loads(opts.breakdown_child.read_text()))))
        return 0
    date = dt.datetime.now(dt.UTC).strftime('%Y-%m-%d')
    stem = f'watch-sync-{date}{"-" + opts.label if opts.label else ""}'
    opts.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if opts.profile:
            print(profile(opts.profile, Path(tmp), opts.out / f'{stem}-profile.txt').read_text())
            return 0
        if opts.breakdown:
            result = {'date': date, 'machine': machine(), 'versions': versions(), 'runs': opts.runs,
                      'breakdown': breakdown(opts.breakdown, opts.runs, Path(tmp))}  # fmt: skip
            result['summary'] = result['breakdown']['median']
            write_result(opts.out, f'{stem}-breakdown', result)
            return 0
        rows = {}
        for n in opts.vms:
            rows[str(n)] = bench(n, opts.runs, Path(tmp), opts.baseline_python)
            print(f'{n:>6} VMs: { ({k: v for k, v in rows[str(n)].items() if k != "samples"}) }', file=sys.stderr)
    result = {
        'date': date,
        'machine': machine(),
        'versions': versions(),
        'runs': opts.runs,
        'rows': rows,
        'summary': {
            n: {k: v for k, v in r.items() if k != 'samples'}
            | ({'baseline': {k: v for k, v in r['baseline'].items() if k != 'samples'}} if 'baseline' in r else {})
            for n, r in rows.items()
        },
    }
    write_result(opts.out, stem, result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
