# SPDX-License-Identifier: Apache-2.0
"""Small blocking helpers for tests that drive a `vmwatch run` process: HTTP probes and polling."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def run_env_vars(vc: Any, kubeconfig: Path, lease_namespace: str, **overrides: str) -> dict[str, str]:
    """The environment of a `vmwatch run` child against vcsim `vc` and a kube-apiserver, with test timings: short
    waits and a 3 s Lease, DEBUG logs (a failure prints them)."""
    return {
        'VMWATCH_VC_URL': vc.url,
        'VMWATCH_VC_USER': vc.user,
        'VMWATCH_VC_PASSWORD_FILE': str(vc.password_file),
        'VMWATCH_VC_CA_FILE': str(vc.ca_file),
        'VMWATCH_KUBECONFIG': str(kubeconfig),
        'VMWATCH_LEASE_NAMESPACE': lease_namespace,
        'VMWATCH_MAX_WAIT_S': '5',
        'VMWATCH_LEADER_ELECT_LEASE_DURATION': '3s',
        'VMWATCH_LEADER_ELECT_RENEW_DEADLINE': '2s',
        'VMWATCH_LEADER_ELECT_RETRY_PERIOD': '250ms',
        'VMWATCH_METRICS_BIND_ADDRESS': '0',  # off unless a test gives it a port (never 0.0.0.0:8080 in a test)
        'VMWATCH_LOG_LEVEL': 'DEBUG',
        **overrides,
    }
