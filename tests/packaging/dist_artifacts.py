# SPDX-License-Identifier: Apache-2.0
"""The release artifacts under test, the manylinux wheels and the sdist, and how they are built.

`make wheels` builds them into dist/ and runs these tests on them (VMWATCH_DIST points there: every
architecture's wheel is audited, the host's is installed). Otherwise, as in `make test`, the host's wheel
and the sdist are built into a temporary directory with the same maturin command; cargo's target/ is
shared with `make wheels`, so after one build of the sources a rebuild only packs the wheel.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MANYLINUX = 'manylinux_2_28'
HOST_TARGET = f'{platform.machine()}-unknown-linux-gnu'


@dataclass(frozen=True)
class Artifacts:
    wheels: tuple[Path, ...]
    sdist: Path

    @property
    def host_wheel(self) -> Path:
        """The wheel this machine can install and run."""
        (wheel,) = [w for w in self.wheels if w.name.endswith(f'_{platform.machine()}.whl')]
        return wheel


def tool_env() -> dict[str, str]:
    """The environment for the build tools: this venv's bin first (maturin finds zig there, as `make` does)."""
    return {**os.environ, 'PATH': f'{BIN}{os.pathsep}{os.environ.get("PATH", "")}'}


def build(out: Path) -> None:
    # the same command as `make wheels`, for the host's architecture only
    wheel = [str(BIN / 'maturin'), 'build', '--release', '--locked', '--zig', '--compatibility', MANYLINUX,
             '--target', HOST_TARGET, '--out', str(out)]  # fmt: skip
    sdist = [str(BIN / 'maturin'), 'sdist', '--out', str(out)]
    for cmd in (wheel, sdist):
        proc = subprocess.run(cmd, cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f'{" ".join(cmd[1:3])} failed:\n{proc.stderr[-4000:]}'


def collect(out: Path) -> Artifacts:
    wheels = tuple(sorted(out.glob('vmwatch-*.whl')))
    sdists = sorted(out.glob('vmwatch-*.tar.gz'))
    assert wheels, f'no wheel in {out}'
    assert len(sdists) == 1, f'expected one sdist in {out}, found {[p.name for p in sdists]}'
    return Artifacts(wheels=wheels, sdist=sdists[0])
