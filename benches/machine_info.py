# SPDX-License-Identifier: Apache-2.0
"""What the benchmark reports say about the machine they ran on (shared by the harnesses)."""

from __future__ import annotations

from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ('' where there is none)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return ''
