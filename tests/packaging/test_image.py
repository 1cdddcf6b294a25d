# SPDX-License-Identifier: Apache-2.0
"""The image's inputs are pinned: bases by digest, Python packages by version and hash (requirements/*.lock).

There is no Docker engine here to build the image (hadolint checks the Dockerfile in `make lint`);
test_wheel.py runs the runtime stage's install steps against the lock in a clean venv.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version as installed_version
from pathlib import Path

from dist_artifacts import MANYLINUX, ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

DOCKERFILE = ROOT / 'Dockerfile'
RUNTIME_LOCK = ROOT / 'requirements' / 'runtime.lock'
BUILD_LOCK = ROOT / 'requirements' / 'build.lock'
PYPROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())
FROM = re.compile(r'^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$', re.M | re.I)
PINNED_IMAGE = re.compile(r'[a-z0-9./-]+:(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}')


def _lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, hashes), refusing anything pip would not take with --require-hashes."""
    text = path.read_text().replace('\\\n', ' ')
    entries: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        line = line.split(' #', 1)[0].strip()
        if not line or line.startswith('#'):
            continue
        assert not line.startswith('-'), f'{path.name}: option line {line!r} (index, find-links, editable)'
        spec, _, rest = line.partition(' ')
        m = re.fullmatch(r'([A-Za-z0-9._-]+)==([^;\s]+)', spec)
        assert m, f'{path.name}: {spec!r} is not pinned with =='
        hashes = re.findall(r'--hash=sha256:([0-9a-f]{64})', rest)
        leftover = re.sub(r'--hash=sha256:[0-9a-f]{64}', '', rest).strip()
        assert hashes and (not leftover or leftover.startswith(';')), f'{path.name}: {spec} without sha256 hashes'
        entries[canonicalize_name(m.group(1))] = (Version(m.group(2)), hashes)
    assert entries, f'{path.name} is empty'
    return entries


def test_runtime_lock_pins_every_dependency_of_pyproject_with_hashes() -> None:
    lock = _lock(RUNTIME_LOCK)
    for dep in map(Requirement, PYPROJECT['project']['dependencies']):
        name = canonicalize_name(dep.name)
        assert name in lock, f'{dep.name} (pyproject) is not in {RUNTIME_LOCK.name}: run `make lock`'
        pinned, _ = lock[name]
        assert dep.specifier.contains(pinned, prereleases=True), f'{name}=={pinned} is outside pyproject {dep}'
    assert 'vmwatch' not in lock  # the wheel itself is installed alone, after the lock


def test_build_lock_pins_the_maturin_of_the_build_system() -> None:
    (maturin_req,) = [Requirement(r) for r in PYPROJECT['build-system']['requires'] if r.startswith('maturin')]
    pinned, _ = _lock(BUILD_LOCK)['maturin']
    assert maturin_req.specifier.contains(pinned)


def test_kubernetes_is_bounded_to_the_major_the_suite_runs() -> None:
    (dep,) = [Requirement(d) for d in PYPROJECT['project']['dependencies'] if d.startswith('kubernetes')]
    tested = Version(installed_version('kubernetes')).major
    assert dep.specifier.contains(f'{tested}.0.0') and not dep.specifier.contains(f'{tested + 1}.0.0'), dep
    assert not dep.specifier.contains(f'{tested - 1}.99.0'), f'{dep} admits a major the suite does not run'
    pinned, _ = _lock(RUNTIME_LOCK)['kubernetes']
    assert pinned.major == tested


def test_dockerfile_pins_its_bases_by_digest() -> None:
    text = DOCKERFILE.read_text()
    froms = FROM.findall(text)
    stages = {alias for _, alias in froms if alias}
    bases = [image for image, _ in froms if image not in stages]
    assert len(bases) >= 2, froms
    for image in bases:
        m = PINNED_IMAGE.fullmatch(image)
        assert m, f'{image} is not pinned as name:tag@sha256:<digest>'
        assert m['tag'] != 'latest'


def test_dockerfile_installs_python_packages_only_from_the_locks() -> None:
    text = DOCKERFILE.read_text().replace('\\\n', ' ')
    copies = dict(re.findall(r'^COPY\s+(requirements/\S+\.lock)\s+(\S+)\s*$', text, re.M))
    assert set(copies) == {'requirements/runtime.lock', 'requirements/build.lock'}
    installs = [cmd.strip() for cmd in re.findall(r'pip install ([^&\n]+)', text)]
    assert installs
    for cmd in installs:
        args = cmd.split()
        if '-r' in args:
            assert {'--require-hashes', '--no-deps'} <= set(args), cmd
            assert args[args.index('-r') + 1] in copies.values(), cmd
        else:  # the locally built wheel, alone: its dependencies came from the lock
            assert '--no-deps' in args and args[-1].endswith('.whl'), f'pip installs by name: {cmd}'
    runtime = text[text.index(copies['requirements/runtime.lock']) :]
    assert f'-r {copies["requirements/runtime.lock"]}' in runtime and '&& pip check' in runtime


def test_image_and_tests_build_the_wheel_as_make_wheels_does() -> None:
    makefile = (ROOT / 'Makefile').read_text()
    manylinux = re.search(r'^MANYLINUX \?= (\S+)$', makefile, re.M)
    recipe = re.search(r'maturin build (.+?) --target', makefile)
    assert manylinux and recipe and manylinux[1] == MANYLINUX
    flags = set(recipe[1].replace('$(MANYLINUX)', manylinux[1]).split())
    assert {'--release', '--locked', '--zig', '--compatibility', MANYLINUX} <= flags
    (image_build,) = re.findall(r'^RUN maturin build (.+)$', DOCKERFILE.read_text(), re.M)
    assert flags <= set(image_build.split()), image_build
    # the builder's zig is the one the tests build with (pyproject's test extra)
    test_extra = [Requirement(r) for r in PYPROJECT['project']['optional-dependencies']['test']]
    (zig,) = [r for r in test_extra if r.name == 'ziglang']
    assert zig.specifier.contains(_lock(BUILD_LOCK)['ziglang'][0])
