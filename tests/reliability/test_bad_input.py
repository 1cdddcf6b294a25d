# SPDX-License-Identifier: Apache-2.0
"""Bad input to the real CLI (issue 11 B3, C1, C2): exit 2 with one line on stderr, no traceback, no secret.

Each case runs `python -m vmwatch.cli` as a user would; `run` gets a real kubeconfig where the case needs to
get past loading it (a health port in use is only found once the process tries to listen).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from vmwatch import cli
from vmwatch.devenv import KubeServer, VcsimServer
from vmwatch.settings import ServiceSettings, flag_name
from vmwatch.vsphere import Endpoint, Session
from vmwatch.vsphere import inventory as inv

if TYPE_CHECKING:
    from conftest import Recorder

VMWATCH = [sys.executable, '-m', 'vmwatch.cli']
NUMERIC = [f.name for f in fields(ServiceSettings) if str(f.type) in ('int', 'float')]
ZERO_MEANS_OFF = {'shutdown_grace_s', 'checkpoint_interval_s'}  # 0 is a documented value of these


def _run(args: list[str], env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VMWATCH, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout_s, check=False)  # fmt: skip


def _one_line_exit_2(proc: subprocess.CompletedProcess[str], *, names: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert names in lines[0], lines[0]


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    pw = tmp_path / 'pw'
    pw.write_text('x\n')
    return {
        'VMWATCH_VC_URL': 'https://127.0.0.1:1/sdk',
        'VMWATCH_VC_USER': 'u',
        'VMWATCH_VC_PASSWORD_FILE': str(pw),
        'VMWATCH_KUBECONFIG': str(tmp_path / 'no-kubeconfig'),  # a setting that passes would fail here instead
    }


def test_b3_every_numeric_setting_refuses_zero_negative_nan_inf_and_absurd(
    base_env: dict[str, str], capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    for key, value in base_env.items():
        monkeypatch.setenv(key, value)
    root = logging.getLogger()  # cli.main configures the root logger: give this process's back afterwards
    monkeypatch.setattr(root, 'handlers', list(root.handlers))
    monkeypatch.setattr(root, 'level', root.level)
    refused = 0
    for name in NUMERIC:
        flag = flag_name(name)
        values = ['-1', 'nan', 'inf', '-inf', '1e12'] + ([] if name in ZERO_MEANS_OFF else ['0'])
        for value in values:
            assert cli.main(['run', f'{flag}={value}']) == 2, (flag, value)  # the CLI's own code, in-process
            err = capfd.readouterr().err
            assert err.count('\n') == 1 and flag in err and 'Traceback' not in err, (flag, value, err)
            refused += 1
    # the flags of `vmwatch watch`, and two cases as separate processes
    for args in (['--max-wait-s', '0'], ['--max-wait-s', '99999'], ['--max-object-updates', '-5']):
        proc = _run(['watch', '--vc-url', 'https://127.0.0.1:1/sdk', '--vc-user', 'u', '--vc-password-file',
                     base_env['VMWATCH_VC_PASSWORD_FILE'], '--container', 'Folder:group-v3', *args], {})  # fmt: skip
        _one_line_exit_2(proc, names=args[0])
    _one_line_exit_2(_run(['run', '--restart-initial-s', '0'], base_env), names='--restart-initial-s')
    _one_line_exit_2(_run(['run'], {**base_env, 'VMWATCH_RESTART_MAX_S': 'nan'}), names='--restart-max-s')
    recorder.record(
        'B3',
        did=f'each of the {len(NUMERIC)} numeric settings of `vmwatch run` ({refused} cases) and the numeric flags '
        'of `vmwatch watch` refuse zero (where 0 has no meaning), negative, NaN, infinite and absurd values at '
        'start: exit 2, one line naming the flag and the allowed range (`--restart-initial-s 0` no longer gives '
        'hundreds of logins per second)',
        lost=0,
        test='test_bad_input.py::test_b3_every_numeric_setting_refuses_zero_negative_nan_inf_and_absurd',
    )


def _vmwatch_sessions(session: Session) -> set[str]:
    """Keys of every vCenter session but the test's own (vcsim's session cookie is the session key)."""
    manager = session.content.sessionManager
    own = manager.currentSession.key
    return {s.key for s in manager.sessionList if s.key != own}


def test_c1_watch_at_debug_never_shows_the_session_key(vcsim: VcsimServer, tmp_path: Path, recorder: Recorder) -> None:
    session = Session(Endpoint(url=vcsim.url, user=vcsim.user, password_file=vcsim.password_file,
                               ca_file=vcsim.ca_file))  # fmt: skip
    session.login()
    try:
        folder = inv.vm_folder(session)
        vm = inv.vms_under(session, folder)[0][0]
        inv.set_extra_config(session, vm, {'vmservice.namespacedName': 'ns-1/vm-1'})
        err_path = tmp_path / 'watch.err'
        with err_path.open('wb') as err:
            proc = subprocess.Popen(
                [*VMWATCH, '--log-level', 'DEBUG', 'watch', '--vc-url', vcsim.url, '--vc-user', vcsim.user,
                 '--vc-password-file', str(vcsim.password_file), '--vc-ca-file', str(vcsim.ca_file),
                 '--container', str(folder)],
                stdout=subprocess.PIPE, stderr=err,
            )  # fmt: skip
            try:
                assert proc.stdout is not None
                first = json.loads(proc.stdout.readline())  # watching: its session exists now
                keys = _vmwatch_sessions(session)
                inv.set_extra_config(session, vm, {'guestinfo.c1': str(time.time_ns())})
                second = proc.stdout.readline()
                proc.send_signal(signal.SIGTERM)
                rest = proc.communicate(timeout=30)[0]
            finally:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0 and first['name'] == 'vm-1' and second
        logs = err_path.read_text()
        out = json.dumps(first) + second.decode() + rest.decode()
        assert keys and all(len(k) > 8 for k in keys)
        for key in keys:
            assert key not in logs and key not in out, 'the session key leaked'
        assert ' DEBUG ' in logs and 'session[<redacted>]' in logs, logs[-3000:]  # the collector id was logged
    finally:
        session.logout()
    # a URL carrying user:password is refused without echoing it, by both commands
    secret = 'S3cret-' + str(time.time_ns())
    url = f'https://admin:{secret}@127.0.0.1:1/sdk'
    pw = tmp_path / 'pw'
    pw.write_text('x\n')
    watch = _run(
        ['watch', '--vc-url', url, '--vc-user', 'u', '--vc-password-file', str(pw), '--container', 'Folder:f'], {}
    )
    run = _run(['run', '--vc-url', url, '--vc-user', 'u', '--vc-password-file', str(pw)], {})
    for proc in (watch, run):
        _one_line_exit_2(proc, names='user info')
        assert secret not in proc.stderr + proc.stdout
    recorder.record(
        'C1',
        did='`vmwatch --log-level DEBUG watch` against vcsim logs the collector id redacted; the session key '
        '(read from vcsim) is nowhere in stdout or stderr; `watch --vc-url` / `run --vc-url` with user:password '
        'exit 2 without echoing the password',
        lost=0,
        test='test_bad_input.py::test_c1_watch_at_debug_never_shows_the_session_key',
    )


def test_c2_no_traceback_for_bad_input(
    kube_server: KubeServer, base_env: dict[str, str], tmp_path: Path, recorder: Recorder
) -> None:
    real = {**base_env, 'VMWATCH_KUBECONFIG': str(kube_server.kubeconfig)}
    garbage = tmp_path / 'garbage.pem'
    garbage.write_text('-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n')
    watch = ['watch', '--vc-url', 'https://127.0.0.1:1/sdk', '--vc-user', 'u', '--vc-password-file',
             base_env['VMWATCH_VC_PASSWORD_FILE'], '--container', 'Folder:group-v3']  # fmt: skip
    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    port_in_use = busy.getsockname()[1]
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (['run', '--health-probe-bind-address', '127.0.0.1:notaport'], real, '--health-probe-bind-address'),
        (['run', '--health-probe-bind-address', '127.0.0.1:70000'], real, '--health-probe-bind-address'),
        (['run', '--health-probe-bind-address', 'no-such-host.invalid:8081'], real, '--health-probe-bind-address'),
        (['run', '--health-probe-bind-address', f'127.0.0.1:{port_in_use}'], real, '--health-probe-bind-address'),
        (['run', '--metrics-bind-address', '127.0.0.1:notaport'], real, '--metrics-bind-address'),
        (
            ['run', '--health-probe-bind-address', '127.0.0.1:0', '--metrics-bind-address', f'127.0.0.1:{port_in_use}'],
            real,
            '--metrics-bind-address',
        ),  # fmt: skip
        (['run', '--watched-paths-remove', 'guest.net'], real, '--watched-paths-remove'),
        (['--log-level', 'bogus', 'decode', 'x'], {}, '--log-level'),
        (['run', '--log-level', 'bogus'], real, '--log-level'),
        (['run', '--vc-ca-file', str(tmp_path / 'missing.pem')], real, '--vc-ca-file'),
        (['run', '--vc-ca-file', str(garbage)], real, '--vc-ca-file'),
        ([*watch, '--vc-ca-file', str(tmp_path / 'missing.pem')], {}, '--vc-ca-file'),
        ([*watch, '--vc-ca-file', str(garbage)], {}, '--vc-ca-file'),
        (['run', '--cache-ttl-s', 'nan'], real, '--cache-ttl-s'),
        (['run', '--workers', 'many'], real, '--workers'),
        (['run', '--vc-thumbprint', 'AA:BB'], real, '--vc-thumbprint'),
        (['run', '--annotation', 'not a key!'], real, '--annotation'),
        ([*watch, '--max-wait-s', 'soon'], {}, '--max-wait-s'),
        (['demo', '--vms', 'many'], {}, '--vms'),
        (['demo', '--vms', '0'], {}, '--vms'),
        (['decode', str(tmp_path / 'missing.xml')], {}, 'missing.xml'),
        (['frobnicate'], {}, 'frobnicate'),
    ]
    try:
        for args, env, names in cases:
            _one_line_exit_2(_run(args, env), names=names)
    finally:
        busy.close()
    recorder.record(
        'C2',
        did=f'{len(cases)} kinds of bad input through the real CLI (a bad or busy probe or metrics address, '
        'a removal of a path not watched, --log-level bogus, '
        'a missing or garbage CA file, NaN and garbage numbers, a bad thumbprint or annotation, unknown '
        'commands): each exits 2 with one line on stderr naming the flag, no traceback',
        lost=0,
        test='test_bad_input.py::test_c2_no_traceback_for_bad_input',
    )
