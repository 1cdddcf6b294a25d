# SPDX-License-Identifier: Apache-2.0
"""The Checkpointer's rules, with a small in-memory store (the ConfigMap store itself is tested against a real
kube-apiserver in tests/scenarios/test_kube_checkpoint.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from vmwatch import _vmwatch
from vmwatch.kube.checkpoint import Checkpointer, CheckpointError
from vmwatch.settings import DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, DEFAULT_WATCHED_PATHS

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


class MemoryStore:
    namespace = 'test'

    def __init__(self, blob: bytes | None = None, *, failures: int = 0) -> None:
        self.blob, self.failures, self.generation, self.saves = blob, failures, 0, 0

    def load(self) -> bytes | None:
        return self.blob

    def save(self, blob: bytes) -> int:
        if self.failures:
            self.failures -= 1
            raise CheckpointError('the API said no')
        self.blob, self.saves = blob, self.saves + 1
        self.generation += 1
        return self.generation


def decider() -> _vmwatch.Decider:
    ignored = DEFAULT_IGNORED_EXTRA_CONFIG_KEYS
    return _vmwatch.Decider(index=_vmwatch.Index(), watched_paths=DEFAULT_WATCHED_PATHS, ignored_keys=ignored)


async def test_nothing_is_written_before_this_terms_load() -> None:
    """Writing before loading would replace the last holder's records of VMs not sighted yet with nothing."""
    previous = b''.join(i.to_bytes(8, 'little') + (100 + i).to_bytes(8, 'little') for i in range(3))
    store = MemoryStore(previous)
    cp = Checkpointer(cast(Any, store), decider(), interval_s=1)
    await cp.save()
    assert store.saves == 0 and store.blob == previous
    await cp.load()
    await cp.save()
    assert store.saves == 1 and store.blob is not None and len(store.blob) == len(previous)  # carried over
    cp.reset()  # a new term: load again first
    await cp.save()
    assert store.saves == 1


async def test_a_failed_periodic_write_is_retried_at_the_next_interval() -> None:
    store = MemoryStore(failures=1)
    cp = Checkpointer(cast(Any, store), decider(), interval_s=1)
    await cp.load()
    cp.interval_s = 0.01
    task = asyncio.create_task(cp.run())
    async with asyncio.timeout(5):
        while store.saves == 0:
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert cp.metrics.writes.labels(vcenter='default', result='error')._value.get() == 1
    assert cp.metrics.writes.labels(vcenter='default', result='ok')._value.get() >= 1
