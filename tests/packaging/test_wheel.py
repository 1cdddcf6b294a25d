# SPDX-License-Identifier: Apache-2.0
"""The wheels install where platform teams run (manylinux_2_28: RHEL/UBI 8 and newer), and work there.

The host's wheel goes into a clean venv of the system's python3.11, its dependencies from PyPI as a
user's `pip install` gets them, and also as the image installs them (the hash-pinned lock, then the
wheel alone). Each venv then runs the CLI and imports the extension from the venv, not from this tree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path

import pytest
from dist_artifacts import BIN, ROOT, Artifacts, tool_env
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

POWER_ON = ROOT / 'tests' / 'data' / 'power-on.xml'
LOCK = ROOT / 'requirements' / 'runtime.lock'
# manylinux_2_28 = glibc 2.28 (RHEL 8); an older glibc in the tag installs on more, never on fewer
NEWEST_GLIBC = (2, 28)
ARCHES = {'x86_64', 'aarch64'}
CARGO_VERSION = tomllib.loads((ROOT / 'Cargo.toml').read_text())['package']['version']
# the first test to ask for the artifacts builds them: a release build from nothing takes 1-3 min here
pytestmark = pytest.mark.timeout(900)


def _manylinux(platform_tag: str) -> tuple[tuple[int, int], str]:
    m = re.fullmatch(r'manylinux_(\d+)_(\d+)_(\w+)', platform_tag)
    assert m, f'{platform_tag} is not a PEP 600 manylinux tag'
    return (int(m.group(1)), int(m.group(2))), m.group(3)


def _dist_info(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        (path,) = [n for n in zf.namelist() if n.endswith(f'.dist-info/{name}')]
        return zf.read(path).decode()


def test_every_wheel_is_abi3_manylinux_2_28(artifacts: Artifacts) -> None:
    assert artifacts.host_wheel  # exactly one for this machine's architecture
    for wheel in artifacts.wheels:
        name, version, _, tags = parse_wheel_filename(wheel.name)
        assert (name, str(version)) == ('vmwatch', CARGO_VERSION)
        (tag,) = tags
        assert (tag.interpreter, tag.abi) == ('cp311', 'abi3'), wheel.name  # one wheel for every CPython >= 3.11
        glibc, arch = _manylinux(tag.platform)
        assert glibc <= NEWEST_GLIBC and arch in ARCHES, wheel.name
        meta = Parser().parsestr(_dist_info(wheel, 'WHEEL'))
        assert meta.get_all('Tag') == [str(tag)] and meta['Root-Is-Purelib'] == 'false', wheel.name
        with zipfile.ZipFile(wheel) as zf:
            assert 'vmwatch/_vmwatch.abi3.so' in zf.namelist(), wheel.name


def test_auditwheel_finds_no_library_outside_the_policy(artifacts: Artifacts) -> None:
    for wheel in artifacts.wheels:
        proc = subprocess.run([str(BIN / 'auditwheel'), 'show', '--json', str(wheel)], env=tool_env(),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        external = sorted(report['external_libs'])
        assert not external, f'{wheel.name} needs libraries outside the manylinux policy: {external}'
        assert not report['pure'] and not report['unsupported_isa']
        *_, (tag,) = parse_wheel_filename(wheel.name)
        assert report['overall_tag'] == tag.platform, f'auditwheel says {report["overall_tag"]} for {wheel.name}'
        # and straight from the symbols: nothing newer than glibc 2.28 is referenced
        glibc = [
            tuple(map(int, v.removeprefix('GLIBC_').split('.')[:2]))
            for versions in report['versioned_symbols'].values()
            for v in versions
            if v.startswith('GLIBC_')
        ]
        assert glibc and max(glibc) <= NEWEST_GLIBC, f'{wheel.name} references glibc {max(glibc)}'


def test_wheel_metadata_carries_the_dependency_bounds(artifacts: Artifacts) -> None:
    meta = Parser().parsestr(_dist_info(artifacts.host_wheel, 'METADATA'))
    assert meta['Requires-Python'] == '>=3.11'
    runtime = [Requirement(r) for r in meta.get_all('Requires-Dist', []) if 'extra ==' not in r]
    declared = map(Requirement, tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies'])
    assert {canonicalize_name(r.name): r.specifier for r in runtime} == {
        canonicalize_name(d.name): d.specifier for d in declared
    }


def _venv(path: Path) -> Path:
    python = shutil.which('python3.11', path=_clean_env()['PATH'])
    assert python, 'python3.11 is not on PATH'
    subprocess.run([python, '-m', 'venv', str(path)], check=True, timeout=120, env=_clean_env())
    return path / 'bin'


def _clean_env() -> dict[str, str]:
    """No trace of this tree's venv: what a user's shell would have."""
    env = tool_env()
    for var in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME'):
        env.pop(var, None)
    env['PATH'] = ':'.join(p for p in env['PATH'].split(':') if not p.startswith(str(ROOT)) and p != str(BIN))
    return env


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f'{" ".join(args)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}'
    return proc.stdout


def _check_installed(bindir: Path, cwd: Path) -> None:
    """What a user does first: help, the version, decode a response; the extension comes from the venv."""
    assert 'decode' in _run([str(bindir / 'vmwatch'), '--help'], cwd)
    assert _run([str(bindir / 'vmwatch'), '--version'], cwd).startswith(f'vmwatch {CARGO_VERSION} (profile=release')
    probe = (
        'import json, vmwatch, vmwatch._vmwatch as core;'
        'print(json.dumps([vmwatch.__version__, core.__version__, core.build_info, core.__file__]))'
    )
    version, core_version, build_info, core_file = json.loads(_run([str(bindir / 'python'), '-c', probe], cwd))
    assert version == core_version == CARGO_VERSION
    assert 'profile=release' in build_info
    assert Path(core_file).is_relative_to(bindir.parent), f'the extension was imported from {core_file}'
    lines = [json.loads(line) for line in _run([str(bindir / 'vmwatch'), 'decode', str(POWER_ON)], cwd).splitlines()]
    # the same answer as this tree's build gives
    expected = subprocess.run([str(BIN / 'vmwatch'), 'decode', str(POWER_ON)], capture_output=True, text=True,
                              check=True, timeout=60).stdout  # fmt: skip
    assert lines == [json.loads(line) for line in expected.splitlines()]
    (update,) = [u for u in lines if u['obj'] == 'vm-82']
    assert update['kind'] == 'modify' and 'summary.runtime.powerState' in update['props']


def _install_from_pypi(wheel: Path, venv: Path) -> Path:
    """A user's `pip install vmwatch-....whl`: pip resolves the dependencies from PyPI."""
    bindir = _venv(venv)
    _run([str(bindir / 'pip'), 'install', '-q', '--no-compile', str(wheel)], venv)
    return bindir


def _install_as_the_image(wheel: Path, venv: Path) -> Path:
    """The Dockerfile's runtime steps: the lock with --require-hashes --no-deps, then the wheel alone."""
    bindir = _venv(venv)
    pip = [str(bindir / 'pip'), 'install', '-q', '--no-compile', '--no-deps']
    _run([*pip, '--require-hashes', '-r', str(LOCK)], venv)
    _run([*pip, str(wheel)], venv)
    return bindir


@pytest.mark.parametrize('install', [_install_from_pypi, _install_as_the_image], ids=['pypi', 'image'])
def test_wheel_installs_into_a_clean_venv_and_runs(
    artifacts: Artifacts, install: Callable[[Path, Path], Path], tmp_path: Path
) -> None:
    bindir = install(artifacts.host_wheel, tmp_path / 'venv')
    _run([str(bindir / 'pip'), 'check'], tmp_path)  # for 'image': the lock covers everything the wheel requires
    _check_installed(bindir, tmp_path)
