# SPDX-License-Identifier: Apache-2.0
"""Every numeric setting has explicit bounds, and every default lies within them (issue 11 B3)."""

from __future__ import annotations

from dataclasses import fields

from vmwatch.settings import _LIMITS, ServiceSettings


def test_every_numeric_setting_has_bounds_that_hold_its_default() -> None:
    for f in fields(ServiceSettings):
        if str(f.type) not in ('int', 'float'):
            continue
        assert f.name in _LIMITS, f'add ({f.name!r}: (lowest, highest)) to settings._LIMITS'
        low, high = _LIMITS[f.name]
        assert 0 <= low <= f.default <= high < 1e9, f.name
