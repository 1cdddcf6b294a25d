# SPDX-License-Identifier: Apache-2.0
"""`vmwatch watch` end to end against vcsim, as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_watcher_sim import Sim, extra_config, wait_task

from vmwatch.devenv import VcsimServer

pytestmark = pytest.mark.servers


def watch_cmd(server: VcsimServer, *extra: str, password_file: Path | None = None) -> list[str]:
    return [
        sys.executable,
        '-m',
        'vmwatch.cli',
        'watch',
        '--vc-url',
        server.url,
        '--vc-user',
        server.user,
        '--vc-password-file',
        str(password_file or server.password_file),
        *extra,
    ]


def test_watch_prints_one_json_line_per_signal_and_stops_on_sigterm(vcsim: VcsimServer) -> None:
    sim = Sim.connect(vcsim)
    wait_task(sim.vm('c1vm1').ReconfigVM_Task(extra_config(**{'vmservice.namespacedName': 'ns-1/vm-1'})))
    proc = subprocess.Popen(
        watch_cmd(vcsim, '--vc-ca-file', str(vcsim.ca_file), '--container', str(sim.c1)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, 'PYTHONUNBUFFERED': '1'},
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line == {
            'namespace': 'ns-1',
            'name': 'vm-1',
            'moref': sim.moref('c1vm1'),
            'kind': 'enter',
            'reason': 'entered',
            'changed': line['changed'],
        }
        assert 'config.extraConfig' in line['changed']
        wait_task(sim.vm('c1vm1').ReconfigVM_Task(extra_config(**{'guestinfo.ip': '10.0.0.1'})))
        line = json.loads(proc.stdout.readline())
        assert (line['kind'], line['reason'], line['changed']) == ('modify', 'changed', ['config.extraConfig'])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.communicate()
        sim.close()


def test_watch_exits_1_with_the_reason_and_without_the_password(vcsim: VcsimServer, tmp_path: Path) -> None:
    bad = tmp_path / 'pw'
    bad.write_text('not-the-Password-42\n')
    proc = subprocess.run(
        watch_cmd(vcsim, '--vc-thumbprint', vcsim.thumbprint, '--container', 'Folder:group-d1', password_file=bad),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert 'rejected the login' in proc.stderr
    assert 'not-the-Password-42' not in proc.stderr + proc.stdout


def test_watch_refuses_bad_flags_with_exit_2(vcsim: VcsimServer) -> None:
    proc = subprocess.run(
        watch_cmd(vcsim, '--vc-ca-file', str(vcsim.ca_file)), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert '--container' in proc.stderr


def test_watch_former_flag_names_still_work_hidden_and_each_warns(vcsim: VcsimServer, tmp_path: Path) -> None:
    """`--server`, `--user`, `--password-file`, `--thumbprint` (before `run`'s vocabulary, issue 14): read (the login
    reaches vcsim, over TLS pinned by the thumbprint), each logged once as deprecated, none shown in --help."""
    bad = tmp_path / 'pw'
    bad.write_text('not-the-Password-42\n')
    argv = [sys.executable, '-m', 'vmwatch.cli', 'watch', '--server', vcsim.url, '--user', vcsim.user,
            '--password-file', str(bad), '--thumbprint', vcsim.thumbprint,
            '--container', 'Folder:group-d1']  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and 'rejected the login' in proc.stderr, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if 'is deprecated' in ln]
    assert len(warnings) == 4, warnings
    for old, new in (('server', 'vc-url'), ('user', 'vc-user'), ('password-file', 'vc-password-file'),
                     ('thumbprint', 'vc-thumbprint')):  # fmt: skip
        assert sum(f'--{old} is deprecated (issue 14): use --{new}' in w for w in warnings) == 1, (old, warnings)
    text = subprocess.run([sys.executable, '-m', 'vmwatch.cli', 'watch', '--help'], capture_output=True, text=True,
                          timeout=60, check=True).stdout  # fmt: skip
    for old in ('--server', '--user ', '--password-file', '--ca-file', '--thumbprint', '--insecure'):
        assert old not in text.replace('--vc-', '--VC-'), old
