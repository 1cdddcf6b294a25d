# SPDX-License-Identifier: Apache-2.0
"""Small shared types mirrored from the Rust core."""

from __future__ import annotations

from enum import IntEnum

__all__ = ['Kind']


class Kind(IntEnum):
    """Kind of an object update (`ObjectUpdate.kind`).

    Must match the KIND_* constants of rust/decode.rs (exported as `vmwatch._vmwatch.KIND_*`);
    tests/unit/test_core.py asserts it.
    """

    ENTER = 0
    MODIFY = 1
    LEAVE = 2

    @property
    def label(self) -> str:
        """The vSphere spelling: 'enter', 'modify', 'leave'."""
        return self.name.lower()
