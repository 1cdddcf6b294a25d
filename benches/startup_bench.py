# SPDX-License-Identifier: Apache-2.0
"""Start-up cost of each `vmwatch` command: wall s, CPU s and peak RSS of a fresh process (median of N).

    python benches/startup_bench.py [--runs 5] [--out benches/results]

Each command runs as `python -c 'from vmwatch.cli import main; ...' ARGS` (what the `vmwatch` console
script does), so the figures include the interpreter's own start. `watch (to login)` is `vmwatch watch`
against a closed port on 127.0.0.1: it parses the flags, builds the watcher and its session, tries to
connect once (refused at once) and exits 1, so it measures everything before the first byte to vCenter.
CPU and peak RSS come from the child's rusage (os.wait4). It also records the top lines of
`python -X importtime -c 'import vmwatch'` and of the watch command, and which heavy modules each
command imported. Writes benches/results/startup-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import write_result
from machine_info import cpu_model

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = 'import sys; from vmwatch.cli import main; sys.exit(main(sys.argv[1:]))'
PROBE = (
    'import atexit, sys\n'
    'atexit.register(lambda: sys.stderr.write("\\nHEAVY " + ",".join(m for m in ("kubernetes", "pyVmomi", '
    '"prometheus_client", "yaml", "vmwatch.service") if m in sys.modules) + "\\n"))\n' + LAUNCH
)
HEAVY = ('kubernetes', 'pyVmomi', 'prometheus_client', 'yaml', 'vmwatch.service')


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def commands(password_file: Path) -> dict[str, list[str]]:
    url = f'https://127.0.0.1:{closed_port()}/sdk'
    watch = ['watch', '--vc-url', url, '--vc-user', 'u', '--vc-password-file', str(password_file), '--vc-insecure']
    return {
        'vmwatch --help': ['--help'],
        'vmwatch run --help': ['run', '--help'],
        'vmwatch watch --help': ['watch', '--help'],
        'vmwatch decode --help': ['decode', '--help'],
        'vmwatch decode tests/data/initial-sync.xml': ['decode', str(ROOT / 'tests/data/initial-sync.xml')],
        'vmwatch watch (to login)': [*watch, '--container', 'Folder:group-v3'],
    }


def run_once(args: list[str], code: str = LAUNCH) -> tuple[float, float, int, str]:
    """(wall s, CPU s, peak RSS bytes, stderr) of one child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, '-c', code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = 0  # reaped by wait4
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, err.decode(errors='replace')


def importtime_top(args: list[str], top: int) -> list[dict[str, Any]]:
    """The `top` modules with the largest cumulative import time (µs) in `python -X importtime`."""
    proc = subprocess.run(
        [sys.executable, '-X', 'importtime', *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith('import time:') or 'cumulative' in line:
            continue
        self_us, cum_us, name = line[len('import time:') :].split('|', 2)
        rows.append({'module': name.strip(), 'self_us': int(self_us), 'cumulative_us': int(cum_us)})
    rows.sort(key=lambda r: -r['cumulative_us'])
    return rows[:top]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--top', type=int, default=15, help='importtime lines to keep')
    ap.add_argument('--out', type=Path, default=ROOT / 'benches' / 'results')
    ap.add_argument('--label', default='', help='suffix of the result file, e.g. "before"')
    opts = ap.parse_args(argv)
    import vmwatch

    with tempfile.TemporaryDirectory() as tmp:
        password = Path(tmp) / 'password'
        password.write_text('p\n')
        cmds = commands(password)
        results: dict[str, Any] = {}
        for name, args in cmds.items():
            samples = [run_once(args) for _ in range(opts.runs)]
            heavy = run_once(args, PROBE)[3].rsplit('HEAVY ', 1)[-1].strip()
            results[name] = {
                'median_wall_s': round(statistics.median(s[0] for s in samples), 4),
                'median_cpu_s': round(statistics.median(s[1] for s in samples), 4),
                'median_peak_rss_mib': round(statistics.median(s[2] for s in samples) / 2**20, 1),
                'imports': [m for m in heavy.split(',') if m],
            }
            print(f'{name:45s} {results[name]}', file=sys.stderr)
        watch_args = ['-c', LAUNCH, *cmds['vmwatch watch (to login)']]
        importtime = {
            'import vmwatch': importtime_top(['-c', 'import vmwatch'], opts.top),
            'vmwatch watch (to login)': importtime_top(watch_args, opts.top),
        }
    date = datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d')
    result = {
        'machine': {
            'cpu': cpu_model(),
            'cpus': os.cpu_count(),
            'platform': platform.platform(),
            'python': platform.python_version(),
            'vmwatch': vmwatch.__version__,
        },
        'runs': opts.runs,
        'commands': results,
        'importtime_top': importtime,
        'summary': {name: {k: v for k, v in r.items() if k != 'imports'} for name, r in results.items()},
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    write_result(opts.out, f'startup-{date}{"-" + opts.label if opts.label else ""}', result)
    for line in importtime['vmwatch watch (to login)']:
        print(f'{line["cumulative_us"]:>9} us  {line["module"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
