# SPDX-License-Identifier: Apache-2.0
"""The sdist is the package's sources (and their tests and docs), not the repository's benchmark output."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest
from dist_artifacts import ROOT, Artifacts, tool_env

# the first test to ask for the artifacts builds them: a release build from nothing takes 1-3 min here
pytestmark = pytest.mark.timeout(900)

NEEDED = {'Cargo.toml', 'Cargo.lock', 'pyproject.toml', 'README.md', 'rust/lib.rs', 'python/vmwatch/__init__.py'}
IMAGES = {'.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp'}
NOT_SHIPPED = ('benches/', 'deploy/', '.ci/', 'fuzz/', 'target/', 'dist/', 'test-logs/')
REPO_ONLY = {'Dockerfile', '.dockerignore', '.gitignore', 'Makefile'}
# the largest source file today is rust/decode.rs (~60 KB); a recorded payload or a picture is bigger
MAX_FILE_BYTES = 256 * 1024


def _members(sdist: Path) -> dict[str, int]:
    with tarfile.open(sdist) as tf:
        top = f'{sdist.name.removesuffix(".tar.gz")}/'
        return {m.name.removeprefix(top): m.size for m in tf.getmembers() if m.isfile()}


def _tracked(*dirs: str) -> set[str]:
    out = subprocess.run(['git', 'ls-files', '--', *dirs], cwd=ROOT, capture_output=True, text=True, check=True)
    return {line for line in out.stdout.splitlines() if (ROOT / line).is_file()}


def test_sdist_carries_no_benchmark_images_or_other_repository_files(artifacts: Artifacts) -> None:
    files = _members(artifacts.sdist)
    images = sorted(f for f in files if PurePosixPath(f).suffix.lower() in IMAGES)
    assert not images, f'images in the sdist: {images}'
    stray = sorted(f for f in files if f.startswith(NOT_SHIPPED))
    assert not stray, f'not part of the package: {stray}'
    assert not REPO_ONLY & set(files)
    big = sorted((f, n) for f, n in files.items() if n > MAX_FILE_BYTES)
    assert not big, f'large files in the sdist: {big}'


def test_sdist_carries_every_source_the_build_and_the_tests_use(artifacts: Artifacts) -> None:
    files = set(_members(artifacts.sdist))
    assert NEEDED <= files, sorted(NEEDED - files)
    missing = _tracked('rust', 'python', 'tests') - files
    assert not missing, f'tracked sources missing from the sdist: {sorted(missing)}'
    assert 'PKG-INFO' in files


def test_sdist_manifest_and_lock_are_complete(artifacts: Artifacts, tmp_path: Path) -> None:
    """cargo takes the unpacked sdist's manifest (as maturin rewrote it: no bench target) with its lock as is."""
    with tarfile.open(artifacts.sdist) as tf:
        tf.extractall(tmp_path, filter='data')
    (src,) = tmp_path.iterdir()
    proc = subprocess.run(['cargo', 'fetch', '--locked'], cwd=src, env=tool_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
