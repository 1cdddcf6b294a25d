# SPDX-License-Identifier: Apache-2.0
"""Restart pacing shared by the service's loops: capped exponential backoff with jitter, and logs that repeat
at a bounded rate (spec 7.2 #1)."""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ['Backoff', 'RateLimitedLog']


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter in [delay/2, delay], reset after a healthy run."""

    initial_s: float = 1.0
    max_s: float = 300.0
    reset_after_s: float = 120.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next(self, *, healthy_for_s: float) -> float:
        if healthy_for_s >= self.reset_after_s:
            self.failures = 0
        delay = min(self.max_s, self.initial_s * 2**self.failures)
        self.failures = min(self.failures + 1, 32)
        return float(delay * self.rng.uniform(0.5, 1.0))


class RateLimitedLog:
    """Logs a repeated message once per `every_s` per key, with how many were suppressed."""

    def __init__(self, logger: logging.Logger, *, every_s: float = 60.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)

    def log(self, level: int, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        suffix = f' ({n} similar messages suppressed)' if n else ''
        self.logger.log(level, msg + suffix, *args)
