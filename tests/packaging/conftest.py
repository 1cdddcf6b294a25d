# SPDX-License-Identifier: Apache-2.0
"""The `artifacts` fixture: dist/ after `make wheels` (VMWATCH_DIST), else the host's wheel and the sdist built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dist_artifacts import Artifacts, build, collect


@pytest.fixture(scope='session')
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    given = os.environ.get('VMWATCH_DIST')
    if given:
        return collect(Path(given))
    out = tmp_path_factory.mktemp('dist')
    build(out)
    return collect(out)
