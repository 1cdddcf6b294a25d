# SPDX-License-Identifier: Apache-2.0
"""The generated docs match the code: the configuration reference and the `vmwatch run --help` snapshot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from vmwatch import docs_gen
from vmwatch.metrics import Metrics
from vmwatch.settings import ServiceSettings, env_name, flag_name

DOCS = Path(__file__).resolve().parents[2] / 'docs'
REGENERATE = 'regenerate with: python -m vmwatch.docs_gen docs'


def test_configuration_reference_is_generated_from_the_settings() -> None:
    assert (DOCS / 'configuration.md').read_text() == docs_gen.configuration_markdown(), REGENERATE


def test_every_setting_is_documented_with_flag_and_env() -> None:
    text = docs_gen.configuration_markdown()
    for f in fields(ServiceSettings):
        assert f'`{flag_name(f.name)}`' in text
        assert f'`{env_name(f.name)}`' in text


def test_cli_help_snapshot_matches_vmwatch_run_help() -> None:
    assert (DOCS / 'cli_help.txt').read_text() == docs_gen.run_help(), REGENERATE


def test_cli_help_snapshot_matches_the_real_command() -> None:
    env = {**os.environ, 'COLUMNS': str(docs_gen.HELP_COLUMNS)}
    proc = subprocess.run([sys.executable, '-m', 'vmwatch.cli', 'run', '--help'], env=env, capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip
    assert proc.stdout == (DOCS / 'cli_help.txt').read_text(), REGENERATE


def test_docs_gen_check_mode(tmp_path: Path) -> None:
    args = [str(tmp_path / 'docs'), '--deploy-dir', str(tmp_path / 'deploy')]
    assert docs_gen.main([*args, '--check']) == 1
    assert docs_gen.main(args) == 0
    assert docs_gen.main([*args, '--check']) == 0
    assert (tmp_path / 'deploy' / 'settings.env').read_text() == docs_gen.settings_env()


_SUFFIXES = {'counter': ('_total',), 'histogram': ('_bucket', '_sum', '_count'), 'gauge': ('',)}


def _metric_names() -> set[str]:
    """Every series name the exposition can carry (labelled families have no samples until first used)."""
    names = set()
    for metric in Metrics().registry.collect():
        if metric.type != 'counter':  # a counter's family name alone is no series (renamed gauges end up here)
            names.add(metric.name)
        names.update(metric.name + suffix for suffix in _SUFFIXES[metric.type])
    return names


def test_operations_and_dashboard_use_only_real_metric_names() -> None:
    known = _metric_names()
    ops = (DOCS / 'operations.md').read_text()
    dashboard = json.dumps(json.loads((DOCS / 'grafana-dashboard.json').read_text()))
    pattern = re.compile(r'\b((?:vmwatch|workqueue|leader_election)_[a-z_]+)')
    for where, text in (('operations.md', ops), ('grafana-dashboard.json', dashboard)):
        used = set(pattern.findall(text))
        assert used, where
        assert used <= known, f'{where} names metrics that do not exist: {sorted(used - known)}'
