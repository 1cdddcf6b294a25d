# SPDX-License-Identifier: Apache-2.0
"""What a watcher notes about each WaitForUpdatesEx response for the metrics: when it arrived, its size, the
kinds of its object updates, and when the response carrying each pending signal arrived.

The Service turns these into vmwatch_decoded_bytes_total, vmwatch_object_updates_total{kind},
vmwatch_collector_version_lag_seconds and the vmwatch_change_enqueue_seconds histogram (metrics.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Hashable

__all__ = ['ResponseLog']


class ResponseLog:
    """Per-watcher notes: `responded` and `decided` run on the poll thread, the rest on the event loop, in turn."""

    __slots__ = ('_pending', 'last_response_at', 'taken_at')

    def __init__(self) -> None:
        self.last_response_at: float | None = None
        """time.monotonic() when the last WaitForUpdatesEx response (a fault too) arrived; None before one."""
        self.taken_at: float | None = None
        """When the response carrying the signal taken last arrived (None: unknown)."""
        self._pending: dict[Hashable, float] = {}

    def responded(self, body: bytes, stats: Counter[str]) -> None:
        """A response arrived (right after the wait returned): note the time and its size in `stats`."""
        self.last_response_at = time.monotonic()
        stats['decoded_bytes'] += len(body)

    def decided(self, kinds: tuple[int, int, int], stats: Counter[str]) -> None:
        """The response was decoded: note its object updates by kind (`Batch.kinds`: enter, modify, leave)."""
        enter, modify, leave = kinds
        stats['objects_enter'] += enter
        stats['objects_modify'] += modify
        stats['objects_leave'] += leave

    def put(self, key: Hashable) -> None:
        """A signal for `key` from the last response is pending; a coalesced one keeps the older arrival."""
        if self.last_response_at is not None:
            self._pending.setdefault(key, self.last_response_at)

    def take(self, key: Hashable) -> float | None:
        """The signal for `key` was taken: its arrival, also kept as `taken_at`."""
        self.taken_at = self._pending.pop(key, None)
        return self.taken_at

    def clear(self) -> None:
        self._pending.clear()
        self.taken_at = None
