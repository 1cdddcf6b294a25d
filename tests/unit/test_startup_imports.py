# SPDX-License-Identifier: Apache-2.0
"""Each command imports only what it needs (issue 13 lever 1, issue 14): checked in a fresh child process.

Timing is measured by benches/startup_bench.py, not asserted here; these tests pin which modules load.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import vmwatch
from vmwatch import cli

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ('kubernetes', 'pyVmomi', 'prometheus_client', 'yaml', 'vmwatch.service', 'vmwatch.watcher')
# `vmwatch watch` needs neither pyVmomi's pbm and vSAN health type tables nor the other commands' modules
NOT_FOR_WATCH = ('pyVmomi._typeinfo_pbm', 'pyVmomi._typeinfo_vsanhealth', 'vmwatch.run_cmd', 'vmwatch.demo')
CHILD = """
import json, sys
for name in {eager!r}:
    __import__(name)
from vmwatch.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
sys.stdout.flush()
print('\\nLOADED ' + json.dumps(sorted(m for m in {heavy!r} if sys.modules.get(m) is not None)), file=sys.stderr)
sys.exit(code)
"""


def _vmwatch(
    *args: str, eager: tuple[str, ...] = (), heavy: tuple[str, ...] = HEAVY + NOT_FOR_WATCH
) -> tuple[int, str, str, set[str]]:
    """(exit code, stdout, stderr before the report, heavy modules loaded) of `vmwatch ARGS` in a child."""
    env = {**os.environ, 'COLUMNS': '100'}
    proc = subprocess.run(
        [sys.executable, '-c', CHILD.format(eager=eager, heavy=heavy), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    err, _, loaded = proc.stderr.rpartition('\nLOADED ')
    return proc.returncode, proc.stdout, err, set(json.loads(loaded))


@pytest.mark.parametrize('args', [('--help',), ('run', '--help'), ('watch', '--help'), ('decode', '--help')])
def test_help_imports_neither_kubernetes_nor_pyvmomi_nor_the_service(args: tuple[str, ...]) -> None:
    code, out, _, loaded = _vmwatch(*args)
    assert code == 0
    assert out.startswith('usage: vmwatch')
    assert not loaded & set(HEAVY), f'`vmwatch {" ".join(args)}` imported {sorted(loaded)}'


@pytest.mark.parametrize('args', [('--help',), ('run', '--help'), ('watch', '--help'), ('decode', '--help')])
def test_help_text_is_the_same_as_with_everything_imported(args: tuple[str, ...]) -> None:
    lazy = _vmwatch(*args)
    eager = _vmwatch(*args, eager=('vmwatch.service', 'vmwatch.watcher', 'vmwatch.metrics'))
    assert 'kubernetes' in eager[3]  # the eager child really loaded them
    assert lazy[:2] == eager[:2]


def test_decode_imports_neither_kubernetes_nor_pyvmomi() -> None:
    code, out, _, loaded = _vmwatch('decode', str(ROOT / 'tests' / 'data' / 'initial-sync.xml'))
    assert code == 0
    assert json.loads(out.splitlines()[0])['obj'] == 'vm-82'  # it decoded the file
    assert loaded == set()  # not even the other commands' modules


@pytest.mark.parametrize('args', [('watch', '--help'), ('decode', str(ROOT / 'tests' / 'data' / 'initial-sync.xml'))])
def test_watch_help_and_decode_do_not_import_asyncio(args: tuple[str, ...]) -> None:
    code, _, _, loaded = _vmwatch(*args, heavy=('asyncio', 'ssl'))
    assert code == 0
    assert loaded == set()  # asyncio alone (with ssl, OpenSSL) is ~9 MiB of RSS


def test_watch_up_to_login_imports_pyvmomi_but_not_kubernetes(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: the login is refused at once
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    password = tmp_path / 'password'
    password.write_text('p\n')
    code, _, err, loaded = _vmwatch(
        'watch', '--vc-url', f'https://127.0.0.1:{port}/sdk', '--vc-user', 'u', '--vc-password-file',
        str(password), '--vc-insecure', '--container', 'Folder:group-v3',
    )  # fmt: skip
    assert code == 1, err
    assert err.splitlines()[-1].startswith('vmwatch watch: ') and 'Traceback' not in err
    assert loaded == {'pyVmomi', 'vmwatch.watcher'}  # not the pbm or vSAN health type tables, nor run_cmd


@pytest.mark.parametrize(
    'argv',
    [
        ['--help'],
        [],
        ['bogus'],
        ['--log-level', 'debug', 'watch', '--help'],
        ['--log-level=debug', 'run', '--help'],
        ['watch', '--help'],
        ['watch', '--bogus'],
        ['run', '--help'],
        ['run', '--bogus'],
        ['decode'],
        ['decode', '--help'],
        ['demo', '--help'],
        ['devenv', '--help'],
        ['devenv', 'up', '--bogus'],
    ],
)
def test_a_commands_own_parser_answers_as_the_whole_parser(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """main() builds only the parser of the command it runs; its help, errors and exit codes are the same."""
    monkeypatch.setenv('COLUMNS', '100')

    def parse(parser: argparse.ArgumentParser) -> tuple[object, str, str]:
        try:
            result: object = vars(parser.parse_args(argv))
        except SystemExit as e:
            result = e.code
        out, err = capsys.readouterr()
        return result, out, err

    whole = parse(cli.build_parser())
    own = parse(cli.build_parser(only=cli.command_of(argv)))
    assert own == whole


def test_command_of() -> None:
    assert cli.command_of(['watch', '--server', 'x']) == 'watch'
    assert cli.command_of(['--log-level', 'run', 'decode']) == 'decode'  # `run` is the level's value
    assert cli.command_of(['--log-level=DEBUG', 'devenv', 'up']) == 'devenv'
    assert cli.command_of(['-h', 'watch']) is None
    assert cli.command_of(['nope']) is None
    assert cli.command_of([]) is None


def test_import_vmwatch_is_light_and_every_public_name_resolves() -> None:
    code = (
        'import sys, vmwatch\n'
        f'print(sorted(m for m in {HEAVY + ("vmwatch._vmwatch", "vmwatch.settings")!r} if m in sys.modules))'
    )
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip() == '[]'
    for name in vmwatch.__all__:
        assert getattr(vmwatch, name) is not None
        assert name in dir(vmwatch)
    assert vmwatch.Service.__module__ == 'vmwatch.service'
    with pytest.raises(AttributeError, match='no attribute'):
        vmwatch.NoSuchThing  # noqa: B018


def test_vsphere_names_resolve_lazily() -> None:
    from vmwatch import vsphere

    for name in vsphere.__all__:
        assert getattr(vsphere, name) is not None
    with pytest.raises(AttributeError, match='no attribute'):
        vsphere.NoSuchThing  # noqa: B018


def test_version_names_the_package_and_the_core_build_and_loads_nothing_heavy() -> None:
    from vmwatch import _vmwatch as core

    code, out, _, loaded = _vmwatch('--version')
    assert code == 0
    assert out == f'vmwatch {vmwatch.__version__} ({core.build_info})\n'
    assert 'profile=' in out
    assert loaded == set()
