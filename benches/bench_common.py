# SPDX-License-Identifier: Apache-2.0
"""What the benchmark harnesses share: plot files, CPU time and peak RSS of a process, result files."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

IMPLS = ('vmwatch', 'baseline')
COLORS = {'vmwatch': '#1f77b4', 'baseline': '#ff7f0e'}


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, prefix: Path, suffix: str) -> str:
    """Lay out `fig`, write it as <prefix>-<suffix>.png (110 dpi) and close it; returns the file's name."""
    plt = pyplot()
    fig.tight_layout()
    path = prefix.with_name(f'{prefix.name}-{suffix}.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_startup(rows: list[dict[str, Any]], prefix: Path, xlabel: str, labels: dict[str, str] | None = None) -> str:
    """Median wall and CPU seconds to the initial sync per VM count, both implementations: <prefix>-startup.png."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    vms = [r['vms'] for r in rows]
    for impl in IMPLS:
        label = (labels or {}).get(impl, impl)
        ax.plot(vms, [r[impl]['median_seconds'] for r in rows], 'o-', color=COLORS[impl], label=f'{label} wall')
        ax.plot(vms, [r[impl]['median_cpu_s'] for r in rows], 's:', color=COLORS[impl], label=f'{label} CPU')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('seconds to initial sync processed')
    ax.set_ylim(bottom=0)
    ax.legend()
    return save_figure(fig, prefix, 'startup')


def cpu_s_between(r0: resource.struct_rusage, r1: resource.struct_rusage) -> float:
    """User + system CPU seconds between two resource.getrusage() samples."""
    return (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def peak_rss_bytes() -> int:
    """The peak RSS of this process so far (ru_maxrss counts KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def last_json_line(stdout: str | bytes) -> Any:
    """What a child process printed as JSON on the last line of its stdout."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    return json.loads(text.strip().splitlines()[-1])


def write_result(out_dir: Path, stem: str, result: dict[str, Any]) -> None:
    """Write the result as <out_dir>/<stem>.json and print its summary on stdout."""
    (out_dir / f'{stem}.json').write_text(json.dumps(result, indent=2) + '\n')
    print(json.dumps(result['summary'], indent=2))
