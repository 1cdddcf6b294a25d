# SPDX-License-Identifier: Apache-2.0
"""Decode throughput, side by side on the same bytes (issue 3's benchmark).

For every payload (benches/data/*.xml.gz from `benches/capture.py bench`, plus the small vcsim
captures in tests/data) it measures, pinned to one CPU:

* vmwatch: `Decider.decide(body)` (decode + decide; a fresh Decider per run, so every VM is a
  first sighting: the most work),
* pyVmomi: `SoapResponseDeserializer.Deserialize(body, UpdateSet)` (what pyVmomi does with every
  response),
* govmomi v0.56.0: benches/govmomi_decode (vim25/xml + the vim25 type registry, as
  soap.Client does), GOMAXPROCS=1,
* expat: `xml.parsers.expat` parsing the bytes with no handlers (a floor for "just reading XML"),

and writes medians, MB/s and ratios to benches/results/decode-<date>.json.

With `--baseline-python PY` (the interpreter of another build's venv, e.g. main's), that build's
`Decider.decide` runs in a child process on the same CPU, interleaved run by run with this build's,
and each payload gets the ratio of this build's speed to the baseline's. This build's `decide` then
runs in a child process of its own too, started the same way: both builds are timed under the same
conditions (this process also parses every payload with pyVmomi, whose garbage would otherwise
leave only this build's heap fragmented after the large payloads). Each vmwatch run is timed
twice: wall seconds (`perf_counter`) and the thread's CPU seconds (`thread_time`, which other
processes on a shared machine disturb far less); both medians and both ratios are reported.

A single timed call starts with the caches the other runs left (cold): for a body of a few KB that is
the latency of one response after other work, not throughput. So each build also decides small
bodies in bursts (about 2 MB of input in a row, at most 100, each on a fresh Decider built outside
the timing): seconds per decide of a burst, the throughput of a stream of such bodies. For a body of
1 MB or more a burst is the single call.

    python benches/decode_bench.py [--quick] [--out benches/results] [--baseline-python PY]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import gzip
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.parsers import expat

from pyVmomi import SoapAdapter, vmodl

from machine_info import cpu_model
from vmwatch import _vmwatch
from vmwatch.settings import DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, DEFAULT_WATCHED_PATHS

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {'mb_per_s': 300.0, 'vs_pyvmomi': 30.0, 'vs_govmomi': 6.0, 'vs_expat': 1.2}
UPDATE_SET = vmodl.query.PropertyCollector.UpdateSet


def pin_one_cpu() -> int | None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        cpu = cpus[-1]
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


def median_of(fn: Callable[[], Any], *, runs: int, budget_s: float) -> tuple[float, int]:
    """Median seconds of `fn` over `runs` runs (fewer if the budget runs out, at least 3)."""
    samples: list[float] = []
    started = time.perf_counter()
    for i in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() - started > budget_s:
            break
    return statistics.median(samples), len(samples)


def load(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == '.gz' else data


def payloads() -> list[Path]:
    found = sorted((ROOT / 'benches' / 'data').glob('*.xml.gz'))
    small = [ROOT / 'tests' / 'data' / n for n in ('initial-sync.xml', 'power-on.xml')]
    return found + small


def build_go(tmp: Path) -> Path | None:
    go = shutil.which('go')
    if go is None:
        return None
    exe = tmp / 'govmomi_decode'
    env = {**os.environ, 'GOFLAGS': '-mod=mod', 'CGO_ENABLED': '0'}
    subprocess.run([go, 'build', '-o', str(exe), '.'], cwd=ROOT / 'benches' / 'govmomi_decode', env=env, check=True)
    return exe


def run_go(exe: Path, files: list[Path], runs: int, cpu: int | None) -> dict[str, dict[str, Any]]:
    env = {**os.environ, 'GOMAXPROCS': '1'}
    cmd = [str(exe), '-n', str(runs), *map(str, files)]
    if cpu is not None and shutil.which('taskset'):
        cmd = ['taskset', '-c', str(cpu), *cmd]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return {json.loads(line)['file']: json.loads(line) for line in out.splitlines()}


def machine() -> dict[str, Any]:
    model = cpu_model()
    mem = ''
    try:
        mem = Path('/proc/meminfo').read_text().splitlines()[0].split(':', 1)[1].strip()
    except OSError:
        pass
    return {'cpu': model, 'cores': os.cpu_count(), 'memory': mem, 'os': platform.platform()}


def versions() -> dict[str, str]:
    def cmd(*args: str) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ''

    return {
        'python': sys.version.split()[0],
        'pyvmomi': importlib.metadata.version('pyvmomi'),
        'vmwatch': _vmwatch.__version__,
        'vmwatch_build': _vmwatch.build_info,
        'rustc': cmd('rustc', '--version'),
        'go': cmd('go', 'version'),
        'govmomi': 'v0.56.0',
        'expat': expat.EXPAT_VERSION,
    }


def new_decider() -> Any:
    ignored = tuple(DEFAULT_IGNORED_EXTRA_CONFIG_KEYS)
    return _vmwatch.Decider(index=_vmwatch.Index(), watched_paths=DEFAULT_WATCHED_PATHS, ignored_keys=ignored)


def time_decide(body: bytes) -> tuple[float, float]:
    """Wall and thread-CPU seconds of one `decide` on a fresh Decider (built outside the timing)."""
    d = new_decider()
    t0, c0 = time.perf_counter(), time.thread_time()
    d.decide(body)
    return time.perf_counter() - t0, time.thread_time() - c0


def burst_reps(body: bytes) -> int:
    """Decides per burst: about 2 MB of input (1 for a large body, at most 100)."""
    return max(1, min(100, 2_000_000 // max(1, len(body))))


def time_burst(body: bytes, reps: int) -> tuple[float, float]:
    """Wall and thread-CPU seconds per `decide` of `reps` in a row, each on its own fresh Decider
    (all built outside the timing): the throughput of a stream of such bodies, caches warm."""
    ds = [new_decider() for _ in range(reps)]
    t0, c0 = time.perf_counter(), time.thread_time()
    for d in ds:
        d.decide(body)
    return (time.perf_counter() - t0) / reps, (time.thread_time() - c0) / reps


class DecideServer:
    """A build's `Decider.decide`, timed in a child process (`--serve` mode of this script)."""

    def __init__(self, python: str, cpu: int | None) -> None:
        cmd = [python, str(Path(__file__).resolve()), '--serve']
        if cpu is not None and shutil.which('taskset'):
            cmd = ['taskset', '-c', str(cpu), *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.info: dict[str, Any] = self.call({'op': 'info'})

    def call(self, req: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + '\n')
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError('the baseline process ended')
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def serve() -> int:
    """Child side of `DecideServer`: one JSON request per line on stdin, one JSON answer per line.

    The collector runs once per payload, when it is loaded, and is off while it is timed: a
    collection right before a timed call (as this did until 2026-12-04) walks every object of the
    process, pyVmomi's included, and leaves the call's caches cold; for a body of a few KB that
    was most of the time measured, for either build."""
    bodies: dict[str, bytes] = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req['op'] == 'info':
            out: Any = {'vmwatch': _vmwatch.__version__, 'vmwatch_build': _vmwatch.build_info, 'python': sys.executable}
        elif req['op'] == 'load':
            gc.enable()
            bodies = {req['path']: load(Path(req['path']))}
            result = new_decider().decide(bodies[req['path']])
            out = {'objects': result.objects, 'changes': result.changes}
            del result
            gc.collect()
            gc.disable()
        else:
            reps = req.get('reps', 1)
            body = bodies[req['path']]
            out = time_decide(body) if reps == 1 else time_burst(body, reps)
        sys.stdout.write(json.dumps(out) + '\n')
        sys.stdout.flush()
    return 0


def med(samples: list[float]) -> float:
    return statistics.median(samples)


def sample(server: DecideServer | None, path: Path, body: bytes, reps: int) -> tuple[tuple[float, float], float]:
    """One single call (wall and CPU seconds) and the wall seconds per call of a burst (the single
    call itself when `reps` is 1), in `server`'s process or in this one."""
    req = {'op': 'time', 'path': str(path)}
    single = tuple(server.call(req)) if server is not None else time_decide(body)
    if reps == 1:
        return single, single[0]
    burst = server.call({**req, 'reps': reps}) if server is not None else time_burst(body, reps)
    return single, burst[0]


def bench_one(
    path: Path,
    body: bytes,
    quick: bool,
    baseline: DecideServer | None = None,
    this: DecideServer | None = None,
) -> dict[str, Any]:
    mb = len(body) / 1e6
    result = new_decider().decide(body)
    assert isinstance(result, _vmwatch.Batch), result
    # the same objects as pyVmomi sees (correctness once, before timing)
    us = SoapAdapter.SoapResponseDeserializer(None).Deserialize(body, UPDATE_SET)
    assert sum(len(fs.objectSet) for fs in us.filterSet) == result.objects
    for server in (baseline, this):
        if server is not None:
            b = server.call({'op': 'load', 'path': str(path)})
            assert (b['objects'], b['changes']) == (result.objects, result.changes), (path, b)

    # vmwatch, expat (and the baseline) take turns run by run, so load changes on a shared machine
    # hit them alike
    vm_wall: list[float] = []
    vm_cpu: list[float] = []
    base_wall: list[float] = []
    base_cpu: list[float] = []
    ex_samples: list[float] = []
    # bursts (small bodies): seconds per decide of several in a row, caches warm
    reps = burst_reps(body)
    vm_burst: list[float] = []
    base_burst: list[float] = []
    order = ['vm', 'ex', *(['base'] if baseline is not None else [])]
    gc.collect()
    gc.disable()  # no collection in the middle of a timed run (and none right before one)
    try:
        for i in range(7 if quick else 31):
            for which in order[i % len(order) :] + order[: i % len(order)]:
                if which == 'vm':
                    (w, c), burst = sample(this, path, body, reps)
                    vm_wall.append(w)
                    vm_cpu.append(c)
                    vm_burst.append(burst)
                elif which == 'base':
                    assert baseline is not None
                    (w, c), burst = sample(baseline, path, body, reps)
                    base_wall.append(w)
                    base_cpu.append(c)
                    base_burst.append(burst)
                else:
                    p = expat.ParserCreate()
                    t0 = time.perf_counter()
                    p.Parse(body, True)
                    ex_samples.append(time.perf_counter() - t0)
                    del p
    finally:
        gc.enable()
    vm_s = med(vm_wall)
    ex_s, ex_n = med(ex_samples), len(ex_samples)

    def pyvmomi_run() -> None:
        SoapAdapter.SoapResponseDeserializer(None).Deserialize(body, UPDATE_SET)

    py_s, py_n = median_of(pyvmomi_run, runs=3 if quick else 7, budget_s=30 if quick else 90)
    return {
        'payload': path.name.removesuffix('.gz'),
        'bytes': len(body),
        'objects': result.objects,
        'changes': result.changes,
        'vmwatch': {
            'median_s': vm_s,
            'mb_per_s': mb / vm_s,
            'runs': len(vm_wall),
            'median_cpu_s': med(vm_cpu),
            'cpu_mb_per_s': mb / med(vm_cpu),
            'burst': {'reps': reps, 'median_s': med(vm_burst), 'mb_per_s': mb / med(vm_burst)},
        },
        'pyvmomi': {'median_s': py_s, 'mb_per_s': mb / py_s, 'runs': py_n},
        'expat': {'median_s': ex_s, 'mb_per_s': mb / ex_s, 'runs': ex_n},
        **(
            {
                'baseline': {
                    'median_s': med(base_wall),
                    'mb_per_s': mb / med(base_wall),
                    'runs': len(base_wall),
                    'median_cpu_s': med(base_cpu),
                    'cpu_mb_per_s': mb / med(base_cpu),
                    'burst': {'reps': reps, 'median_s': med(base_burst), 'mb_per_s': mb / med(base_burst)},
                }
            }
            if base_wall
            else {}
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='fewer runs (a smoke test of the harness)')
    ap.add_argument('--out', type=Path, default=ROOT / 'benches' / 'results')
    ap.add_argument(
        '--baseline-python',
        metavar='PY',
        help="another build's venv interpreter: its Decider is timed in the same run, interleaved",
    )
    ap.add_argument('--no-go', action='store_true', help='skip govmomi (no Go toolchain, or no time)')
    ap.add_argument('--only', metavar='TEXT', help='only the payloads whose file name contains TEXT')
    ap.add_argument('--serve', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        return serve()
    cpu = pin_one_cpu()
    baseline = DecideServer(a.baseline_python, cpu) if a.baseline_python else None
    this = DecideServer(sys.executable, cpu) if baseline is not None else None
    rows = []
    files = [p for p in payloads() if a.only is None or a.only in p.name]
    if not files:
        ap.error(f'no payload matches --only {a.only!r}')
    with tempfile.TemporaryDirectory() as tmp:
        exe = None if a.no_go else build_go(Path(tmp))
        go = run_go(exe, files, 3 if a.quick else 10, cpu) if exe else {}
    for path in files:
        body = load(path)
        row = bench_one(path, body, a.quick, baseline, this)
        g = go.get(str(path))
        if g:
            assert g['objects'] == row['objects'], (path, g['objects'], row['objects'])
            row['govmomi'] = {'median_s': g['median_s'], 'mb_per_s': g['mb_per_s'], 'runs': g['runs']}
        v = row['vmwatch']['median_s']
        row['ratios'] = {
            'vs_pyvmomi': row['pyvmomi']['median_s'] / v,
            'vs_expat': row['expat']['median_s'] / v,
            **({'vs_govmomi': row['govmomi']['median_s'] / v} if 'govmomi' in row else {}),
            **(
                {
                    'vs_baseline': row['baseline']['median_s'] / v,
                    'vs_baseline_cpu': row['baseline']['median_cpu_s'] / row['vmwatch']['median_cpu_s'],
                    'vs_baseline_burst': row['baseline']['burst']['median_s'] / row['vmwatch']['burst']['median_s'],
                }
                if 'baseline' in row
                else {}
            ),
        }
        row['targets_met'] = {
            'mb_per_s': row['vmwatch']['mb_per_s'] >= TARGETS['mb_per_s'],
            **{k: row['ratios'][k] >= t for k, t in TARGETS.items() if k in row['ratios']},
        }
        rows.append(row)
        print(table_row(row), flush=True)
    report = {
        'date': dt.datetime.now(dt.UTC).isoformat(timespec='seconds'),
        'machine': {**machine(), 'pinned_cpu': cpu},
        'versions': versions(),
        'targets': TARGETS,
        'method': 'median seconds per run on the same bytes; vmwatch = decode + decide with a fresh Decider'
        + ('; this build and the baseline each in a child process, interleaved' if this is not None else ''),
        **({'baseline': {**baseline.info, 'python': a.baseline_python}} if baseline is not None else {}),
        'payloads': rows,
    }
    for server in (baseline, this):
        if server is not None:
            server.close()
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / f'decode-{dt.date.today().isoformat()}.json'
    out.write_text(json.dumps(report, indent=2) + '\n')
    print(f'wrote {out}', file=sys.stderr)
    return 0


def table_row(r: dict[str, Any]) -> str:
    nan = float('nan')
    g = r.get('govmomi', {}).get('mb_per_s', nan)
    ratios = r['ratios']
    row = (
        f'| {r["payload"]} | {r["bytes"] / 1e6:.2f} MB | {r["objects"]} | {r["vmwatch"]["mb_per_s"]:.0f} | '
        f'{r["pyvmomi"]["mb_per_s"]:.1f} | {g:.1f} | {r["expat"]["mb_per_s"]:.0f} | '
        f'{ratios["vs_pyvmomi"]:.0f}x | {ratios.get("vs_govmomi", nan):.1f}x | {ratios["vs_expat"]:.2f}x |'
    )
    if 'baseline' in r:
        row += (
            f' {r["baseline"]["mb_per_s"]:.0f} | {ratios["vs_baseline"]:.2f}x |'
            f' {r["vmwatch"]["cpu_mb_per_s"]:.0f} / {r["baseline"]["cpu_mb_per_s"]:.0f} |'
            f' {ratios["vs_baseline_cpu"]:.2f}x | {ratios["vs_baseline_burst"]:.2f}x |'
        )
    return row


if __name__ == '__main__':
    sys.exit(main())
