# SPDX-License-Identifier: Apache-2.0
"""Small blocking helpers for tests that drive a `vmwatch run` process: HTTP probes and polling."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable


def http_get(url: str) -> tuple[int, str]:
    """(status, body); status 0 with the error text when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout_s} s waiting for {what}')
        time.sleep(0.05)
