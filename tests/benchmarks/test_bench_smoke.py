# SPDX-License-Identifier: Apache-2.0
"""A seconds-long run of benches/pipeline_bench.py with tiny sizes, so the harness cannot rot.

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
