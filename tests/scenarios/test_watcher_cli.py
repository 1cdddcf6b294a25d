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
        '--server',
        server.url,
        '--user',
        server.user,
        '--password-file',
        str(password_file or server.password_file),
        *extra,
    ]


def test_watch_prints_one_json_line_per_signal_and_stops_on_sigterm(vcsim: VcsimServer) -> None:
    sim = Sim.connect(vcsim)
    wait_task(sim.vm('c1vm1').ReconfigVM_Task(extra_config(**{'vmservice.namespacedName': 'ns-1/vm-1'})))
    proc = subprocess.Popen(
        watch_cmd(vcsim, '--ca-file', str(vcsim.ca_file), '--container', str(sim.c1)),
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
        watch_cmd(vcsim, '--thumbprint', vcsim.thumbprint, '--container', 'Folder:group-d1', password_file=bad),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert 'rejected the login' in proc.stderr
    assert 'not-the-Password-42' not in proc.stderr + proc.stdout


def test_watch_refuses_bad_flags_with_exit_2(vcsim: VcsimServer) -> None:
    proc = subprocess.run(watch_cmd(vcsim, '--ca-file', str(vcsim.ca_file)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert '--container' in proc.stderr
