# SPDX-License-Identifier: Apache-2.0
"""The liveness of the event loop: a small task stamps a heartbeat, /healthz (answered from a thread) checks it.

The health server runs in its own thread, so it answers whatever the loop does; without this a loop stuck in a
blocking call, a deadlock or a CPU-bound spin would pass its liveness probe forever. With it, /healthz answers
500 once the last stamp is older than `stall_s`, and 200 again as soon as the loop runs again.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ['Heartbeat']


class Heartbeat:
    """`run()` (a task on the watched loop) stamps the time every `interval_s`; `alive()` is safe from any thread."""

    def __init__(self, *, stall_s: float, interval_s: float | None = None) -> None:
        self.stall_s = stall_s
        self.interval_s = min(1.0, stall_s / 4) if interval_s is None else interval_s
        self._last = time.monotonic()  # the loop is about to start: not stalled yet

    def beat(self) -> None:
        self._last = time.monotonic()  # one float store: atomic under the GIL and free-threaded alike

    async def run(self) -> None:
        """Stamp until cancelled."""
        while True:
            self.beat()
            await asyncio.sleep(self.interval_s)

    def age_s(self) -> float:
        return time.monotonic() - self._last

    def alive(self) -> tuple[bool, str]:
        """(True, 'ok'), or (False, why) when the loop has not stamped for longer than `stall_s`."""
        age = self.age_s()
        if age > self.stall_s:
            return False, f'event loop stalled: no heartbeat for {age:.1f} s (limit {self.stall_s:g} s)'
        return True, 'ok'
